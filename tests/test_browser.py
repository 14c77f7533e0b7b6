"""The widget as people see it, in a real browser: Debian's chromium driven by Playwright.

The owner works in JupyterLab (dark theme) or Notebook 7 on the server directly; the visitor is a second browser
whose resolver maps the stand-in's public names to loopback, and who meets the free plan's warning page first.
Screenshots land in tests/screenshots/ (or $SHARE_MAGIC_SCREENSHOTS) for people to look at.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from harness import CHROMIUM, CHROMIUM_ARGS, VISITOR_ARGS, connect_kernel, share_processes, wait_for

SCREENSHOTS = Path(os.environ.get("SHARE_MAGIC_SCREENSHOTS", Path(__file__).parent / "screenshots"))

if not os.path.exists(CHROMIUM):  # CI installs it: there, a missing browser is a failure, not a skip
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    pytest.skip(f"browser tests need Debian's chromium at {CHROMIUM}", allow_module_level=True)


def visit(browser, link: str, **context):
    """A visitor's new page on ``link``, past the free plan's warning page."""
    page = browser.new_context(ignore_https_errors=True, **context).new_page()
    page.goto(link)
    page.get_by_role("button", name="Visit Site").click()
    return page


@pytest.fixture
def browsers(sandbox):
    """The owner's and the visitor's browsers (the stand-in shows browsers the free plan's warning page first)."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        owner = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        visitor = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        try:
            yield owner, visitor
        finally:
            owner.close()
            visitor.close()


@pytest.fixture
def beside():
    """Connect to a kernel beside the browser, as another front-end: ``beside(server, kernel_id)``; what runs there
    never shows in the browser's notebook. Closed at teardown."""
    clients = []

    def connect(server, kernel_id: str):
        clients.append(connect_kernel(server, kernel_id))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


def run_cell(page, code: str) -> None:
    """Type code into the last cell and run it, as a person does."""
    page.locator(".jp-Notebook .jp-Cell").last.locator(".cm-content").click()
    page.keyboard.type(code)
    page.keyboard.press("Shift+Enter")


def wait_for_kernel(page) -> None:
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)


def share_from(page, code: str = "%load_ext share_magic\n%share"):
    """Run %share in the page's notebook; return the widget's output area once the link shows."""
    run_cell(page, code)
    output = page.locator(".jp-OutputArea-output:has(a.share-magic-link)")
    output.wait_for(timeout=60_000)
    return output


def invite_from(widget, name: str):
    """Invite someone with the widget's field and button; return their row once it shows."""
    widget.locator(".share-magic-people input").fill(name)
    widget.get_by_role("button", name="Invite").click()
    row = widget.locator(f".share-magic-people .widget-hbox:has(.share-magic-person:text-is('{name}'))")
    row.wait_for(timeout=20_000)
    row.get_by_role("button", name="Copy").wait_for(timeout=20_000)  # drawn once the kernel answers with the link
    assert "invited, not connected" in row.inner_text()
    return row


