"""What a visitor's request head must be to pass the gateway, and the gateway's last answer to one that is not.

Tornado finds each head and parses it, but it is laxer than the gateway must be (bare LFs, obs-fold, a few
ambiguities left to the next hop): :func:`check_head` reads the head tornado found, whole, before tornado parses it,
and anything that every HTTP parser would not read the same way is a :class:`BadRequest` -- the gateway's own 400
(431, 501), sent by :func:`answer_and_close` -- so that no second request can hide inside one the gate has seen.
"""
from __future__ import annotations

import asyncio
import re
import socket
from datetime import timedelta

from tornado import gen
from tornado.iostream import IOStream, StreamClosedError

from .answers import Headers, text
from .relay import CHUNK, RETRY_BODY_LIMIT

TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110: methods and header names
ORIGIN_FORM = re.compile(r"/[!-~]*")  # a path (and query) in visible ASCII, as browsers send it
VERSION = re.compile(r"HTTP/1\.[01]")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a field value; a tab is allowed
DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes "²"
CONNECTION_TOKENS = frozenset({"", "close", "keep-alive", "upgrade", "te"})  # what browsers and proxies send


class BadRequest(ValueError):
    """A request the gateway answers itself (400, unless said otherwise): it is never passed on."""

    def __init__(self, why: str, status: int = 400, reason: str = "Bad Request") -> None:
        super().__init__(why)
        self.status, self.reason = status, reason

    def answer(self) -> bytes:
        return text(self.status, self.reason, f"The gateway refused this request: {self}.")


def check_request(method: str, target: str, headers: Headers) -> None:
    """Raise :class:`BadRequest` unless this is a request every HTTP parser reads the same way: a token for a
    method, a clean origin-form target, header names that are tokens, values without control characters, and one
    unambiguous body framing. Whatever could be read as two requests, or as another one, stops here."""
    if not TOKEN.fullmatch(method):
        raise BadRequest("the method is not an HTTP token")
    if not ORIGIN_FORM.fullmatch(target) or target.startswith("//") or "\\" in target.split("?", 1)[0]:
        raise BadRequest("the target is not a path on this server")
    lengths, encodings = [], []
    for name, value in headers:
        if not TOKEN.fullmatch(name):
            raise BadRequest(f"malformed header name {name[:40]!r}")
        if CONTROL.search(value):
            raise BadRequest(f"a control character in header {name!r}")
        lower = name.lower()
        if lower == "content-length":
            lengths.append(value)
        elif lower == "transfer-encoding":
            encodings.append(value.lower())
        elif lower == "connection" and not {token.strip().lower() for token in value.split(",")} <= CONNECTION_TOKENS:
            # A header named there is dropped on the way upstream: Content-Length dropped with its body relayed
            # would be read by Jupyter as a second request the gate never saw.
            raise BadRequest("a Connection header that names an end-to-end field")
    if len(lengths) > 1 or (lengths and not DIGITS.fullmatch(lengths[0])) or (lengths and encodings):
        raise BadRequest("ambiguous Content-Length")
    if encodings and (len(encodings) > 1 or encodings[0] != "chunked"):
        raise BadRequest("a Transfer-Encoding other than chunked", 501, "Not Implemented")


def check_head(data: bytes) -> tuple[str, str, str, Headers]:
    """The request head tornado found, checked whole before tornado parses it: (method, target, version, headers).
    Every line must end in CRLF and hold no other CR or LF; no line may continue another (obs-fold); the rest is
    :func:`check_request`."""
    head = data.decode("latin-1")
    while head.startswith("\r\n"):  # stray empty lines before a request are allowed
        head = head[2:]
    if not head.endswith("\r\n\r\n"):
        raise BadRequest("a bare CR or LF in the request head")
    lines = head[:-4].split("\r\n")
    if any("\r" in line or "\n" in line for line in lines):  # a line end for some parsers and not for others
        raise BadRequest("a bare CR or LF in the request head")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not VERSION.fullmatch(parts[2]):
        raise BadRequest("malformed request line")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():  # obs-fold, a space before the colon
            raise BadRequest(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip(" \t")))
    check_request(parts[0], parts[1], headers)
    return parts[0], parts[1], parts[2], headers


async def answer_and_close(stream: IOStream, answer: bytes, linger: float, write_timeout: float = 60.0) -> None:
    """Send the gateway's own last answer, then close without losing it: closing a socket with unread input resets
    the connection, which can destroy the answer before the visitor reads it. So stop writing, and read (and drop)
    whatever the visitor still sends, for a short while only. A visitor who does not take the answer within
    ``write_timeout`` is let go."""
    try:
        await gen.with_timeout(timedelta(seconds=write_timeout), stream.write(answer))
        stream.socket.shutdown(socket.SHUT_WR)
        deadline, dropped = asyncio.get_running_loop().time() + linger, 0
        while dropped < RETRY_BODY_LIMIT:
            # quiet: the read a timeout left behind fails when the stream closes, which is no news
            dropped += len(await gen.with_timeout(deadline, stream.read_bytes(CHUNK, partial=True),
                                                  quiet_exceptions=(StreamClosedError,)))
    except Exception:  # closed, timed out: either way, done
        pass
    finally:
        stream.close()
