"""The gateway: a reverse proxy on localhost between the tunnel and the Jupyter server.

A localhost Jupyter server refuses a public Host, and refuses cross-origin API calls and websockets. The tunnel
delivers requests with the public Host and the browser's public Origin, so the gateway translates exactly three
request headers and nothing else:

- ``Host`` becomes the server's own local host;
- ``Origin`` and ``Referer`` become the server's origin **only when they are this share's public origin** (known
  from the tunnel, never taken from the request). Any other Origin reaches the server unchanged, so the server keeps
  refusing cross-site requests exactly as it would without the gateway.

Responses pass through unchanged except for a ``Location`` (one that points at the server is made public, one
that would lead off the share becomes the base URL) and HTML bodies, from which :attr:`Gateway.blanked` (the
server's token) is taken out, whatever their status or framing.

Only requests every HTTP parser reads the same way are relayed (:func:`check_request`): a head with a bare CR or
LF, obs-fold, control characters, a malformed name, an ambiguous body length or a target that is not a path gets
the gateway's own 400, so that no second request can hide inside one the gate has seen.

Who may pass is not the relay's business: it asks :class:`~share_magic.access.Access` about every request head and
either relays the request as admitted (its target and headers as the gate left them) or sends the gate's own answer,
at once, without waiting for a body. A refused request never reaches the server.

It is a byte-level HTTP/1.1 proxy: every visitor connection gets its own upstream connection, kept for as long as
the visitor keeps theirs (keep-alive for free), and only message heads are parsed. Bodies are relayed as they come,
by their own framing (Content-Length, chunked, or until close), with back-pressure both ways. A websocket is relayed
as raw bytes once the server has accepted the upgrade, so subprotocols and extensions are negotiated end to end.

Each visitor connection is served by a thread of its own, with blocking socket calls (a second thread while it
carries a websocket). Measured side by side (benchmarks/), that relays a small request ~0.1 ms faster than an event
loop does; what the gateway still costs is little more than the extra hop through a process. So that silence
cannot hold those threads, heads and bodies time out and the number of connections is capped (:class:`Limits`).
"""
from __future__ import annotations

import re
import select
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Protocol
from urllib.parse import urlsplit, urlunsplit

from ..jupyter import JupyterServer
from .access import Admitted, Gate, Local, Reply, Session, response
from .meter import Compression, GzipChunks, Meter, Stored, chunked

HOP_BY_HOP = frozenset({
    "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
})
# Measured (benchmarks/README.md, asyncio gateway): 1 MiB chunks relayed 25% slower, 64 KiB ones 3x slower.
CHUNK = 256 * 1024
RETRY_BODY_LIMIT = 1024 * 1024  # request bodies up to this size are kept, so the request can be sent again
HEAD_LIMIT = 64 * 1024  # per message head; the Jupyter server applies its own, smaller one
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
NO_BODY_STATUSES = frozenset({204, 304})

Headers = list[tuple[str, str]]


class _Sink(Protocol):
    def sendall(self, data: bytes, /) -> None: ...


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


def _leads_elsewhere(location: str) -> bool:
    """Whether a browser would take this Location to another host: an absolute URL or a scheme-relative one,
    read as browsers read it (surrounding controls and spaces dropped, tabs and newlines removed, ``\\`` taken for
    ``/``)."""
    url = re.sub(r"[\t\n\r]", "", location.strip("\x00- ")).replace("\\", "/")
    return url.startswith("//") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", url) is not None


@dataclass(frozen=True)
class Limits:
    """How long a visitor may take, and how many connections the gateway holds, so that nobody can hold the helper
    with connections that say nothing. Seconds are of silence: a slow but steady body is fine."""

    head_timeout: float = 30.0  # for a request head to arrive whole (and for a kept-alive connection to idle)
    body_timeout: float = 60.0  # for each part of a request body, and for the visitor to take each part of an answer
    linger: float = 2.0  # after the gateway's own last answer, for the visitor to stop sending
    max_connections: int = 256  # beyond this, a connection gets a 503 at once, and no thread


