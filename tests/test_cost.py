"""What visitors cost the owner's ngrok plan, counted at the stand-in's edge the way ngrok bills: compressed
responses, API calls carried over one websocket (the bridge), and the cost shown to the owner -- while JupyterLab
keeps working for the visitor: cells, saves, the file browser, terminals, a 50 MB upload and download."""
from __future__ import annotations

import base64
import gzip
import json
import os
import re

import pytest
import websocket
from harness import UNVERIFIED_TLS, edge_meter, share_links, wait_for
from test_browser import CHROMIUM, SCREENSHOTS, VISITOR_ARGS, run_cell, visit, wait_for_kernel

MB = 1024 * 1024


def shown_cost(text: str) -> tuple[int, float]:
    """The requests and megabytes %share status reports."""
    match = re.search(r"so far: ([\d,]+) requests, ([\d.]+) (MB|kB|bytes) sent", text)
    assert match, text
    scale = {"MB": 1e6, "kB": 1e3, "bytes": 1}[match.group(3)]
    return int(match.group(1).replace(",", "")), float(match.group(2)) * scale


def test_a_visitor_in_jupyterlab_costs_little_and_loses_nothing(jupyter, owner, sandbox) -> None:
    from playwright.sync_api import sync_playwright

    server = jupyter(app="jupyterlab", log_requests=True)
    notebook = owner(server)
    notebook.run("%load_ext share_magic\n%share")
    link = share_links(notebook)["edit"]
    (server.root / "big.bin").write_bytes(os.urandom(50 * MB))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        try:
            page = visit(browser, link, viewport={"width": 1280, "height": 860})
            wait_for_kernel(page)
            assert page.evaluate("typeof window.shareMagicBridge") == "object"

            # Idle: JupyterLab keeps polling, over the bridge; the edge sees no new request. The polls themselves
            # are what is waited for (in the server's log), not a clock.
            def polls() -> int:
                return server.log_path.read_text().count("GET /api/sessions")

            settled = polls() + 1
            wait_for(lambda: polls() >= settled, 60, "JupyterLab to poll once (its start-up is over)")
            before = edge_meter(sandbox["STANDIN_NGROK_STATE"])
            wait_for(lambda: polls() >= settled + 2, 60, "JupyterLab to poll twice more")
            after = edge_meter(sandbox["STANDIN_NGROK_STATE"])
            idle = after["recent"][len(after["recent"]) - (after["requests"] - before["requests"]):]
            polled = [line for line in idle if re.search(r" /(api/(sessions|kernels|contents|terminals)|lab/api/"
                                                         r"workspaces|lsp/status)(\?|/?$)", line)]
            assert polled == [], idle

            # Cells run and saves land.
            run_cell(page, "print('costs', 6 * 7)")
            page.wait_for_selector(".jp-OutputArea-output:has-text('costs 42')", timeout=60_000)
            page.keyboard.press("Control+s")
            wait_for(lambda: "costs 42" in (server.root / "shared.ipynb").read_text(), 30, "the save to land")

            # The file browser notices a file the owner just made.
            (server.root / "made-by-the-owner.txt").write_text("hello")
            page.locator(".jp-DirListing-item:has-text('made-by-the-owner.txt')").wait_for(timeout=30_000)

            # A terminal opens (File > New > Terminal) and runs a command.
            page.locator(".lm-MenuBar-itemLabel:text-is('File')").click()
            page.locator(".lm-Menu-itemLabel:text-is('New')").click()
            page.locator(".lm-Menu-itemLabel:text-is('Terminal')").click()
            page.locator(".jp-Terminal").wait_for(timeout=60_000)
            page.locator(".jp-Terminal").click()
            page.keyboard.type(f"echo terminal-$((6*7)) > {server.root}/from-the-terminal.txt\n")
            wait_for(lambda: (server.root / "from-the-terminal.txt").exists()
                     and (server.root / "from-the-terminal.txt").read_text() == "terminal-42\n", 30,
                     "the terminal's command to run")

            # A 50 MB download and upload.
            size = page.evaluate("fetch(document.baseURI.split('/lab')[0] + '/files/big.bin')"
                                 ".then(r => r.arrayBuffer()).then(b => b.byteLength)")
            assert size == 50 * MB
            upload = os.urandom(50 * MB)
            source = server.root.parent / "upload.bin"  # on the visitor's side: outside the server's folder
            source.write_bytes(upload)
            with page.expect_file_chooser() as chooser:
                page.locator(".jp-FileBrowser-toolbar button[data-command='filebrowser:upload'], "
                             ".jp-FileBrowser-toolbar .jp-id-upload").first.click()
            chooser.value.set_files(str(source))
            page.locator(".jp-Dialog").get_by_role("button", name="Upload").click()  # "Large file size warning"
            wait_for(lambda: (server.root / "upload.bin").exists()
                     and (server.root / "upload.bin").stat().st_size == len(upload), 120, "the 50 MB upload")
            assert (server.root / "upload.bin").read_bytes() == upload
            page.screenshot(path=SCREENSHOTS / "cost-visitor-after-everything.png")
            assert page.evaluate("navigator.serviceWorker.getRegistrations().then(r => r.length)") == 0

            # What %share status says the share cost is what the edge counted, within 25%.
            billed = edge_meter(sandbox["STANDIN_NGROK_STATE"])
            shown = wait_for(lambda: (status := notebook.run("%share status")) and shown_cost(status)[0] > 0
                             and status, 10, "the cost to show")
            requests_shown, bytes_shown = shown_cost(shown)
            assert abs(requests_shown - billed["requests"]) <= 0.25 * billed["requests"], (requests_shown, billed)
            assert abs(bytes_shown - billed["bytes_out"]) <= 0.25 * billed["bytes_out"], (bytes_shown, billed)
        finally:
            browser.close()


