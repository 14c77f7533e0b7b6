"""The stand-in edge's HTTP plumbing, framed by h11 on both sides: a visitor's kept-alive connection, and the agent's
pool of upstream connections as Go's ``http.Transport`` keeps them (the real agent is a Go reverse proxy).

- A visitor's connection carries request after request (HTTP/1.1 keep-alive) until the visitor closes it.
- Upstream connections are kept alive and reused for whichever request comes next, from any visitor: the most
  recently idle first. An idle one the upstream closes is noticed (Go reads from idle connections too) and dropped.
  At most :data:`MAX_IDLE` idle ones are kept (Go's ``DefaultMaxIdleConnsPerHost``; the agent's own number is not
  documented), the rest are closed after their answer. A websocket takes the connection it was sent on for good.
- A request sent on a reused connection that the upstream closes without answering is sent again on another only
  when Go's transport would: no body, an idempotent method, nothing answered yet. Anything else gets a 502.
"""
from __future__ import annotations

import asyncio
import os
from http import HTTPStatus
from typing import Any, Callable

import h11

CHUNK = 65536
MAX_IDLE = int(os.environ.get("STANDIN_NGROK_IDLE_CONNS", "2"))
# Removed on the way in both directions, as Go's httputil.ReverseProxy does (and whatever Connection names).
HOP_BY_HOP = frozenset({"connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade"})
REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # what Go's transport may send twice
ERRORS = (h11.ProtocolError, ConnectionError, OSError, asyncio.IncompleteReadError)


def text_headers(headers: Any) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]


