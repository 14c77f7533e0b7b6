"""The lobby in real browsers through the stand-in edge: a newcomer with the anyone-link waits on the gateway's page,
reaches nothing, is admitted from the owner's widget and goes on into JupyterLab by itself; another is turned away
and stays out; a personal link goes straight in; the trail names who ran which code and wrote which file, also after
%share stop. Screenshots: tests/screenshots/lobby-waiting-page.png and widget-someone-waiting.png."""
from __future__ import annotations

import re

from harness import edge_meter, share_links, wait_for
from test_browser import SCREENSHOTS, beside, browsers, invite_from, run_cell, share_from, wait_for_kernel  # noqa: F401

__all__ = ["beside", "browsers"]  # fixtures


def newcomer(browser, link: str, stopped_clock: bool = False):
    """A visitor's browser on the share's own link, past the free plan's warning page: the waiting page. With
    ``stopped_clock`` the page's clock is the test's, standing still once the page is up (no timer fires unless the
    test runs the clock)."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1000, "height": 700})
    if stopped_clock:
        context.clock.install()
    page = context.new_page()
    page.goto(link)
    page.get_by_role("button", name="Visit Site").click()
    page.get_by_role("heading", name="Ask to join this notebook").wait_for(timeout=20_000)
    if stopped_clock:
        page.clock.pause_at(page.evaluate("Date.now()") + 1000)
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
    (kernel_id,) = {s["kernel"]["id"] for s in server.api("GET", "api/sessions").json() if s["path"] == "shared.ipynb"}
    other = beside(server, kernel_id)  # the notebook's kernel now (the page may have started it afresh)
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
    note, _, after = other.execute("%share log")["text"].partition("\n")
    assert note.startswith("This share has ended, so its trail file cannot be checked")  # the helper's copy is gone
    assert after.startswith(log.rstrip()) and after.rstrip().endswith("stopped the share")
    (SCREENSHOTS / "lobby-trail-after-stop.txt").write_text(after)


LOBBY_LINES = ("POST /share_magic/lobby", "GET /share_magic/lobby/events")


def billed_since(state, before: dict) -> list[str]:
    """The request lines the edge billed since ``before`` (one of its meter readings)."""
    after = edge_meter(state)
    return after["recent"][len(after["recent"]) - (after["requests"] - before["requests"]):]


def test_a_waiting_page_costs_nothing_before_a_name_and_one_stream_while_it_waits(sandbox, jupyter, owner,
                                                                                  browsers) -> None:
    """Counted at the edge, with the page's clock in the test's hands (ten minutes pass in a moment, and then the
    clock stands still, so no timer of the page can fire): before a name, no request at all; asking to join, the
    name's POST and one stream; ten minutes of waiting, nothing more; the owner's admit reaches the page down that
    stream and it goes on by itself."""
    state = sandbox["STANDIN_NGROK_STATE"]
    notebook = owner(jupyter())
    notebook.run("%load_ext share_magic\n%share --approve")
    link = share_links(notebook)["edit"]
    start = edge_meter(state)  # a new browser context asks nothing of the network before its first page
    page = newcomer(browsers[1], link, stopped_clock=True)

    page.clock.run_for("10:00")  # ten minutes before a name is given
    page.get_by_label("Your name").fill("Grace")
    page.get_by_role("button", name="Ask to join").click()
    page.get_by_role("heading", name="Waiting to be let in").wait_for(timeout=20_000)  # the stream's first word
    billed = [line for line in billed_since(state, start) if line != "GET /favicon.ico"]  # the browser's own
    # From the page's own load on: nothing before the name, then exactly the name's POST and one stream.
    assert billed[billed.index("GET /share_magic/lobby"):] == ["GET /share_magic/lobby", *LOBBY_LINES], billed

    waiting = edge_meter(state)
    page.clock.run_for("10:00")  # ten minutes of waiting
    assert page.get_attribute("#status", "data-stream") == "open"
    assert notebook.execute("%share admit Grace")["stdout"].startswith("Grace is let in")
    page.wait_for_url("**/lab/tree/shared.ipynb", timeout=20_000)  # pushed: the page's clock stands still
    billed = billed_since(state, waiting)
    assert billed and billed[0].startswith("GET /lab/tree/shared.ipynb"), billed  # not one request while waiting
    page.context.close()


def test_a_dropped_stream_is_opened_again_at_most_twice_a_minute(sandbox, jupyter, owner, browsers) -> None:
    """Every stream the page opens is dropped at once (by the test, between the page and the network): the page
    opens the next one 30 s after it opened the last, not sooner; 1 s after a stream that lasted longer; and ever
    more rarely while no stream gets through at all. The page's clock is the test's."""
    notebook = owner(jupyter())
    notebook.run("%load_ext share_magic\n%share --approve")
    link = share_links(notebook)["edit"]
    page = newcomer(browsers[1], link, stopped_clock=True)
    streams: list = []  # each stream the page asks for, held until the test drops it

    def hold(route) -> None:
        streams.append(route)

    page.route("**/share_magic/lobby/events", hold)
    spoken = 'event: lobby\ndata: {"state": "waiting", "name": "Grace (name they gave)"}\n\n'

    def held(count: int) -> None:  # the route's handler runs while Playwright is asked something: ask it
        wait_for(lambda: page.evaluate("0") == 0 and len(streams) == count, 20, f"stream {count} to be held")

    def drop(heard: bool) -> None:
        streams[-1].fulfill(status=200, content_type="text/event-stream", body=spoken if heard else "")
        page.locator("#status[data-stream=closed]").wait_for(timeout=20_000)  # the page saw it drop

    def opens_after(milliseconds: int) -> None:
        asked = len(streams)
        page.clock.run_for(milliseconds - 1)
        assert page.get_attribute("#status", "data-stream") == "closed"  # not a moment sooner
        page.clock.run_for(1)
        assert page.get_attribute("#status", "data-stream") == "opening"
        held(asked + 1)

    page.get_by_label("Your name").fill("Grace")
    page.get_by_role("button", name="Ask to join").click()
    held(1)
    drop(heard=True)
    opens_after(30_000)  # a stream that told the page something, then dropped at once
    page.clock.run_for("01:00")
    drop(heard=True)
    opens_after(1_000)  # one that lasted a minute: back within a second
    for spacing in (30_000, 60_000, 120_000, 240_000, 480_000, 480_000):  # none gets through
        drop(heard=False)
        opens_after(spacing)
    assert "does not answer right now" in page.inner_text("#status")
    drop(heard=True)
    opens_after(30_000)  # through again: back to two a minute at most
    page.unroute("**/share_magic/lobby/events")
    page.context.close()
