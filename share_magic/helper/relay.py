"""The relay: one admitted request to the Jupyter server, and its answer back to the visitor, on the event loop.

Requests come in already framed and checked by the protocol layer (:mod:`.protocol`); what the relay reads by hand
is only the Jupyter server's side, a server the helper trusts. A response passes through byte for byte (its own
framing, chunk extensions and trailers kept) except for a ``Location`` (made public, or kept on the share), HTML
bodies (the server's token blanked out, and for an editing visitor's page the bridge's script added) and text the
server left uncompressed (gzipped for visitors who take it, see :mod:`.meter`). A websocket is relayed as raw bytes
once the server has accepted the upgrade, so subprotocols and extensions are negotiated end to end.

A reused upstream connection that fails before any byte of the response (the server closed it while the request
was on its way) gets the request again on a fresh connection, once: what browsers do. A request whose body is
streamed (chunked, or larger than :data:`RETRY_BODY_LIMIT`) always goes out on a fresh connection.
"""
from __future__ import annotations

import asyncio
import select
import socket
from datetime import timedelta
from typing import Any

from tornado import gen
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

from .answers import HOP_BY_HOP, Headers, header
from .meter import Compression, GzipChunks, Stored

# Measured (benchmarks/README.md): 1 MiB chunks relayed 25% slower, 64 KiB ones 3x slower than 256 KiB.
CHUNK = 256 * 1024
RETRY_BODY_LIMIT = 1024 * 1024  # request bodies up to this size are kept, so the request can be sent again
BULK = 1024 * 1024  # what a download's copy takes from the server at a time, at most
HEAD_LIMIT = 64 * 1024  # per message head; the Jupyter server applies its own, smaller one
NO_BODY_STATUSES = frozenset({204, 304})


class NoResponse(Exception):
    """The upstream failed before the visitor was sent any part of a response: the request may be sent again."""


def head_bytes(start_line: str, headers: Headers) -> bytes:
    return (start_line + "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n").encode(
        "latin-1")


