"""The gateway: a reverse proxy on localhost between the tunnel and the Jupyter server.

A localhost Jupyter server refuses a public Host, and refuses cross-origin API calls and websockets. The tunnel
delivers requests with the public Host and the browser's public Origin, so the gateway translates exactly three
request headers and nothing else:

- ``Host`` becomes the server's own local host;
- ``Origin`` and ``Referer`` become the server's origin **only when they are this share's public origin** (known
  from the tunnel, never taken from the request). Any other Origin reaches the server unchanged, so the server keeps
  refusing cross-site requests exactly as it would without the gateway.

Responses pass through unchanged except for a ``Location`` that points at the server.

It is a byte-level HTTP/1.1 proxy: every visitor connection gets its own upstream connection, kept for as long as
the visitor keeps theirs (keep-alive for free), and only message heads are parsed. Bodies are relayed as they come,
by their own framing (Content-Length, chunked, or until close), with back-pressure both ways. A websocket is relayed
as raw bytes once the server has accepted the upgrade, so subprotocols and extensions are negotiated end to end.
"""
from __future__ import annotations

import asyncio
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from .server import JupyterServer

HOP_BY_HOP = frozenset({
    "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
})
# Measured (benchmarks/): 256 KiB copies stay in cache; 1 MiB chunks relayed 25% slower, 64 KiB ones 3x slower.
CHUNK = 256 * 1024
# A StreamReader pauses reading once it holds twice its limit: keep that well above a chunk for throughput.
# The limit also bounds a message head; the server applies its own, smaller one.
BUFFER_LIMIT = 1024 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
NO_BODY_STATUSES = frozenset({204, 304})

Headers = list[tuple[str, str]]


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lower-cased and without a default port; None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    scheme = parts.scheme.lower()
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        host += f":{port}"
    return f"{scheme}://{host.lower()}"


def _rebase(url: str, origin: str) -> str:
    """``url`` with its scheme and host taken from ``origin``; path, query and fragment kept."""
    parts, new = urlsplit(url), urlsplit(origin)
    return urlunsplit((new.scheme, new.netloc, parts.path, parts.query, parts.fragment))


class _Closed(Exception):
    """A side of the exchange went away."""


