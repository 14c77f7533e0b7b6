"""What visitors cost the owner's ngrok plan, and how the gateway keeps it low.

ngrok bills HTTP requests (a websocket is one, however long it lives) and bytes sent to visitors. The :class:`Meter`
counts both as the gateway sees them: every request a visitor's connection brings (refused ones too), and every
byte written back. :class:`Compression` decides which responses the gateway gzips: text the server sent
uncompressed, to visitors that accept gzip. Versioned static assets (``Cache-Control: ... immutable``) are
compressed once and kept, and served from there the next time.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .answers import GzipStream, accepts_gzip

Headers = list[tuple[str, str]]

COMPRESSIBLE = ("text/", "application/json", "application/javascript", "application/x-javascript",
                "application/xml", "application/manifest+json", "image/svg+xml", "application/wasm")
MIN_SIZE = 1024  # smaller bodies gain less than the gzip header costs
CACHE_LIMIT = 64 * 1024 * 1024  # compressed immutable assets kept, in all
CACHEABLE_SIZE = 16 * 1024 * 1024


class Meter:
    """Requests and bytes sent to visitors, as ngrok counts them."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes_out = 0
        self._lock = threading.Lock()

    def request(self) -> None:
        with self._lock:
            self.requests += 1

    def sent(self, size: int) -> None:
        with self._lock:
            self.bytes_out += size


@dataclass
class Stored:
    """A compressed immutable asset, as it is sent again."""

    status_line: str
    headers: Headers
    body: bytes


class Compression:
    """Which responses to gzip; the compressed immutable assets kept."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._stored: OrderedDict[str, Stored] = OrderedDict()
        self._stored_size = 0
        self._lock = threading.Lock()

    def wanted(self, request: dict[str, str], method: str, status: int, response: dict[str, str]) -> bool:
        """Whether to gzip this response (``request``/``response``: lower-cased header fields)."""
        if not self.enabled or method != "GET" or status != 200 or "content-encoding" in response:
            return False
        if not accepts_gzip(request.get("accept-encoding", "")):
            return False
        kind = response.get("content-type", "").split(";")[0].strip().lower()
        if not kind.startswith(COMPRESSIBLE):
            return False
        length = response.get("content-length")
        return length is None or int(length) >= MIN_SIZE

    @staticmethod
    def headers(headers: Headers) -> Headers:
        """The response's headers once gzipped and sent in chunks."""
        kept = [(name, value) for name, value in headers
                if name.lower() not in ("content-length", "transfer-encoding", "etag")]
        vary = [value for name, value in headers if name.lower() == "vary"]
        kept = [(name, value) for name, value in kept if name.lower() != "vary"]
        return [*kept, ("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked"),
                ("Vary", ", ".join([*vary, "Accept-Encoding"]))]

    @staticmethod
    def keepable(response: dict[str, str]) -> bool:
        """A versioned asset that cannot change: compressed once, kept, and sent again from memory."""
        return ("immutable" in response.get("cache-control", "").lower() and "set-cookie" not in response
                and int(response.get("content-length") or CACHEABLE_SIZE + 1) <= CACHEABLE_SIZE)

    def stored(self, target: str, request: dict[str, str]) -> Stored | None:
        if not self.enabled or not accepts_gzip(request.get("accept-encoding", "")):
            return None
        with self._lock:
            found = self._stored.get(target)
            if found is not None:
                self._stored.move_to_end(target)
            return found

    def store(self, target: str, stored: Stored) -> None:
        with self._lock:
            if target in self._stored:
                return
            self._stored[target] = stored
            self._stored_size += len(stored.body)
            while self._stored_size > CACHE_LIMIT:
                _, dropped = self._stored.popitem(last=False)
                self._stored_size -= len(dropped.body)


class GzipChunks:
    """A response body gzipped as it streams and sent in HTTP chunks (the head goes out with the first one).
    With ``keep``, the compressed body is also collected, to be stored."""

    def __init__(self, sink: Any, head: bytes, keep: bool = False) -> None:
        self.sink = sink
        self.pending = head
        self.compressor = GzipStream()
        self.kept: bytearray | None = bytearray() if keep else None

    def sendall(self, data: bytes, /) -> None:
        self._chunk(self.compressor.compress(data))

    def close(self) -> None:
        self._chunk(self.compressor.finish())
        self.sink.sendall(self.pending + b"0\r\n\r\n")
        self.pending = b""

    def _chunk(self, data: bytes) -> None:
        if not data:
            return
        if self.kept is not None:
            self.kept += data
        self.sink.sendall(self.pending + b"%x\r\n" % len(data) + data + b"\r\n")
        self.pending = b""


def chunked(body: bytes) -> bytes:
    """``body`` as one HTTP chunk and the last chunk."""
    return (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"