def test_jupyterlab_owner_and_visitor(jupyter, browsers) -> None:
    owner_browser, visitor_browser = browsers
    server = jupyter(app="jupyterlab")
    server.api("PUT", "lab/api/settings/@jupyterlab/apputils-extension:themes",
               data=json.dumps({"raw": json.dumps({"theme": "JupyterLab Dark"})})).raise_for_status()
    server.new_notebook("shared.ipynb")

    context = owner_browser.new_context(viewport={"width": 1280, "height": 860})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    owner = context.new_page()
    owner.goto(f"{server.url}lab/tree/shared.ipynb?token={server.token}")
    wait_for_kernel(owner)
    widget = share_from(owner)

    link = widget.locator("a.share-magic-link").get_attribute("href")
    assert link.startswith("https://") and "/lab/tree/shared.ipynb?share_key=" in link
    assert server.token not in widget.inner_html()
    stop = widget.get_by_role("button", name="Stop")
    copy = widget.get_by_role("button", name="Copy")
    assert stop.is_visible() and copy.is_visible()
    widget.locator("svg").first.wait_for(timeout=20_000)  # the QR code (drawn once the kernel answers)
    assert "full control of this server" in widget.inner_text() and "Visit Site" in widget.inner_text()
    collaborating = server.api("GET", "api/collaboration/session/probe").status_code == 405  # a test extra
    assert ("jupyter-collaboration is not installed" in widget.inner_text()) is not collaborating
    # Theme colours, not hard-coded ones: the muted text takes the dark theme's --jp-ui-font-color2.
    muted, themed = owner.evaluate("""() => {
        const note = document.querySelector('.share-magic div[style*="--jp-ui-font-color2"]');
        const probe = document.createElement('span');
        probe.style.color = 'var(--jp-ui-font-color2)';
        document.body.appendChild(probe);
        return [getComputedStyle(note).color, getComputedStyle(probe).color];
    }""")
    assert muted == themed
    copy.click()
    wait_for(lambda: owner.evaluate("navigator.clipboard.readText()") == link, 5, "the link in the clipboard")
    owner.screenshot(path=SCREENSHOTS / "lab-owner-shared-dark.png")

    # The visitor: warning page, then the notebook; the kernel connects and a cell runs.
    guest = visitor_browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
    page = guest.new_page()
    page.goto(link)
    page.get_by_role("button", name="Visit Site").click()
    wait_for_kernel(page)
    assert "share_key" not in page.url  # the key does not stay in the address bar
    run_cell(page, "print('visitor says', 6 * 7)")
    page.wait_for_selector(".jp-OutputArea-output:has-text('visitor says 42')", timeout=60_000)
    # The owner's files (in the file browser; jupyter-collaboration lists open files of collaborators too)
    page.locator(".jp-DirListing-item[data-isdir]:has-text('shared.ipynb')").wait_for(timeout=20_000)
    page.screenshot(path=SCREENSHOTS / "lab-visitor-ran-a-cell.png")
    wait_for(lambda: "1 visitor connected" in widget.inner_text(), 15, "the owner's widget to count the visitor")
    owner.screenshot(path=SCREENSHOTS / "lab-owner-one-visitor.png")
    widget.screenshot(path=SCREENSHOTS / "widget-one-visitor.png")  # the README's picture (docs/widget.png)

    # A personal link: invited from the widget, Ada gets in; revoked from her row, she is out and nobody else is.
    row = invite_from(widget, "Ada")
    ada = visitor_browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860}).new_page()
    ada.goto(row.locator("button.share-magic-copy").get_attribute("data-link"))
    ada.get_by_role("button", name="Visit Site").click()
    wait_for_kernel(ada)
    row.locator("text=connected since").wait_for(timeout=20_000)
    wait_for(lambda: "2 visitors connected" in widget.inner_text(), 15, "the owner's widget to count Ada")
    owner.screenshot(path=SCREENSHOTS / "lab-owner-people-dark.png")
    row.get_by_role("button", name="Revoke").click()
    widget.locator(".share-magic-people :text('revoked at')").wait_for(timeout=20_000)
    assert row.get_by_role("button", name="Revoke").count() == 0
    assert ada.evaluate("fetch(location.href).then(r => r.status)") == 403
    ada.locator(".jp-Notebook-ExecutionIndicator[data-status='disconnected'], .jp-Dialog").first.wait_for(
        timeout=30_000)  # her open kernel connection was cut
    ada.screenshot(path=SCREENSHOTS / "lab-revoked-visitor.png")
    run_cell(page, "print('still', 'here')")  # the other visitor notices nothing
    page.wait_for_selector(".jp-OutputArea-output:has-text('still here')", timeout=60_000)
    owner.screenshot(path=SCREENSHOTS / "lab-owner-revoked-dark.png")

    # Stop: the widget says so, the visitor loses access.
    stop.click()
    stopped = owner.locator(".jp-OutputArea-output:has-text('Share stopped')")
    stopped.wait_for(timeout=20_000)
    assert stopped.locator("a").count() == 0 and stopped.get_by_role("button", name="Stop").count() == 0
    owner.screenshot(path=SCREENSHOTS / "lab-owner-stopped.png")
    wait_for(lambda: not share_processes(), 10, "the share to end")
    reached = page.evaluate("fetch(location.href).then(r => r.status).catch(() => 'unreachable')")
    assert reached == "unreachable"


