"""The bridge: a visitor's page sends its Jupyter API calls over one websocket, so they cost no ngrok requests.

JupyterLab and Notebook 7 poll five endpoints every ten seconds, and ngrok bills every request: an idle visitor
would cost the owner ~40 requests a minute. The gateway puts a small script at the top of each Jupyter page it serves
to an editing visitor. The script wraps ``window.fetch``: a same-origin call below the server's base URL (but not
static assets, files or exports, which the browser caches or streams) goes as a message over one websocket
(``<base_url>share_magic/bridge``, one ngrok request for as long as the page is open), and the gateway replays it
to the server exactly as if it had come over HTTP -- through the gate, as the session the bridge was opened by, with
the same header translation, Jupyter's XSRF and Origin checks included -- and sends the answer back (gzipped, where
the browser can unzip it).

Anything else, and anything the bridge cannot carry (a large body, a closed bridge), goes over plain HTTP as before.
The script lives only in the page it came with: nothing is left in the browser to serve a later share.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable
from typing import Any, Callable, Optional

from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .answers import HOP_BY_HOP, gzip_bytes, header
from .grants import Admitted, Local
from .heads import BadRequest, check_request
from .identity import HEADERS as IDENTITY_HEADERS
from .meter import MIN_SIZE

PATH = "share_magic/bridge"
MAX_BODY = 1024 * 1024  # requests and answers larger than this go over plain HTTP
MAX_MESSAGE = 4 * MAX_BODY  # a call's message, however fragmented (its body is base64 in JSON)
PARALLEL = 6  # calls of one page in flight at once

SCRIPT = """(function () {
  "use strict";
  if (!window.fetch || !window.WebSocket || window.shareMagicBridge) { return; }
  var base = %(base)s, skipped = [base + "static/", base + "files/", base + "nbconvert/", base + "share_magic/"];
  var maxBody = %(max_body)d, gzipped = typeof DecompressionStream !== "undefined";
  var realFetch = window.fetch.bind(window), socket = null, opening = null, next = 1, waiting = {}, restUntil = 0;
  function open() {
    // The socket, once open; a call made while it is still connecting (a busy page load) waits a little, then goes
    // over HTTP, and the socket keeps connecting for the calls after it. A closed bridge rests 30 s before the
    // next try, so that a share that ended is not asked again and again.
    if (!opening) {
      opening = new Promise(function (resolve) {
        var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + base
                               + %(path)s);
        ws.onopen = function () { socket = ws; resolve(ws); };
        ws.onmessage = function (event) {
          var answer = JSON.parse(event.data), done = waiting[answer.id];
          if (done) { delete waiting[answer.id]; done(answer); }
        };
        ws.onclose = function () {
          socket = null; opening = null; restUntil = Date.now() + 30000;
          Object.keys(waiting).forEach(function (id) { var done = waiting[id]; delete waiting[id]; done(null); });
          resolve(null);
        };
      });
    }
    return Promise.race([opening, new Promise(function (resolve) { setTimeout(resolve, 1500, null); })]);
  }
  function encode(buffer) {
    var bytes = new Uint8Array(buffer), text = "";
    for (var i = 0; i < bytes.length; i += 32768) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
    }
    return btoa(text);
  }
  function decode(text) {
    var binary = atob(text), bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) { bytes[i] = binary.charCodeAt(i); }
    return bytes;
  }
  function carried(request) {
    var url = new URL(request.url);
    return url.origin === location.origin && Date.now() >= restUntil && request.mode !== "navigate"
      && url.pathname.indexOf(base) === 0
      && !skipped.some(function (prefix) { return url.pathname.indexOf(prefix) === 0; });
  }
  window.fetch = function (input, init) {
    var request;
    try { request = new Request(input, init); } catch (e) { return realFetch(input, init); }
    if (!carried(request)) { return realFetch(request); }
    return request.clone().arrayBuffer().then(function (body) {
      if (body.byteLength > maxBody) { return null; }
      return open().then(function (ws) {
        if (!ws || ws.readyState !== WebSocket.OPEN) { return null; }
        var url = new URL(request.url), id = next++, headers = [];
        request.headers.forEach(function (value, name) { headers.push([name, value]); });
        return new Promise(function (resolve) {
          waiting[id] = resolve;
          ws.send(JSON.stringify({id: id, method: request.method, target: url.pathname + url.search,
                                  headers: headers, cookie: document.cookie, referrer: location.href,
                                  body: body.byteLength ? encode(body) : null, gzip: gzipped}));
        });
      });
    }).then(function (answer) {
      if (!answer || answer.fallback) { return realFetch(request); }
      var empty = answer.status === 204 || answer.status === 304, body = empty ? null : decode(answer.body || "");
      if (body && answer.gzip) {
        body = new Blob([body]).stream().pipeThrough(new DecompressionStream("gzip"));
      }
      return new Response(body, {status: answer.status, statusText: answer.reason, headers: answer.headers});
    });
  };
  window.shareMagicBridge = {carried: carried};
})();"""


def with_script(page: bytes, base_url: str) -> bytes:
    """``page`` with the bridge's script as the first thing in its head, to run before any of the page's own."""
    tag = ("<script>" + SCRIPT % {"base": json.dumps(base_url), "path": json.dumps(PATH), "max_body": MAX_BODY}
           + "</script>").encode()
    at = page.find(b"<head>")
    return page[:at + 6] + tag + page[at + 6:] if at >= 0 else tag + page


Check = Callable[[str, str, list], Awaitable[Any]]
Fetch = Callable[[Admitted, str, bytes], Awaitable[Optional[tuple[str, list[tuple[str, str]], bytes]]]]


class Bridge:
    """Serves bridge websockets: each message is one API call, replayed through the gate (``check``) and
    ``fetch``. The websocket itself is tornado's (:class:`BridgeSocket`): framing, fragments, pings and closing are
    the library's, and a message (however fragmented) over :data:`MAX_MESSAGE` closes the bridge."""

    def __init__(self, base_url: str, check: Check, fetch: Fetch, is_public: Callable[[str], bool]) -> None:
        self.path = base_url + PATH
        self.check = check  # the gate's question, asked again for every call
        self.fetch = fetch
        self.is_public = is_public  # whether an Origin is this share's own public one

    def application(self, set_live: Callable[[Any, bool], None]) -> Any:
        """The tornado application the gateway hands an editor's bridge request to."""
        from tornado.web import Application

        return Application([(re.escape(self.path), BridgeSocket, {"bridge": self, "set_live": set_live})],
                           websocket_max_message_size=MAX_MESSAGE, log_function=lambda handler: None)

    async def replay(self, message: dict[str, Any], request: Local) -> dict[str, Any]:
        """The call as the browser would have made it over HTTP from the share's page: the Origin is the one the
        bridge was opened from (checked), the Referer a page of that origin."""
        origin = header(request.headers, "origin") or ""
        base = [(name, value) for name, value in request.headers
                if name.lower() in ("host", "user-agent", "accept-language", *IDENTITY_HEADERS)]
        method, target = str(message["method"]).upper(), str(message["target"])
        body = base64.b64decode(message["body"]) if message.get("body") else b""
        if len(body) > MAX_BODY:
            return {"fallback": True}
        gate_cookie = header(request.headers, "cookie") or ""
        cookies = "; ".join(filter(None, [gate_cookie, str(message.get("cookie") or "")]))
        referrer = str(message.get("referrer") or "")
        if not (referrer + "/").startswith(origin + "/"):
            referrer = origin + "/"
        headers = [*base, *[(str(name), str(value)) for name, value in message.get("headers", [])
                            if str(name).lower() not in FORBIDDEN],
                   ("Cookie", cookies), ("Referer", referrer)]
        if method not in ("GET", "HEAD"):  # what a browser adds to a same-origin request that changes things
            headers.append(("Origin", origin))
        if body:
            headers.append(("Content-Length", str(len(body))))
        try:  # what a browser could not have sent over HTTP (a method with a CRLF in it...) is not replayed
            check_request(method, target, headers)
        except BadRequest:
            return {"fallback": True}  # over HTTP, the gateway answers it with its own 400
        verdict = await self.check(method, target, headers)
        if not isinstance(verdict, Admitted):
            return {"fallback": True}  # over HTTP, the gate gives its own answer
        answered = await self.fetch(verdict, method, body)
        if answered is None:
            return {"fallback": True}
        status_line, response_headers, response_body = answered
        _, status, reason = (status_line.split(" ", 2) + [""])[:3]
        compress = bool(message.get("gzip")) and len(response_body) >= MIN_SIZE
        if compress:  # what the page asks through the bridge costs as few bytes as over gzipped HTTP
            response_body = gzip_bytes(response_body)
        return {"status": int(status), "reason": reason, "body": base64.b64encode(response_body).decode(),
                "gzip": compress,
                "headers": [[name, value] for name, value in response_headers if name.lower() not in HOP]}


