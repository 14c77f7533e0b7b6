"""The test harness keeps its own promises: what a test opens, its fixture closes, whatever the share did."""
from __future__ import annotations

import socket
import threading

import pytest
from harness import Visitor


@pytest.mark.parametrize("connection", ["keep-alive", "close"])
def test_a_visitor_closes_a_connection_cut_off_mid_answer(connection: str) -> None:
    """A response still being read (as when the share under a visitor dies mid-answer) holds its connection out of
    the pool; one marked ``Connection: close`` (as the gateway's own answers are) holds the only open
    reference to its socket. Closing the visitor must close both, not leave them to the garbage collector."""
    listener = socket.create_server(("127.0.0.1", 0))
    mode = connection.encode()
    closed_by_visitor = threading.Event()

    def half_an_answer() -> None:
        peer, _ = listener.accept()
        with peer:
            peer.recv(65536)
            peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: %s\r\n\r\nhalf" % mode)
            while peer.recv(65536):  # until the visitor's side closes
                pass
            closed_by_visitor.set()

    server = threading.Thread(target=half_an_answer, daemon=True)
    server.start()
    guest = Visitor(f"http://127.0.0.1:{listener.getsockname()[1]}/")
    try:
        response = guest.http.get(guest.link, stream=True, timeout=10)  # kept, never read to its end
        assert response.status_code == 200
    finally:
        guest.close()
    try:
        assert closed_by_visitor.wait(10), "the visitor left its connection open"
    finally:
        server.join(10)
        listener.close()
