"""%share --view end to end: a read-only, live view of one notebook that reaches nothing else."""
from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib

import pytest
import websocket
from harness import share_links, share_processes, wait_for
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
            assert "\\sum_i x_i" in page.content()  # the math, for MathJax to typeset where it can load
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
    fetches = server.log_path.read_text().count("GET /api/contents/shown.ipynb?content=1")
    assert fetches == 2  # one per saved version, for six readers


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
