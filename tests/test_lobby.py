"""The lobby and the trail, end to end through the stand-in edge: with --approve a newcomer with the share's own link
waits and reaches nothing until the owner decides; personal and view links never wait; the trail names who did
what, also after the share ends. (In a real browser: tests/test_lobby_browser.py.)"""
from __future__ import annotations

import html
import json
import re
import stat
import urllib.parse
from pathlib import Path

import pytest
import websocket
from harness import share_links, wait_for
from test_failures import assert_one_calm_line

from share_magic.helper.capacity import Limits
from share_magic.helper.lobby_page import ENDED

WAITING = "share_magic/lobby"


def approve_share(notebook, line: str = "%share --approve") -> str:
    result = notebook.execute(f"%load_ext share_magic\n{line}")
    assert result["error"] is None and "Error" not in result["stderr"], result
    return share_links(notebook)["edit"]


def waiting_page(guest) -> str:
    """Open the link as a newcomer: the gateway's waiting page, strict; return its form's action (with its token)."""
    page = guest.get(guest.link)
    assert page.status_code == 200 and page.url.endswith("/" + WAITING), (page.status_code, page.url)
    assert "Ask to join this notebook" in page.text and 'name="name"' in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in \
        policy.split("script-src", 1)[1].split(";", 1)[0]
    assert page.headers["X-Frame-Options"] == "DENY"
    return html.unescape(re.search(r'<form id="ask" method="post" action="([^"]+)"', page.text).group(1))


def ask(guest, action: str, name: str | None, **headers: str):
    """The waiting page's POST, as its script sends it (same origin, its header, the name in the query)."""
    url = action + ("" if name is None else "&name=" + urllib.parse.quote(name))
    return guest.http.post(guest.absolute(url), timeout=20, allow_redirects=False, headers={
        "Origin": guest.origin, "Sec-Fetch-Site": "same-origin", "X-Share-Lobby": "1", **headers})


def stream_of(guest):
    """The waiting page's stream, open (its events read as they come)."""
    return guest.http.get(guest.absolute(f"/{WAITING}/events"), stream=True, timeout=20)


def state(guest) -> dict:
    """What the waiting page's stream says first (then let go), as its script hears it."""
    with stream_of(guest) as stream:
        return next(events(stream))


def events(stream):
    """The lobby's events on an open stream, as they come (an EventSource's reading, for its one kind of event)."""
    assert stream.status_code == 200 and stream.headers["Content-Type"] == "text/event-stream", stream.headers
    kind = None
    for line in stream.iter_lines(chunk_size=1):
        if line.startswith(b"event: "):
            kind = line[7:]
        elif line.startswith(b"data: ") and kind == b"lobby":
            yield json.loads(line[6:])


def reaches_nothing(guest, kernel_id: str) -> None:
    """A waiting or turned-away browser: 403 for every page, API and websocket."""
    for path in ("/api/contents", "/api/status", "/lab", "/lab/tree/shared.ipynb", "/files/shared.ipynb",
                 "/api/me"):
        assert guest.get(path).status_code == 403, path
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        guest.websocket(f"/api/kernels/{kernel_id}/channels")
    assert refused.value.status_code == 403


