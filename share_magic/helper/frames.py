"""Websocket frames read back into messages for the trail, by tornado's own frame reader (helper side).

Jupyter reads what a browser sends with tornado's ``WebSocketProtocol13``; the trail reads its copy of the same
bytes with the same class and the same limits (tornado's defaults, which Jupyter keeps: 10 MiB a message), so a
frame Jupyter acts on is a frame the trail reads, leniencies included (an unmasked frame, a length field longer than
it needs). Tornado's reader is a coroutine that awaits ``stream.read_bytes(n)``; :class:`Messages` drives it by hand
on a stand-in stream the bytes are handed to as they come, and hands each message it delivers to its caller. What
tornado would write back (pongs, close frames) goes nowhere: Jupyter sends its own.
"""
from __future__ import annotations

from typing import Any, Callable, Generator

from tornado import httputil
from tornado.websocket import WebSocketProtocol13, _WebSocketParams

Headers = list[tuple[str, str]]


class _Sent:
    """What a write of the stand-in stream returns: a future already done (tornado chains pongs on it)."""

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def exception(self) -> None:
        return None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        callback(self)


class _Loop:
    """The little of an IOLoop that tornado's close() asks of a stream: a timer to abort a close not answered."""

    def time(self) -> float:
        return 0.0

    def add_timeout(self, deadline: float, callback: Callable[[], None]) -> object:
        return object()

    def remove_timeout(self, handle: object) -> None:
        pass


class _Wanted:
    """``await stream.read_bytes(n)``: ready once the stream holds ``n`` bytes."""

    def __init__(self, stream: _Stream, size: int) -> None:
        self.stream, self.size = stream, size

    def __await__(self) -> Generator[_Wanted, None, bytes]:
        buffer = self.stream.buffer
        while len(buffer) < self.size:
            yield self
        data = bytes(buffer[:self.size])
        del buffer[:self.size]
        return data


class _Stream:
    io_loop = _Loop()

    def __init__(self) -> None:
        self.buffer = bytearray()
        self._closed = False

    def read_bytes(self, size: int) -> _Wanted:
        return _Wanted(self, size)

    def write(self, data: bytes) -> _Sent:
        return _Sent()

    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True


class _Handler:
    """The handler tornado's reader delivers to: each message to ``deliver``."""

    def __init__(self, deliver: Callable[[str | bytes], None]) -> None:
        self.on_message = deliver

    def on_ping(self, data: bytes) -> None:
        pass

    def on_pong(self, data: bytes) -> None:
        pass

    def on_ws_connection_close(self, code: int | None = None, reason: str | None = None) -> None:
        pass

    def log_exception(self, *info: Any) -> None:
        pass


class Messages:
    """The messages in one direction of a websocket. ``sent_by`` "client": what the browser sends, as Jupyter (the
    server) reads it; "server": what Jupyter sends, as the browser reads it. ``response_headers`` are the upgrade's
    answer (its ``Sec-WebSocket-Extensions`` sets up permessage-deflate as the two ends agreed)."""

    def __init__(self, response_headers: Headers, sent_by: str = "client") -> None:
        self.delivered: list[str | bytes] = []
        self.stream = _Stream()
        self.protocol = WebSocketProtocol13(_Handler(self.delivered.append),  # type: ignore[arg-type]
                                            mask_outgoing=sent_by == "server", params=_WebSocketParams())
        self.protocol.stream = self.stream  # type: ignore[assignment]
        extensions = httputil.HTTPHeaders()
        for name, value in response_headers:
            if name.lower() == "sec-websocket-extensions":
                extensions.add("Sec-WebSocket-Extensions", value)
        for name, parameters in self.protocol._parse_extensions_header(extensions):
            if name == "permessage-deflate":  # the reader's side is the receiving end's
                self.protocol._create_compressors("server" if sent_by == "client" else "client", parameters)
        self._reading = self.protocol._receive_frame_loop().__await__()
        self._wanted: _Wanted | None = None
        self.ended = False  # tornado's reader stopped: a close frame, or what it refuses (Jupyter stops there too)

    def read(self, data: bytes) -> list[str | bytes]:
        """The whole messages ``data`` completes (text as str, binary as bytes; control frames left out)."""
        if self.ended:
            return []
        self.stream.buffer += data
        while self._wanted is None or len(self.stream.buffer) >= self._wanted.size:
            try:
                waited = next(self._reading)
            except StopIteration:
                self.ended = True
                break
            self._wanted = waited if isinstance(waited, _Wanted) else None  # None: tornado's sleep(0), a yield
        done, self.delivered[:] = list(self.delivered), []
        return done
