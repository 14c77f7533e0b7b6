"""Sign-in at the edge in a real browser (Debian's chromium): the stand-in edge's sign-in page, JupyterLab naming the
visitor, the page an account gets on a link made for another, signing out and in as the right account, and the
owner's widget naming each visitor."""
from __future__ import annotations

import test_browser
from harness import share_links, share_processes, wait_for
from test_browser import SCREENSHOTS, run_cell, share_from, wait_for_kernel
from test_people import invited

browsers = test_browser.browsers  # the owner's and the visitors' chromium, as a fixture of this module too


def signed_in_page(context, link: str, email: str, name: str, warning: bool = True):
    """Open ``link`` in ``context``: past the free plan's warning page, through the edge's sign-in as ``email``."""
    page = context.new_page()
    page.goto(link)
    if warning:
        page.get_by_role("button", name="Visit Site").click()
    page.locator("#email").wait_for(timeout=20_000)
    assert "Sign in with github" in page.content()
    page.fill("#email", email)
    page.fill("#name", name)
    page.click("#sign-in")
    return page


def jupyter_name(page) -> str:
    return page.evaluate("fetch(document.baseURI.split('/lab')[0] + '/api/me').then(r => r.json())"
                         ".then(j => j.identity.name)")


def test_a_signed_in_visitor_in_jupyterlab_and_one_on_a_link_made_for_another(jupyter, browsers) -> None:
    owner_browser, visitor_browser = browsers
    server = jupyter(app="jupyterlab")
    server.new_notebook("shared.ipynb")
    owner = owner_browser.new_page(viewport={"width": 1280, "height": 860})
    owner.goto(f"{server.url}lab/tree/shared.ipynb?token={server.token}")
    wait_for_kernel(owner)
    widget = share_from(owner, "%load_ext share_magic\n%share --sign-in github")
    link = widget.locator("a.share-magic-link").get_attribute("href")
    assert "3 signed-in users a month" in widget.inner_text()
    widget.locator(".share-magic-people input").fill("ada@example.com")
    widget.get_by_role("button", name="Invite").click()
    row = widget.locator(".share-magic-people .widget-hbox:has(.share-magic-person:text-is('ada@example.com'))")
    row.wait_for(timeout=20_000)
    ada_link = row.locator("button.share-magic-copy").get_attribute("data-link")

    eve_browser = visitor_browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
    eve = signed_in_page(eve_browser, link, "eve@example.com", "Eve Adams")
    wait_for_kernel(eve)
    assert "share_key" not in eve.url
    assert jupyter_name(eve) == "Eve Adams"
    run_cell(eve, "print('eve says', 6 * 7)")
    eve.wait_for_selector(".jp-OutputArea-output:has-text('eve says 42')", timeout=60_000)
    eve_row = widget.locator(".share-magic-people .widget-hbox:has-text('eve@example.com')")
    eve_row.wait_for(timeout=20_000)
    assert "Eve Adams <eve@example.com>, signed in with GitHub" in eve_row.inner_text()
    assert eve_row.get_by_role("button", name="Revoke").is_visible()
    owner.screenshot(path=SCREENSHOTS / "signin-owner-names-visitors.png")

    # Ada's link, in a browser signed in as Eve: the gate's page says so and offers to sign out.
    other = eve_browser.new_page()
    other.goto(ada_link)
    other.get_by_text("This link was made for another account").wait_for(timeout=20_000)
    assert "signed in as eve@example.com" in other.inner_text("body")
    other.screenshot(path=SCREENSHOTS / "signin-link-made-for-another-account.png")
    other.get_by_role("link", name="Sign out").click()
    other.get_by_text("You are signed out").wait_for(timeout=20_000)
    ada = signed_in_page(eve_browser, ada_link, "ada@example.com", "Ada Lovelace", warning=False)
    wait_for_kernel(ada)
    assert jupyter_name(ada) == "Ada Lovelace"
    row.locator("text=connected since").wait_for(timeout=20_000)
    assert "<ada@example.com>" in row.inner_text()

    # Revoking Eve from her row: refused from now on, however she comes.
    eve_row.get_by_role("button", name="Revoke").click()
    eve_row.wait_for(state="detached", timeout=20_000)
    revoked = visitor_browser.new_context(ignore_https_errors=True)
    again = signed_in_page(revoked, link, "eve@example.com", "Eve Adams")
    again.get_by_text("revoked your access").wait_for(timeout=20_000)
    widget.get_by_role("button", name="Stop").click()
    owner.locator(".jp-OutputArea-output:has-text('Share stopped')").wait_for(timeout=20_000)
    wait_for(lambda: not share_processes(), 10, "the share to end")


def test_the_collaborators_panel_shows_each_visitor_by_name(jupyter, owner, browsers) -> None:
    """With jupyter-collaboration, each visitor sees the other in JupyterLab's collaborators panel by the name the
    gateway gave them (an invitation's name, or the name verified at sign-in), not as "Anonymous ..."."""
    _, visitor_browser = browsers
    server = jupyter(app="jupyterlab")
    if server.api("GET", "api/collaboration/session/probe").status_code != 405:
        raise AssertionError("jupyter-collaboration is not running on the test server: pip install -e '.[test]'")
    notebook = owner(server)
    links = invited(notebook, notebook.execute("%load_ext share_magic\n%share invite Grace --sign-in github"))
    link = share_links(notebook)["edit"]
    pages = {}
    for who, (address, email, name) in {"ada": (link, "ada@example.com", "Ada Lovelace"),
                                        "grace": (links["Grace"], "grace@example.com", "Grace B. M. Hopper")}.items():
        context = visitor_browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860})
        pages[who] = signed_in_page(context, address, email, name)
        wait_for_kernel(pages[who])
    for who, other in (("ada", "Grace"), ("grace", "Ada Lovelace")):
        page = pages[who]
        page.locator("li[data-id='jp-collaboration-panel']").click()
        header = page.locator("#jp-collaboration-panel .jp-CollaboratorHeader", has_text=other)
        header.first.wait_for(timeout=30_000)
        assert "Anonymous" not in page.locator("#jp-collaboration-panel .jp-CollaboratorsList").inner_text()
        page.screenshot(path=SCREENSHOTS / f"signin-collaborators-seen-by-{who}.png")
