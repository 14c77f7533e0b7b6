"""The widget without a browser: a real share started from Python, its view's state, Stop via Button.click()
(the same path as a front-end click), and the text fallbacks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from harness import AUTHTOKEN, share_processes, wait_for

import share_magic
from share_magic.kernel.authtoken import AuthtokenForm
from share_magic.kernel.widget import ShareView, _Record

OWN_OUTPUT = {"share_magic": {"output": "share"}}  # on every output share_magic displays, for the view to drop


@pytest.fixture
def python_share(jupyter):
    """Start shares from this test process (no kernel): share_magic.share(port=...)."""
    server = jupyter()
    yield server
    share_magic.stop()


def widget_tree(widget):
    """The widget and every widget inside it: what its front-end is sent."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from widget_tree(child)


def test_the_view_shows_the_link_copy_qr_stop_and_what_it_grants(python_share, visitor) -> None:
    share = share_magic.share(port=python_share.port)
    assert share.live and "/lab?share_key=" in share.link
    view = ShareView(share)
    state = json.dumps([widget.get_state() for widget in widget_tree(view)], default=str)
    key = share.link.split("share_key=", 1)[1]
    assert key not in state and python_share.token not in state  # what a notebook saving widget state would keep
    assert view.link.message()["link"] == share.link and view.link.label == "Anyone with this link:"
    assert view.copy.message()["link"] == share.link and view.copy.parts == ["copy"]
    assert view.qr.message()["link"] == share.link and "<svg" in view.qr.message()["qr"]
    assert view.view_link.message()["link"] is None  # no view link yet
    assert "live since" in view.status.value and "0 visitors connected" in view.status.value
    assert "full control of this server" in view.notes.value and "Visit Site" in view.notes.value
    # The test extras install jupyter-collaboration (for the collaborators panel); without it, the view says so.
    collaborating = python_share.api("GET", "api/collaboration/session/probe").status_code == 405
    assert share.collaborative is collaborating
    assert ("pip install jupyter-collaboration" in view.notes.value) is not collaborating
    assert "var(--jp-" in view.status.value + view.notes.value and "var(--jp-" in view.link._css

    guest, second_tab = visitor(share.link), visitor(share.link)
    guest.get(share.link)
    kernel_id = python_share.new_notebook("visited.ipynb")
    guest.websocket(f"/api/kernels/{kernel_id}/channels")
    wait_for(lambda: "1 visitor connected" in view.status.value, 10, "the visitor to be counted")
    guest.websocket("/api/events/subscribe")  # the same browser, a second connection: still one visitor
    second_tab.get(share.link)  # another browser at the same address: a second visitor
    other = second_tab.websocket("/api/events/subscribe")
    wait_for(lambda: "2 visitors connected" in view.status.value, 10, "the second browser to be counted")
    other.close()
    wait_for(lambda: "1 visitor connected" in view.status.value, 10, "the second browser to be gone")
    for opened in guest.websockets:
        opened.close()
    wait_for(lambda: "0 visitors connected" in view.status.value, 10, "the visitor to be gone")

    view.stop_button.click()
    assert share.status == "stopped"
    assert "stopped" in view.status.value and view.stop_button.disabled
    wait_for(lambda: not share_processes(), 10, "the share to end")
    assert not guest.reaches_jupyter()


def test_fallbacks_for_front_ends_without_widgets(python_share) -> None:
    share = share_magic.share(port=python_share.port)
    bundle, metadata = ShareView(share)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and metadata == OWN_OUTPUT
    key = share.link.split("share_key=", 1)[1]
    assert key not in json.dumps(bundle)  # a fallback is saved with the notebook: it names the link, never gives it
    assert "Edit link" in bundle["text/plain"] and "%share links prints" in bundle["text/plain"]
    assert "%share stop" in bundle["text/plain"]
    assert "Edit link" in bundle["text/html"] and "%share stop" in bundle["text/html"]
    assert bundle["text/plain"] == share._repr_mimebundle_()[0]["text/plain"]
    share.stop()
    record, metadata = _Record(share)._repr_mimebundle_()
    assert metadata == OWN_OUTPUT
    assert "Share stopped" in record["text/plain"] and "no longer reaches" in record["text/plain"]
    assert "<a " not in record["text/html"]  # no live-looking dead link


