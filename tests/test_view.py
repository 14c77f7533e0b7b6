"""%share --view end to end: a read-only, live view of one notebook that reaches nothing else."""
from __future__ import annotations

import base64
import json
import os
import struct
import uuid
import zlib
from pathlib import Path

import pytest
import websocket
from harness import AUTHTOKEN, edge_meter, share_links, share_processes, wait_for
from test_browser import CHROMIUM, SCREENSHOTS, VISITOR_ARGS, visit
from test_failures import assert_one_calm_line

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def png(width: int, height: int, rgb: tuple[int, int, int]) -> str:
    """A small solid PNG, base64-encoded, as a notebook keeps a figure."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return base64.b64encode(data).decode()


def notebook(*extra_cells: dict) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": KERNELSPEC}, "cells": [
        {"cell_type": "markdown", "id": "m1", "metadata": {},
         "source": "# Quarterly results\n\nThe total is $\\sum_i x_i$, and **bold** matters."},
        {"cell_type": "code", "id": "c1", "metadata": {}, "execution_count": 1,
         "source": "print('hello from the stream')",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "hello from the stream\n"}]},
        {"cell_type": "code", "id": "c2", "metadata": {}, "execution_count": 2, "source": "table()",
         "outputs": [{"output_type": "display_data", "metadata": {}, "data": {
             "text/html": "<table class='results-table'><tr><td>html output cell</td></tr></table>"
                          "<script>window.fromTheNotebook = 1</script>",
             "text/plain": "<table>"}}]},
        {"cell_type": "code", "id": "c3", "metadata": {}, "execution_count": 3, "source": "plot()",
         "outputs": [{"output_type": "display_data", "metadata": {}, "data": {
             "image/png": png(120, 60, (200, 40, 40)), "text/plain": "<Figure>"}}]},
        *extra_cells,
    ]}


@pytest.fixture
def viewed(jupyter, owner):
    """A server with shown.ipynb (and another notebook), the owner's kernel on shown.ipynb, and a view share."""
    server = jupyter(log_requests=True)
    kernel = owner(server, "shown.ipynb")
    (server.root / "shown.ipynb").write_text(json.dumps(notebook()))
    (server.root / "secret.ipynb").write_text(json.dumps(notebook(
        {"cell_type": "markdown", "id": "s1", "metadata": {}, "source": "SECRET-NOTEBOOK-CONTENT"})))
    result = kernel.execute("%load_ext share_magic\n%share --view")
    assert result["error"] is None and "Error" not in result["stderr"], result
    assert "Edit link" not in result["text"] and "View-only link" in result["text"]
    assert set(share_links(kernel)) == {"view"}
    return server, kernel, share_links(kernel)["view"]


def save(server, *extra_cells: dict) -> None:
    """The owner saves the notebook, as JupyterLab does."""
    server.api("PUT", "api/contents/shown.ipynb",
               json={"type": "notebook", "content": notebook(*extra_cells)}).raise_for_status()