def _turn_away(sock: socket.socket) -> None:
    """Answer 503 to a connection the gateway cannot hold, without waiting on it."""
    sock.setblocking(False)
    try:
        sock.send(_plain_response(503, "Service Unavailable", "Too many connections; try again shortly."))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(RETRY_BODY_LIMIT)  # what already came: closing on unread input would reset the answer away
    except OSError:
        pass
    sock.close()


class _Closed(Exception):
    """A side of the exchange went away."""


class _NoResponse(Exception):
    """The upstream failed before the visitor was sent any part of a response: the request may be sent again."""


class Gateway:
    """Serves one share: every request it gets came through the tunnel from a visitor."""

    def __init__(self, server: JupyterServer, access: Gate, on_change: Callable[[], None] | None = None,
                 compression: Compression | None = None, limits: Limits | None = None) -> None:
        self.server = server
        self.limits = limits or Limits()
        self._served = 0  # visitor connections being served, up to limits.max_connections
        self.access = access
        self.meter = Meter()
        self.compression = compression or Compression(enabled=False)
        self.public_origin: str | None = None
        self.on_change = on_change  # called when the set of connected sessions changes
        # Answers what the gate hands to the gateway itself (the view page, the bridge): (request, the visitor's
        # reader, what to write to, live) where live(True/False) marks a long-lived answer, counted like a websocket.
        self.local: Callable[[Local, BinaryIO, _Sink, Callable[[bool], None]], None] | None = None
        # Asked for every (small) Jupyter page an editing visitor gets: the page as they should get it.
        self.rewrite_page: Callable[[bytes], bytes] | None = None
        # Blanked from every HTML answer a visitor gets, whatever its status or size (the server's token).
        self.blanked: bytes | None = None
        # The trail's tap: tap(session, target, request headers, response headers) for each websocket relayed gives
        # an observer (or None) that is fed a copy of what the visitor sends (feed(data), then close()).
        self.tap: Callable[[Session, str, Headers, Headers], Any] | None = None
        self.port = 0
        self._listeners: list[socket.socket] = []
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()  # every open connection, both sides, to cut on close
        self._sessions: dict[socket.socket, Session] = {}  # visitor side -> the session it last carried
        self._websockets: dict[socket.socket, Session] = {}  # visitor side -> the session it belongs to
        self._connected_since: dict[Session, float] = {}  # sessions holding a websocket, since when
        self._closed = False
        self._tls = server.tls_context()

    # -- lifetime ---------------------------------------------------------------------------------------------------

    def listen(self) -> int:
        """Accept on a free port of 127.0.0.1, and nowhere else: the agent's upstream is ``127.0.0.1:PORT``, an
        address the gateway holds, never a name (``localhost`` may resolve to ``::1`` first, where any local user
        could be listening on the same port). Requests get 503 until :meth:`open_to` names the public URL."""
        self._listeners.append(socket.create_server(("127.0.0.1", 0), backlog=128))
        self.port = self._listeners[0].getsockname()[1]
        for listener in self._listeners:
            threading.Thread(target=self._accept, args=(listener,), daemon=True, name="gateway-accept").start()
        return self.port

    def open_to(self, public_url: str) -> None:
        self.public_origin = origin_of(public_url)

    def close(self) -> None:
        """Stop accepting and cut every visitor connection, websockets included."""
        self.public_origin = None
        with self._lock:
            self._closed = True
            for sock in [*self._listeners, *self._sockets]:
                _shut(sock)  # wakes the thread blocked on it, which then closes it
        for listener in self._listeners:
            listener.close()

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
            elif lower == "origin" and self.is_public(value):
                value = self.server.origin
            elif lower == "referer" and self.is_public(value):
                value = _rebase(value, self.server.origin)
            translated.append((name, value))
        if not any(name.lower() == "host" for name, _ in translated):
            translated.insert(0, ("Host", self.server.host_header))
        return translated

    def is_public(self, url: str) -> bool:
        public = self.public_origin
        if public is None:
            return False
        # Fast path for what browsers send (exactly the origin, or it and a path); anything else is normalized.
        if url.startswith(public) and url[len(public):len(public) + 1] in ("", "/", "?", "#"):
            return True
        return origin_of(url) == public

    def public_location(self, location: str) -> str:
        """A Location as the visitor gets it: the server's own URLs made public ones; one that would lead off the
        share (another site, or a scheme-relative ``//host``) becomes the server's base URL on the share."""
        if self.public_origin is not None and origin_of(location) == origin_of(self.server.origin):
            return _rebase(location, self.public_origin)
        if _leads_elsewhere(location) and (self.public_origin is None or origin_of(location) != self.public_origin):
            return self.server.base_url
        return location

    def response_headers(self, headers: Headers) -> Headers:
        return [(name, self.public_location(value) if name.lower() == "location" else value)
                for name, value in headers if name.lower() not in HOP_BY_HOP]

    # -- visitors ---------------------------------------------------------------------------------------------------

    def visitors(self) -> int:
        """Admitted browser sessions holding a live connection (a websocket) right now."""
        return len(self._connected_since)

    def connected(self) -> dict[Session, float]:
        """The sessions holding a live connection (a websocket) right now, and since when."""
        with self._lock:
            return dict(self._connected_since)

    def cut(self, sessions: list[Session]) -> None:
        """Close every connection of these sessions at once, websockets included (their threads clean up)."""
        doomed = set(sessions)
        with self._lock:
            for sock, session in self._sessions.items():
                if session in doomed:
                    _shut(sock)

    def _set_websocket(self, sock: socket.socket, session: Session | None) -> None:
        with self._lock:
            before = self.visitors()
            if session is None:
                gone = self._websockets.pop(sock)
                if gone not in self._websockets.values():
                    del self._connected_since[gone]
            else:
                self._websockets[sock] = session
                self._connected_since.setdefault(session, time.time())
            changed = self.visitors() != before
        if changed and self.on_change is not None:
            self.on_change()

    # -- serving ----------------------------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                full = self._served >= self.limits.max_connections
                self._served += not full
            if full:  # as many connections as it may hold: no thread for this one
                _turn_away(sock)
                continue
            try:
                threading.Thread(target=self._serve_counted, args=(sock,), daemon=True, name="gateway-visitor").start()
            except RuntimeError:  # no thread to be had
                self._release_slot()
                _turn_away(sock)

    def _serve_counted(self, sock: socket.socket) -> None:
        try:
            self._serve(sock)
        finally:
            self._release_slot()

    def _release_slot(self) -> None:
        with self._lock:
            self._served -= 1

    def connections(self) -> int:
        """Visitor connections being served right now (each by a thread of its own)."""
        return self._served

    def _open(self, sock: socket.socket, metered: bool = False) -> _Side:
        """Take a connection into the gateway's keeping: :meth:`close` cuts it (at once, if already closed). What
        is written to a ``metered`` one (a visitor's) is counted."""
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets.add(sock)
            if self._closed:
                _shut(sock)
        return _Side(sock, self.meter.counted(sock) if metered else sock)

    def _drop(self, side: _Side) -> None:
        with self._lock:
            self._sockets.discard(side.sock)
            self._sessions.pop(side.sock, None)
        side.close()

    def _carrying(self, sock: socket.socket, session: Session) -> None:
        """Note whose request this visitor connection carries, so that revoking them cuts it. A session revoked
        since the gate admitted the request is cut here; one revoked later, by :meth:`cut`."""
        with self._lock:
            self._sessions[sock] = session
            if session.grant.revoked_at is not None:
                _shut(sock)

    def _connect_upstream(self) -> socket.socket:
        if self.server.sock:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(self.server.sock)
            except OSError:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((self.server.host, self.server.port), timeout=10)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self.server.host)
            except OSError:
                sock.close()
                raise
        sock.settimeout(None)
        return sock

    def _serve(self, sock: socket.socket) -> None:
        visitor = self._open(sock, metered=True)
        upstream: _Side | None = None
        try:
            while True:
                visitor.sock.settimeout(self.limits.head_timeout)  # also how long a kept-alive connection may idle
                try:
                    request = _read_head(visitor.reader, strict=True)
                    if request is None:
                        break
                    start_line, headers = request
                    method, target, version = _split_start_line(start_line)
                    check_request(method, target, headers)
                except BadRequest as bad:
                    self.meter.request()
                    self._answer_and_close(visitor, _plain_response(bad.status, bad.reason, f"The gateway refused "
                                                                                            f"this request: {bad}.\n"))
                    break
                self.meter.request()
                if self.public_origin is None:
                    self._answer_and_close(visitor, _plain_response(503, "Service Unavailable",
                                                                    "The share is not open."))
                    break
                fields = {name.lower(): value for name, value in headers}
                verdict = self.access.check(method, target, headers)
                if isinstance(verdict, Reply):  # answered from the head: a body it never asked for is not awaited
                    self._answer_and_close(visitor, verdict.response)
                    break
                visitor.sock.settimeout(self.limits.body_timeout)
                self._carrying(visitor.sock, verdict.session)
                if isinstance(verdict, Local):
                    self._answer_locally(verdict, visitor)
                    break
                stored = self.compression.stored(verdict.target, fields) if method == "GET" else None
                if stored is not None:  # an immutable asset, compressed before: the server need not be asked
                    visitor.out.sendall(_head(stored.status_line, stored.headers) + chunked(stored.body))
                    continue
                start_line, headers = f"{method} {verdict.target} {version}", verdict.headers
                if "100-continue" in fields.get("expect", "").lower():
                    visitor.out.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # the server never sees Expect
                body = _take_small_body(visitor.reader, fields)
                # A connection that served an earlier request may be closing under us. Only a request that can be
                # sent again whole may risk it; a streamed body always goes out on a fresh connection.
                if upstream is not None and (body is None or upstream.closed_while_idle()):
                    self._drop(upstream)
                    upstream = None
                keep, upstream = self._exchange_retrying(start_line, headers, fields, body, visitor, upstream, verdict)
                if not keep:
                    break
        except (_Closed, OSError, ValueError):
            # Either side went away or spoke something other than HTTP/1.1: this connection ends, others go on.
            pass
        finally:
            for side in (visitor, upstream):
                if side is not None:
                    self._drop(side)

    def _answer_and_close(self, visitor: _Side, answer: bytes) -> None:
        """Send the gateway's own last answer, then close without losing it: closing a socket with unread input
        resets the connection, which can destroy the answer before the visitor reads it. So stop writing, and read
        (and drop) whatever the visitor still sends, for a short while only."""
        visitor.out.sendall(answer)
        try:
            visitor.sock.shutdown(socket.SHUT_WR)
            visitor.sock.settimeout(self.limits.linger)
            deadline, dropped = time.monotonic() + self.limits.linger, 0
            while time.monotonic() < deadline and dropped < RETRY_BODY_LIMIT:
                data = visitor.reader.read1(CHUNK)
                if not data:
                    break
                dropped += len(data)
        except OSError:
            pass
    def _exchange_retrying(self, start_line: str, headers: Headers, fields: dict[str, str], body: bytes | None,
                           visitor: _Side, upstream: _Side | None, admitted: Admitted) -> tuple[bool, _Side | None]:
        """Relay one exchange; return whether the visitor's connection may carry another, and the upstream
        connection to keep for it.

        A reused upstream connection that fails before any byte of the response (the server closed it while the
        request was on its way) gets the request again on a fresh connection, once: what browsers do. A request
        that fails on a fresh connection gets the gateway's own 502."""
        for reused in (upstream is not None, False):
            if upstream is None:
                try:
                    upstream = self._open(self._connect_upstream())
                except OSError:
                    visitor.out.sendall(_plain_response(502, "Bad Gateway", "The Jupyter server is not reachable."))
                    return False, None
            try:
                return self._exchange(start_line, headers, fields, body, visitor, upstream, admitted), upstream
            except _NoResponse:
                self._drop(upstream)
                upstream = None
                if not reused:
                    break
            except BaseException:  # the visitor went away mid-exchange: the connection in hand goes too
                self._drop(upstream)
                raise
        visitor.out.sendall(_plain_response(502, "Bad Gateway", "The Jupyter server closed the connection "
                                                                 "without answering."))
        return False, None

    def _exchange(self, start_line: str, headers: Headers, fields: dict[str, str], body: bytes | None,
                  visitor: _Side, upstream: _Side, admitted: Admitted) -> bool:
        """Relay one request and its response; return whether the connection may carry another. Raise
        :class:`_NoResponse` if the upstream failed before the visitor was sent anything."""
        method = start_line.split(" ", 1)[0]
        head = _head(start_line, self.upstream_headers(headers))
        server = _UpstreamSink(upstream.sock)
        if body is None:
            _relay_body(visitor.reader, server, fields, head)
        else:
            server.sendall(head + body)
        while True:  # interim 1xx answers come before the final one
            try:
                response = _read_head(upstream.reader)
            except (OSError, ValueError):
                response = None
            if response is None:
                raise _NoResponse
            status_line, response_headers = response
            status = int(status_line.split(" ", 2)[1])
            headers_out = self.response_headers(admitted.response_headers(response_headers))
            head = _head(status_line, headers_out)
            if status < 200:
                visitor.out.sendall(head)
            if status == 101:
                visitor.sock.settimeout(None)  # a websocket may rest as long as it likes
                tapped = _quietly(self.tap, admitted.session, admitted.target, headers, response_headers)
                self._relay_websocket(visitor, upstream, admitted.session, tapped)
                return False
            if status >= 200:
                break
        response_fields = {name.lower(): value for name, value in response_headers}
        if method == "HEAD" or status in NO_BODY_STATUSES:
            visitor.out.sendall(head)
        elif _html(response_fields) and (self.blanked or self.rewrite_page):
            if not self._relay_html(start_line, fields, status_line, headers_out, response_fields, upstream, visitor):
                return False
        elif self.compression.wanted(fields, method, status, response_fields):
            compressed_headers = Compression.headers(headers_out)
            keep = Compression.keepable(response_fields)
            gzipped = GzipChunks(visitor.out, _head(status_line, compressed_headers), keep)
            delimited = _relay_decoded(upstream.reader, gzipped, response_fields)
            gzipped.close()
            if keep and gzipped.kept is not None:
                target = start_line.split(" ", 2)[1]
                self.compression.store(target, Stored(status_line, compressed_headers, bytes(gzipped.kept)))
            if not delimited:
                return False
        elif not _relay_body(upstream.reader, visitor.out, response_fields, head, until_close=True):
            return False
        return ("close" not in fields.get("connection", "").lower()
                and "close" not in response_fields.get("connection", "").lower())

    def _relay_html(self, start_line: str, fields: dict[str, str], status_line: str, headers_out: Headers,
                    response_fields: dict[str, str], upstream: _Side, visitor: _Side) -> bool:
        """An HTML answer, with :attr:`blanked` blanked out (and, for a page, :attr:`rewrite_page` applied); return
        False if its body was delimited by closing the connection. A small one is rewritten whole; a larger one
        (or one of unknown length) is blanked as it streams, in chunks."""
        method, _, rest = start_line.partition(" ")
        status = int(status_line.split(" ", 2)[1])
        length = response_fields.get("content-length")
        if length is not None and "chunked" not in response_fields.get("transfer-encoding", "").lower() \
                and int(length) <= RETRY_BODY_LIMIT:
            page = self.blank(_exactly_bytes(upstream.reader, int(length)))
            if self.rewrite_page and method == "GET" and status == 200:
                page = self.rewrite_page(page)
            headers_out = [(name, str(len(page)) if name.lower() == "content-length" else value)
                           for name, value in headers_out]
            if self.compression.wanted(fields, method, status, response_fields):
                gzipped = GzipChunks(visitor.out, _head(status_line, Compression.headers(headers_out)))
                gzipped.sendall(page)
                gzipped.close()
            else:
                visitor.out.sendall(_head(status_line, headers_out) + page)
            return True
        if not rest.endswith("HTTP/1.1"):  # no chunks for an HTTP/1.0 visitor: the body ends with the connection
            plain = [(name, value) for name, value in headers_out
                     if name.lower() not in ("content-length", "transfer-encoding")]
            sink: Any = _Blanking(_Once(visitor.out, _head(status_line, plain)), self.blanked)
            _relay_decoded(upstream.reader, sink, response_fields)
            sink.close()
            return False
        if self.compression.wanted(fields, method, status, response_fields):
            framed: Any = GzipChunks(visitor.out, _head(status_line, Compression.headers(headers_out)))
        else:
            framed = _Chunks(visitor.out, _head(status_line, [
                *[(name, value) for name, value in headers_out
                  if name.lower() not in ("content-length", "transfer-encoding")],
                ("Transfer-Encoding", "chunked")]))
        sink = _Blanking(framed, self.blanked)
        delimited = _relay_decoded(upstream.reader, sink, response_fields)
        sink.close()
        return delimited

    def blank(self, body: bytes) -> bytes:
        secret = self.blanked
        while secret and secret in body:  # again: taking one out may join the pieces of another
            body = body.replace(secret, b"")
        return body

    def fetch(self, admitted: Admitted, method: str, body: bytes,
              limit: int = 1024 * 1024) -> tuple[str, Headers, bytes] | None:
        """One whole exchange with the server for a request the gate admitted (carried by the bridge): the
        response's status line, headers (as a visitor gets them) and body; None if the body is over ``limit``."""
        check_request(method, admitted.target, admitted.headers)  # the bridge's caller is a page's script
        upstream = self._open(self._connect_upstream())
        try:
            start_line = f"{method} {admitted.target} HTTP/1.1"
            headers = [(name, value) for name, value in self.upstream_headers(admitted.headers)
                       if name.lower() != "connection"]
            upstream.sock.sendall(_head(start_line, [*headers, ("Connection", "close")]) + body)
            while True:
                response = _read_head(upstream.reader)
                if response is None:
                    raise _Closed
                status_line, response_headers = response
                if not status_line.split(" ", 2)[1].startswith("1"):
                    break
            fields = {name.lower(): value for name, value in response_headers}
            collected = _Collected(limit)
            if method != "HEAD" and int(status_line.split(" ", 2)[1]) not in NO_BODY_STATUSES:
                try:
                    _relay_decoded(upstream.reader, collected, fields)
                except _Closed:
                    if collected.over:  # stop reading at the limit: the caller goes over plain HTTP instead
                        return None
                    raise
            answer = bytes(collected)
            if _html(fields):
                answer = self.blank(answer)
            return status_line, self.response_headers(admitted.response_headers(response_headers)), answer
        finally:
            self._drop(upstream)

    def _answer_locally(self, request: Local, visitor: _Side) -> None:
        fields = {name.lower(): value for name, value in request.headers}
        if "100-continue" not in fields.get("expect", "").lower():
            _take_small_body(visitor.reader, fields)
        if self.local is None:
            visitor.out.sendall(_plain_response(404, "Not Found", "Nothing is served here."))
            return
        visitor.sock.settimeout(None)  # an admitted session's long-lived answer (a websocket, a live view)
        self.local(request, visitor.reader, visitor.out,
                   lambda live: self._set_websocket(visitor.sock, request.session if live else None))

    def _relay_websocket(self, visitor: _Side, upstream: _Side, session: Session, tapped: Any = None) -> None:
        self._set_websocket(visitor.sock, session)
        try:
            downstream = threading.Thread(target=_pipe, args=(upstream.reader, visitor.out), daemon=True,
                                          name="gateway-websocket")
            downstream.start()
            _pipe(visitor.reader, upstream.sock if tapped is None else _Tapped(upstream.sock, tapped))
            downstream.join()
        finally:
            self._set_websocket(visitor.sock, None)
            if tapped is not None:
                _quietly(tapped.close)