def test_the_authtoken_form_saves_the_token_to_ngroks_config_and_shares(python_share, monkeypatch) -> None:
    monkeypatch.delenv("NGROK_AUTHTOKEN")
    with pytest.raises(share_magic.TunnelError) as missing:
        share_magic.share(port=python_share.port)
    assert missing.value.code == "ERR_NGROK_4018"
    form = AuthtokenForm(str(missing.value), retry=lambda: share_magic.share(port=python_share.port))
    assert "ngrok config add-authtoken" in form._repr_mimebundle_()[0]["text/plain"]
    form.save.click()
    assert "Paste the authtoken first" in form.feedback.value
    form.password.value = AUTHTOKEN
    form.save.click()
    assert form.password.value == ""  # never kept in widget state
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "ngrok" / "ngrok.yml"
    assert AUTHTOKEN in config.read_text()
    assert isinstance(form.children[0], ShareView)
    assert share_magic.current() is not None and share_magic.current().live


def test_a_lost_share_shows_as_lost(python_share, monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_NGROK_MODE", "crash-after=2")
    share = share_magic.share(port=python_share.port)
    view = ShareView(share)
    wait_for(lambda: share.status == "lost", 10, "the crash to be noticed")
    assert "Share lost" in view.status.value and "ngrok agent exited" in view.status.value
    assert view.stop_button.disabled
    assert "Share lost" in _Record(share)._repr_mimebundle_()[0]["text/plain"]


def test_a_share_for_a_while_says_when_it_ends_and_then_that_it_expired(python_share) -> None:
    share = share_magic.share(port=python_share.port, duration="2s")
    view = ShareView(share)
    assert f"ends at {share.expires_at:%H:%M:%S}" in view.status.value
    wait_for(lambda: share.status == "expired", 20, "the share to expire")
    assert "Share expired at" in view.status.value and view.stop_button.disabled
    assert "Share expired at" in _Record(share)._repr_mimebundle_()[0]["text/plain"]
    wait_for(lambda: not share_processes(), 10, "the share to end")


def test_people_from_python_and_the_widget_rows(python_share, visitor) -> None:
    share = share_magic.share(port=python_share.port)
    view = ShareView(share)
    assert view.people.rows.children == ()
    ada = share.invite("Ada")
    assert share.invite("Ada") == ada and ada != share.link and "share_key=" in ada
    view.people.name.value = "Grace Hopper"
    view.people.invite_button.click()  # the same path as a click in the browser
    assert list(share.people) == ["Ada", "Grace Hopper"] and view.people.name.value == ""
    grace = share.people["Grace Hopper"]
    assert not grace.connected and grace.link and grace.revoked_at is None

    guest = visitor(grace.link)
    guest.get(grace.link)
    guest.websocket("/api/events/subscribe")
    wait_for(lambda: "connected since" in view.people.rows.children[1].children[2].value, 10,
             "Grace's row to show her connected")  # rows are redrawn after share.people changes: wait for them
    rows = {row.children[0].value: row for row in view.people.rows.children}
    assert set(rows) == {'<b class="share-magic-person">Ada</b>', '<b class="share-magic-person">Grace Hopper</b>'}
    grace_row = rows['<b class="share-magic-person">Grace Hopper</b>']
    assert grace_row.children[1].message()["link"] == grace.link
    assert "connected since" in grace_row.children[2].value
    revoke = grace_row.children[3]
    assert revoke.description == "Revoke"
    revoke.click()
    assert share.people["Grace Hopper"].revoked_at is not None and share.people["Grace Hopper"].link is None
    wait_for(lambda: not share.people["Grace Hopper"].connected, 10, "Grace's connection to be cut")
    assert guest.get("/api/contents").status_code == 403
    revoked_row = next(row for row in view.people.rows.children if "Grace" in row.children[0].value)
    assert len(revoked_row.children) == 2 and "revoked at" in revoked_row.children[1].value  # no Copy, no Revoke

    view.people.name.value = "no/slashes"
    view.people.invite_button.click()
    assert "cannot name a person" in view.people.feedback.value and "no/slashes" not in share.people
    with pytest.raises(share_magic.ShareError, match="Nobody named 'Zed'"):
        share.revoke("Zed")
    bundle, _ = view._repr_mimebundle_()
    assert "Ada (invited, not connected)" in bundle["text/plain"] and "Grace Hopper (revoked at" in bundle["text/plain"]
    assert "Ada (invited, not connected)" in bundle["text/html"] and ada.split("share_key=")[1] not in str(bundle)


def test_no_key_in_what_the_kernel_sends_but_the_live_widgets_answers(jupyter, owner) -> None:
    """Everything a notebook can save comes from the kernel's outputs and widget models: no live key in them. The
    links reach a rendered widget only as the answer to its own request (a custom message, not state)."""
    server = jupyter()
    notebook = owner(server)
    lines = ["%load_ext share_magic\n%share", "%share --view", "%share invite Ada", "%share status",
             "import share_magic\nshare_magic.current()"]
    results = {line: notebook.execute(line) for line in lines}
    links = json.loads(notebook.run("import json\ns = share_magic.current()\n"
                                    "print(json.dumps([s.link, s.view_link, s.people['Ada'].link]))"))
    keys = [link.split("share_key=", 1)[1] for link in links]
    assert all(keys) and len(set(keys)) == 3
    for line, result in results.items():
        assert result["error"] is None, (line, result["error"])
        hits = [message for message in result["messages"] if any(key in message for key in keys)]
        assert not hits, (line, hits)
        assert all(output["metadata"] == OWN_OUTPUT for output in result["outputs"]), (line, result["outputs"])
    assert "Ada is invited" in results["%share invite Ada"]["stdout"]
    assert "%share links prints" in results["%share status"]["stdout"]
    assert any("application/vnd.jupyter.widget-view+json" in output["data"]
               for output in results["%load_ext share_magic\n%share"]["outputs"])

    # What a front-end does when it draws the widget: each live link asks for its link and gets it.
    opened = [json.loads(message) for result in results.values() for message in result["messages"]]
    live_links = [message["content"]["comm_id"] for message in opened if message["msg_type"] == "comm_open"
                  and message["content"]["data"]["state"].get("_anywidget_id") == "share_magic.kernel.widget.LiveLink"]
    delivered, codes = set(), 0
    for comm_id in live_links:
        answer = notebook.comm_send(comm_id, {"method": "custom", "content": {"type": "link?"}})
        data = [json.loads(message)["content"]["data"] for message in answer["messages"]
                if json.loads(message)["msg_type"] == "comm_msg"]
        assert [item["method"] for item in data] == ["custom"], data  # never a state update
        content = data[0]["content"]
        assert content["type"] == "link" and (content["link"] is None or content["link"] in links)
        delivered.add(content["link"])
        codes += content["qr"] is not None and "<svg" in content["qr"]
    assert set(links) <= delivered and codes >= 1

    printed = notebook.execute("%share links")
    assert [output["metadata"] for output in printed["outputs"]] == [OWN_OUTPUT]
    text = printed["text"]
    assert f"Anyone with this link: {links[0]}" in text and f"View only (this notebook, nothing else): {links[1]}" \
        in text and f"Ada (personal link): {links[2]}" in text and "saved with the notebook" in text

    stopped = notebook.execute("%share stop")
    assert not [key for key in keys if any(key in message for message in stopped["messages"])]
    assert stopped["outputs"] and all(output["metadata"] == OWN_OUTPUT for output in stopped["outputs"])
    assert all(output["type"] == "update_display_data" for output in stopped["outputs"])
