"""The gateway: a reverse proxy on 127.0.0.1 between the tunnel and the Jupyter server.

A localhost Jupyter server refuses a public Host, and refuses cross-origin API calls and websockets. The tunnel
delivers requests with the public Host and the browser's public Origin, so the gateway translates exactly three
request headers and nothing else:

- ``Host`` becomes the server's own local host;
- ``Origin`` and ``Referer`` become the server's origin **only when they are this share's public origin** (known
  from the tunnel, never taken from the request). Any other Origin reaches the server unchanged, so the server keeps
  refusing cross-site requests exactly as it would without the gateway.

Responses pass through unchanged except for hop-by-hop headers and a ``Location`` that points at the server.
Bodies stream in both directions with back-pressure; websockets are relayed as raw bytes after the server accepts
the upgrade (subprotocols and extensions are negotiated end to end).
"""
from __future__ import annotations

import socket
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from tornado import httputil, iostream, web
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httpserver import HTTPServer
from tornado.log import app_log
from tornado.netutil import bind_sockets
from tornado.tcpclient import TCPClient

from .server import JupyterServer

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade",
})
# Tornado answers "Expect: 100-continue" itself; forwarding it would make the server answer it a second time.
NOT_FORWARDED = HOP_BY_HOP | {"expect"}
UNLIMITED = 1 << 40  # the server enforces its own body limits
CHUNK = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


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


