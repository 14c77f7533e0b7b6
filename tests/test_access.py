"""The gate, end to end: a share link is a key for that share only. Without it nothing reaches Jupyter; with it the
visitor works as the owner does; once the share ends, nothing from it opens a later share at the same public URL;
and nothing about it is readable by other local users."""
from __future__ import annotations

import html
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import requests
import websocket
from harness import AUTHTOKEN, command_lines, processes_with, share_links, share_processes, wait_for

REFUSED = "This link has ended or is not valid"


def share(notebook, line: str = "%share") -> str:
    result = notebook.execute(f"%load_ext share_magic\n{line}")
    assert result["error"] is None and "Error" not in result["stderr"], result
    return share_links(notebook)["edit"]


def key_of(link: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["share_key"][0]


def refused_by_the_gate(response: requests.Response) -> bool:
    return response.status_code == 403 and REFUSED in response.text and "Server" not in response.headers


def test_nothing_reaches_jupyter_without_the_key(jupyter, owner, visitor) -> None:
    """Every way in a stranger might try -- pages, API, files, static assets, login, the server's own token, wrong
    and truncated keys, websockets -- is answered by the gate, and the server's request log shows none of them."""
    base = "/a%40b/"
    server = jupyter(base_url=base, log_requests=True)
    notebook = owner(server)
    link = share(notebook)
    key = key_of(link)
    kernel = f"{base}api/kernels/{notebook.kernel_id}/channels"
    owner_login = requests.get(f"{server.url}api/status", headers={"Authorization": f"token {server.token}"},
                               timeout=10)
    jupyter_cookie = "; ".join(f"{name}={value}" for name, value in owner_login.cookies.items())
    assert jupyter_cookie.startswith("username-")  # a genuine login cookie of this server, as the owner has

    http_probes = [
        ("GET", f"{base}lab/tree/shared.ipynb", {}),
        ("GET", f"{base}lab", {"Accept": "text/html"}),
        ("GET", f"{base}tree", {}),
        ("GET", f"{base}login", {}),
        ("POST", f"{base}login", {}),
        ("GET", f"{base}static/favicon.ico", {}),
        ("GET", f"{base}static/lab/index.js", {}),
        ("GET", f"{base}files/shared.ipynb", {}),
        ("GET", f"{base}api", {}),
        ("GET", f"{base}api/contents", {}),
        ("GET", f"{base}api/kernels", {}),
        ("GET", f"{base}api/terminals", {}),
        ("POST", f"{base}api/contents", {}),
        ("GET", f"{base}api/contents?token={server.token}", {}),
        ("GET", f"{base}api/contents", {"Authorization": f"token {server.token}"}),
        ("GET", f"{base}api/contents", {"Cookie": jupyter_cookie}),
        ("GET", f"{base}api/contents", {"Cookie": "share_magic=" + key}),  # the key is not a session
        ("GET", f"{base}lab?share_key=" + "A" * len(key), {}),
        ("GET", f"{base}lab?share_key=" + key[:-1], {}),
        ("GET", f"{base}lab?share_key=" + key + "A", {}),
        ("GET", f"{base}lab?share_key=", {}),
        ("POST", f"{base}api/contents?share_key=" + key, {}),  # a key admits a browser's navigation only
        ("GET", "/api/contents", {}),  # outside the base URL
        ("GET", f"{base}..%2Fapi/contents", {}),
    ]
    stranger = visitor(link.split("?")[0])
    markers = []
    for number, (method, path, headers) in enumerate(http_probes):
        marker = f"probe{number}x{uuid.uuid4().hex[:8]}"
        markers.append(marker)
        target = path + ("&" if "?" in path else "?") + f"probe={marker}"
        response = stranger.http.request(method, stranger.absolute(target), headers=headers, timeout=20,
                                         allow_redirects=False)
        assert refused_by_the_gate(response), (method, path, headers, response.status_code, response.text[:200])

    ws_probes = [
        (f"{kernel}?probe=", []),
        (f"{kernel}?token={server.token}&probe=", []),
        (f"{kernel}?probe=", [f"Authorization: token {server.token}"]),
        (f"{kernel}?probe=", [f"Cookie: {jupyter_cookie}"]),
        (f"{kernel}?share_key={key}&probe=", []),  # the key opens pages, not websockets
        (f"{base}api/events/subscribe?probe=", []),
        (f"{base}terminals/websocket/1?probe=", []),
    ]
    for path, headers in ws_probes:
        marker = f"ws{len(markers)}x{uuid.uuid4().hex[:8]}"
        markers.append(marker)
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            socket = websocket.WebSocket(sslopt={"cert_reqs": 0, "check_hostname": False})
            stranger.websockets.append(socket)
            socket.connect("wss://" + urllib.parse.urlsplit(link).netloc + path + marker, header=headers,
                           origin=stranger.origin)
        assert refused.value.status_code == 403, path

    # A visitor with the link does reach Jupyter; once their request shows in the log, every earlier one would too.
    guest = visitor(link)
    assert guest.get(link).status_code == 200
    assert guest.get(f"{base}api/status?probe=sentinel-{markers[0]}").status_code == 200
    wait_for(lambda: server.saw(f"sentinel-{markers[0]}"), 10, "the server to log the admitted request")
    reached = [marker for marker in markers if server.saw(f"probe={marker}")]
    assert reached == [], "these probes reached Jupyter"


def test_the_link_admits_a_browser_with_a_cookie_of_the_gateways_own(jupyter, owner, visitor) -> None:
    base = "/a%40b/"
    server = jupyter(base_url=base)
    link = share(owner(server))
    guest = visitor(link)
    first = guest.get(link, allow_redirects=False)
    assert first.status_code == 302 and first.headers["Location"] == urllib.parse.urlsplit(link).path
    attributes = [part.strip() for part in first.headers["Set-Cookie"].split(";")]
    assert attributes[0].startswith("share_magic=") and key_of(link) not in attributes[0]
    assert {"HttpOnly", "Secure", "SameSite=Lax", f"Path={base}"} <= set(attributes)
    assert first.headers["Cache-Control"] == "no-store"
    page = guest.get(first.headers["Location"])
    assert page.status_code == 200 and "jupyter-config-data" in page.text
    assert guest.get(f"{base}api/contents").status_code == 200
    # The gateway logs the visitor in upstream; Jupyter's login cookie never reaches the browser.
    assert {cookie.name for cookie in guest.http.cookies} == {"share_magic", "_xsrf"}


@pytest.mark.parametrize("kind", ["token", "password"])
def test_stop_means_stop_even_at_the_same_public_url(jupyter, owner, visitor, kind: str) -> None:
    """The free plan gives every share of an account the same URL: the second share must refuse the first share's
    link, its gateway cookie and Jupyter's own login cookie obtained through it."""
    server = jupyter(password="correct horse battery") if kind == "password" else jupyter()
    notebook = owner(server)
    first_link = share(notebook)
    guest = visitor(first_link)
    page = guest.get(first_link)
    if kind == "password":  # the gate first, then Jupyter's own login
        guest.send("POST", page.url, data={"password": "correct horse battery",
                                           "_xsrf": guest.http.cookies["_xsrf"]},
                   headers={"Referer": page.url}, allow_redirects=False).raise_for_status()
        assert any(cookie.name.startswith("username-") for cookie in guest.http.cookies)
    assert guest.get("/api/contents").status_code == 200
    sessions = guest.get("/api/sessions").json()
    kernel = guest.kernel(f"/api/kernels/{sessions[0]['kernel']['id']}/channels")
    assert kernel.execute("print('first share')")["stdout"] == "first share\n"
    assert "stopped" in notebook.run("%share stop")

    second_link = share(notebook)
    assert urllib.parse.urlsplit(second_link).netloc == urllib.parse.urlsplit(first_link).netloc
    assert key_of(second_link) != key_of(first_link)
    assert refused_by_the_gate(guest.get("/api/contents"))  # the first visitor's cookies, all of them
    assert refused_by_the_gate(guest.get(urllib.parse.urlsplit(first_link).path))
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        guest.kernel(f"/api/kernels/{sessions[0]['kernel']['id']}/channels")
    assert refused.value.status_code == 403
    assert refused_by_the_gate(visitor(first_link).get(first_link))  # the first link, from a fresh browser
    newcomer = visitor(second_link)
    assert newcomer.get(second_link).status_code == 200


def test_a_share_for_a_while_ends_by_itself_and_leaves_nothing(jupyter, owner, visitor) -> None:
    notebook = owner(jupyter())
    asked = time.monotonic()
    # Long enough for the visitor below to get in first on a loaded machine (a 3 s share once expired before the
    # visitor's first request, with a benchmark's 30 browsers running beside the suite).
    result = notebook.execute("%load_ext share_magic\n%share --for 10s")
    assert "ends at" in result["text"], result["text"]
    guest = visitor(share_links(notebook)["edit"])
    assert guest.get(guest.link).status_code == 200  # lower bound of the timing: asserted below, not assumed
    status = wait_for(lambda: (out := notebook.run("%share status")) and "expired" in out and out, 40,
                      "the share to expire")
    assert time.monotonic() - asked >= 10
    assert "Share expired at" in status and "Run %share for a new one" in status
    wait_for(lambda: not share_processes(), 10, "every share process to end")
    assert not guest.reaches_jupyter()


def test_an_attached_share_links_with_the_owners_key(jupyter, owner, visitor) -> None:
    """Another notebook of the same server shows the share with a working link to itself."""
    server = jupyter()
    first, second = owner(server, "first.ipynb"), owner(server, "second.ipynb")
    first_link = share(first, "%share --for 1h")
    shown = second.execute("%load_ext share_magic\n%share")
    link = share_links(second)["edit"]
    assert "/lab/tree/second.ipynb?share_key=" in link and key_of(link) == key_of(first_link)
    assert "ends at" in shown["text"]
    guest = visitor(link)
    assert guest.get(link).status_code == 200 and guest.get("/api/contents").status_code == 200


def test_nothing_about_the_share_is_readable_by_other_local_users(jupyter, owner, visitor, sandbox) -> None:
    server = jupyter()
    notebook = owner(server)
    link = share(notebook)
    guest = visitor(link)
    assert guest.get(link).status_code == 200 and guest.get("/api/contents").status_code == 200

    # No secret on any command line of the share's processes or the kernel.
    kernel_pid = int(notebook.run("import os; print(os.getpid())"))
    lines = command_lines([*share_processes(), kernel_pid])
    assert "share_magic.helper" in lines and "standin_ngrok.py" in lines
    for secret in (AUTHTOKEN, key_of(link), server.token):
        assert secret not in lines
    assert "NGROK_AUTHTOKEN" not in Path(f"/proc/{processes_with('share_magic.helper')[0]}/environ").read_text()

    # The agent's inspection is off for the whole agent (an endpoint has no such field in v3), so it kept nothing.
    state = Path(sandbox["STANDIN_NGROK_STATE"])
    endpoint = json.loads((state / "endpoints.jsonl").read_text().splitlines()[-1])
    assert "inspect" not in endpoint
    agent = json.loads((state / "agents" / f"{processes_with('standin_ngrok.py')[0]}.json").read_text())
    assert agent["config"]["agent"]["inspect_db_size"] == -1
    assert agent["config"]["agent"]["authtoken"] == AUTHTOKEN  # from the private config, not the command line
    inspected = requests.get(f"http://{agent['web_addr']}/api/requests/http", timeout=5).json()
    assert inspected["requests"] == []

    # The private config the agent read is gone from disk; its folder was the owner's alone.
    config = lines.split("--config ", 1)[1].split()[0]
    assert not os.path.exists(config)
    assert stat.S_IMODE(os.stat(os.path.dirname(config)).st_mode) == 0o700
    record = next(Path(sandbox["JUPYTER_RUNTIME_DIR"]).glob("share_magic-*.json"))
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    notebook.run("%share stop")
    wait_for(lambda: not os.path.exists(os.path.dirname(config)), 10, "the private folder to be removed")


def test_the_suite_ends_only_the_share_processes_it_started(sandbox, tmp_path) -> None:
    """A developer's own live share on the same machine is not this test run's to count or kill."""
    def pretend_helper(runtime: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", "print('up', flush=True); import time; time.sleep(60)",
                                    "share_magic.helper"], stdout=subprocess.PIPE,
                                   env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)})
        assert process.stdout is not None and process.stdout.readline() == b"up\n"  # running, not still starting
        return process

    theirs, ours = pretend_helper(tmp_path / "elsewhere"), pretend_helper(Path(sandbox["JUPYTER_RUNTIME_DIR"]))
    try:
        found = share_processes()
        assert ours.pid in found and theirs.pid not in found
    finally:
        for process in (theirs, ours):
            process.kill()
            process.wait()
            process.stdout.close()