class BridgeSocket(WebSocketHandler):
    """One page's bridge: up to :data:`PARALLEL` calls in flight, each answered as it completes."""

    def initialize(self, bridge: Bridge, set_live: Callable[[Any, bool], None]) -> None:
        self.bridge = bridge
        self.set_live = set_live
        self.verdict: Local = self.request.connection.share_verdict  # type: ignore[attr-defined]
        self.visitor = self.request.connection.share_connection  # type: ignore[attr-defined]
        self.calls = asyncio.Semaphore(PARALLEL)

    def check_origin(self, origin: str) -> bool:
        return self.bridge.is_public(origin)  # only the share's own pages: as strict as Jupyter is

    def open(self, *args: Any) -> None:
        self.set_live(self.visitor, True)

    def on_message(self, message: Any) -> None:
        asyncio.ensure_future(self._call(message))

    async def _call(self, message: Any) -> None:
        answer: dict[str, Any] = {"id": None}
        async with self.calls:
            try:
                call = json.loads(message)
                answer["id"] = call.get("id")
                answer.update(await self.bridge.replay(call, self.verdict))
            except Exception:  # a call that cannot be carried is made over plain HTTP instead
                answer["fallback"] = True
        try:
            await self.write_message(json.dumps(answer))
        except WebSocketClosedError:
            pass

    def on_close(self) -> None:
        self.set_live(self.visitor, False)


FORBIDDEN = frozenset({"host", "cookie", "connection", "content-length", "transfer-encoding", "upgrade", "origin",
                       "referer", "expect", "te", "keep-alive"})
# What the page's Response must not be given: the hop-by-hop headers, and the framing the bridge replaced.
HOP = HOP_BY_HOP | frozenset({"connection", "transfer-encoding", "content-length", "content-encoding", "set-cookie"})