def test_a_newcomer_waits_is_admitted_and_the_trail_names_what_they_did(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    link = approve_share(notebook)
    assert "wait until you let them in" in notebook.run("%share status")

    grace = visitor(link)
    action = waiting_page(grace)
    reaches_nothing(grace, notebook.kernel_id)
    assert state(grace)["state"] == "naming"
    assert ask(grace, action, "<b>Grace</b>").json() == {"state": "waiting"}
    assert state(grace) == {"state": "waiting", "name": "<b>Grace</b> (name they gave)"}
    reaches_nothing(grace, notebook.kernel_id)  # waiting is not being in
    status = wait_for(lambda: (out := notebook.run("%share status")) and "Waiting to be let in" in out and out, 10,
                      "the owner to see who waits")
    assert "Waiting to be let in: <b>Grace</b> (name they gave), waiting since" in status

    listed = notebook.run("import share_magic\nprint([w.label for w in share_magic.current().waiting])")
    assert listed.strip() == "['<b>Grace</b> (name they gave)']"
    admitted = notebook.execute("%share admit <b>Grace</b>")
    assert admitted["stdout"].startswith("<b>Grace</b> is let in"), admitted
    answer = state(grace)
    assert answer == {"state": "admitted", "go": "/lab/tree/shared.ipynb"}
    assert grace.get(answer["go"]).status_code == 200 and grace.get("/api/contents").status_code == 200
    kernel = grace.kernel(f"/api/kernels/{notebook.kernel_id}/channels")
    assert kernel.execute("print('grace was here')\nx = 6 * 7")["stdout"] == "grace was here\n"
    saved = grace.send("PUT", "/api/contents/notes.txt", json={"type": "file", "format": "text", "content": "hi"})
    assert saved.status_code in (200, 201), saved.text
    assert grace.send("PATCH", "/api/contents/notes.txt", json={"path": "kept.txt"}).status_code == 200
    downloaded = grace.get("/files/kept.txt", headers={"Referer": grace.origin + "/lab"})  # as from the page
    assert downloaded.text == "hi", (downloaded.status_code, downloaded.text[-600:])
    assert grace.send("DELETE", "/api/contents/kept.txt").status_code == 204
    terminal = grace.send("POST", "/api/terminals").json()["name"]
    shell = grace.websocket(f"/terminals/websocket/{terminal}")
    shell.send(json.dumps(["stdin", "echo one\r"]))
    shell.send(json.dumps(["stdin", "ls -l nothere\x7f\x7f\x7f\x7f\x7f\x7f\x7fhere\r"]))
    status = wait_for(lambda: (out := notebook.run("%share status")) and "connected since" in out and out, 10,
                      "Grace to show as connected")
    assert "<b>Grace</b> (name they gave) (connected since" in status and "Waiting to be let in" not in status

    log = wait_for(lambda: (out := notebook.execute("%share log")["text"]) and "wrote notes.txt" in out and out, 10,
                   "the trail to name what Grace did")
    lines = log.splitlines()
    assert any("<b>Grace</b> (name they gave)" in line and "ran code in shared.ipynb:" in line for line in lines)
    assert "print('grace was here')" in log and "x = 6 * 7" in log
    assert any("<b>Grace</b> (name they gave)" in line and line.endswith("wrote notes.txt") for line in lines)
    assert any("owner" in line and "let <b>Grace</b> (name they gave) in from the lobby" in line for line in lines)
    log = wait_for(lambda: (out := notebook.execute("%share log")["text"]) and "ls -l here" in out and out, 10,
                   "the trail to follow the terminal")
    for did in ("renamed notes.txt", "downloaded kept.txt", "deleted kept.txt", "started a new terminal",
                f"opened terminal {terminal}", f"typed in terminal {terminal}: echo one",
                f"typed in terminal {terminal}: ls -l here"):
        assert did in log, (did, log)
    wait_for(lambda: re.search(r"<b>Grace</b> \(name they gave\) \(connected since [0-9:]+\); last: [0-9:]+ typed in "
                               r"terminal", notebook.run("%share status")), 10, "her last action beside her name")

    # Revocable like anyone invited.
    revoked = notebook.execute("%share revoke <b>Grace</b>")
    assert revoked["stdout"].startswith("<b>Grace</b> is cut off"), revoked
    assert grace.get("/api/contents").status_code == 403

    # The trail outlives the share, in a file only the owner can read.
    notebook.run("%share stop")
    after = notebook.execute("%share log")["text"]
    assert "wrote notes.txt" in after and after.rstrip().endswith("stopped the share")
    trails = Path(notebook.run("from share_magic import trail; print(trail.folder())").strip())
    assert stat.S_IMODE(trails.stat().st_mode) == 0o700
    files = list(trails.iterdir())
    assert files and all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)
    assert server.token not in "".join(path.read_text() for path in files)
    entries = [json.loads(line) for line in (trails / files[0].name).read_text().splitlines()]
    assert entries[0]["who"] == "owner" and "lobby" in entries[0]["what"]


