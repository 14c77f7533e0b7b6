"""The test harness keeps its own promises: what a test opens, its fixture closes, whatever the share did."""
from __future__ import annotations

import socket
import threading

from harness import Visitor


def test_a_visitor_closes_a_connection_cut_off_mid_answer() -> None:
    """A response still being read (as when the share under a visitor dies mid-answer) holds its connection out of
    the pool: closing the visitor must close it too, not leave it to the garbage collector."""
    listener = socket.create_server(("127.0.0.1", 0))
    closed_by_visitor = threading.Event()

    def half_an_answer() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
            while connection.recv(65536):  # until the visitor's side closes
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
