"""The lobby in real browsers through the stand-in edge: a newcomer with the anyone-link waits on the gateway's page,
reaches nothing, is admitted from the owner's widget and goes on into JupyterLab by itself; another is turned away
and stays out; a personal link goes straight in; the trail names who ran which code and wrote which file, also after
%share stop. Screenshots: tests/screenshots/lobby-waiting-page.png and widget-someone-waiting.png."""
from __future__ import annotations

import re

from harness import wait_for
from test_browser import SCREENSHOTS, beside, browsers, invite_from, run_cell, share_from, wait_for_kernel  # noqa: F401

__all__ = ["beside", "browsers"]  # fixtures


def newcomer(browser, link: str):
    """A visitor's browser on the share's own link, past the free plan's warning page: the waiting page."""
    page = browser.new_context(ignore_https_errors=True, viewport={"width": 1000, "height": 700}).new_page()
    page.goto(link)
    page.get_by_role("button", name="Visit Site").click()
    page.get_by_role("heading", name="Ask to join this notebook").wait_for(timeout=20_000)
    return page


def reached(page, path: str) -> int:
    return page.evaluate("path => fetch(path).then(r => r.status)", path)


def test_a_newcomer_waits_is_admitted_and_goes_on_by_itself(jupyter, browsers, beside) -> None:
    owner_browser, visitor_browser = browsers
    server = jupyter(app="jupyterlab")
    kernel_id = server.new_notebook("shared.ipynb")
    owner = owner_browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    owner.goto(f"{server.url}lab/tree/shared.ipynb?token={server.token}")
    wait_for_kernel(owner)
    widget = share_from(owner, "%load_ext share_magic\n%share --approve")
    link = widget.locator("a.share-magic-link").get_attribute("href")

    grace = newcomer(visitor_browser, link)
    assert grace.url.endswith("/share_magic/lobby")
    for path in ("/api/contents", "/lab/tree/shared.ipynb", f"/api/kernels/{kernel_id}"):
        assert reached(grace, path) == 403, path
    grace.get_by_label("Your name").fill("Grace <i>Hopper</i>")
    grace.get_by_role("button", name="Ask to join").click()
    grace.get_by_role("heading", name="Waiting to be let in").wait_for(timeout=20_000)
    assert "as Grace <i>Hopper</i> (name they gave)" in grace.inner_text("#status")  # as text, not markup
    assert grace.locator("i").count() == 0
    grace.screenshot(path=SCREENSHOTS / "lobby-waiting-page.png")
    assert reached(grace, "/api/contents") == 403  # waiting is not being in

    row = widget.locator(".share-magic-waiting")
    row.wait_for(timeout=20_000)
    assert row.locator(".share-magic-waiting-name").inner_text() == "Grace <i>Hopper</i>"
    assert "(name they gave) is waiting" in row.inner_text()
    widget.screenshot(path=SCREENSHOTS / "widget-someone-waiting.png")

    row.get_by_role("button", name="Admit").click()
    wait_for_kernel(grace)  # the waiting page went on into JupyterLab by itself
    assert "/lab/tree/shared.ipynb" in grace.url
    run_cell(grace, "print('grace ran', 6 * 7)")
    grace.wait_for_selector(".jp-OutputArea-output:has-text('grace ran 42')", timeout=60_000)
    grace.locator(".jp-Notebook").click()
    grace.keyboard.press("Control+s")
    person = widget.locator(".share-magic-people .widget-hbox:has(.share-magic-person:text-is('Grace <i>Hopper</i>'))")
    person.locator(".share-magic-last-action").wait_for(timeout=20_000)  # her last action beside her name
    assert person.get_by_role("button", name="Revoke").is_visible()

    # Turned away: the page says so, and the link reaches nothing from that browser.
    mallory = newcomer(visitor_browser, link)
    mallory.get_by_label("Your name").fill("Mallory")
    mallory.get_by_role("button", name="Ask to join").click()
    widget.locator(".share-magic-waiting:has-text('Mallory')").get_by_role("button", name="Turn away").click()
    mallory.get_by_role("heading", name="The owner did not let you in").wait_for(timeout=20_000)
    answer = mallory.goto(link)
    assert answer.status == 403 and "did not let you in" in mallory.content()
    assert reached(mallory, "/api/contents") == 403

    # A personal link goes straight in.
    ada_row = invite_from(widget, "Ada")
    ada = visitor_browser.new_context(ignore_https_errors=True).new_page()
    ada.goto(ada_row.locator("button.share-magic-copy").get_attribute("data-link"))
    ada.get_by_role("button", name="Visit Site").click()
    wait_for_kernel(ada)

    # The trail, from another notebook's kernel beside the browser: who ran which code and wrote which file.
    other = beside(server, kernel_id)
    other.run("%load_ext share_magic")
    log = wait_for(lambda: (out := other.execute("%share log")["text"]) and "wrote shared.ipynb" in out and out, 20,
                   "the trail to show Grace's save")
    grace_says = "Grace <i>Hopper</i> (name they gave)"
    assert any(grace_says in line and "ran code in shared.ipynb:" in line for line in log.splitlines()), log
    assert "print('grace ran', 6 * 7)" in log and "turned Mallory (name they gave) away" in log
    assert any(grace_says in line and "wrote shared.ipynb" in line for line in log.splitlines()), log
    assert re.search(r"Mallory \(name they gave\) +asked to join from the lobby", log), log
    (SCREENSHOTS / "lobby-trail.txt").write_text(log)

    widget.get_by_role("button", name="Stop").click()
    owner.locator(".jp-OutputArea-output:has-text('Share stopped')").wait_for(timeout=20_000)
    after = other.execute("%share log")["text"]
    assert after.startswith(log.rstrip()) and after.rstrip().endswith("stopped the share")
    (SCREENSHOTS / "lobby-trail-after-stop.txt").write_text(after)