class Upstream:
    """One connection to the Jupyter server."""

    def __init__(self, stream: IOStream) -> None:
        self.stream = stream

    @classmethod
    async def open(cls, server: Any, tls: Any) -> Upstream:
        if server.sock:
            stream = IOStream(socket.socket(socket.AF_UNIX), max_buffer_size=4 * CHUNK, read_chunk_size=CHUNK)
            await stream.connect(server.sock)
        elif tls is not None:
            stream = SSLIOStream(socket.socket(), ssl_options=tls, max_buffer_size=4 * CHUNK, read_chunk_size=CHUNK)
            await asyncio.wait_for(stream.connect((server.host, server.port), server_hostname=server.host), 10)
        else:
            family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
            stream = IOStream(socket.socket(family), max_buffer_size=4 * BULK, read_chunk_size=CHUNK)
            await asyncio.wait_for(stream.connect((server.host, server.port)), 10)
            stream.set_nodelay(True)
        return cls(stream)

    def closed_while_idle(self) -> bool:
        """An upstream between responses has nothing to say: anything readable means it closed its side."""
        if self.stream.closed():
            return True
        try:
            return bool(select.select([self.stream.socket], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        self.stream.close()

    async def copy_to(self, out: Out, remaining: int) -> None:
        """Copy ``remaining`` bytes of a large body, read straight from the socket into two buffers in turn (one
        filling while the other is written): no allocation and no copy per piece. Only once tornado holds nothing
        of this stream, and when it is a plain socket (TLS goes through tornado)."""
        if isinstance(self.stream, SSLIOStream):
            while remaining > 0:
                data = await self.stream.read_bytes(min(remaining, BULK), partial=True)
                remaining -= len(data)
                await out.send(data)
            return
        loop = asyncio.get_running_loop()
        sock = self.stream.socket
        buffers = [memoryview(bytearray(BULK)), memoryview(bytearray(BULK))]
        turn = 0
        try:
            while remaining > 0:
                buffer = buffers[turn]
                size = await loop.sock_recv_into(sock, buffer[:min(remaining, BULK)])
                if not size:
                    raise StreamClosedError()
                remaining -= size
                await out.send(buffer[:size])  # waits for the other buffer's write to go out first
                turn = 1 - turn
            await out.drain()
        except OSError as e:
            raise StreamClosedError(real_error=e) from e

    async def read_head(self) -> tuple[str, Headers]:
        data = await self.stream.read_until(b"\r\n\r\n", max_bytes=HEAD_LIMIT)
        lines = data[:-4].decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return lines[0], headers


class Buffer:
    """A sink that keeps what it is sent until taken: the synchronous sinks (gzip, blanking, chunking) write here,
    and the relay sends what they made after each piece it read."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def sendall(self, data: bytes, /) -> None:
        if data:
            self.parts.append(bytes(data))
            self.size += len(data)

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return data


class Out:
    """What goes to the visitor: one write in flight while the next piece is read (back-pressure, pipelined). A
    visitor who does not take a piece within ``timeout`` seconds is let go."""

    def __init__(self, stream: IOStream, timeout: float = 60.0) -> None:
        self.stream = stream
        self.timeout = timedelta(seconds=timeout)
        self.pending: Any = None

    async def send(self, data: bytes) -> None:
        if not data:
            return
        await self.drain()
        self.pending = self.stream.write(data)

    async def drain(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            if pending.done():
                pending.result()
                return
            try:
                await gen.with_timeout(self.timeout, pending)
            except gen.TimeoutError:
                self.stream.close()
                raise StreamClosedError() from None


class Collected(bytearray):
    """A sink that keeps what it is sent, up to a limit; past it, it notes so and ends the copy."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.over = False

    def sendall(self, data: bytes, /) -> None:
        if len(self) + len(data) > self.limit:
            self.over = True
            raise StreamClosedError()
        self += data

    def close(self) -> None:
        pass


class Once:
    """A sink that sends ``head`` with the first write (or on close, for an empty body)."""

    def __init__(self, sink: Any, head: bytes) -> None:
        self.sink, self.pending = sink, head

    def sendall(self, data: bytes, /) -> None:
        self.sink.sendall(self.pending + data)
        self.pending = b""

    def close(self) -> None:
        if self.pending:
            self.sink.sendall(self.pending)
            self.pending = b""


class Chunks(Once):
    """A sink that sends what it is given as HTTP chunks (the head with the first), and the last chunk on close."""

    def sendall(self, data: bytes, /) -> None:
        if data:
            super().sendall(b"%x\r\n" % len(data) + data + b"\r\n")

    def close(self) -> None:
        super().sendall(b"0\r\n\r\n")


class Blanking:
    """A sink that takes ``secret`` out of a stream, even one split across writes: it holds back the tail of each
    write that could be the start of it."""

    def __init__(self, sink: Any, secret: bytes | None) -> None:
        self.sink, self.secret, self.held = sink, secret or b"", b""

    def sendall(self, data: bytes, /) -> None:
        data = self.held + data
        if not self.secret:
            self.sink.sendall(data)
            return
        while self.secret in data:
            data = data.replace(self.secret, b"")
        keep = next((size for size in range(min(len(self.secret) - 1, len(data)), 0, -1)
                     if self.secret.startswith(data[-size:])), 0)
        self.held = data[len(data) - keep:] if keep else b""
        if len(data) > keep:
            self.sink.sendall(data[:len(data) - keep])

    def close(self) -> None:
        if self.held:
            self.sink.sendall(self.held)
            self.held = b""
        self.sink.close()


def blank(body: bytes, secret: bytes | None) -> bytes:
    while secret and secret in body:  # again: taking one out may join the pieces of another
        body = body.replace(secret, b"")
    return body


def html(fields: dict[str, str]) -> bool:
    """An HTML body we can read as it is (not compressed by the server)."""
    return fields.get("content-type", "").lower().startswith("text/html") and "content-encoding" not in fields


async def copy_body(upstream: Upstream, sink: Any, fields: dict[str, str], flush: Any, raw: bool,
                    until_close: bool = True) -> bool:
    """Copy a response body into ``sink`` (calling ``flush`` after each piece): ``raw`` with its own framing as it
    came, else decoded. Return False if it was delimited by the server closing the connection."""
    stream = upstream.stream
    if "chunked" in fields.get("transfer-encoding", "").lower():
        while True:
            line = await stream.read_until(b"\r\n", max_bytes=HEAD_LIMIT)
            size = int(line.split(b";", 1)[0].strip(), 16)
            if raw:
                sink.sendall(line)
            if size == 0:
                while (trailer := await stream.read_until(b"\r\n", max_bytes=HEAD_LIMIT)) != b"\r\n":
                    if raw:
                        sink.sendall(trailer)
                if raw:
                    sink.sendall(b"\r\n")
                await flush()
                return True
            await copy_exactly(upstream, sink, size, flush)
            end = await stream.read_bytes(2)
            if end != b"\r\n":
                raise ValueError("malformed chunked framing from the server")
            if raw:
                sink.sendall(end)
    elif "content-length" in fields:
        await copy_exactly(upstream, sink, int(fields["content-length"]), flush)
    elif until_close:
        try:
            while True:
                sink.sendall(await stream.read_bytes(CHUNK, partial=True))
                await flush()
        except StreamClosedError:
            return False
    return True


async def copy_exactly(upstream: Upstream, sink: Any, remaining: int, flush: Any) -> None:
    while remaining > 0:
        data = await upstream.stream.read_bytes(min(remaining, CHUNK), partial=True)
        remaining -= len(data)
        sink.sendall(data)
        await flush()


async def pipe(source: IOStream, target: IOStream, tap: Any = None) -> None:
    """One direction of a websocket: copy until either side ends, then close the other (which ends the reverse
    direction too). ``tap`` (the trail's observer) is fed a copy of each chunk as it is sent on: before the write is
    awaited, so that the trail gets a key typed before the echo the other direction carries back."""
    try:
        while True:
            data = await source.read_bytes(CHUNK, partial=True)
            sent = target.write(data)
            if tap is not None:
                quietly(tap.feed, data)
            await sent
    except (StreamClosedError, OSError):
        pass
    finally:
        target.close()


def quietly(call: Any, *args: Any) -> Any:
    """A call of the trail's: nothing it raises reaches the relay (None instead)."""
    try:
        return call(*args) if call is not None else None
    except Exception:
        return None


class Response:
    """Relays the server's answer to one request (the exchange's state: what the visitor asked, how to answer)."""

    def __init__(self, gateway: Any, method: str, target: str, version: str, fields: dict[str, str],
                 admitted: Any, out: Out) -> None:
        self.gateway, self.method, self.target, self.version = gateway, method, target, version
        self.fields, self.admitted, self.out = fields, admitted, out
        self.last = False  # the connection closes after this answer (a refused upgrade): the answer says so

    async def relay(self, upstream: Upstream, on_upgrade: Any) -> bool:
        """Read the server's answer and send it on; return whether the connection may carry another request.
        Raise :class:`NoResponse` if the server gave no answer at all."""
        gateway = self.gateway
        while True:  # interim 1xx answers come before the final one
            try:
                status_line, response_headers = await upstream.read_head()
            except (StreamClosedError, OSError, ValueError) as e:
                raise NoResponse from e
            status = int(status_line.split(" ", 2)[1])
            headers_out = gateway.response_headers(self.admitted.response_headers(response_headers))
            head = head_bytes(status_line, headers_out)
            if status == 101:
                await on_upgrade(head, upstream, response_headers)
                return False
            if status >= 200:
                break
            await self.out.send(head)
        if self.last:  # else the edge would pool the connection and lose the next request it sends on it
            headers_out = [(name, value) for name, value in headers_out if name.lower() != "connection"]
            headers_out.append(("Connection", "close"))
            head = head_bytes(status_line, headers_out)
        fields = {name.lower(): value for name, value in response_headers}
        buffer = Buffer()

        async def flush() -> None:
            await self.out.send(buffer.take())

        compression: Compression = gateway.compression
        if self.method == "HEAD" or status in NO_BODY_STATUSES:
            await self.out.send(head)
        elif html(fields) and (gateway.blanked or gateway.rewrite_page):
            if not await self._relay_html(status_line, status, headers_out, fields, upstream, buffer, flush):
                return False
        elif compression.wanted(self.fields, self.method, status, fields):
            compressed = Compression.headers(headers_out)
            keep = Compression.keepable(fields)
            gzipped = GzipChunks(buffer, head_bytes(status_line, compressed), keep)
            delimited = await copy_body(upstream, gzipped, fields, flush, raw=False)
            gzipped.close()
            await flush()
            if keep and gzipped.kept is not None:
                compression.store(self.target, Stored(status_line, compressed, bytes(gzipped.kept)))
            if not delimited:
                return False
        elif "content-length" in fields and "chunked" not in fields.get("transfer-encoding", "").lower():
            # The fast path (small answers, downloads): what comes goes on as it is, the head with the first part.
            remaining, stream, first = int(fields["content-length"]), upstream.stream, head
            while remaining > 0 and (first or remaining <= BULK or stream._read_buffer_size):  # what tornado holds
                data = await stream.read_bytes(min(remaining, BULK), partial=True)
                remaining -= len(data)
                await self.out.send(first + data if first else data)
                first = b""
            if first:
                await self.out.send(first)
            if remaining:
                await upstream.copy_to(self.out, remaining)
        else:
            buffer.sendall(head)
            if not await copy_body(upstream, buffer, fields, flush, raw=True):
                return False
            await flush()
        await self.out.drain()
        return (not self.last and "close" not in self.fields.get("connection", "").lower()
                and "close" not in fields.get("connection", "").lower())

    async def _relay_html(self, status_line: str, status: int, headers_out: Headers, fields: dict[str, str],
                          upstream: Upstream, buffer: Buffer, flush: Any) -> bool:
        """An HTML answer with the server's token blanked out (and, for a page, the gateway's rewrite applied);
        return False if its body was delimited by closing the connection. A small one is rewritten whole; a larger
        one (or one of unknown length) is blanked as it streams, in chunks."""
        gateway = self.gateway
        length = fields.get("content-length")
        wanted = gateway.compression.wanted(self.fields, self.method, status, fields)
        if length is not None and "chunked" not in fields.get("transfer-encoding", "").lower() \
                and int(length) <= RETRY_BODY_LIMIT:
            collected = Collected(int(length))
            await copy_exactly(upstream, collected, int(length), _nothing)
            page = blank(bytes(collected), gateway.blanked)
            if gateway.rewrite_page and self.method == "GET" and status == 200:
                page = gateway.rewrite_page(page)
            headers_out = [(name, str(len(page)) if name.lower() == "content-length" else value)
                           for name, value in headers_out]
            if wanted:
                gzipped = GzipChunks(buffer, head_bytes(status_line, Compression.headers(headers_out)))
                gzipped.sendall(page)
                gzipped.close()
            else:
                buffer.sendall(head_bytes(status_line, headers_out) + page)
            await flush()
            return True
        plain = [(name, value) for name, value in headers_out
                 if name.lower() not in ("content-length", "transfer-encoding")]
        if self.version != "HTTP/1.1":  # no chunks for an HTTP/1.0 visitor: the body ends with the connection
            sink: Any = Blanking(Once(buffer, head_bytes(status_line, plain)), gateway.blanked)
            await copy_body(upstream, sink, fields, flush, raw=False)
            sink.close()
            await flush()
            return False
        if wanted:
            framed: Any = GzipChunks(buffer, head_bytes(status_line, Compression.headers(headers_out)))
        else:
            framed = Chunks(buffer, head_bytes(status_line, [*plain, ("Transfer-Encoding", "chunked")]))
        sink = Blanking(framed, gateway.blanked)
        delimited = await copy_body(upstream, sink, fields, flush, raw=False)
        sink.close()
        await flush()
        return delimited


async def _nothing() -> None:
    pass


async def fetch_whole(gateway: Any, admitted: Any, method: str, body: bytes,
                      limit: int) -> tuple[str, Headers, bytes] | None:
    """One whole exchange with the server for a request the gate admitted (carried by the bridge): the response's
    status line, headers (as a visitor gets them) and body; None if the body is over ``limit``."""
    upstream = await Upstream.open(gateway.server, gateway.tls)
    try:
        start_line = f"{method} {admitted.target} HTTP/1.1"
        headers = [(name, value) for name, value in gateway.upstream_headers(admitted.headers)
                   if name.lower() != "connection"]
        await upstream.stream.write(head_bytes(start_line, [*headers, ("Connection", "close")]) + body)
        while True:
            status_line, response_headers = await upstream.read_head()
            if not status_line.split(" ", 2)[1].startswith("1"):
                break
        fields = {name.lower(): value for name, value in response_headers}
        collected = Collected(limit)
        if method != "HEAD" and int(status_line.split(" ", 2)[1]) not in NO_BODY_STATUSES:
            try:
                await copy_body(upstream, collected, fields, _nothing, raw=False)
            except StreamClosedError:
                if collected.over:  # stop reading at the limit: the caller goes over plain HTTP instead
                    return None
                raise
        answer = bytes(collected)
        if html(fields):
            answer = blank(answer, gateway.blanked)
        return status_line, gateway.response_headers(admitted.response_headers(response_headers)), answer
    finally:
        upstream.close()


def without_hop_by_hop(headers: Headers) -> Headers:
    return [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP]


__all__ = ["Blanking", "Upstream", "Response", "fetch_whole", "header"]