def test_the_view_in_a_browser_shows_the_notebook_and_follows_saves(viewed) -> None:
    from playwright.sync_api import sync_playwright

    server, _, link = viewed
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        try:
            page = visit(browser, link, viewport={"width": 1100, "height": 900})
            page.get_by_role("heading", name="Quarterly results").wait_for(timeout=30_000)
            assert "share_key" not in page.url
            text = page.inner_text("body")
            for shown in ("bold", "print('hello from the stream')", "hello from the stream", "html output cell",
                          "view only", "saved at", "shown.ipynb"):
                assert shown in text, shown
            assert page.locator("#share-magic-notebook math").count() >= 1  # the math, as MathML
            assert page.locator("table.results-table").is_visible()
            image = page.locator("img").first
            assert image.is_visible() and image.evaluate("i => i.naturalWidth") == 120
            assert page.evaluate("window.fromTheNotebook") is None  # a notebook's scripts never run in a view
            page.screenshot(path=SCREENSHOTS / "view-light.png", full_page=True)

            # A save shows up in the open page: same page (no reload), scroll position kept.
            page.evaluate("window.samePage = 42; window.scrollTo(0, 120)")
            scrolled = page.evaluate("window.scrollY")
            save(server, {"cell_type": "markdown", "id": "m2", "metadata": {}, "source": "## Added after a save"})
            page.get_by_role("heading", name="Added after a save").wait_for(timeout=20_000)
            assert page.evaluate("window.samePage") == 42 and page.evaluate("window.scrollY") == scrolled

            light = page.evaluate("getComputedStyle(document.body).backgroundColor")
            page.emulate_media(color_scheme="dark")
            dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert light != dark
            page.locator("body[data-jp-theme-light='false']").wait_for(state="attached", timeout=10_000)
            page.screenshot(path=SCREENSHOTS / "view-dark.png", full_page=True)

            phone = visit(browser, link, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            phone.get_by_role("heading", name="Added after a save").wait_for(timeout=30_000)
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # no sideways scrolling
            phone.screenshot(path=SCREENSHOTS / "view-phone.png", full_page=True)
        finally:
            browser.close()


def test_a_view_link_reaches_nothing_but_its_notebook(viewed, visitor, owner) -> None:
    server, kernel, link = viewed
    reader = visitor(link)
    page = reader.get(link)
    assert page.status_code == 200 and "Quarterly results" in page.text and "SECRET-NOTEBOOK-CONTENT" not in page.text
    assert server.token not in page.text
    other = owner(server, "other.ipynb")  # a kernel the reader must not reach
    view = page.url.split("://", 1)[1].split("/", 1)[1]
    probes = [
        ("GET", "/api"), ("GET", "/api/contents"), ("GET", "/api/contents/secret.ipynb"), ("GET", "/api/kernels"),
        ("GET", "/api/sessions"), ("GET", "/api/terminals"), ("POST", "/api/kernels"), ("GET", "/lab"),
        ("GET", "/tree"), ("GET", "/login"), ("GET", "/files/shown.ipynb"), ("GET", "/files/secret.ipynb"),
        ("GET", "/static/favicon.ico"), ("GET", "/nbconvert/html/secret.ipynb"),
        ("GET", f"/{view}/../../api/contents"), ("GET", f"/{view}/..%2F..%2Fapi%2Fcontents"),
        ("GET", "/share_magic/view/%2e%2e/%2e%2e/api/contents"), ("GET", f"/{view}?path=secret.ipynb"),
        ("GET", f"/{view}/events/../../../api/contents"), ("POST", f"/{view}"), ("PUT", "/api/contents/shown.ipynb"),
        ("GET", "/api/contents?token=" + server.token),
    ]
    markers = []
    for number, (method, path) in enumerate(probes):
        marker = f"view-probe{number}x{uuid.uuid4().hex[:8]}"
        markers.append(marker)
        answer = reader.http.request(method, reader.absolute(path + ("&" if "?" in path else "?") + f"probe={marker}"),
                                     headers={"Authorization": f"token {server.token}", "Accept": "*/*"},
                                     timeout=20, allow_redirects=False)
        assert "Server" not in answer.headers, (method, path)  # not tornado's: the gateway's own answer
        assert "SECRET-NOTEBOOK-CONTENT" not in answer.text, (method, path)
        if path.startswith(f"/{view}?"):
            assert answer.status_code == 200 and "Quarterly results" in answer.text  # the query picks nothing
        else:
            assert answer.status_code in (404, 405), (method, path, answer.status_code)
    for path in (f"/api/kernels/{other.kernel_id}/channels", f"/api/kernels/{kernel.kernel_id}/channels",
                 "/api/events/subscribe", "/terminals/websocket/1"):
        marker = f"view-ws{len(markers)}x{uuid.uuid4().hex[:8]}"
        markers.append(marker)
        with pytest.raises(websocket.WebSocketBadStatusException):
            reader.websocket(f"{path}?probe={marker}")

    # An edit visitor's request shows in the server's log; once it does, any earlier probe would have too.
    server.api("GET", f"api/status?probe=sentinel-{markers[0]}")
    wait_for(lambda: server.saw(f"sentinel-{markers[0]}"), 10, "the server to log a request")
    assert [marker for marker in markers if server.saw(f"probe={marker}")] == []


def test_one_render_per_saved_version_however_many_read(viewed, visitor) -> None:
    server, _, link = viewed
    readers = [visitor(link) for _ in range(6)]
    for reader in readers:
        assert "Quarterly results" in reader.get(link).text
    save(server, {"cell_type": "markdown", "id": "m2", "metadata": {}, "source": "## Second version"})
    wait_for(lambda: all("Second version" in reader.get(reader.link.split("?")[0]).text for reader in readers), 20,
             "every reader to get the second version")
    # The view reads the notebook's file itself, never its content through Jupyter: a read landing in the middle of
    # a save makes Jupyter swap the half-written file for its backup and fail the save. (One render per saved
    # version, however many read, is test_a_save_renders_only_the_cells_that_changed.)
    assert "GET /api/contents/shown.ipynb?content=1" not in server.log_path.read_text()


def test_edit_and_view_links_side_by_side(jupyter, owner, visitor) -> None:
    server = jupyter()
    kernel = owner(server, "shown.ipynb")
    (server.root / "shown.ipynb").write_text(json.dumps(notebook()))
    kernel.run("%load_ext share_magic\n%share")
    edit = share_links(kernel)["edit"]
    result = kernel.execute("%share --view")
    both = result["text"]
    view = share_links(kernel)["view"]
    shown = "".join(bundle.get("text/html", "") for bundle in result["bundles"])
    assert "Edit link" in shown and "View-only link" in shown
    assert "Edit link" in both and "View-only link" in both and view != edit
    status = kernel.run("%share status")
    assert "Edit link" in status and "View-only link" in status
    kernel.run("%share")
    assert share_links(kernel) == {"edit": edit, "view": view}  # again: the same links
    editor, reader = visitor(edit), visitor(view)
    assert editor.get(edit).status_code == 200 and editor.get("/api/contents").status_code == 200
    assert "Quarterly results" in reader.get(view).text and reader.get("/api/contents").status_code == 404
    kernel.run("%share stop")
    wait_for(lambda: not share_processes(), 10, "the share to end")
    assert not editor.reaches_jupyter() and not reader.reaches_jupyter(reader.link.split("?")[0])


def test_a_view_needs_a_notebook(jupyter, plain_kernel) -> None:
    server = jupyter()
    result = plain_kernel.execute(f"%load_ext share_magic\n%share --view --port {server.port}")
    assert_one_calm_line(result, "has no notebook", "nothing to show")
    assert not share_processes()


def test_the_kernel_loads_no_code_that_serves_visitors(viewed) -> None:
    """The helper serves the view; the kernel that shows the share is a thin client of it."""
    _, kernel, _ = viewed
    loaded = json.loads(kernel.run(
        "import json, sys\n"
        "mine = [m.__file__ for n, m in list(sys.modules.items()) if n.split('.')[0] == 'share_magic' and "
        "getattr(m, '__file__', None)]\n"
        "print(json.dumps({'lines': sum(len(open(f).readlines()) for f in mine), 'helper': "
        "[n for n in sys.modules if n.startswith('share_magic.helper')], 'nbconvert': 'nbconvert' in sys.modules}))"))
    assert loaded["helper"] == [] and not loaded["nbconvert"]
    # was 3,224 before the kernel and the helper had folders of their own; 2,100 before the owner's side of the lobby
    # and the trail (admit, deny, who waits, last actions: none of it serves visitors); ~2,360 after the agent's
    # download progress; 2,426 with the live view's kernel side (naming each cell run to the helper, kernel/cells.py:
    # the helper reads the runs themselves); 2,442 after the trail-truth merge; 1,994 once the people, their panel,
    # the commands about them and the agent's download progress load only when a share needs them
    assert loaded["lines"] <= 2000, loaded


def key_of(link: str) -> str:
    return link.split("share_key=", 1)[1]


def first_event(reader, path: str) -> str:
    """The first event the view's update stream sends ``reader`` on ``path`` (with its query), as raw text."""
    with reader.get(path, stream=True, headers={"Accept": "text/event-stream"}) as answer:
        received = b""
        while data := answer.raw.read1(65536, decode_content=True):  # what has arrived, not a full buffer
            received += data
            for event in received.decode(errors="replace").split("\n\n")[:-1]:
                if "\ndata:" in "\n" + event:
                    return event
    raise AssertionError("the stream ended before its first event")


def test_no_key_of_the_share_reaches_a_view_reader(viewed, visitor) -> None:
    """The owner's notebook holds every link of the share (printed by cells, in its own marked outputs, in widget
    state, attachments, metadata), live, revoked or not: the view shows none of them, and no link on it opens
    Jupyter."""
    from playwright.sync_api import sync_playwright

    server, kernel, view = viewed
    links = json.loads(kernel.run(
        "import json, share_magic\n%share\n%share invite ada\n"
        "s = share_magic.current()\nbob = s.invite('bob')\ns.revoke('bob')\n"
        "print(json.dumps({'edit': s.link, 'view': s.view_link, 'ada': s.invite('ada'), 'bob': bob}))"
    ).splitlines()[-1])
    every = list(links.values())
    keys = [key_of(link) for link in [*every, view]] + [server.token]
    text = "\n".join(every) + f"\ntoken={server.token}\n"
    attachment = base64.b64encode(text.encode()).decode()
    cells = [
        {"cell_type": "markdown", "id": "k1", "metadata": {"note": links["edit"]}, "attachments": {
            "links.txt": {"text/plain": attachment}},
         "source": f"KEPT-MARKDOWN [edit]({links['edit']}) [view]({links['view']}) [ada]({links['ada']}) "
                   f"token {server.token}"},
        {"cell_type": "code", "id": "k2", "metadata": {}, "execution_count": 5,
         "source": "print(share_magic.current().link, share_magic.current().view_link)", "outputs": [
             {"output_type": "stream", "name": "stdout", "text": "KEPT-STREAM " + text},
             {"output_type": "display_data", "metadata": {}, "data": {
                 "text/html": "KEPT-HTML " + "".join(f'<a href="{link}">link {n}</a> ' for n, link in
                                                     enumerate(every)), "text/plain": text}},
             {"output_type": "display_data", "metadata": {"share_magic": {"role": "links"}}, "data": {
                 "text/html": "MARKED-OUTPUT", "text/plain": "MARKED-OUTPUT " + text}},
             {"output_type": "display_data", "metadata": {}, "data": {
                 "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                              "version_minor": 0},
                 "text/plain": "WIDGET-FALLBACK " + text}}]},
    ]
    content = notebook(*cells)
    content["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"abc": {
        "model_name": "HTMLModel", "state": {"value": text}}}, "version_major": 2, "version_minor": 0}}
    server.api("PUT", "api/contents/shown.ipynb", json={"type": "notebook", "content": content}).raise_for_status()

    # Revoking bob retired the view link the fixture made (an editor could have read it): readers use the new one.
    reader = visitor(links["view"])
    reader.get(links["view"])
    wait_for(lambda: "KEPT-MARKDOWN" in reader.get("/share_magic/view").text, 20, "the view to show the save")
    page_text = reader.get("/share_magic/view").text
    stream = first_event(reader, "/share_magic/view/events")
    for shown in (page_text, stream):
        assert "KEPT-STREAM" in shown and "KEPT-HTML" in shown
        assert "MARKED-OUTPUT" not in shown and "WIDGET-FALLBACK" not in shown
        assert [key for key in keys if key in shown] == []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        try:
            page = visit(browser, links["view"])
            page.locator("text=KEPT-HTML").wait_for(timeout=30_000)
            hrefs = page.evaluate("[...document.querySelectorAll('#share-magic-notebook a[href]')]"
                                  ".map(a => a.href).filter(h => h.includes('ngrok'))")
            assert len(hrefs) >= 6, hrefs
            # A person invited after the page opened, whose link a later save holds: not shown either.
            cy = key_of(kernel.run("print(share_magic.current().invite('cy'))").strip())
            save(server, *cells, {"cell_type": "markdown", "id": "k3", "metadata": {},
                                  "source": f"LATER-CELL [cy](https://x.example/?share_key={cy})"})
            page.locator("text=LATER-CELL").wait_for(timeout=20_000)
            assert cy not in page.content() and [key for key in keys if key in page.content()] == []
            for href in hrefs:
                tab = page.context.new_page()
                answer = tab.goto(href)
                assert answer is not None and "server" not in answer.headers, href  # the gateway's, not Jupyter's
                landed = tab.url.split("#")[0].split("?")[0]
                assert answer.status in (403, 404) or landed.endswith("/share_magic/view"), href
                tab.close()
        finally:
            browser.close()


