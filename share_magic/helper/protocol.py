"""The protocol layer: a visitor's connection on the event loop, framed by tornado's HTTP/1.1 server connection.

Each visitor connection is one :class:`Connection` (the socket as a :class:`VisitorStream`, its holder, the upstream
connection kept for it) served by tornado's ``HTTP1ServerConnection``; each request on it is one :class:`Exchange`,
the ``HTTPMessageDelegate`` tornado hands the parsed head and the body to. Nothing that comes through the tunnel is
framed by hand here: tornado finds each head and reads each body (Content-Length or chunked, chunk sizes strictly
hex). Where tornado is laxer than the gateway must be, :func:`.heads.check_head` reads the head tornado found, whole,
before tornado parses it. The gateway is a :class:`Host` here: what a connection needs of it, and nothing more.

Every head must arrive whole within :attr:`~.capacity.Limits.head_timeout` (tornado's header timeout: one deadline
across reads), and a request body must keep moving (:attr:`~.capacity.Limits.min_body_rate`).
"""
from __future__ import annotations

import asyncio
import socket
import sys
from typing import TYPE_CHECKING, Any, Callable, Protocol

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError

from .answers import Headers, text
from .grants import Held, Local, Reply, Session, Verdict
from .heads import BadRequest, answer_and_close, check_head
from .meter import chunked
from .relay import CHUNK, RETRY_BODY_LIMIT, NoResponse, Out, Response, Upstream, head_bytes, pipe, quietly

if TYPE_CHECKING:
    from ..jupyter import JupyterServer
    from .capacity import Capacity, Limits
    from .meter import Compression, Meter

WRITE_LIMIT = 64 * 1024 * 1024  # bytes written to a visitor and not yet taken


class Host(Protocol):
    """What a connection needs of the gateway that accepted it (:class:`~.gateway.Gateway` is the one there is)."""

    meter: Meter
    limits: Limits
    capacity: Capacity
    compression: Compression
    server: JupyterServer
    tls: Any
    public_origin: str | None
    bridge: Any
    bridge_path: str | None
    tap: Callable[[Session, str, Headers, Headers], Any] | None

    async def check(self, method: str, target: str, headers: Headers) -> Verdict: ...
    def claim(self, connection: Connection, holder: Any, role: str) -> bytes | None: ...
    def source_of(self, headers: Headers) -> str: ...
    async def hold(self, verdict: Held, connection: Connection, stream: Any) -> None: ...
    async def answer_locally(self, request: Local, connection: Connection, stream: Any) -> None: ...
    def upstream_headers(self, headers: Headers) -> Headers: ...
    def set_live(self, connection: Connection, live: bool) -> None: ...
    def forget(self, connection: Connection) -> None: ...
    def let_go(self, connection: Connection) -> None: ...


def _error(exc_info: Any) -> BaseException | None:
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, tuple):
        return exc_info[1]
    return exc_info if isinstance(exc_info, BaseException) else None


class VisitorStream(IOStream):
    """A visitor's socket on the loop: every byte written to it is metered, every request head it reads is checked
    whole (:func:`check_head`) before tornado sees it, and its end is reported to its :class:`Connection` once."""

    def __init__(self, sock: socket.socket, connection: Connection) -> None:
        # What a visitor has not taken yet is bounded too: a reader whose update stream falls that far behind is
        # let go (their page reconnects, and catches up from where it was).
        super().__init__(sock, max_buffer_size=4 * CHUNK, read_chunk_size=CHUNK, max_write_buffer_size=WRITE_LIMIT)
        self.connection = connection
        self.head: tuple[str, str, str, Headers] | None = None
        self.reading_head = False

    def write(self, data: Any) -> Any:
        self.connection.gateway.meter.sent(len(data))
        return super().write(data)

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None) -> Any:
        """Only request heads are read this way."""
        self.reading_head = True
        inner = super().read_until_regex(regex, max_bytes)
        if inner.done() and inner.exception() is None:  # the usual case: the head came in one read, and is here
            self.reading_head = False
            try:
                self.head = check_head(inner.result())
            except BadRequest:
                pass  # answered below, the slow way
            else:
                self.connection.head_arrived()
                return inner
            self.reading_head = True
        checked: asyncio.Future = asyncio.get_running_loop().create_future()

        def check(done: asyncio.Future) -> None:
            self.reading_head = False
            error = done.exception()
            if error is not None:
                checked.set_exception(error)
                return
            try:
                self.head = check_head(done.result())
            except BadRequest as bad:
                self.connection.gateway.meter.request()
                checked.set_exception(StreamClosedError())  # tornado stops here; the gateway answers
                asyncio.ensure_future(answer_and_close(self, bad.answer(), self.connection.gateway.limits.linger))
                return
            self.connection.head_arrived()
            checked.set_result(done.result())

        inner.add_done_callback(check)
        return checked

    def close(self, exc_info: Any = False) -> None:
        if not self.closed():
            if self.reading_head and isinstance(_error(exc_info), UnsatisfiableReadError):
                self._refuse_now(BadRequest("the request head is too large", 431,
                                            "Request Header Fields Too Large").answer())
            super().close(exc_info)
            self.connection.closed()

    def _refuse_now(self, answer: bytes) -> None:
        """Answer a head tornado gave up on (too large), in the moment before the stream closes: what fits in the
        socket's buffer, then whatever already came is read away so that the close does not reset the answer."""
        self.connection.gateway.meter.request()
        try:
            self.socket.send(answer)
            self.connection.gateway.meter.sent(len(answer))
            self.socket.shutdown(socket.SHUT_WR)
            for _ in range(16):
                if not self.socket.recv(65536):
                    break
        except OSError:
            pass


