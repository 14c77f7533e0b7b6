"""Personal links, end to end: each person gets a key of their own; revoking one cuts that person off at once and
nobody else; a new invitation is a new link; stopping ends them all."""
from __future__ import annotations

import re

import pytest
import websocket
from harness import share_links, share_processes, wait_for
from test_access import refused_by_the_gate
from test_failures import assert_one_calm_line


def invited(notebook, result: dict) -> dict[str, str]:
    """The people %share invite said it invited, with their links (from %share links: it prints none itself)."""
    assert result["error"] is None and "Error" not in result["stderr"], result
    assert "https://" not in result["stdout"] and "share_key" not in "".join(result["messages"])
    links = share_links(notebook)
    return {name: links[name] for name in re.findall(r"^(.+?) is invited", result["stdout"], re.MULTILINE)}


def test_people_get_in_with_their_own_links_and_one_is_revoked_alone(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    result = notebook.execute("%load_ext share_magic\n%share invite Ada 'Grace Hopper'")
    links = invited(notebook, result)
    assert list(links) == ["Ada", "Grace Hopper"] and len(set(links.values())) == 2
    anyone = share_links(notebook)["edit"]
    assert anyone not in links.values() and server.token not in "".join(result["messages"])
    status = notebook.run("%share status")
    assert "Ada (invited, not connected)" in status and "Grace Hopper (invited, not connected)" in status
    assert invited(notebook, notebook.execute("%share invite Ada")) == {"Ada": links["Ada"]}  # the same link again

    ada, grace = visitor(links["Ada"]), visitor(links["Grace Hopper"])
    kernels = {}
    for name, guest in (("Ada", ada), ("Grace Hopper", grace)):
        assert guest.get(guest.link).status_code == 200
        kernels[name] = guest.kernel(f"/api/kernels/{notebook.kernel_id}/channels")
        assert kernels[name].execute(f"print('hello from {name}')")["stdout"] == f"hello from {name}\n"
    status = wait_for(lambda: (out := notebook.run("%share status")) and "Grace Hopper (connected since" in out
                      and "Ada (connected since" in out and out, 10, "both to show as connected")
    assert "2 visitors connected" in status

    revoked = notebook.execute("%share revoke Ada")
    assert revoked["stdout"].startswith("Ada is cut off"), revoked
    kernels["Ada"].ws.settimeout(3)  # the bound: the open kernel websocket is closed within 3 s
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        while True:  # whatever was in flight, then the close
            kernels["Ada"].ws.recv()
    refused = ada.get("/api/contents")  # Ada's cookies
    assert refused_by_the_gate(refused) and "revoked your access" in refused.text
    assert refused_by_the_gate(visitor(links["Ada"]).get(links["Ada"]))  # Ada's link, from a fresh browser
    # Grace notices nothing: her open websocket still runs code, her cookies still work.
    assert kernels["Grace Hopper"].execute("print('still here')")["stdout"] == "still here\n"
    assert grace.get("/api/contents").status_code == 200
    status = notebook.run("%share status")
    assert "Ada (revoked at" in status and links["Ada"] not in status
    assert "Grace Hopper (connected since" in status and "1 visitor connected" in status

    again = invited(notebook, notebook.execute("%share invite Ada"))["Ada"]
    assert again != links["Ada"]
    assert visitor(again).get(again).status_code == 200
    assert refused_by_the_gate(visitor(links["Ada"]).get(links["Ada"]))  # the old link stays dead

    notebook.run("%share stop")
    wait_for(lambda: not share_processes(), 10, "the share to end")
    for link in (again, links["Grace Hopper"], anyone):
        assert not visitor(link).reaches_jupyter()


@pytest.mark.parametrize("line, expected", [
    ("%share invite", "Name the people to invite"),
    ("%share invite Ada Bad/Name", "'Bad/Name' cannot name a person"),
    ("%share invite " + "x" * 41, "cannot name a person: use 1-40 letters"),
    ("%share invite ' Ada'", "' Ada' cannot name a person"),
    ("%share revoke Zed", "Nobody named 'Zed' has a live invitation"),
    ("%share revoke", "Name the people to revoke"),
    ("%share status Ada", "names go with invite, revoke, admit and deny only"),
])
def test_bad_names_change_nothing(jupyter, owner, line: str, expected: str) -> None:
    notebook = owner(jupyter())
    invited(notebook, notebook.execute("%load_ext share_magic\n%share invite Grace"))
    assert_one_calm_line(notebook.execute(line), expected)
    status = notebook.run("%share status")
    assert "Grace (invited, not connected)" in status and "Ada" not in status and "Zed" not in status


def test_revoking_without_a_share(plain_kernel) -> None:
    assert_one_calm_line(plain_kernel.execute("%load_ext share_magic\n%share revoke Ada"), "Nothing is shared")
    assert_one_calm_line(plain_kernel.execute("%share links"), "Nothing is shared from this kernel, so there are no "
                                                               "links")
    assert not share_processes()