class Gateway:
    """Serves one share: every request it gets came through the tunnel from a visitor."""

    def __init__(self, server: JupyterServer, on_visitors: Callable[[int], None] | None = None) -> None:
        self.server = server
        self.public_origin: str | None = None
        self.on_visitors = on_visitors
        self.port = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._websockets: dict[asyncio.StreamWriter, str] = {}  # client side -> visitor address
        self._tls = server.tls_context()

    # -- lifetime ---------------------------------------------------------------------------------------------------

    async def listen(self) -> int:
        """Accept on a free port of 127.0.0.1 (and ::1, same port, where there is one): the agent's upstream is
        ``localhost:PORT``. Requests get 503 until :meth:`open_to` names the public URL."""
        first = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=BUFFER_LIMIT)
        self.port = first.sockets[0].getsockname()[1]
        self._servers.append(first)
        try:
            self._servers.append(await asyncio.start_server(self._serve, "::1", self.port, limit=BUFFER_LIMIT))
        except OSError:
            pass  # no IPv6 loopback here
        return self.port

    def open_to(self, public_url: str) -> None:
        self.public_origin = origin_of(public_url)

    async def close(self) -> None:
        """Stop accepting and cut every visitor connection, websockets included."""
        self.public_origin = None
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for server in self._servers:
            await server.wait_closed()

    # -- translation ------------------------------------------------------------------------------------------------

    def upstream_headers(self, headers: Headers) -> Headers:
        listed = {token.strip().lower() for name, value in headers if name.lower() == "connection"
                  for token in value.split(",")} - {"close", "keep-alive", "upgrade"}
        translated = []
        for name, value in headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in listed or lower == "expect":
                continue
            if lower == "host":
                value = self.server.host_header
            elif lower == "origin" and self._is_public(value):
                value = self.server.origin
            elif lower == "referer" and self._is_public(value):
                value = _rebase(value, self.server.origin)
            translated.append((name, value))
        if not any(name.lower() == "host" for name, _ in translated):
            translated.insert(0, ("Host", self.server.host_header))
        return translated

    def _is_public(self, url: str) -> bool:
        public = self.public_origin
        if public is None:
            return False
        # Fast path for what browsers send (exactly the origin, or it and a path); anything else is normalized.
        if url.startswith(public) and url[len(public):len(public) + 1] in ("", "/", "?", "#"):
            return True
        return origin_of(url) == public

    def public_location(self, location: str) -> str:
        if self.public_origin is None or origin_of(location) != origin_of(self.server.origin):
            return location
        return _rebase(location, self.public_origin)

    def response_headers(self, headers: Headers) -> Headers:
        return [(name, self.public_location(value) if name.lower() == "location" else value)
                for name, value in headers if name.lower() not in HOP_BY_HOP]

    # -- visitors ---------------------------------------------------------------------------------------------------

    def visitors(self) -> int:
        """Distinct visitor addresses holding a live connection (a websocket) right now."""
        return len(set(self._websockets.values()))

    def _count_change(self, before: int) -> None:
        if self.visitors() != before and self.on_visitors is not None:
            self.on_visitors(self.visitors())

    # -- serving ----------------------------------------------------------------------------------------------------

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.server.sock:
            return await asyncio.open_unix_connection(self.server.sock, limit=BUFFER_LIMIT)
        return await asyncio.open_connection(self.server.host, self.server.port, ssl=self._tls, limit=BUFFER_LIMIT,
                                             server_hostname=self.server.host if self._tls else None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                request = await _read_head(reader)
                if request is None:
                    break
                if self.public_origin is None:
                    writer.write(_plain_response(503, "Service Unavailable", "The share is not open."))
                    break
                if upstream is not None and upstream[0].at_eof():  # the server closed it while idle: reopen
                    self._writers.discard(upstream[1])
                    upstream[1].close()
                    upstream = None
                if upstream is None:
                    try:
                        upstream = await self._connect_upstream()
                    except OSError:
                        writer.write(_plain_response(502, "Bad Gateway", "The Jupyter server is not reachable."))
                        break
                    self._writers.add(upstream[1])
                if not await self._exchange(request, reader, writer, *upstream):
                    break
        except (_Closed, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            # Either side went away or spoke something other than HTTP/1.1: this connection ends, others go on.
            pass
        finally:
            for side in (writer, upstream[1] if upstream else None):
                if side is not None:
                    self._writers.discard(side)
                    side.close()

    async def _exchange(self, request: tuple[str, Headers], reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, up_reader: asyncio.StreamReader,
                        up_writer: asyncio.StreamWriter) -> bool:
        """Relay one request and its response; return whether the connection may carry another."""
        start_line, headers = request
        method = start_line.split(" ", 1)[0]
        fields = {name.lower(): value for name, value in headers}
        if "100-continue" in fields.get("expect", "").lower():
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # we take the body; the server never sees Expect
        await _relay_body(reader, up_writer, fields, _head(start_line, self.upstream_headers(headers)))
        while True:  # interim 1xx answers come before the final one
            response = await _read_head(up_reader)
            if response is None:
                raise _Closed
            status_line, response_headers = response
            status = int(status_line.split(" ", 2)[1])
            head = _head(status_line, self.response_headers(response_headers))
            if status < 200:
                writer.write(head)
            if status == 101:
                await self._relay_websocket(reader, writer, up_reader, up_writer, fields)
                return False
            if status >= 200:
                break
        response_fields = {name.lower(): value for name, value in response_headers}
        if method == "HEAD" or status in NO_BODY_STATUSES:
            writer.write(head)
            await writer.drain()
        elif not await _relay_body(up_reader, writer, response_fields, head, until_close=True):
            return False
        return ("close" not in fields.get("connection", "").lower()
                and "close" not in response_fields.get("connection", "").lower())

    async def _relay_websocket(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                               fields: dict[str, str]) -> None:
        visitor = fields.get("x-forwarded-for", "").split(",")[0].strip() or str(writer.get_extra_info("peername"))
        before = self.visitors()
        self._websockets[writer] = visitor
        self._count_change(before)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            before = self.visitors()
            del self._websockets[writer]
            self._count_change(before)


# -- HTTP/1.1 framing ---------------------------------------------------------------------------------------------


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, Headers] | None:
    """A message head: its start line and headers; None at a clean end of the stream."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise
        return None
    lines = raw[:-4].decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if not name or name != name.strip():
            raise ValueError(f"malformed header line {line!r}")
        headers.append((name, value.strip()))
    return lines[0], headers


def _head(start_line: str, headers: Headers) -> bytes:
    return (start_line + "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n").encode(
        "latin-1")


def _plain_response(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return _head(f"HTTP/1.1 {status} {reason}", [("Content-Type", "text/plain; charset=utf-8"),
                                                 ("Content-Length", str(len(body))), ("Connection", "close")]) + body


async def _relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fields: dict[str, str],
                      head: bytes, until_close: bool = False) -> bool:
    """Send ``head``, then copy the body that follows as framed by its headers; the head goes out with the first
    part of the body, in one write. Return False if the body was delimited by closing the connection."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        await _relay_chunked(reader, writer, head)
    elif "content-length" in fields:
        await _relay_exactly(reader, writer, int(fields["content-length"]), head)
    elif until_close:  # a response with neither: the body runs until the server closes
        writer.write(head)
        await _copy_until_eof(reader, writer)
        return False
    else:
        writer.write(head)
    await writer.drain()
    return True


async def _relay_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remaining: int,
                         pending: bytes = b"") -> None:
    while remaining > 0:
        data = await reader.read(min(remaining, CHUNK))
        if not data:
            raise _Closed
        remaining -= len(data)
        writer.write(pending + data if pending else data)
        pending = b""
        await writer.drain()
    if pending:
        writer.write(pending)


async def _relay_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: bytes) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            writer.write(pending + size_line)
            while True:  # trailers, then the empty line that ends the body
                line = await reader.readuntil(b"\r\n")
                writer.write(line)
                if line == b"\r\n":
                    return
        await _relay_exactly(reader, writer, size + 2, pending + size_line)  # the chunk and its CRLF
        pending = b""


async def _copy_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One direction of a websocket: copy until either side ends, then close the other."""
    try:
        await _copy_until_eof(reader, writer)
    except OSError:
        pass
    finally:
        writer.close()
