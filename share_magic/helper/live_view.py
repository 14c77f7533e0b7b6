"""The live half of a view (:class:`~.view.NotebookView`): the share's kernel's runs, from its tap
(:mod:`.kernel_tap`) through :class:`~.live.LiveRuns` and the feed (:mod:`.live_feed`), to the view's readers on the
gateway's loop; and a new saved version handed back to the runs, which then give way to it."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from .kernel_tap import KernelTap
from .live import LiveRuns
from .live_feed import LiveFeed, LiveState
from .render import view_exporter

LIVE_STYLE = """<style>
.share-magic-live { box-shadow: inset 3px 0 0 var(--jp-warn-color1, #f57c00); }
.share-magic-busy { box-shadow: inset 3px 0 0 var(--jp-brand-color1, #1976d2); background: var(--jp-layout-color2); }
</style>"""
LIVE_BANNER = """ · <span id="share-magic-state">live</span> · <button id="share-magic-follow" type="button"
aria-pressed="true" style="font: inherit">following the presenter</button>"""


class LiveCells:
    """Follows one kernel for one view: ``render(cell, exporter)`` draws a cleaned cell as the saved ones are,
    ``send(event)`` hands an event to every open reader (called on the gateway's loop)."""

    def __init__(self, connection_file: str, render: Callable[[dict[str, Any], Any], str],
                 hidden: Callable[[], frozenset[str]], saved_ids: Callable[[], list[str]],
                 send: Callable[[bytes], None]) -> None:
        self.runs = LiveRuns()
        self.state = LiveState()
        self._render, self._send = render, send
        self._exporter: Any = None  # the feed's thread's own: an exporter is not shared between threads
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seen: Any = None  # the saved version the runs last gave way to
        self.feed = LiveFeed(self.runs, self._rendered, hidden, saved_ids, self._publish)
        self.tap = KernelTap(connection_file, self.runs.message).start()

    def place(self, msg_id: str, cell_id: str) -> None:
        self.runs.place(msg_id, cell_id)

    def attach(self, loop: asyncio.AbstractEventLoop) -> bytes | None:
        """A reader joins on ``loop``: the live state as a whole, for them (None if there is none yet)."""
        with self._lock:
            self._loop = loop
        return self.state.snapshot()

    def saved(self, version: Any, cells: list[dict[str, Any]], stamp: str | None) -> None:
        """A saved version (``version``, of ``cells`` saved at ``stamp``): the runs it holds give way to it."""
        if version is None or version is self._seen:
            return
        self._seen = version
        if stamp is not None:
            self.runs.saved(cells, stamp)
        self.feed.nudge()

    def close(self) -> None:
        self.tap.close()  # first: what the kernel said last reaches the feed's last update
        self.feed.close()

    @property
    def renders(self) -> int:
        return self.feed.renders

    def _rendered(self, cell: dict[str, Any]) -> str:
        if self._exporter is None:
            self._exporter = view_exporter()
        return self._render(cell, self._exporter)

    def _publish(self, update: dict[str, Any]) -> None:  # on the feed's thread
        with self._lock:
            loop = self._loop
            if loop is None or loop.is_closed():
                self.state.apply(update)  # no reader yet: the first one gets it in the whole
                return
        try:
            loop.call_soon_threadsafe(lambda: self._send(self.state.apply(update)))
        except RuntimeError:  # the loop closed meanwhile
            pass