# -- a keyed link never swaps a live session without the person's say (issue 27, item 2) ------------------------

QUESTION = "You are already in this share"


def question_button(page: requests.Response) -> str:
    """The target the question page's one button posts to."""
    found = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert page.status_code == 200 and QUESTION in page.text and found, (page.status_code, page.text[:300])
    return html.unescape(found.group(1))


def press(guest, action: str, **headers: str) -> requests.Response:
    """Press the question page's button, as the browser does from that page (same origin)."""
    return guest.http.post(guest.absolute(action), timeout=20, allow_redirects=False,
                           headers={"Origin": guest.origin, "Sec-Fetch-Site": "same-origin", **headers})


@pytest.fixture
def three_links(jupyter, owner):
    """A share with its edit link, its view link and mallory's personal link."""
    server = jupyter()
    notebook = owner(server)
    edit = share(notebook)
    notebook.run("%share --view\n%share invite mallory")
    links = share_links(notebook)
    return server, notebook, edit, links["view"], links["mallory"]


def test_a_link_from_a_page_never_swaps_an_editors_session(three_links, visitor) -> None:
    """Any page can send the editor's browser to the share's view link or to someone else's personal link (a
    top-level navigation carries the SameSite=Lax cookie): the editor stays who they are and is asked, and their own
    link just goes on."""
    _, _, edit, view, mallory = three_links
    editor = visitor(edit)
    assert editor.get(edit).status_code == 200 and editor.get("/api/status").status_code == 200
    cookie, me = editor.http.cookies["share_magic"], editor.get("/api/me").json()["identity"]["username"]
    for link in (view, mallory):
        answer = editor.get(link, allow_redirects=False,
                            headers={"Accept": "text/html", "Sec-Fetch-Site": "cross-site"})
        assert "Set-Cookie" not in answer.headers and editor.http.cookies["share_magic"] == cookie
        question_button(answer)
        assert "You are signed in to this share as an editor" in answer.text
        assert editor.get("/api/status").status_code == 200  # a view reader would get the view's 404
        assert editor.get("/api/me").json()["identity"]["username"] == me  # not mallory
    again = editor.get(edit, allow_redirects=False)  # the editor's own link: on to its page, nothing to ask
    assert again.status_code == 302 and again.headers["Location"] == urllib.parse.urlsplit(edit).path
    assert "Set-Cookie" not in again.headers and editor.get("/api/me").json()["identity"]["username"] == me