class _Tapped:
    """The upstream socket of a websocket, with the trail's observer fed a copy of each write, after it is sent."""

    def __init__(self, sock: socket.socket, observer: Any) -> None:
        self.sock, self.observer = sock, observer

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)
        _quietly(self.observer.feed, data)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)


def _quietly(call: Callable[..., Any] | None, *args: Any) -> Any:
    """The trail's calls: nothing they raise reaches the relay (None instead)."""
    try:
        return call(*args) if call is not None else None
    except Exception:
        return None


class _UpstreamSink:
    """The upstream socket as a request's destination: a failed write means the server gave no response."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def sendall(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise _NoResponse from e


class _Side:
    """One connection of an exchange: the socket, a buffered reader over it to parse from, and what to write to
    (for a visitor, the socket with a meter on it)."""

    def __init__(self, sock: socket.socket, out: _Sink) -> None:
        self.sock = sock
        self.out = out
        self.reader: BinaryIO = sock.makefile("rb", buffering=CHUNK)

    def close(self) -> None:
        self.reader.close()  # the socket only really closes once its reader has let go too
        self.sock.close()

    def closed_while_idle(self) -> bool:
        """An upstream between responses has nothing to say: anything readable means it closed its side."""
        return bool(select.select([self.sock], [], [], 0)[0])


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected, or already shut


# -- HTTP/1.1 framing ---------------------------------------------------------------------------------------------


def _read_head(reader: BinaryIO, strict: bool = False) -> tuple[str, Headers] | None:
    """A message head: its start line and headers; None at a clean end of the stream. ``strict`` (a visitor's
    request) accepts only lines ended by CRLF; :func:`check_request` then checks what they say."""
    buffered = reader.peek(HEAD_LIMIT)  # what one read brought: nearly always a whole head
    end = buffered.find(b"\r\n\r\n", 0, HEAD_LIMIT)
    if end > 0:
        lines = reader.read(end + 4)[:-4].decode("latin-1").split("\r\n")
    else:
        lines = _read_head_lines(reader, strict)
        if not lines:
            return None
    if strict:
        for line in lines:  # a bare CR or LF ends a line for some parsers and not for others: never pass one on
            if "\n" in line or "\r" in line:
                raise BadRequest("a bare CR or LF in the request head")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if not name or name != name.strip():
            raise BadRequest(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return lines[0], headers


def _read_head_lines(reader: BinaryIO, strict: bool = False) -> list[str]:
    """A head that arrives in pieces, line by line; no lines at a clean end of the stream."""
    lines: list[str] = []
    size = 0
    while True:
        line = reader.readline(HEAD_LIMIT - size + 1)
        size += len(line)
        if not line.endswith(b"\n"):
            if size > HEAD_LIMIT:
                raise BadRequest("the request head is too large", 431, "Request Header Fields Too Large")
            if line or lines:  # cut off mid-head
                raise ValueError("incomplete message head")
            return lines
        if strict and not line.endswith(b"\r\n"):
            raise BadRequest("a bare LF in the request head")
        if line in (b"\r\n", b"\n"):
            if lines:
                return lines
            continue  # stray empty lines before a request are allowed
        lines.append(line.rstrip(b"\r\n").decode("latin-1"))


TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110: methods and header names
ORIGIN_FORM = re.compile(r"/[!-~]*")  # a path (and query) in visible ASCII, as browsers send it
VERSION = re.compile(r"HTTP/1\.[01]")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a field value; a tab is allowed


class BadRequest(ValueError):
    """A request the gateway answers itself (400, unless said otherwise): it is never passed on."""

    def __init__(self, why: str, status: int = 400, reason: str = "Bad Request") -> None:
        super().__init__(why)
        self.status, self.reason = status, reason


CONNECTION_TOKENS = frozenset({"", "close", "keep-alive", "upgrade", "te"})  # what browsers and proxies send


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
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()) or (lengths and encodings):
        raise BadRequest("ambiguous Content-Length")
    if encodings and (len(encodings) > 1 or encodings[0] != "chunked"):
        raise BadRequest("a Transfer-Encoding other than chunked", 501, "Not Implemented")


def _split_start_line(start_line: str) -> tuple[str, str, str]:
    parts = start_line.split(" ")
    if len(parts) != 3 or not VERSION.fullmatch(parts[2]):
        raise BadRequest("malformed request line")
    return parts[0], parts[1], parts[2]


def _head(start_line: str, headers: Headers) -> bytes:
    return (start_line + "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n").encode(
        "latin-1")


def _plain_response(status: int, reason: str, text: str) -> bytes:
    return response(status, reason, [("Content-Type", "text/plain; charset=utf-8")], text.encode())


class _Collected(bytearray):
    """A sink that keeps what it is sent, up to a limit; past it, it notes so and ends the copy."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.over = False

    def sendall(self, data: bytes, /) -> None:
        if len(self) + len(data) > self.limit:
            self.over = True
            raise _Closed
        self += data


