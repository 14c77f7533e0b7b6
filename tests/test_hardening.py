"""What an attacker with a local account, a revoked invitation or a raw socket tries against a live share (issue
19): the relay cannot be squatted, revoking a person retires the links they could read, no visitor sees the
server's token, nothing rides past the gate, stalled connections cannot hold the helper, the authtoken never
touches a command line, and dead helpers leave nothing behind."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from harness import wait_for
from test_access import share


def gateway_port(notebook) -> int:
    return int(notebook.run("import share_magic; print(share_magic.current().gateway_port)"))


def test_the_agent_forwards_to_the_address_the_gateway_holds(jupyter, owner, visitor, sandbox) -> None:
    """The upstream is 127.0.0.1, never ``localhost`` (which may resolve to ::1 first); and the gateway does not
    listen on ::1, so a local user who holds [::1]:PORT catches nothing."""
    notebook = owner(jupyter())
    link = share(notebook)
    port = gateway_port(notebook)
    endpoint = json.loads((Path(sandbox["STANDIN_NGROK_STATE"]) / "endpoints.jsonl").read_text().splitlines()[-1])
    assert endpoint["upstream"]["url"] == f"http://127.0.0.1:{port}"
    squatter = socket.create_server(("::1", port), family=socket.AF_INET6)  # free: the gateway does not hold it
    try:
        squatter.setblocking(False)
        guest = visitor(link)
        assert guest.get(link).status_code == 200 and guest.get("/api/contents").status_code == 200
        with pytest.raises(BlockingIOError):  # nobody ever connected to it
            squatter.accept()
    finally:
        squatter.close()