class Gateway:
    """Serves one share: every request it gets came through the tunnel from a visitor."""

    def __init__(self, server: JupyterServer, on_visitors: Callable[[int], None] | None = None) -> None:
        self.server = server
        self.public_origin: str | None = None
        self.on_visitors = on_visitors
        self._relays: set[_Relay] = set()
        self._http_server: HTTPServer | None = None
        self._tls = server.tls_context()
        self.port = 0

    # -- lifetime ---------------------------------------------------------------------------------------------------

    def listen(self) -> int:
        """Start accepting on a free loopback port; requests get 503 until :meth:`open_to` names the public URL."""
        # No access log: request URIs carry the server's token.
        app = web.Application([(r".*", _ProxyHandler, {"gateway": self})], log_function=lambda handler: None)
        self._http_server = HTTPServer(app, xheaders=False, decompress_request=False, max_body_size=UNLIMITED,
                                       max_buffer_size=UNLIMITED)
        sockets = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        self._http_server.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        return self.port

    def open_to(self, public_url: str) -> None:
        self.public_origin = origin_of(public_url)

    async def close(self) -> None:
        """Stop accepting and cut every visitor connection, websockets included."""
        self.public_origin = None
        if self._http_server is not None:
            self._http_server.stop()
        for relay in list(self._relays):
            relay.close()
        if self._http_server is not None:
            await self._http_server.close_all_connections()

    # -- translation ------------------------------------------------------------------------------------------------

    def upstream_headers(self, incoming: httputil.HTTPHeaders, *, upgrade: bool = False) -> httputil.HTTPHeaders:
        listed = {name.strip().lower() for name in incoming.get("Connection", "").split(",")}
        outgoing = httputil.HTTPHeaders()
        for name, value in incoming.get_all():
            lower = name.lower()
            if lower in NOT_FORWARDED or (lower in listed and not upgrade):
                continue
            if lower == "host":
                value = self.server.host_header
            elif lower == "origin" and self._is_public(value):
                value = self.server.origin
            elif lower == "referer" and self._is_public(value):
                value = _rebase(value, self.server.origin)
            outgoing.add(name, value)
        if "Host" not in outgoing:
            outgoing["Host"] = self.server.host_header
        if upgrade:
            outgoing["Connection"] = "Upgrade"
            outgoing["Upgrade"] = incoming.get("Upgrade", "websocket")
        else:
            outgoing["Connection"] = "close"
        return outgoing

    def _is_public(self, url: str) -> bool:
        return self.public_origin is not None and origin_of(url) == self.public_origin

    def public_location(self, location: str) -> str:
        if self.public_origin is None or origin_of(location) != origin_of(self.server.origin):
            return location
        return _rebase(location, self.public_origin)

    # -- upstream ---------------------------------------------------------------------------------------------------

    async def connect_upstream(self) -> iostream.IOStream:
        if self.server.sock:
            stream = iostream.IOStream(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            await stream.connect(self.server.sock)
            return stream
        stream = await TCPClient().connect(self.server.host, self.server.port, ssl_options=self._tls)
        stream.set_nodelay(True)
        return stream

    # -- visitors ---------------------------------------------------------------------------------------------------

    def visitors(self) -> int:
        """Distinct visitor addresses holding a live connection (a websocket) right now."""
        return len({relay.visitor for relay in self._relays})

    def _relays_changed(self, before: int) -> None:
        after = self.visitors()
        if after != before and self.on_visitors is not None:
            self.on_visitors(after)

    async def relay_websocket(self, handler: _ProxyHandler) -> None:
        request = handler.request
        try:
            upstream = await self.connect_upstream()
        except OSError:
            handler.send_error(502)
            return
        headers = self.upstream_headers(request.headers, upgrade=True)
        head = f"{request.method} {request.uri} HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.get_all()) + "\r\n"
        try:
            await upstream.write(head.encode("latin-1"))
            response_head = await upstream.read_until(b"\r\n\r\n", max_bytes=65536)
        except (iostream.StreamClosedError, iostream.UnsatisfiableReadError):
            upstream.close()
            handler.send_error(502)
            return
        status_line, _, header_text = response_head.decode("latin-1").partition("\r\n")
        code = int(status_line.split(" ", 2)[1])
        if code != 101:  # refused (403 cross-origin, 404 ...): relay the refusal as an ordinary response
            response_headers = httputil.HTTPHeaders.parse(header_text)
            length = int(response_headers.get("Content-Length", "0"))
            body = await upstream.read_bytes(length) if length else b""
            upstream.close()
            _copy_response_head(handler, self, code, status_line.split(" ", 2)[-1], response_headers)
            handler.finish(body)
            return
        visitor = (request.headers.get("X-Forwarded-For") or request.remote_ip or "").split(",")[0].strip()
        relay = _Relay(handler.detach(), upstream, visitor)
        before = self.visitors()
        self._relays.add(relay)
        self._relays_changed(before)
        try:
            # The upgrade answer is end to end (accept key, subprotocol, extensions): pass it on byte for byte.
            await relay.client.write(response_head)
            await relay.run()
        except iostream.StreamClosedError:
            relay.close()
        finally:
            before = self.visitors()
            self._relays.discard(relay)
            self._relays_changed(before)


def _rebase(url: str, origin: str) -> str:
    """``url`` with its scheme and host taken from ``origin``; path, query and fragment kept."""
    parts, new = urlsplit(url), urlsplit(origin)
    return urlunsplit((new.scheme, new.netloc, parts.path, parts.query, parts.fragment))


class _Relay:
    """A websocket after the handshake: raw bytes both ways until either side closes."""

    def __init__(self, client: iostream.IOStream, upstream: iostream.IOStream, visitor: str) -> None:
        self.client, self.upstream, self.visitor = client, upstream, visitor

    async def run(self) -> None:
        import asyncio

        await asyncio.gather(_pipe(self.client, self.upstream), _pipe(self.upstream, self.client))

    def close(self) -> None:
        self.client.close()
        self.upstream.close()


async def _pipe(source: iostream.IOStream, sink: iostream.IOStream) -> None:
    try:
        while True:
            await sink.write(await source.read_bytes(CHUNK, partial=True))
    except iostream.StreamClosedError:
        pass
    finally:
        source.close()
        sink.close()


def _copy_response_head(handler: web.RequestHandler, gateway: Gateway, code: int, reason: str,
                        headers: httputil.HTTPHeaders) -> None:
    handler.set_status(code, reason or None)
    handler._headers = httputil.HTTPHeaders()  # drop tornado's defaults: the server's own headers go out
    for name, value in headers.get_all():
        lower = name.lower()
        if lower in HOP_BY_HOP:
            continue
        if lower == "location":
            value = gateway.public_location(value)
        handler.add_header(name, value)


class _ResponseRelay(httputil.HTTPMessageDelegate):
    """Streams the server's response to the visitor chunk by chunk, waiting for each chunk to be sent."""

    def __init__(self, handler: _ProxyHandler, gateway: Gateway) -> None:
        self.handler, self.gateway = handler, gateway

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        _copy_response_head(self.handler, self.gateway, start_line.code, start_line.reason, headers)

    def data_received(self, chunk: bytes):  # type: ignore[override]
        self.handler.write(chunk)
        return self.handler.flush()

    def finish(self) -> None:
        pass

    def on_connection_close(self) -> None:
        pass


@web.stream_request_body
class _ProxyHandler(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")  # type: ignore[assignment]

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.upstream: HTTP1Connection | None = None
        self.websocket = False

    def compute_etag(self) -> None:
        return None  # the server's own caching headers pass through; never invent an Etag

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, (iostream.StreamClosedError, web.HTTPError)):  # a visitor leaving is normal
            return
        # Tornado's own message would include the URI, and with it the server's token.
        app_log.error("share_magic gateway: %s %s failed", self.request.method, self.request.path,
                      exc_info=(typ, value, tb))

    async def prepare(self) -> None:
        if self.gateway.public_origin is None:
            self.send_error(503)
            return
        self.websocket = self.request.headers.get("Upgrade", "").lower() == "websocket"
        if self.websocket:
            return
        try:
            stream = await self.gateway.connect_upstream()
        except OSError:
            self.send_error(502)
            return
        self.upstream = HTTP1Connection(stream, True, HTTP1ConnectionParameters(
            decompress=False, max_body_size=UNLIMITED, chunk_size=CHUNK, max_header_size=65536))
        headers = self.gateway.upstream_headers(self.request.headers)
        start = httputil.RequestStartLine(self.request.method or "GET", self.request.uri or "/", "HTTP/1.1")
        self.upstream.write_headers(start, headers)

    async def data_received(self, chunk: bytes) -> None:
        if self.upstream is not None:
            await self.upstream.write(chunk)

    async def _forward(self, *args: str) -> None:
        if self.websocket:
            await self.gateway.relay_websocket(self)
            return
        assert self.upstream is not None
        try:
            self.upstream.finish()
            await self.upstream.read_response(_ResponseRelay(self, self.gateway))
        except iostream.StreamClosedError:
            if not self._headers_written:
                self.send_error(502)
            else:  # cut short: close rather than let the visitor take a truncated body as whole
                self.request.connection.close()  # type: ignore[union-attr]
                self._finished = True
            return
        finally:
            self.upstream.close()
        self.finish()

    def on_connection_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()

    get = post = put = patch = delete = head = options = _forward  # type: ignore[assignment]