HOSTILE_HTML = (
    '<script src="https://cdnjs.cloudflare.com/ajax/libs/angular.js/1.8.3/angular.min.js"></script>'
    '<div ng-app ng-csp id="angular-trick">{{ "ANGULAR" + "-RAN" }}</div>'
    '<meta http-equiv="refresh" content="0;url=https://elsewhere.example/landed">'
    '<base href="https://elsewhere.example/">'
    '<img src="https://tracker.example/pixel.gif?reader=1" alt="pixel">'
    '<form action="https://elsewhere.example/collect"><input name="q" value="x"></form>'
    '<a id="relative" href="relative/page">relative</a> HOSTILE-OUTPUT')


def test_a_notebooks_outputs_cannot_run_load_or_navigate(viewed) -> None:
    """An output loads AngularJS from the CDN the view once allowed, refreshes the page to another site, re-roots
    links, posts a form and carries a tracking pixel: none of it runs, loads or navigates; math is MathML."""
    from playwright.sync_api import sync_playwright

    server, _, link = viewed
    save(server, {"cell_type": "code", "id": "h1", "metadata": {}, "execution_count": 9, "source": "hostile()",
                  "outputs": [{"output_type": "display_data", "metadata": {},
                               "data": {"text/html": HOSTILE_HTML, "text/plain": "hostile"}}]})
    share_host = link.split("/")[2]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        try:
            context = browser.new_context(ignore_https_errors=True)
            # Chromium reports a request its policy refuses too, then fails it as "csp" (nothing left the
            # browser); every other ending means the request went out.
            went_out: list[str] = []
            context.on("requestfinished", lambda request: went_out.append(request.url))
            context.on("requestfailed", lambda request: request.failure == "csp" or went_out.append(request.url))
            # Were the CDN reachable, this is what it would serve: a script that marks the page.
            context.route("https://cdnjs.cloudflare.com/**", lambda route: route.fulfill(
                status=200, content_type="application/javascript", body="window.cdnScriptRan = 1;"))
            page = context.new_page()
            page.goto(link)
            with page.expect_response(lambda r: r.url.endswith("/share_magic/view") and r.status == 200) as shown:
                page.get_by_role("button", name="Visit Site").click()
            policy = shown.value.headers["content-security-policy"]
            page.locator("text=HOSTILE-OUTPUT").wait_for(timeout=30_000)
            page.wait_for_load_state("load")  # every image the page holds has been fetched or refused by now
            directives = dict((part.strip().split(" ", 1) + [""])[:2] for part in policy.split(";") if part.strip())
            assert directives["default-src"] == "'none'"
            assert "https:" not in policy and "http:" not in policy and "cdnjs" not in policy and "*" not in policy
            assert set(directives["img-src"].split()) <= {"data:", "'self'"}
            assert "'unsafe-inline'" not in directives["script-src"] and "'self'" not in directives["script-src"]
            assert page.evaluate("window.cdnScriptRan") is None and page.evaluate("window.angular") is None
            assert "ANGULAR-RAN" not in page.inner_text("#share-magic-notebook")
            assert page.evaluate("document.querySelectorAll('#share-magic-notebook meta, #share-magic-notebook base,"
                                 " #share-magic-notebook form, base').length") == 0
            assert page.evaluate("document.getElementById('relative').href").startswith(f"https://{share_host}/")
            assert page.locator("#share-magic-notebook math").count() >= 1
            assert page.url.split("#")[0].endswith("/share_magic/view")
            elsewhere = [url for url in went_out if not url.startswith(f"https://{share_host}/")]
            assert elsewhere == [], elsewhere
            context.close()
        finally:
            browser.close()