def test_the_question_page_switches_only_when_its_own_browser_presses(three_links, visitor) -> None:
    _, _, edit, view, mallory = three_links
    editor, other = visitor(edit), visitor(edit)
    for guest in (editor, other):
        assert guest.get(edit).status_code == 200
    cookie = editor.http.cookies["share_magic"]
    # What a hostile page could send: no token, a guessed one, the editor's token from another site, another
    # browser's press of the editor's token. None of them swaps anything, or spoils the person's own button.
    button = question_button(editor.get(view))
    refused = [press(editor, "/share_magic/switch"), press(editor, "/share_magic/switch?token=guess"),
               press(editor, button, **{"Sec-Fetch-Site": "cross-site"}), press(other, button)]
    assert [answer.status_code for answer in refused] == [403] * 4
    assert not [answer for answer in refused if "Set-Cookie" in answer.headers]
    assert editor.http.cookies["share_magic"] == cookie and editor.get("/api/status").status_code == 200
    assert other.get("/api/status").status_code == 200

    # The person's own press: now a view reader, on the view page.
    switched = press(editor, button)
    assert switched.status_code == 303 and switched.headers["Location"].endswith("/share_magic/view")
    assert "Set-Cookie" in switched.headers and editor.http.cookies["share_magic"] != cookie
    assert editor.get("/api/status").status_code == 404 and "view only" in editor.get("/share_magic/view").text
    assert press(editor, button).status_code == 403  # one press, once

    # A view reader sent to an edit link is asked too; staying keeps the view.
    asked = editor.get(mallory, headers={"Accept": "text/html"})
    assert "as a view-only reader" in asked.text and "Open as mallory" in asked.text
    assert "/share_magic/view" in re.search(r'<a href="([^"]+)">Stay', asked.text).group(1)
    assert press(editor, question_button(asked)).status_code == 303
    assert editor.get("/api/me").json()["identity"]["name"] == "mallory"


