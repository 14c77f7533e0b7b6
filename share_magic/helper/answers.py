"""The gateway's own answers, and the few HTTP facts every part of the helper shares.

Whatever the helper answers itself -- the gate's refusals and redirects, the view's pages, the gateway's 400s and
503s, the bridge's -- is built here (:func:`response`, :func:`text`), so that every local answer carries the same
framing: a ``Content-Length``, ``Cache-Control: no-store`` unless said otherwise, and ``Connection: close``. One set
of hop-by-hop headers (:data:`HOP_BY_HOP`), one gzip (:func:`gzip_bytes`, :class:`GzipStream`).
"""
from __future__ import annotations

import zlib

Headers = list[tuple[str, str]]

# Headers that describe one connection, never the message: not relayed either way (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset({
    "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
})
GZIP_LEVEL = 6
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # a gzip member's header: no name, no time, unknown OS


def response(status: int, reason: str, headers: Headers, body: bytes = b"") -> bytes:
    """A complete response from the helper itself; the connection closes after it."""
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers),
             f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close"]
    if any(name.lower() == "cache-control" for name, _ in headers):
        lines.remove("Cache-Control: no-store")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def text(status: int, reason: str, message: str, headers: Headers = ()) -> bytes:
    """A short plain-text answer."""
    return response(status, reason, [("Content-Type", "text/plain; charset=utf-8"), *headers],
                    f"{message.rstrip()}\n".encode())


def gzip_bytes(data: bytes) -> bytes:
    """``data`` as one whole gzip member."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def deflate_block(data: bytes) -> bytes:
    """``data`` as raw deflate blocks that refer to nothing before them and end byte-aligned, not final: any number
    of these, in any order, after :data:`GZIP_HEADER`, are a valid (unfinished) gzip stream. So one event is
    compressed once and the same bytes go to every reader of an open stream."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


class GzipStream:
    """A body gzipped as it streams: each ``compress`` returns what may be sent so far, ``finish`` the rest."""

    def __init__(self) -> None:
        self.compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def compress(self, data: bytes) -> bytes:
        return self.compressor.compress(data)

    def finish(self) -> bytes:
        return self.compressor.flush()


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value takes gzip."""
    for part in accept_encoding.lower().split(","):
        name, _, quality = part.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            return quality.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def header(headers: Headers, wanted: str) -> str | None:
    """The first value of header ``wanted`` (lower-case name)."""
    return next((value for name, value in headers if name.lower() == wanted), None)