def test_a_markdown_image_embeds_only_an_image_file_of_the_notebooks_folder(viewed, visitor) -> None:
    server, _, link = viewed
    secret = "API_SECRET=do-not-show-1234567890"
    (server.root / "credentials.env").write_text(secret)
    (server.root / "fake.png").write_text(secret)  # an image by its name only
    (server.root / "logo.png").write_bytes(base64.b64decode(png(7, 5, (0, 90, 200))))
    (server.root.parent / "outside.png").write_bytes(base64.b64decode(png(9, 9, (0, 0, 0))))
    save(server, {"cell_type": "markdown", "id": "e1", "metadata": {},
                  "source": "EMBEDS ![c](credentials.env) ![f](fake.png) ![o](../outside.png) ![l](logo.png)\n\n"
                            '<img src="credentials.env" alt="html-c"> <img src="logo.png" alt="html-l">'})
    reader = visitor(link)
    reader.get(link)
    page = wait_for(lambda: (text := reader.get("/share_magic/view").text) and "EMBEDS" in text and text, 20,
                    "the save to show")
    encoded = base64.b64encode(secret.encode()).decode()
    for leaked in (secret, encoded, encoded[:24], base64.b64encode(b"_SECRET=do-not").decode()[4:20]):
        assert leaked not in page
    logo = base64.b64encode((server.root / "logo.png").read_bytes()).decode()
    assert page.count(f"data:image/png;base64,{logo}") == 2  # a real image beside the notebook is embedded
    assert base64.b64encode((server.root.parent / "outside.png").read_bytes()).decode() not in page


