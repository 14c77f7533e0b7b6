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

The gateway is three parts on one event loop (a thread of the helper's own, so that nothing else the helper does
can stall a visitor): the protocol layer (:mod:`.protocol`: tornado frames every request; a strict check of each
head; time limits), the relay (:mod:`.relay`: the server's side, byte for byte; websockets as raw bytes) and this
module, which holds the connections, counts them by holder (:mod:`.capacity`) and asks the rest of the helper what
to do: :class:`~.access.Access` who may pass (every request head), the view and the bridge what to answer locally,
the meter what it cost. Blocking calls (a gate that logs a visitor in, a render) go to a small fixed pool of threads:
the helper's thread count does not grow with visitors.
"""
from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from tornado.http1connection import HTTP1ConnectionParameters, HTTP1ServerConnection

from ..contract import KEY_PARAM
from ..jupyter import JupyterServer
from .answers import HOP_BY_HOP, Headers, text
from .capacity import Capacity, Limits
from .grants import Admitted, Gate, Held, Local, Session, Verdict
from .heads import BadRequest, answer_and_close, check_request
from .identity import UNVOUCHED
from .meter import Compression, Meter
from .protocol import Connection
from .relay import HEAD_LIMIT, Blanking, blank, fetch_whole

__all__ = ["BadRequest", "Gateway", "Limits", "check_request", "origin_of", "_Blanking"]
_Blanking = Blanking  # the name the hardening tests know it by

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
POOL = 4  # threads for blocking calls, whatever the number of visitors


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


# What proxies say about where a request came from. A visitor can write any of them (ngrok's edge appends to a
# visitor's X-Forwarded-For and passes their X-Forwarded-Host on), so none reaches Jupyter; the gateway learns the
# client address from the edge's vouched header only (see .identity).
FORWARDING = frozenset({"forwarded", "x-real-ip", "true-client-ip", "x-client-ip", "cf-connecting-ip",
                        "x-cluster-client-ip", "fastly-client-ip", "x-original-forwarded-for"})


def forwarding(lower: str) -> bool:
    """Whether a (lower-case) header name is one of :data:`FORWARDING` or ``X-Forwarded-*``."""
    return lower in FORWARDING or lower.startswith("x-forwarded-")


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


def upstream_headers(headers: Headers, server: JupyterServer, public_origin: str | None) -> Headers:
    """A visitor's request headers as the server gets them: hop-by-hop and forwarding fields out, the public
    Host, Origin and Referer made the server's own."""
    listed = {token.strip().lower() for name, value in headers if name.lower() == "connection"
              for token in value.split(",")} - {"close", "keep-alive", "upgrade"}
    translated = []
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in listed or lower == "expect" or forwarding(lower):
            continue
        if lower == "host":
            value = server.host_header
        elif lower == "origin" and is_public(value, public_origin):
            value = server.origin
        elif lower == "referer" and is_public(value, public_origin):
            value = _rebase(value, server.origin)
        translated.append((name, value))
    if not any(name.lower() == "host" for name, _ in translated):
        translated.insert(0, ("Host", server.host_header))
    return translated


def is_public(url: str, public: str | None) -> bool:
    if public is None:
        return False
    # Fast path for what browsers send (exactly the origin, or it and a path); anything else is normalized.
    if url.startswith(public) and url[len(public):len(public) + 1] in ("", "/", "?", "#"):
        return True
    return origin_of(url) == public


def public_location(location: str, server: JupyterServer, public_origin: str | None) -> str:
    """A Location as the visitor gets it: the server's own URLs made public ones; one that would lead off the
    share (another site, or a scheme-relative ``//host``) becomes the server's base URL on the share."""
    if public_origin is not None and origin_of(location) == origin_of(server.origin):
        return _rebase(location, public_origin)
    if _leads_elsewhere(location) and (public_origin is None or origin_of(location) != public_origin):
        return server.base_url
    return location


def _turn_away(sock: socket.socket, why: str = "Too many connections; try again shortly.") -> None:
    """Answer 503 to a connection the gateway cannot hold, without waiting on it."""
    sock.setblocking(False)
    try:
        sock.send(text(503, "Service Unavailable", why))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1024 * 1024)  # what already came: closing on unread input would reset the answer away
    except OSError:
        pass
    sock.close()