class Connection(httputil.HTTPServerConnectionDelegate):
    """One connection from the agent: its stream, whose request it carries right now, the upstream connection kept
    for it.

    The agent keeps its connections alive and sends whichever visitor's request comes next on any of them, so a
    connection is nobody's between requests: each request is judged on its own and makes the connection its
    session's (or source's) only until it is answered (:meth:`between_requests`). A websocket, a stream or a view
    holds it for as long as it lasts; revoking that person cuts exactly those (:meth:`.gateway.Gateway.cut`)."""

    def __init__(self, gateway: Host, sock: socket.socket) -> None:
        self.gateway = gateway
        self.stream = VisitorStream(sock, self)
        self.holder: Any = None
        self.reader = False
        self.session: Session | None = None
        self.upstream: Upstream | None = None
        self.live = False
        self.ended = False

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> Exchange:
        return Exchange(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        pass

    def head_arrived(self) -> None:
        self.gateway.capacity.pending.pop(self, None)

    def closed(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self.gateway.forget(self)

    def carry(self, session: Session) -> None:
        """Note whose request this connection carries, so that revoking them cuts it while it is in flight. A session
        revoked since the gate admitted the request is cut here; one revoked later, by :meth:`.gateway.Gateway.cut`."""
        self.session = session
        if session.grant.revoked_at is not None:
            self.stream.close()

    def between_requests(self) -> None:
        """The request is answered and the connection waits for the next, which may be anyone's: it carries nobody's
        request, and holds nothing of anyone's."""
        self.session = None
        self.gateway.let_go(self)


class Exchange(httputil.HTTPMessageDelegate):
    """One request on a visitor connection: asks the gate, then answers locally or relays to the server."""

    def __init__(self, connection: Connection, server_conn: object, request_conn: Any) -> None:
        self.connection = connection
        self.gateway = connection.gateway
        self.server_conn = server_conn
        self.request_conn: HTTP1Connection = request_conn
        self.inner: Any = None  # the bridge's tornado application, for a bridge request
        self.body: list[bytes] = []
        self.streaming: Upstream | None = None
        self.chunked = False
        self.stream_body = False
        self.answered: bool | None = None  # answered already, from the head: whether to keep the connection
        self.response: Response | None = None
        self.stored: Any = None
        self.received = 0
        self.waiting = False  # on the server, not on the visitor: the body's clock stops
        self.watch: Any = None

    # -- the head -----------------------------------------------------------------------------------------------

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        return self._route(start_line, headers)

    async def _route(self, start_line: Any, parsed: httputil.HTTPHeaders) -> None:
        gateway, connection = self.gateway, self.connection
        assert connection.stream.head is not None
        method, target, version, headers = connection.stream.head
        gateway.meter.request()
        if gateway.public_origin is None:
            return self._reply(text(503, "Service Unavailable", "The share is not open."))
        verdict = await gateway.check(method, target, headers)
        if isinstance(verdict, Reply):  # answered from the head: a body it never asked for is not awaited
            refused = gateway.claim(connection, ("source", gateway.source_of(headers)), "source")
            return self._reply(refused or verdict.response)
        if isinstance(verdict, Held):  # answered here on a connection held for a while (a waiting page's stream)
            refused = gateway.claim(connection, verdict.holder, "lobby")
            if refused is not None:
                return self._reply(refused)
            asyncio.ensure_future(gateway.hold(verdict, connection, self.request_conn.detach()))
            return None
        session = verdict.session
        refused = gateway.claim(connection, ("session", id(session)), session.grant.role)
        if refused is not None:
            return self._reply(refused)
        connection.carry(session)
        if connection.stream.closed():
            return None
        if isinstance(verdict, Local):
            if gateway.bridge is not None and session.grant.role != "view" \
                    and verdict.target.split("?", 1)[0] == gateway.bridge_path:
                self.request_conn.share_verdict = verdict  # type: ignore[attr-defined]
                self.request_conn.share_connection = connection  # type: ignore[attr-defined]
                self.inner = gateway.bridge.start_request(self.server_conn, self.request_conn)
                started = self.inner.headers_received(start_line, parsed)
                if started is not None:
                    await started
                return None
            stream = self.request_conn.detach()
            asyncio.ensure_future(gateway.answer_locally(verdict, connection, stream))
            return None
        fields = {name.lower(): value for name, value in headers}
        self.response = Response(gateway, method, verdict.target, version, fields, verdict,
                                 Out(connection.stream, gateway.limits.body_timeout))
        if method == "GET":
            self.stored = gateway.compression.stored(verdict.target, fields)
            if self.stored is not None:  # an immutable asset, compressed before: the server need not be asked
                return None
        if "upgrade" in fields and "upgrade" in fields.get("connection", "").lower():
            stream = self.request_conn.detach()  # nothing of HTTP follows on this connection: its bytes are ours
            self.response.out = Out(stream, gateway.limits.body_timeout)
            self.response.last = True
            asyncio.ensure_future(self._upgrade_exchange(stream))
            return None
        if not ("content-length" in fields or "transfer-encoding" in fields):
            # No body to wait for (most requests): relayed now, so that finish() only lets tornado read the next.
            self.answered = await self._answer()
            return None
        self.chunked = "chunked" in fields.get("transfer-encoding", "").lower()
        # A body too large to keep (or of unknown length) goes to the server as it comes, on a fresh connection
        # opened with its first part: tornado has checked that part's framing by then.
        self.stream_body = self.chunked or int(fields.get("content-length") or 0) > RETRY_BODY_LIMIT
        if "content-length" in fields or self.chunked:
            self._watch_body()
        return None

    def _reply(self, answer: bytes) -> None:
        stream = self.request_conn.detach()
        asyncio.ensure_future(answer_and_close(stream, answer, self.gateway.limits.linger,
                                               self.gateway.limits.body_timeout))

    # -- the body -----------------------------------------------------------------------------------------------

    async def _start_streaming(self) -> Upstream:
        upstream = await Upstream.open(self.gateway.server, self.gateway.tls)
        self.streaming = upstream
        await upstream.stream.write(self._request_head())
        return upstream

    def _request_head(self) -> bytes:
        response = self.response
        assert response is not None
        start_line = f"{response.method} {response.admitted.target} {response.version}"
        return head_bytes(start_line, self.gateway.upstream_headers(response.admitted.headers))

    def _watch_body(self) -> None:
        limits = self.gateway.limits
        loop = asyncio.get_running_loop()
        least = max(1, int(limits.min_body_rate * limits.body_timeout))

        def check(before: int) -> None:
            if self.waiting or self.received - before >= least:
                self.watch = loop.call_later(limits.body_timeout, check, self.received)
            else:
                self.connection.stream.close()  # a body that does not move holds nothing longer

        self.watch = loop.call_later(limits.body_timeout, check, 0)

    def data_received(self, chunk: bytes) -> Any:
        if self.inner is not None:
            return self.inner.data_received(chunk)
        self.received += len(chunk)
        if not self.stream_body:
            self.body.append(chunk)
            return None
        return self._forward(chunk)

    async def _forward(self, chunk: bytes) -> None:
        self.waiting = True
        try:
            upstream = self.streaming or await self._start_streaming()
            await upstream.stream.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if self.chunked else chunk)
        except (StreamClosedError, OSError, asyncio.TimeoutError):
            self.connection.stream.close()
        finally:
            self.waiting = False

    def finish(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
        if self.inner is not None:
            return self.inner.finish()
        if self.answered is not None:
            self._done(self.answered)
        elif self.response is not None:
            asyncio.ensure_future(self._respond())
        return None

    def on_connection_close(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
        if self.streaming is not None:
            self.streaming.close()
        if self.inner is not None:
            self.inner.on_connection_close()

    # -- the answer ---------------------------------------------------------------------------------------------

    async def _respond(self) -> None:
        self._done(await self._answer())

    async def _answer(self) -> bool:
        """Answer the request; return whether the connection may carry another."""
        try:
            if self.stored is not None:
                stored = self.stored
                await self.connection.stream.write(
                    head_bytes(stored.status_line, stored.headers) + chunked(stored.body))
                return True
            return await self._exchange()
        except Exception:  # either side went away, or the server spoke something other than HTTP/1.1
            return False

    def _done(self, keep: bool) -> None:
        stream = self.connection.stream
        if keep and not stream.closed():
            self.connection.between_requests()
            self.request_conn.finish()  # tornado reads the next request
        else:
            stream.close()

    async def _exchange(self) -> bool:
        """Relay the request and its response; return whether the connection may carry another."""
        response, connection = self.response, self.connection
        assert response is not None
        if self.stream_body:
            try:
                upstream = self.streaming or await self._start_streaming()
            except (OSError, asyncio.TimeoutError):
                await response.out.send(text(502, "Bad Gateway", "The Jupyter server is not reachable."))
                await response.out.drain()
                return False
            self.streaming = None
            try:
                if self.chunked:
                    await upstream.stream.write(b"0\r\n\r\n")
                keep = await response.relay(upstream, self._upgraded)
            except (NoResponse, StreamClosedError):
                upstream.close()
                await response.out.send(text(502, "Bad Gateway", "The Jupyter server closed the connection "
                                                                 "without answering."))
                await response.out.drain()
                return False
            self._keep(upstream, keep)
            return keep
        request = self._request_head() + b"".join(self.body)
        upstream, connection.upstream = connection.upstream, None
        if upstream is not None and upstream.closed_while_idle():
            upstream.close()
            upstream = None
        for reused in (upstream is not None, False):
            if upstream is None:
                try:
                    upstream = await Upstream.open(self.gateway.server, self.gateway.tls)
                except (OSError, asyncio.TimeoutError):
                    await response.out.send(text(502, "Bad Gateway", "The Jupyter server is not reachable."))
                    await response.out.drain()
                    return False
            try:
                try:
                    await upstream.stream.write(request)
                except StreamClosedError as e:
                    raise NoResponse from e
                keep = await response.relay(upstream, self._upgraded)
            except NoResponse:
                upstream.close()
                upstream = None
                if not reused:
                    break
                continue
            except BaseException:  # the visitor went away mid-exchange: the connection in hand goes too
                upstream.close()
                raise
            self._keep(upstream, keep)
            return keep
        await response.out.send(text(502, "Bad Gateway", "The Jupyter server closed the connection without "
                                                         "answering."))
        await response.out.drain()
        return False

    def _keep(self, upstream: Upstream, keep: bool) -> None:
        if keep and not self.connection.ended and self.connection.upstream is None:
            self.connection.upstream = upstream
        elif not upstream.stream.closed() and not getattr(upstream, "piped", False):
            upstream.close()

    async def _upgrade_exchange(self, stream: IOStream) -> None:
        """A websocket upgrade: the request goes as it is (with a retry, like any); on 101, bytes flow both ways."""
        try:
            await self._exchange()
        except Exception:
            pass
        finally:
            if not getattr(self, "piping", False):
                stream.close()

    async def _upgraded(self, head: bytes, upstream: Upstream, response_headers: Headers) -> None:
        assert self.response is not None
        out = self.response.out
        admitted = self.response.admitted
        tapped = quietly(self.gateway.tap, admitted.session, admitted.target, admitted.headers, response_headers)
        await out.send(head)
        await out.drain()
        self.piping = True
        upstream.piped = True  # type: ignore[attr-defined]
        connection, visitor = self.connection, out.stream
        gateway = self.gateway
        assert connection.session is not None
        gateway.set_live(connection, True)
        try:
            await asyncio.gather(pipe(upstream.stream, visitor, getattr(tapped, "back", None)),
                                 pipe(visitor, upstream.stream, tapped))
        finally:
            if tapped is not None:
                quietly(tapped.close)
            gateway.set_live(connection, False)
            upstream.close()
            visitor.close()