def noise_png(seed: int, side: int = 100) -> str:
    """A figure that does not compress (as a plot with detail does not), base64-encoded."""
    import random

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    noise = random.Random(seed)
    rows = b"".join(b"\x00" + bytes(noise.getrandbits(8) for _ in range(side * 3)) for _ in range(side))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b""))
    return base64.b64encode(data).decode()


def figures_notebook(title: str = "Forty figures") -> dict:
    """A notebook like the issue's: 40 figures, each beside its code and a line of text (about 1.6 MB)."""
    cells = [{"cell_type": "markdown", "id": "intro", "metadata": {},
              "source": f"# {title}\n\nEuler: $e^{{i\\pi}}+1=0$"}]
    for n in range(40):
        cells.append({"cell_type": "markdown", "id": f"text{n}", "metadata": {},
                      "source": f"Figure {n} shows run {n}."})
        cells.append({"cell_type": "code", "id": f"plot{n}", "metadata": {}, "execution_count": n + 1,
                      "source": f"plot(run={n})", "outputs": [{"output_type": "display_data", "metadata": {},
                                                              "data": {"image/png": noise_png(n),
                                                                       "text/plain": "<Figure>"}}]})
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": KERNELSPEC}, "cells": cells}


def order_of(page) -> list[str]:
    """The saved cells the page shows, in its order (live cells, such as the harness's own runs of %share, aside:
    tests/test_live_view.py is about those)."""
    cells = page.evaluate("[...document.getElementById('share-magic-notebook').children].map(e => e.dataset.cell)")
    return [cell for cell in cells if not cell.startswith("live:")]