def _html(fields: dict[str, str]) -> bool:
    """An HTML body we can read as it is (not compressed by the server)."""
    return fields.get("content-type", "").lower().startswith("text/html") and "content-encoding" not in fields


class _Once:
    """A sink that sends ``head`` with the first write (or on close, for an empty body)."""

    def __init__(self, sink: _Sink, head: bytes) -> None:
        self.sink, self.pending = sink, head

    def sendall(self, data: bytes, /) -> None:
        self.sink.sendall(self.pending + data)
        self.pending = b""

    def close(self) -> None:
        if self.pending:
            self.sink.sendall(self.pending)
            self.pending = b""


class _Chunks(_Once):
    """A sink that sends what it is given as HTTP chunks (the head with the first), and the last chunk on close."""

    def sendall(self, data: bytes, /) -> None:
        if data:
            super().sendall(b"%x\r\n" % len(data) + data + b"\r\n")

    def close(self) -> None:
        super().sendall(b"0\r\n\r\n")


class _Blanking:
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


def _exactly_bytes(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size)
    if len(data) < size:
        raise _Closed
    return data


def _take_small_body(reader: BinaryIO, fields: dict[str, str]) -> bytes | None:
    """The request's whole body when it is small enough to keep for a retry (b"" when there is none); None when it
    must be streamed (chunked, or larger than :data:`RETRY_BODY_LIMIT`)."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return None
    length = int(fields.get("content-length") or 0)
    return None if length > RETRY_BODY_LIMIT else _exactly_bytes(reader, length)


def _relay_body(reader: BinaryIO, sink: _Sink, fields: dict[str, str], head: bytes,
                until_close: bool = False) -> bool:
    """Send ``head``, then copy the body that follows as framed by its headers; the head goes out with the first
    part of the body, in one write. Return False if the body was delimited by closing the connection."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        _relay_chunked(reader, sink, head)
    elif "content-length" in fields:
        _relay_exactly(reader, sink, int(fields["content-length"]), head)
    elif until_close:  # a response with neither: the body runs until the server closes
        sink.sendall(head)
        _copy_until_eof(reader, sink)
        return False
    else:
        sink.sendall(head)
    return True