def test_turned_away_stays_out_and_personal_and_view_links_never_wait(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    link = approve_share(notebook, "%share --approve\n%share --view\n%share invite Ada")
    links = share_links(notebook)

    mallory = visitor(link)
    ask(mallory, waiting_page(mallory), "Mallory")
    wait_for(lambda: "Mallory" in notebook.run("%share status"), 10, "Mallory to wait")
    denied = notebook.execute("%share deny Mallory")
    assert denied["stdout"].startswith("Mallory is turned away"), denied
    assert state(mallory)["state"] == "denied"
    reaches_nothing(mallory, notebook.kernel_id)
    again = mallory.get(link)  # the link again, in the same browser
    assert again.status_code == 403 and "did not let you in" in again.text
    reaches_nothing(mallory, notebook.kernel_id)
    assert "Waiting to be let in: Mallory" not in notebook.run("%share status")

    ada = visitor(links["Ada"])
    assert ada.get(links["Ada"]).status_code == 200 and ada.get("/api/contents").status_code == 200
    reader = visitor(links["view"])
    page = reader.get(links["view"])
    assert page.status_code == 200 and WAITING not in page.url


def test_every_bad_input_gets_its_answer(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    notebook.run("%load_ext share_magic")
    assert_one_calm_line(notebook.execute("%share log"), "No share of this Jupyter server has a trail yet")
    link = approve_share(notebook, "%share")
    assert_one_calm_line(notebook.execute("%share admit Grace"), "lets everyone with its link in",
                         "%share --approve")
    notebook.run("%share --approve")
    assert_one_calm_line(notebook.execute("%share admit Zed"), "Nobody waiting to be let in gave the name 'Zed'",
                         "Nobody is waiting right now")
    assert_one_calm_line(notebook.execute("%share admit"), "Name who to admit")

    first, second, outsider = visitor(link), visitor(link), visitor(link)
    action = waiting_page(first)
    for name, expected in (("", "Give a name"), ("   \u200b\x07 ", "Give a name"), ("x" * 41, "at most 40")):
        answer = ask(first, action, name)
        assert answer.status_code == 400 and expected in answer.json()["error"], (name, answer.text)
    assert ask(first, action, None, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
    bare = first.http.post(first.absolute(action + "&name=Eve"), timeout=20, allow_redirects=False)
    assert bare.status_code == 403  # a form of another site sends no such header
    wrong = ask(first, action.split("token=")[0] + "token=nope", "Eve")
    assert wrong.status_code == 403 and "did not come from the waiting page" in wrong.json()["error"]
    assert ask(outsider, action, "Eve").status_code == 403  # another browser's token
    assert state(first)["state"] == "naming"

    assert ask(first, action, " Grace\tHopper\x00 ").json() == {"state": "waiting"}
    assert ask(second, waiting_page(second), "Grace Hopper").json() == {"state": "waiting"}
    assert state(second)["name"] == "Grace Hopper (2) (name they gave)"  # the same name, told apart
    line = assert_one_calm_line(notebook.execute("%share admit Zed"), "Nobody waiting to be let in gave the name")
    assert "'Grace Hopper', 'Grace Hopper (2)'" in line
    notebook.run("import share_magic\nshare_magic.current().admit('Grace Hopper (2)')")
    assert state(second)["state"] == "admitted" and state(first)["state"] == "waiting"


def test_a_waiting_page_holds_one_stream_and_hears_the_owner_at_once(jupyter, owner, visitor) -> None:
    """Nothing is held before a name is given; while waiting, the page's stream counts as a reader's connections;
    the owner's decision is pushed down every stream of that browser, which then ends; the share's end reaches a
    page still waiting, whose stream ends too."""
    server = jupyter()
    notebook = owner(server)
    link = approve_share(notebook)
    grace, ada = visitor(link), visitor(link)
    action = waiting_page(grace)
    with stream_of(grace) as naming:  # asked before a name: one answer, whole; no connection held
        assert "Content-Length" in naming.headers and list(events(naming)) == [{"state": "naming"}]
    assert ask(grace, action, "Grace").json() == {"state": "waiting"}
    assert ask(ada, waiting_page(ada), "Ada").json() == {"state": "waiting"}

    streams = [stream_of(grace) for _ in range(Limits().per_reader)]
    try:
        heard = [events(stream) for stream in streams]
        assert all("Content-Length" not in stream.headers for stream in streams)
        assert [next(each) for each in heard] == [{"state": "waiting", "name": "Grace (name they gave)"}] * len(heard)
        with stream_of(grace) as one_too_many:  # one browser holds as many connections as a reader, no more
            assert one_too_many.status_code == 429
        assert notebook.execute("%share admit Grace")["stdout"].startswith("Grace is let in")
        for each in heard:  # pushed: nothing else would make a stream speak again before its keep-alive
            assert next(each) == {"state": "admitted", "go": "/lab/tree/shared.ipynb"}
            assert next(each, None) is None
    finally:
        for stream in streams:
            stream.close()
    assert state(grace) == {"state": "admitted", "go": "/lab/tree/shared.ipynb"}

    with stream_of(ada) as waiting:
        heard = events(waiting)
        assert next(heard)["state"] == "waiting"
        notebook.run("%share stop")
        assert next(heard) == ENDED and next(heard, None) is None