def trusting_the_edge(link: str) -> list[str]:
    """Chromium's arguments for a reader whose browser trusts the stand-in edge's certificate, as a real reader's
    trusts ngrok's: Chromium keeps nothing in its cache from a site whose certificate it only ignores."""
    import hashlib
    import socket
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    host, port = link.split("/")[2].rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", int(port))) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return [*VISITOR_ARGS, "--ignore-certificate-errors-spki-list="
            + base64.b64encode(hashlib.sha256(spki).digest()).decode()]


def test_a_reader_pays_for_the_notebook_once_and_an_edit_costs_what_changed(jupyter, owner, sandbox) -> None:
    """Bytes at the stand-in's edge, as ngrok bills them, for a Chromium reader of a 40-figure notebook: the first
    load stays within 1.1 times the notebook file, a reload of the unchanged view within 50 kB, a one-line edit
    within 20 kB (the issue's "must")."""
    from playwright.sync_api import sync_playwright

    server = jupyter()
    kernel = owner(server, "shown.ipynb")
    content = figures_notebook()
    (server.root / "shown.ipynb").write_text(json.dumps(content))
    size = (server.root / "shown.ipynb").stat().st_size
    assert kernel.execute("%load_ext share_magic\n%share --view")["error"] is None
    link = share_links(kernel)["view"]
    state = sandbox["STANDIN_NGROK_STATE"]

    def billed() -> int:
        return edge_meter(state)["bytes_out"]

    def stream_opened(response) -> bool:
        return "/share_magic/view/events" in response.url

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=trusting_the_edge(link))
        try:
            page = browser.new_context().new_page()
            before = billed()
            page.goto(link)
            with page.expect_response(stream_opened, timeout=60_000):
                page.get_by_role("button", name="Visit Site").click()
            page.get_by_role("heading", name="Forty figures").wait_for(timeout=30_000)
            page.wait_for_load_state("load")
            first_load = billed() - before
            assert page.locator("img").count() == 40 and page.locator("math").count() == 1
            assert first_load <= 1.1 * size, (first_load, size)

            before = billed()
            with page.expect_response(stream_opened, timeout=60_000):
                page.reload()
            page.wait_for_load_state("load")
            reload = billed() - before
            assert page.locator("img").count() == 40
            assert reload <= 50_000, reload

            before = billed()
            content["cells"][41]["source"] = "Figure 20 shows run 20, EDITED ONE LINE."
            server.api("PUT", "api/contents/shown.ipynb",
                       json={"type": "notebook", "content": content}).raise_for_status()
            page.locator("text=EDITED ONE LINE").wait_for(timeout=20_000)
            edit = billed() - before
            assert edit <= 20_000, edit
            print(f"first load {first_load} B (notebook {size} B), reload {reload} B, one-line edit {edit} B")
        finally:
            browser.close()