def test_the_bridge_carries_api_calls_as_the_session_it_was_opened_by(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    notebook.run("%load_ext share_magic\n%share")
    link = share_links(notebook)["edit"]
    guest = visitor(link)
    assert guest.get(link).status_code == 200
    bridge = guest.websocket("/share_magic/bridge")
    bridge.send(json.dumps({"id": 1, "method": "GET", "target": "/api/contents", "headers": [],
                            "cookie": f"_xsrf={guest.http.cookies.get('_xsrf', '')}", "referrer": link, "body": None}))
    answer = json.loads(bridge.recv())
    assert answer["id"] == 1 and answer["status"] == 200
    assert "shared.ipynb" in {item["name"] for item in json.loads(base64.b64decode(answer["body"]))["content"]}
    # A change needs the _xsrf token, as it would over HTTP: the bridge weakens none of Jupyter's checks.
    content = base64.b64encode(json.dumps({"type": "file", "format": "text", "content": "hi"}).encode()).decode()
    for headers, expected in (([], (403, 404)), ([["X-XSRFToken", guest.http.cookies.get("_xsrf", "")]], (201,))):
        bridge.send(json.dumps({"id": 2, "method": "PUT", "target": f"/api/contents/bridged-{len(headers)}.txt",
                                "headers": headers, "cookie": f"_xsrf={guest.http.cookies.get('_xsrf', '')}",
                                "referrer": link, "body": content}))
        assert json.loads(bridge.recv())["status"] in expected
    assert (server.root / "bridged-1.txt").read_text() == "hi" and not (server.root / "bridged-0.txt").exists()

    # Another site's page cannot open the visitor's bridge (nor could it open Jupyter's websockets).
    with pytest.raises(websocket.WebSocketBadStatusException) as foreign:
        guest.websocket("/share_magic/bridge", origin="https://attacker.example")
    assert foreign.value.status_code == 403

    # No session, no bridge.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection("wss://" + link.split("/")[2] + "/share_magic/bridge", sslopt=UNVERIFIED_TLS)
    assert refused.value.status_code == 403


def test_text_is_compressed_for_visitors_and_binaries_are_not(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    notebook.run("%load_ext share_magic\n%share")
    link = share_links(notebook)["edit"]
    text = ("every line of this file says the same thing, as logs and CSVs do\n" * 2000).encode()
    (server.root / "big.txt").write_bytes(text)
    binary = os.urandom(300_000)
    (server.root / "noise.bin").write_bytes(binary)
    guest = visitor(link)
    guest.get(link)
    guest.http.headers["Referer"] = link.split("?")[0]  # as a browser sends it (Jupyter's /files/ wants one)
    raw = guest.http.get(guest.absolute("/files/big.txt"), stream=True, timeout=20,
                         headers={"Accept-Encoding": "gzip"})
    body = raw.raw.read(decode_content=False)
    assert raw.headers["Content-Encoding"] == "gzip" and len(body) < len(text) / 10
    assert gzip.decompress(body) == text
    plain = guest.http.get(guest.absolute("/files/big.txt"), headers={"Accept-Encoding": "identity"}, timeout=20)
    assert "Content-Encoding" not in plain.headers and plain.content == text
    noise = guest.http.get(guest.absolute("/files/noise.bin"), headers={"Accept-Encoding": "gzip"}, timeout=20)
    assert "Content-Encoding" not in noise.headers and noise.content == binary
    page = guest.http.get(link.split("?")[0], timeout=20, headers={"Accept-Encoding": "gzip"})
    assert page.headers["Content-Encoding"] == "gzip" and "shareMagicBridge" in page.text