def test_notebook7_owner_flow(jupyter, browsers) -> None:
    owner_browser, visitor_browser = browsers
    server = jupyter(app="notebook")
    server.new_notebook("shared.ipynb")
    owner = owner_browser.new_page(viewport={"width": 1280, "height": 860})
    owner.goto(f"{server.url}notebooks/shared.ipynb?token={server.token}")
    wait_for_kernel(owner)
    widget = share_from(owner)
    link = widget.locator("a.share-magic-link").get_attribute("href")
    assert "/notebooks/shared.ipynb?share_key=" in link  # the owner's UI, not Lab
    assert widget.get_by_role("button", name="Stop").is_visible()
    invite_from(widget, "Grace Hopper")
    owner.screenshot(path=SCREENSHOTS / "notebook7-owner-shared.png")

    page = visitor_browser.new_context(ignore_https_errors=True).new_page()
    page.goto(link)
    page.get_by_role("button", name="Visit Site").click()
    wait_for_kernel(page)
    run_cell(page, "print('hello from notebook 7')")
    page.wait_for_selector(".jp-OutputArea-output:has-text('hello from notebook 7')", timeout=60_000)
    page.screenshot(path=SCREENSHOTS / "notebook7-visitor-ran-a-cell.png")

    widget.get_by_role("button", name="Stop").click()
    owner.locator(".jp-OutputArea-output:has-text('Share stopped')").wait_for(timeout=20_000)
    owner.screenshot(path=SCREENSHOTS / "notebook7-owner-stopped.png")


def test_the_saved_notebook_holds_no_key_even_with_widget_state(jupyter, browsers, beside) -> None:
    """The owner shares, adds a view link and invites Ada in the notebook itself, sees and copies every link in the
    live widget, then saves, with JupyterLab saving every widget model's state too: the file keeps no key."""
    owner_browser, _ = browsers
    server = jupyter(app="jupyterlab")
    server.api("PUT", "lab/api/settings/@jupyter-widgets/jupyterlab-manager:plugin",
               data=json.dumps({"raw": json.dumps({"saveState": True})})).raise_for_status()
    kernel_id = server.new_notebook("shared.ipynb")
    context = owner_browser.new_context(viewport={"width": 1280, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    owner = context.new_page()
    owner.goto(f"{server.url}lab/tree/shared.ipynb?token={server.token}")
    wait_for_kernel(owner)
    widget = share_from(owner).first  # %share --view shows the share again below
    run_cell(owner, "%share --view")
    widget.locator("a.share-magic-view-link").wait_for(timeout=60_000)
    run_cell(owner, "%share invite Ada")
    row = widget.locator(".share-magic-people .widget-hbox:has(.share-magic-person:text-is('Ada'))")
    row.wait_for(timeout=60_000)
    wait_for_kernel(owner)

    links = json.loads(beside(server, kernel_id).run(
        "import json, share_magic\ns = share_magic.current()\n"
        "print(json.dumps({'edit': s.link, 'view': s.view_link, 'Ada': s.people['Ada'].link}))"))
    keys = {name: link.split("share_key=", 1)[1] for name, link in links.items()}
    assert len(set(keys.values())) == 3 and all(keys.values())

    # The live widget shows, copies and encodes every link.
    assert widget.locator("a.share-magic-link").get_attribute("href") == links["edit"]
    assert widget.locator("a.share-magic-view-link").get_attribute("href") == links["view"]
    assert widget.locator(".share-magic-qr svg").is_visible()
    copies = {"edit": widget.locator(".share-magic-copy").first,
              "view": widget.locator(".share-magic-live-link:has(a.share-magic-view-link) .share-magic-copy"),
              "Ada": row.locator(".share-magic-copy")}
    for name, button in copies.items():
        button.click()
        wait_for(lambda name=name: owner.evaluate("navigator.clipboard.readText()") == links[name], 5,
                 f"the {name} link in the clipboard")
    owner.screenshot(path=SCREENSHOTS / "lab-owner-all-links.png")

    saved = server.root / "shared.ipynb"
    owner.locator(".jp-Notebook").click()
    owner.keyboard.press("Control+s")
    wait_for(lambda: "Ada is invited" in saved.read_text() and "widget-state" in saved.read_text(), 30,
             "the notebook, with its widgets' state, to be saved")
    text = saved.read_text()
    assert not [name for name, key in keys.items() if key in text], "a live key in the saved notebook"
    notebook = json.loads(text)
    models = notebook["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(model["model_name"] == "AnyModel" for model in models.values())  # the live links' state was saved
    outputs = [output for cell in notebook["cells"] for output in cell.get("outputs", [])
               if output["output_type"] != "stream"]
    assert outputs and all(output["metadata"] == {"share_magic": {"output": "share"}} for output in outputs)