def test_open_readers_follow_edits_new_deleted_and_moved_cells(viewed) -> None:
    """Each kind of change reaches two open readers in place: the cells they hold and did not change stay the
    same elements (nothing re-sent, nothing reloaded), in the notebook's order."""
    from playwright.sync_api import sync_playwright

    server, _, link = viewed
    cells = notebook()["cells"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        try:
            readers = [visit(browser, link) for _ in range(2)]
            for page in readers:
                page.get_by_role("heading", name="Quarterly results").wait_for(timeout=30_000)
                assert order_of(page) == ["m1", "c1", "c2", "c3"]
                page.evaluate("window.samePage = 1; document.querySelector('[data-cell=\"c3\"]').kept = 1")

            def saved(changed: list[dict], expected: list[str], shown: str) -> None:
                server.api("PUT", "api/contents/shown.ipynb", json={"type": "notebook", "content": {
                    **notebook(), "cells": changed}}).raise_for_status()
                for page in readers:  # polled from here: the page's policy forbids the eval wait_for_function uses
                    wait_for(lambda: order_of(page) == expected and shown in page.inner_text("body"), 20,  # noqa: B023
                             f"{expected} to show")
                    assert page.evaluate("window.samePage") == 1
                    assert page.evaluate("document.querySelector('[data-cell=\"c3\"]').kept") == 1

            edited = [cells[0], {**cells[1], "source": "print('EDITED IN PLACE')"}, cells[2], cells[3]]
            saved(edited, ["m1", "c1", "c2", "c3"], "EDITED IN PLACE")
            added = [edited[0], edited[1], {"cell_type": "markdown", "id": "n1", "metadata": {},
                                            "source": "A NEW CELL"}, edited[2], edited[3]]
            saved(added, ["m1", "c1", "n1", "c2", "c3"], "A NEW CELL")
            deleted = [cell for cell in added if cell["id"] != "c2"]
            saved(deleted, ["m1", "c1", "n1", "c3"], "A NEW CELL")
            assert "html output cell" not in readers[0].inner_text("body")
            moved = [deleted[3], deleted[0], deleted[1], deleted[2]]
            saved(moved, ["c3", "m1", "c1", "n1"], "EDITED IN PLACE")
            assert readers[1].locator("[data-cell='c3'] img").evaluate("i => i.naturalWidth") == 120
        finally:
            browser.close()


def events(reader, path: str, count: int, headers: dict | None = None):
    """Open the update stream and yield its events' (id, data) as they come, ``count`` at most."""
    with reader.get(path, stream=True, headers={"Accept": "text/event-stream", **(headers or {})}) as answer:
        received = b""
        while count and (data := answer.raw.read1(65536, decode_content=True)):
            received += data
            *complete, received = received.split(b"\n\n")
            for block in complete:
                fields = dict(line.split(": ", 1) for line in block.decode().splitlines()
                              if ": " in line and not line.startswith(":"))
                if "data" in fields and fields.get("event") == "notebook":  # the saved view's (not live cells)
                    yield fields.get("id"), json.loads(fields["data"])
                    count -= 1
                    if not count:
                        return


def test_the_stream_starts_from_the_readers_version_and_never_repeats(viewed, visitor) -> None:
    import re

    server, _, link = viewed
    reader = visitor(link)
    page = reader.get(link).text
    version = re.search(r'data-version="([^"]+)"', page).group(1)
    stream = events(reader, f"/share_magic/view/events?since={version}", 2)
    save(server, {"cell_type": "markdown", "id": "m2", "metadata": {}, "source": "FIRST CHANGE"})
    first_id, first = next(stream)
    assert "reset" not in first and list(first["cells"]) == ["m2"] and first["order"][-1] == "m2"
    stream.close()

    # Reconnecting as EventSource does (Last-Event-ID): only what came after, not the first change again.
    later = events(reader, f"/share_magic/view/events?since={version}", 1, {"Last-Event-ID": first_id})
    save(server, {"cell_type": "markdown", "id": "m2", "metadata": {}, "source": "FIRST CHANGE"},
         {"cell_type": "markdown", "id": "m3", "metadata": {}, "source": "SECOND CHANGE"})
    second_id, second = next(later)
    later.close()
    assert second_id != first_id and list(second["cells"]) == ["m3"] and "FIRST CHANGE" not in json.dumps(second)

    # A reader holding a version the view no longer knows (another share's page) gets a whole fresh copy.
    _, fresh = next(events(reader, "/share_magic/view/events?since=gone-1", 1))
    assert fresh["reset"] and fresh["order"] == ["m1", "c1", "c2", "c3", "m2", "m3"]
    assert "SECOND CHANGE" in json.dumps(fresh)


def test_a_save_renders_only_the_cells_that_changed(tmp_path) -> None:
    """The owner's CPU: one render per changed cell, none for the others (nbconvert runs in the helper)."""
    from share_magic.helper.view import NotebookView

    class Saved:
        name, folder = "shown.ipynb", str(tmp_path)

        def __init__(self) -> None:
            self.version_, self.content = "1", figures_notebook()

        def version(self) -> str:
            return self.version_

        def read(self) -> tuple[str, dict]:
            return self.version_, self.content

    source = Saved()
    view = NotebookView(source, "/", lambda: [])
    try:
        first = view.current()
        assert view.renders == len(source.content["cells"])
        source.content["cells"][5]["source"] = "one line changed"
        source.version_ = "2"
        second = view.current()
        assert view.renders == len(source.content["cells"]) + 1 and second.name != first.name
    finally:
        view.close()


# -- every secret the helper knows stays out of the view (issue 27, item 3) -------------------------------------

GIVEN_AUTHTOKEN = "2givenAuthtoken_fedcba9876543210"
CONFIG_AUTHTOKEN = "2configAuthtoken_0123456789fedcba"


def printed_cell(cell_id: str, marker: str, result: dict) -> dict:
    """A code cell as the notebook saves it, holding what the kernel printed (``result`` of KernelClient.execute)."""
    outputs = [{"output_type": "stream", "name": "stdout", "text": marker + "\n" + result["stdout"]}]
    outputs += [{"output_type": "execute_result", "execution_count": 7, "metadata": output["metadata"],
                 "data": output["data"]} for output in result["outputs"] if output["type"] == "execute_result"]
    return {"cell_type": "code", "id": cell_id, "metadata": {}, "execution_count": 7, "source": "%env",
            "outputs": outputs}


def assert_never_shown(server, reader, secrets: list[str], printed: dict) -> None:
    """A reader's page, update stream (from scratch, and after a later save) and stylesheet hold none of
    ``secrets``, though the saved notebook does (in ``printed``'s outputs, then in a later cell's)."""
    assert [secret for secret in secrets if secret in json.dumps(printed)] == secrets  # the test is real
    save(server, printed)
    wait_for(lambda: "PRINTED-CELL" in reader.get("/share_magic/view").text, 20, "the view to show the save")
    page = reader.get("/share_magic/view", headers={"Accept-Encoding": "identity"})
    version = page.text.split('data-version="', 1)[1].split('"', 1)[0]
    style = page.text.split('<link rel="stylesheet" href="', 1)[1].split('"', 1)[0]
    seen = [page.text, json.dumps(dict(page.headers)), first_event(reader, "/share_magic/view/events"),
            reader.get(style).text]
    later = {"cell_type": "code", "id": "later", "metadata": {}, "execution_count": 8, "source": "%env",
             "outputs": [{"output_type": "stream", "name": "stdout",
                          "text": "LATER-CELL " + " ".join(f"NGROK_AUTHTOKEN={secret}" for secret in secrets)}]}
    save(server, printed, later)
    wait_for(lambda: "LATER-CELL" in reader.get("/share_magic/view").text, 20, "the view to show the later save")
    seen += [reader.get("/share_magic/view").text, first_event(reader, f"/share_magic/view/events?since={version}")]
    assert "LATER-CELL" in seen[-1] and "PRINTED-CELL" in seen[0]
    assert [secret for secret in secrets if any(secret in text for text in seen)] == []
    assert [secret for secret in secrets if server.saw(secret)] == []  # nor in the log (the helper's goes there)


@pytest.mark.parametrize("source", ["environment", "config", "given"])
def test_the_view_never_shows_the_owners_ngrok_authtoken(jupyter, owner, visitor, monkeypatch, source: str) -> None:
    """The README's set-up puts NGROK_AUTHTOKEN in Jupyter's environment, and `%env NGROK_AUTHTOKEN` prints it into
    a saved output; or the authtoken is in ngrok's config file (where the widget's form saves it), printed from
    there; or %share was given one while the environment holds another. No reader sees any of them."""
    from share_magic.contract import ngrok_config_path

    if source == "config":
        monkeypatch.delenv("NGROK_AUTHTOKEN")
        path = ngrok_config_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"version": "3", "agent": {"authtoken": CONFIG_AUTHTOKEN}}, f)  # JSON is YAML
    server = jupyter()
    kernel = owner(server, "shown.ipynb")
    (server.root / "shown.ipynb").write_text(json.dumps(notebook()))
    if source == "config":
        printed, secrets = kernel.execute(f"print(open({ngrok_config_path()!r}).read())"), [CONFIG_AUTHTOKEN]
    else:
        printed, secrets = kernel.execute("%env NGROK_AUTHTOKEN"), [AUTHTOKEN]
    line = "%share --view"
    if source == "given":
        line += f" --authtoken {GIVEN_AUTHTOKEN}"
        printed["stdout"] += f"given {GIVEN_AUTHTOKEN}\n"
        secrets.append(GIVEN_AUTHTOKEN)
    result = kernel.execute(f"%load_ext share_magic\n{line}")
    assert result["error"] is None and "Error" not in result["stderr"], result
    reader = visitor(share_links(kernel)["view"])
    assert reader.get(reader.link).status_code == 200
    assert_never_shown(server, reader, secrets, printed_cell("printed", "PRINTED-CELL", printed))


def test_the_view_never_shows_the_sign_in_secret(jupyter, owner, visitor, sandbox) -> None:
    from test_signin import sign_in

    server = jupyter()
    kernel = owner(server, "shown.ipynb")
    (server.root / "shown.ipynb").write_text(json.dumps(notebook()))
    result = kernel.execute("%load_ext share_magic\n%share --view --sign-in github")
    assert result["error"] is None and "Error" not in result["stderr"], result
    policy = json.loads((Path(sandbox["STANDIN_NGROK_STATE"]) / "endpoints.jsonl").read_text().splitlines()[-1])
    actions = json.loads(policy["traffic_policy"])["on_http_request"][0]["actions"]
    secret = actions[1]["config"]["headers"]["x-share-magic-secret"]
    reader = visitor(share_links(kernel)["view"])
    assert sign_in(reader, "ada@example.com", "Ada").status_code == 200
    printed = {"stdout": f"x-share-magic-secret: {secret}\n", "outputs": []}
    assert_never_shown(server, reader, [secret], printed_cell("printed", "PRINTED-CELL", printed))