def test_a_revoked_or_stale_session_is_replaced_by_a_link(three_links, visitor) -> None:
    _, notebook, edit, view, _ = three_links
    notebook.run("%share invite ada")
    ada_link = share_links(notebook)["ada"]
    ada = visitor(ada_link)
    assert ada.get(ada_link).status_code == 200 and ada.get("/api/status").status_code == 200
    notebook.run("%share revoke ada")
    view = share_links(notebook)["view"]  # revoking ada retired the share's own links
    answer = ada.get(view, allow_redirects=False)
    assert answer.status_code == 302 and "share_magic=" in answer.headers["Set-Cookie"]
    assert "view only" in ada.get(answer.headers["Location"]).text

    stale = visitor(view)  # a cookie of no live session of this share (an earlier share's, say)
    stale.http.cookies.set("share_magic", "an-earlier-shares-session", domain=urllib.parse.urlsplit(view).hostname)
    answer = stale.get(view, allow_redirects=False)
    assert answer.status_code == 302 and "share_magic=" in answer.headers["Set-Cookie"]
    assert "view only" in stale.get(answer.headers["Location"]).text


def test_in_a_browser_a_hostile_page_cannot_swap_the_session_and_the_person_can(three_links) -> None:
    """Chromium, as an editor, sent to the view link by another site's page, then made to post to the question
    page's button by one: still an editor. The person's own click on the button: a view reader."""
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, VISITOR_ARGS, visit

    _, _, edit, view, _ = three_links
    origin = "https://" + urllib.parse.urlsplit(edit).netloc
    hostile = {
        "/go": f"<script>location.href = {json.dumps(view)}</script>",
        "/post": f'<form method="post" action="{origin}/share_magic/switch?token=guess"></form>'
                 "<script>document.forms[0].submit()</script>",
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        try:
            page = visit(browser, f"{origin}/api/status?share_key={key_of(edit)}")  # in as an editor
            page.get_by_text('"started"').wait_for(timeout=20_000)  # Jupyter's status: the page has landed
            page.context.route("http://hostile.example/**", lambda route: route.fulfill(
                content_type="text/html", body=hostile[urllib.parse.urlsplit(route.request.url).path]))

            def status() -> int:  # /api/status in another tab, with the cookies the browser holds now
                tab = page.context.new_page()
                try:
                    answer = tab.goto(f"{origin}/api/status")
                    assert answer is not None
                    return answer.status
                finally:
                    tab.close()

            assert status() == 200
            page.goto("http://hostile.example/go")
            page.get_by_text("You are signed in to this share as an editor").wait_for(timeout=20_000)
            assert status() == 200
            page.goto("http://hostile.example/post")
            page.wait_for_url(f"{origin}/**", timeout=20_000)
            assert status() == 200
            page.goto("http://hostile.example/go")
            page.get_by_role("button", name="Open as view-only").click()
            page.get_by_text("view only").wait_for(timeout=30_000)
            assert page.url == f"{origin}/share_magic/view" and status() == 404
        finally:
            browser.close()