def canonical(name: str) -> str:
    """A header name as Go writes it (``x-forwarded-for`` -> ``X-Forwarded-For``)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def without_hop_by_hop(headers: list[tuple[str, str]], keep_upgrade: bool = False) -> list[tuple[str, str]]:
    named = {token.strip().lower() for name, value in headers if name.lower() == "connection"
             for token in value.split(",")}
    dropped = (HOP_BY_HOP | named) - ({"connection", "upgrade"} if keep_upgrade else set())
    return [(name, value) for name, value in headers if name.lower() not in dropped]


def status_line(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class Side:
    """One end of a connection, framed by h11: events in, events out (what goes out counted by ``count``)."""

    def __init__(self, role: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 count: Callable[[int], None] = lambda size: None) -> None:
        self.h11 = h11.Connection(role)
        self.reader, self.writer, self.count = reader, writer, count

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.reader.read(CHUNK))

    async def send(self, *events: Any) -> None:
        data = b"".join(self.h11.send(event) or b"" for event in events)
        await self.write(data)

    async def write(self, data: bytes) -> None:
        if data:
            self.count(len(data))
            self.writer.write(data)
            await self.writer.drain()

    async def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """A whole answer of the edge's own; the connection stays open for the next request."""
        fields = [("Content-Length", str(len(body))), *(headers or {}).items()]
        await self.send(h11.Response(status_code=status, headers=fields, reason=status_line(status)),
                        h11.Data(data=body), h11.EndOfMessage())

    async def body(self, limit: int = 1 << 20) -> bytes:
        """The rest of the request's body, whole."""
        parts: list[bytes] = []
        while not isinstance(event := await self.next_event(), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                parts.append(bytes(event.data))
                if sum(map(len, parts)) > limit:
                    raise h11.RemoteProtocolError("body too large")
        return b"".join(parts)

    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def close(self) -> None:
        self.writer.close()


class Upstream(Side):
    """One of the agent's connections to the upstream (Go's ``persistConn``)."""

    def __init__(self, pool: Pool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(h11.CLIENT, reader, writer)
        self.pool = pool
        self.reused = False
        self.watch: asyncio.Future | None = None

    def rest(self) -> None:
        """Idle in the pool: a read that notices the upstream closing (or speaking out of turn) drops it."""
        self.watch = asyncio.ensure_future(self.reader.read(1))
        self.watch.add_done_callback(self._woke)

    def _woke(self, done: asyncio.Future) -> None:
        if not done.cancelled():
            done.exception()  # retrieved: a reset while idle is as good as a close
            self.pool.lost += self in self.pool.idle  # (one taken already was counted by take())
            self.pool.drop(self)

    async def wake(self) -> bool:
        """Taken from the pool: whether it is still fit to carry a request."""
        watch, self.watch = self.watch, None
        if watch is not None:
            if watch.done():
                return False
            watch.cancel()
            try:
                await watch  # the read lets go of the stream before the next one starts
            except asyncio.CancelledError:
                pass
            except ERRORS:
                return False
            if watch.cancelled() is False:  # the upstream spoke (or closed) just now
                return False
        return not self.writer.is_closing()


class Pool:
    """The agent's kept-alive connections to one upstream address, most recently idle first."""

    def __init__(self, address: tuple[str, int], opened: set) -> None:
        self.address = address
        self.idle: list[Upstream] = []
        self.opened = opened  # every writer the endpoint holds, closed when it stops
        self.dialed = 0  # connections opened, for a test to see that they are reused
        self.lost = 0  # kept-alive connections the upstream closed (idle, or under the next request) unannounced

    async def take(self) -> Upstream:
        while self.idle:
            upstream = self.idle.pop()
            if await upstream.wake():
                return upstream
            self.lost += 1
            upstream.close()
        reader, writer = await asyncio.open_connection(*self.address)
        self.dialed += 1
        self.opened.add(writer)
        return Upstream(self, reader, writer)

    def give_back(self, upstream: Upstream) -> None:
        if upstream.reusable() and len(self.idle) < MAX_IDLE:
            upstream.h11.start_next_cycle()
            upstream.reused = True
            upstream.rest()
            self.idle.append(upstream)
        else:
            self.close(upstream)

    def drop(self, upstream: Upstream) -> None:
        if upstream in self.idle:
            self.idle.remove(upstream)
        self.close(upstream)

    def close(self, upstream: Upstream) -> None:
        self.opened.discard(upstream.writer)
        upstream.close()


async def copy_body(source: Side, target: Side) -> None:
    """A message's body, event by event, to its end."""
    while True:
        event = await source.next_event()
        if isinstance(event, h11.Data):
            await target.send(event)
        elif isinstance(event, h11.EndOfMessage):
            await target.send(h11.EndOfMessage())
            return
        else:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes,
               count: Callable[[int], None] = lambda size: None) -> None:
    """Raw bytes one way (a websocket), ``first`` the bytes h11 had already read past the switch."""
    try:
        if first:
            count(len(first))
            writer.write(first)
        while data := await reader.read(CHUNK):
            count(len(data))
            writer.write(data)
            await writer.drain()
    except ERRORS:
        pass
    finally:
        writer.close()


class NoAnswer(Exception):
    """The upstream gave no answer to a request sent to it."""


class VisitorGone(ConnectionError):
    """The visitor closed their connection while their request was upstream."""


class Watch:
    """Go's server reads on in the background once it has read a request: the visitor closing their connection
    cancels the request upstream (its connection is closed), whether its answer has begun or not."""

    def __init__(self, visitor: Side) -> None:
        self.visitor = visitor
        self.task: asyncio.Future | None = asyncio.ensure_future(visitor.reader.read(CHUNK))

    def _heard(self) -> None:
        """What the background read got: the next request (kept for h11), or the visitor's close."""
        task, self.task = self.task, None
        assert task is not None
        try:
            data = task.result()
        except ERRORS:
            data = b""
        if not data:
            raise VisitorGone("the visitor closed the connection")
        self.visitor.h11.receive_data(data)

    async def until(self, work: Any) -> Any:
        """``await work``, unless the visitor goes first."""
        work = asyncio.ensure_future(work)
        if self.task is not None:
            await asyncio.wait({work, self.task}, return_when=asyncio.FIRST_COMPLETED)
            if self.task.done() and not work.done():
                try:
                    self._heard()
                except VisitorGone:
                    work.cancel()
                    raise
        return await work

    async def stop(self) -> None:
        if self.task is None:
            return
        if not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, *ERRORS):
                pass
        if self.task is not None and self.task.done() and not self.task.cancelled():
            self._heard()
        self.task = None


