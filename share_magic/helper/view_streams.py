"""The view's update streams: every reader's open stream, on the gateway's loop. Each event is made once by the view
and compressed once here (as a block any gzip stream can carry), however many readers get it."""
from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import Any

from .answers import GZIP_HEADER, deflate_block

KEPT_BLOCKS = 128  # events kept compressed, for readers who get them one after another


class Streams:
    """The open update streams of one :class:`~.view.NotebookView`."""

    def __init__(self, view: Any) -> None:
        self.view = view
        self.readers: set[_Reader] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._deflated: OrderedDict[int, tuple[bytes, bytes]] = OrderedDict()  # an event, compressed once
        self._lock = threading.Lock()

    async def serve(self, answer: Any, since: str | None, compressed: bool) -> None:
        """An update stream: its head, then each update as it comes. It costs the loop a write per update."""
        reader = _Reader(answer, since, compressed)
        answer.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                    + (b"Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n" if compressed else b"")
                    + b"X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
                    + (GZIP_HEADER if compressed else b"") + self.encoded(b"retry: 3000\n\n", compressed))
        self.loop = asyncio.get_running_loop()
        answer.live(True)
        self.readers.add(reader)
        try:
            view = self.view
            if view.rendered is None:
                await answer.run(view.current)
            self._bring_up_to_date(reader)
            snapshot = view.live.attach(self.loop) if view.live is not None else None
            if snapshot is not None:
                reader.send(self.encoded(snapshot, reader.compressed))
            await answer.until_gone()  # a reader who leaves is let go at once, not at the next write
        finally:
            self.readers.discard(reader)
            answer.live(False)
            answer.close()

    def send(self, event: bytes) -> None:
        """On the gateway's loop: ``event`` to every open stream (a live run's)."""
        for reader in list(self.readers):
            reader.send(self.encoded(event, reader.compressed))

    def _bring_up_to_date(self, reader: _Reader) -> None:
        if self.view.rendered is None:
            return
        update = self.view.update_for(reader.since)
        if update is None:
            return
        reader.since, event = update
        reader.send(self.encoded(event, reader.compressed))

    def encoded(self, event: bytes, compressed: bool) -> bytes:
        if not compressed:
            return event
        with self._lock:
            found = self._deflated.get(id(event))
            if found is not None and found[0] is event:
                return found[1]
            block = deflate_block(event)
            self._deflated[id(event)] = (event, block)
            while len(self._deflated) > KEPT_BLOCKS:
                self._deflated.popitem(last=False)
            return block

    def broadcast(self) -> None:
        """On the gateway's loop: every open stream gets the update that brings it to the latest version."""
        for reader in list(self.readers):
            self._bring_up_to_date(reader)

    def keep_alive(self) -> None:
        quiet = b": still here\n\n"
        block = deflate_block(quiet)
        for reader in list(self.readers):
            reader.send(block if reader.compressed else quiet)

    def call(self, callback: Any) -> bool:
        """From another thread: ``callback`` on the gateway's loop, once a reader has come; whether it was."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True

    def close(self) -> None:
        self.call(lambda: [reader.answer.close() for reader in list(self.readers)])


class _Reader:
    """One open update stream: where it is, and how it is written."""

    def __init__(self, answer: Any, since: str | None, compressed: bool) -> None:
        self.answer, self.since, self.compressed = answer, since, compressed

    def send(self, data: bytes) -> None:
        try:
            future = self.answer.send(data)
        except Exception:  # gone, or so far behind that its buffer is full: it reconnects, from where it was
            self.answer.close()
            return
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
