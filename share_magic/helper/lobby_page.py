"""The lobby's waiting page and its stream: what a waiting browser costs the owner's ngrok plan (helper side).

Every request through the tunnel is one the plan counts (the free plan: 4,000 a minute, 20,000 a month), so the page
asks nothing of its own until the visitor asks to join (names themselves, or presses the button with sign-in). Then
it holds one long-lived request, an event stream the gateway serves on its own loop (as the view's update stream),
and learns the owner's decision the moment it is made: the owner's admit or deny is pushed down every open stream of
that browser, which then ends, and so does every stream when the share ends. An idle stream gets a comment every
:data:`KEEPALIVE` seconds (bytes, not requests), so that no proxy between takes it for dead.

A stream that drops (a network change, a proxy's time limit) is opened again by the page, at most once every
:data:`RECONNECT_MS` (counted from when the last one was opened, so a stream that lasted long is back within a
second), and less and less often while the share does not answer at all: at most two requests a minute per waiting
browser, whatever happens to its connection. A waiting browser's streams count as a reader's connections
(:mod:`.capacity`): they never take the room kept for editors.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

KEEPALIVE = 20.0  # seconds between comments on an idle stream
RECONNECT_MS = 30_000  # the page opens a stream at most this often (two requests a minute), more rarely if refused
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
        b"X-Content-Type-Options: nosniff\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n")
QUIET = b": still here\n\n"
ENDED = {"state": "gone", "why": "The share has ended: ask the person who shared this notebook for a new link."}

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Waiting to join</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:15vh auto;padding:0 1em;color:#222}}
input,button{{font:inherit;padding:.3em .6em}} .error{{color:#b00020}} [hidden]{{display:none}}
@media (prefers-color-scheme: dark){{body{{background:#111;color:#ddd}} .error{{color:#ff8a80}}}}</style></head>
<body><h1 id="title">{title}</h1>
<form id="ask" method="post" action="{action}"{form_hidden}>
<p>The person who shared this notebook lets each visitor in. {ask}</p>
{field}<button type="submit">Ask to join</button></form>
<p id="status" role="status">{status}</p>
<script nonce="{nonce}">
(function () {{
  "use strict";
  var form = document.getElementById("ask"), status = document.getElementById("status");
  var title = document.getElementById("title"), eventsUrl = {events_url}, busy = false;
  var source = null, over = false, openedAt = -Infinity, refused = 0, again = null;
  function show(text, error) {{ status.textContent = text; status.className = error ? "error" : ""; }}
  function settle(s) {{
    if (s.state === "admitted") {{ over = true; show("You are in: opening the notebook..."); location.replace(s.go); }}
    else if (s.state === "denied") {{
      over = true; title.textContent = "The owner did not let you in"; form.hidden = true;
      show("The person who shared this notebook did not let you in. This link will not work in this browser again.");
    }} else if (s.state === "waiting") {{
      form.hidden = true; title.textContent = "Waiting to be let in";
      show("Waiting for the person who shared this notebook to let you in, as " + s.name + ". Keep this page "
           + "open: it goes on by itself.");
    }} else if (s.state === "naming") {{ over = true; form.hidden = false; }}
    else {{ over = true; show(s.why, true); }}
    if (over && source) {{ source.close(); source = null; status.setAttribute("data-stream", "done"); }}
  }}
  // One stream while waiting; a dropped one is opened again at most every {reconnect_ms} ms, from when the last
  // was opened, and ever more rarely (up to 16 times that) while no stream gets through at all.
  function listen() {{
    if (over || source) {{ return; }}
    var heard = false;
    openedAt = Date.now();
    status.setAttribute("data-stream", "opening");  // where the stream is, for whoever watches the page
    source = new EventSource(eventsUrl);
    source.addEventListener("lobby", function (event) {{
      heard = true; refused = 0; status.setAttribute("data-stream", "open"); settle(JSON.parse(event.data));
    }});
    source.onerror = function () {{
      source.close(); source = null;
      if (over) {{ return; }}
      status.setAttribute("data-stream", "closed");
      refused = heard ? 0 : Math.min(refused + 1, 5);
      if (refused > 1) {{ show("The share does not answer right now: this page keeps trying.", true); }}
      var spacing = {reconnect_ms} * Math.pow(2, Math.max(0, refused - 1));
      clearTimeout(again);
      again = setTimeout(listen, Math.max(1000, openedAt + spacing - Date.now()));
    }};
  }}
  form.addEventListener("submit", function (event) {{
    event.preventDefault();
    if (busy) {{ return; }}
    var field = form.querySelector("input[name=name]"), url = form.getAttribute("action");
    if (field) {{ url += "&name=" + encodeURIComponent(field.value); }}
    busy = true;
    fetch(url, {{method: "POST", credentials: "same-origin", headers: {{"X-Share-Lobby": "1"}}}})
      .then(function (r) {{ return r.json(); }})
      .then(function (answer) {{
        busy = false;
        if (answer.error) {{ show(answer.error, true); return; }}
        over = false; listen();
      }}, function () {{ busy = false; show("The share did not answer: try again.", true); }});
  }});
  if ({asked}) {{ listen(); }}
}})();
</script></body></html>
"""