async def round_trip(pool: Pool, visitor: Side, request: h11.Request, has_body: bool,
                     on_switch: Callable[[Upstream, Any], Any]) -> None:
    """Send ``request`` (its body read from ``visitor`` as it comes) upstream and its answer to ``visitor``, as
    Go's reverse proxy does: a replayable request the upstream dropped unanswered on a reused connection is sent
    again; anything else unanswered gets a 502; a visitor who leaves cancels it. A 101 hands both connections to
    ``on_switch``."""
    replayable = request.method.decode() in REPLAYABLE and not has_body
    watch = None
    if not has_body:
        await visitor.next_event()  # its EndOfMessage
        watch = Watch(visitor)
    try:
        await _round_trip(pool, visitor, request, has_body, replayable, watch, on_switch)
    finally:
        if watch is not None:
            await watch.stop()


async def _round_trip(pool: Pool, visitor: Side, request: h11.Request, has_body: bool, replayable: bool,
                      watch: Watch | None, on_switch: Callable[[Upstream, Any], Any]) -> None:
    async def until(work: Any) -> Any:
        return await (watch.until(work) if watch is not None else work)

    while True:
        try:
            upstream = await pool.take()
        except OSError:
            if has_body:
                await visitor.body(1 << 40)
            await visitor.answer(502, b"ngrok could not reach the upstream.\nERR_NGROK_8012\n",
                                 {"ngrok-error-code": "ERR_NGROK_8012"})
            return
        sender = None
        try:
            await upstream.send(request)
            if has_body:
                sender = asyncio.ensure_future(copy_body(visitor, upstream))
            else:
                await upstream.send(h11.EndOfMessage())
            while True:
                event = await until(upstream.next_event())
                if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                    continue  # 100 Continue and the like: the visitor's client does without
                if not isinstance(event, (h11.Response, h11.InformationalResponse)):
                    raise NoAnswer()
                break
        except VisitorGone:
            pool.close(upstream)
            raise
        except (NoAnswer, *ERRORS):
            pool.close(upstream)
            pool.lost += upstream.reused
            if sender is not None:
                sender.cancel()
            if upstream.reused and replayable:
                continue  # what Go's transport retries: sent again, on another connection
            await visitor.answer(502, b"The upstream closed the connection without answering.\nERR_NGROK_8012\n",
                                 {"ngrok-error-code": "ERR_NGROK_8012"})
            if has_body:  # its body was not all read: the visitor's connection cannot carry another request
                raise ConnectionError("the visitor's request body was not all read")
            return
        break
    headers = text_headers(event.headers)
    if event.status_code == 101:
        if watch is not None:
            await watch.stop()  # the visitor's bytes are the websocket's now
        await visitor.send(h11.InformationalResponse(status_code=101, headers=without_hop_by_hop(headers, True),
                                                     reason=event.reason))
        await on_switch(upstream, event)
        return
    try:
        await visitor.send(h11.Response(status_code=event.status_code,
                                        headers=[(canonical(k), v) for k, v in without_hop_by_hop(headers)],
                                        reason=event.reason))
        await until(copy_body(upstream, visitor))
    except BaseException:
        pool.close(upstream)
        if sender is not None:
            sender.cancel()
        raise
    if sender is not None and not sender.done():  # answered before the body was all sent: neither can go on
        sender.cancel()
        pool.close(upstream)
        raise ConnectionError("answered before the request body was all sent")
    if sender is not None and sender.exception() is not None:
        pool.close(upstream)
        raise ConnectionError("the request body did not reach the upstream")
    pool.give_back(upstream)