class Gateway:
    """Serves one share: every request it gets came through the tunnel from a visitor."""

    def __init__(self, server: JupyterServer, access: Gate, on_change: Callable[[], None] | None = None,
                 compression: Compression | None = None, limits: Limits | None = None) -> None:
        self.server = server
        self.limits = limits or Limits()
        self.capacity = Capacity(self.limits)
        self.access = access
        self.meter = Meter()
        self.compression = compression or Compression(enabled=False)
        self.public_origin: str | None = None
        self.on_change = on_change  # called (in the pool) when the set of connected sessions changes
        self.on_full: Callable[[str | None], None] | None = None  # called (in the pool) when readers are turned away
        # Answers what the gate hands to the gateway itself (the view): ``await local(request, answer)``.
        self.local: Callable[[Local, Any], Any] | None = None
        self.bridge: Any = None  # a tornado application that serves an editor's bridge
        self.bridge_path: str | None = None  # ...at this path; an editor's other local paths are answered locally
        # Asked for every (small) Jupyter page an editing visitor gets: the page as they should get it.
        self.rewrite_page: Callable[[bytes], bytes] | None = None
        # Blanked from every HTML answer a visitor gets, whatever its status or size (the server's token).
        self.blanked: bytes | None = None
        # The trail's tap: tap(session, target, request headers, response headers) for each websocket relayed gives
        # an observer (or None) that is fed a copy of what the visitor sends (feed(data), then close()).
        self.tap: Callable[[Session, str, Headers, Headers], Any] | None = None
        self.port = 0
        self.tls = server.tls_context()
        self.pool = ThreadPoolExecutor(max_workers=POOL, thread_name_prefix="share_magic gateway")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[Connection] = set()
        self._live: dict[Connection, Session] = {}  # connections holding a websocket or a live view
        self._connected_since: dict[Session, float] = {}  # sessions holding a live connection, since when
        self._reserve: int | None = None  # a file kept open, to close when the process runs out of them
        self._params = HTTP1ConnectionParameters(
            chunk_size=256 * 1024, max_header_size=HEAD_LIMIT, header_timeout=self.limits.head_timeout,
            max_body_size=1 << 40, body_timeout=None, decompress=False)

    # -- lifetime ---------------------------------------------------------------------------------------------------

    def listen(self) -> int:
        """Accept on a free port of 127.0.0.1, and nowhere else: the agent's upstream is ``127.0.0.1:PORT``, an
        address the gateway holds, never a name (``localhost`` may resolve to ``::1`` first, where any local user
        could be listening on the same port). Requests get 503 until :meth:`open_to` names the public URL."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(self.limits.backlog)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._reserve = os.open(os.devnull, os.O_RDONLY)
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True, name="share_magic gateway")
        self._thread.start()
        started.wait()
        return self.port

    def _run(self, started: threading.Event) -> None:
        self.loop = loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        assert self._listener is not None
        loop.add_reader(self._listener.fileno(), self._accept)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def open_to(self, public_url: str) -> None:
        self.public_origin = origin_of(public_url)

    def close(self) -> None:
        """Stop accepting and cut every visitor connection, websockets included."""
        self.public_origin = None
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        done = threading.Event()

        def stop() -> None:
            if self._listener is not None:
                loop.remove_reader(self._listener.fileno())
                self._listener.close()
            for connection in list(self._connections):
                connection.stream.close()
            loop.call_soon(loop.stop)
            done.set()

        try:
            loop.call_soon_threadsafe(stop)
        except RuntimeError:  # the loop already ended
            return
        done.wait(10)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self.pool.shutdown(wait=False)
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    # -- accepting --------------------------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(128):  # a burst at a time; the loop comes back for more
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    self._out_of_files()
                return
            self._serve(sock)

    def _serve(self, sock: socket.socket) -> None:
        if self.capacity.total >= self.limits.max_connections:  # as many connections as it may hold
            _turn_away(sock)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(self, sock)
        _, victim = self.capacity.admit_connection(connection)
        self._connections.add(connection)
        if victim is not None:  # the oldest head still trickling in makes room
            victim.stream.close()
        HTTP1ServerConnection(connection.stream, self._params).start_serving(connection)

    def _out_of_files(self) -> None:
        """The process has no file left to accept with: close the one kept for this, turn the newcomer away with a
        503, and say the share is full. Readers' connections are not cut; they end as readers leave."""
        assert self._listener is not None and self.loop is not None
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None
            try:
                sock, _ = self._listener.accept()
                _turn_away(sock, "The share is full; try again shortly.")
            except OSError:
                pass
            try:
                self._reserve = os.open(os.devnull, os.O_RDONLY)
            except OSError:
                pass
        self._report_full("the helper ran out of open files (see `ulimit -n`)")
        listener = self._listener.fileno()
        self.loop.remove_reader(listener)  # not a busy loop: look again in a moment
        self.loop.call_later(0.2, self.loop.add_reader, listener, self._accept)

    def _report_full(self, why: str | None) -> None:
        if why != self.capacity.full or why is not None:
            self.capacity.full = why
        if self.on_full is not None:
            self.pool.submit(self.on_full, why)

    def forget(self, connection: Connection) -> None:
        """A visitor connection ended."""
        if connection in self._connections:
            self._connections.discard(connection)
            was_full = self.capacity.full
            self.capacity.release(connection)
            if was_full and not self.capacity.full and self.on_full is not None:
                self.pool.submit(self.on_full, None)
        self.set_live(connection, False)

    def let_go(self, connection: Connection) -> None:
        """A request answered on a connection that stays open for the next: what it held is free again."""
        was_full = self.capacity.full
        self.capacity.release_holder(connection)
        if was_full and not self.capacity.full and self.on_full is not None:
            self.pool.submit(self.on_full, None)

    def connections(self) -> int:
        """Visitor connections held right now."""
        return self.capacity.total

    # -- questions for the rest of the helper -----------------------------------------------------------------------

    async def check(self, method: str, target: str, headers: Headers) -> Verdict:
        """The gate's verdict; in the pool when it may log a visitor in (a key in the target: a call to Jupyter)."""
        if KEY_PARAM in target:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self.access.check, method, target,
                                                                    headers)
        return self.access.check(method, target, headers)

    def source_of(self, headers: Headers) -> str:
        """The client address the share's edge vouched for; one shared source for whatever it did not."""
        edge = getattr(self.access, "edge", None)
        return (edge.source(headers) if edge is not None else None) or UNVOUCHED

    def claim(self, connection: Connection, holder: Any, role: str) -> bytes | None:
        """Give ``connection`` to ``holder`` (an editing or viewing session, or a source the gate answers); the
        answer to send instead when that holder already holds all it may, or the hall is full."""
        limits = self.limits
        limit = {"edit": limits.per_editor, "view": limits.per_reader, "lobby": limits.per_reader}.get(
            role, limits.per_source)  # a waiting page's stream counts as a reader's
        was_full = self.capacity.full
        status = self.capacity.claim(connection, holder, role != "edit", limit)
        if status is None:
            return None
        if status == 503:
            if not was_full:
                self._report_full(self.capacity.full)
            return text(503, "Service Unavailable", "This share is full: as many readers as it holds are in. "
                                                    "Try again in a little while.", [("Retry-After", "10")])
        return text(429, "Too Many Requests", "Too many connections from you at once; close some tabs, or try again "
                                              "shortly.", [("Retry-After", "5")])

    async def answer_locally(self, request: Local, connection: Connection, stream: Any) -> None:
        """What the gate hands to the gateway itself (a view session's requests), on the visitor's connection."""
        answer = LocalAnswer(self, connection, stream)
        try:
            if self.local is None:
                await answer.finish(text(404, "Not Found", "Nothing is served here."))
            else:
                await self.local(request, answer)
        except Exception:
            stream.close()

    async def hold(self, verdict: Held, connection: Connection, stream: Any) -> None:
        """A connection the gate's answer holds for a while (a waiting page's stream), on the visitor's connection."""
        try:
            await verdict.serve(LocalAnswer(self, connection, stream))
        except Exception:
            stream.close()

    async def fetch(self, admitted: Admitted, method: str, body: bytes,
                    limit: int = 1024 * 1024) -> tuple[str, Headers, bytes] | None:
        """One whole exchange with the server for a request the gate admitted (carried by the bridge)."""
        check_request(method, admitted.target, admitted.headers)  # the bridge's caller is a page's script
        return await fetch_whole(self, admitted, method, body, limit)

    # -- translation ------------------------------------------------------------------------------------------------

    def upstream_headers(self, headers: Headers) -> Headers:
        return upstream_headers(headers, self.server, self.public_origin)

    def is_public(self, url: str) -> bool:
        return is_public(url, self.public_origin)

    def public_location(self, location: str) -> str:
        """A Location as the visitor gets it (see :func:`public_location`)."""
        return public_location(location, self.server, self.public_origin)

    def response_headers(self, headers: Headers) -> Headers:
        """The server's answer's headers as a visitor gets them; the names of the cookies the server sets are noted,
        as cookies the gate passes back to it (see :meth:`.Access.learn_cookie`)."""
        learn = getattr(self.access, "learn_cookie", None)
        if learn is not None:
            for name, value in headers:
                if name.lower() == "set-cookie":
                    learn(value.split("=", 1)[0].strip())
        return [(name, self.public_location(value) if name.lower() == "location" else value)
                for name, value in headers if name.lower() not in HOP_BY_HOP]

    def blank(self, body: bytes) -> bytes:
        return blank(body, self.blanked)

    # -- visitors ---------------------------------------------------------------------------------------------------

    def visitors(self) -> int:
        """Admitted browser sessions holding a live connection (a websocket) right now."""
        return len(self._connected_since)

    def connected(self) -> dict[Session, float]:
        """The sessions holding a live connection (a websocket) right now, and since when."""
        return dict(self._connected_since)

    def set_live(self, connection: Connection, live: bool) -> None:
        """Mark a connection as holding a websocket or a live view (or no longer); on the loop."""
        before = len(self._connected_since)
        if live and connection.session is not None:
            self._live[connection] = connection.session
            self._connected_since.setdefault(connection.session, time.time())
        elif connection in self._live:
            gone = self._live.pop(connection)
            if gone not in self._live.values():
                self._connected_since.pop(gone, None)
        else:
            return
        if len(self._connected_since) != before and self.on_change is not None:
            self.pool.submit(self.on_change)

    def cut(self, sessions: list[Session]) -> None:
        """Close every connection carrying a request, stream or websocket of these sessions, at once (from any
        thread). A connection between requests is nobody's: the agent may send anyone's next request on it, and the
        gate refuses theirs."""
        doomed = set(sessions)

        def cut() -> None:
            for connection in list(self._connections):
                if connection.session in doomed:
                    connection.stream.close()

        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(cut)


class LocalAnswer:
    """A visitor's connection as a local service (the view) answers on it: writes are metered, the connection is
    the service's until it is done, and it learns at once when the visitor leaves."""

    def __init__(self, gateway: Gateway, connection: Connection, stream: Any) -> None:
        self.gateway, self.connection, self.stream = gateway, connection, stream

    def send(self, data: bytes) -> Any:
        """Write (the future resolves once it is on its way)."""
        return self.stream.write(data)

    async def finish(self, answer: bytes) -> None:
        """Send the last answer and close the connection without losing it."""
        await answer_and_close(self.stream, answer, self.gateway.limits.linger, self.gateway.limits.body_timeout)

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """A blocking call, in the gateway's pool."""
        return await asyncio.get_running_loop().run_in_executor(self.gateway.pool, function, *args)

    def live(self, live: bool) -> None:
        self.gateway.set_live(self.connection, live)

    async def until_gone(self) -> None:
        """Return when the visitor closes the connection (what they send meanwhile is dropped)."""
        try:
            while True:
                await self.stream.read_bytes(64 * 1024, partial=True)
        except Exception:
            pass

    def close(self) -> None:
        self.stream.close()