def _relay_decoded(reader: BinaryIO, sink: _Sink, fields: dict[str, str]) -> bool:
    """Copy a response body without its transfer framing (the sink frames it anew); return False if it was
    delimited by closing the connection."""
    if "chunked" in fields.get("transfer-encoding", "").lower():
        while size := int(_read_line(reader).split(b";", 1)[0].strip(), 16):
            _relay_exactly(reader, sink, size)
            if _read_line(reader) != b"\r\n":
                raise ValueError("malformed chunked framing")
        while _read_line(reader) != b"\r\n":  # trailers, dropped: the new framing has none
            pass
    elif "content-length" in fields:
        _relay_exactly(reader, sink, int(fields["content-length"]))
    else:
        _copy_until_eof(reader, sink)
        return False
    return True


def _relay_exactly(reader: BinaryIO, sink: _Sink, remaining: int, pending: bytes = b"") -> None:
    while remaining > 0:
        data = reader.read1(min(remaining, CHUNK))
        if not data:
            raise _Closed
        remaining -= len(data)
        sink.sendall(pending + data if pending else data)
        pending = b""
    if pending:
        sink.sendall(pending)


def _relay_chunked(reader: BinaryIO, sink: _Sink, pending: bytes) -> None:
    while True:
        size_line = _read_line(reader)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            trailers = [size_line]
            while trailers[-1] != b"\r\n":  # trailers, then the empty line that ends the body
                trailers.append(_read_line(reader))
            sink.sendall(pending + b"".join(trailers))
            return
        _relay_exactly(reader, sink, size + 2, pending + size_line)  # the chunk and its CRLF
        pending = b""


def _read_line(reader: BinaryIO) -> bytes:
    line = reader.readline(HEAD_LIMIT)
    if not line.endswith(b"\r\n"):
        raise _Closed if not line else ValueError("malformed chunked framing")
    return line


def _copy_until_eof(reader: BinaryIO, sink: _Sink) -> None:
    while data := reader.read1(CHUNK):
        sink.sendall(data)


def _pipe(reader: BinaryIO, sink: Any) -> None:
    """One direction of a websocket: copy until either side ends, then shut the other (which ends the reverse
    direction too)."""
    try:
        _copy_until_eof(reader, sink)
    except OSError:
        pass
    finally:
        _shut(sink)