def event(state: dict[str, object]) -> bytes:
    """One event of a waiting page's stream: the browser's state as the page shows it."""
    return f"event: lobby\ndata: {json.dumps(state)}\n\n".encode()


class _Stream:
    """One open stream: its connection (a :class:`~.gateway.LocalAnswer`), and whether its last event went out."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.done = False

    def send(self, data: bytes, then_close: bool = False) -> None:
        if self.done:
            return
        self.done = then_close
        try:
            future = self.answer.send(data)
        except Exception:  # gone, or so far behind that its buffer is full: its page opens another
            self.answer.close()
            return
        future.add_done_callback(lambda done: self._sent(done, then_close))

    def _sent(self, done: Any, then_close: bool) -> None:
        if not done.cancelled():
            done.exception()  # a write that failed: the connection is gone, which until_gone sees
        if then_close:
            self.answer.close()  # only once the last word is on its way


class Streams:
    """The open streams of one lobby's waiting pages, by the record they wait as. Served on the gateway's loop;
    :meth:`push` and :meth:`close` may be called from any thread. ``state_of(record)`` is what the page should show
    now and whether that is its last word; ``opened(record, delta)`` tells the lobby a stream opened (+1) or closed
    (-1)."""

    def __init__(self, state_of: Callable[[Any], tuple[dict[str, object], bool]],
                 opened: Callable[[Any, int], None]) -> None:
        self.state_of = state_of
        self.opened = opened
        self._open: dict[Any, set[_Stream]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quiet: asyncio.TimerHandle | None = None
        self._ended = False

    async def hold(self, record: Any, answer: Any) -> None:
        """One waiting page's stream, for as long as its page stays and nothing is decided."""
        self._loop = asyncio.get_running_loop()
        stream = _Stream(answer)
        self._open.setdefault(record, set()).add(stream)
        self.opened(record, 1)
        try:
            stream.send(HEAD)
            if self._ended:
                stream.send(event(ENDED), then_close=True)
            else:
                self._tell(record, stream)
            self._keep_alive_later()
            await answer.until_gone()  # a page that leaves is let go at once, and so is one told the last word
        finally:
            streams = self._open.get(record, set())
            streams.discard(stream)
            if not streams:
                self._open.pop(record, None)
            self.opened(record, -1)
            answer.close()

    def push(self, record: Any) -> None:
        """The record's state changed: every open stream of it hears at once (from any thread)."""
        self._on_loop(lambda: [self._tell(record, stream) for stream in list(self._open.get(record, ()))])

    def close(self) -> None:
        """The share ends: every open stream is told so, and ends."""
        def end() -> None:
            self._ended = True
            for stream in [stream for streams in list(self._open.values()) for stream in streams]:
                stream.send(event(ENDED), then_close=True)

        self._on_loop(end)

    def _tell(self, record: Any, stream: _Stream) -> None:
        state, last = self.state_of(record)
        stream.send(event(state), then_close=last)

    def _on_loop(self, call: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():  # no stream was ever held: nobody to tell
            return
        try:
            loop.call_soon_threadsafe(call)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _keep_alive_later(self) -> None:
        if self._quiet is None and self._open and self._loop is not None:
            self._quiet = self._loop.call_later(KEEPALIVE, self._keep_alive)

    def _keep_alive(self) -> None:
        self._quiet = None
        for streams in list(self._open.values()):
            for stream in list(streams):
                stream.send(QUIET)
        self._keep_alive_later()
