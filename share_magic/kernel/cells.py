"""Which notebook cell each run is, told to the helper (kernel side).

The helper follows the kernel's runs on its broadcast channel (IOPub), which does not carry the execute request's
metadata, where JupyterLab and Notebook name the cell (``cellId``). Here, in the share's own kernel, IPython knows it
before the cell runs (``pre_run_cell``): the pair (request id, cell id) goes to the helper over the control channel,
from a thread of its own, so that no cell waits for it. Only the ids: the code and outputs the helper reads on IOPub.
"""
from __future__ import annotations

import queue
import threading
from typing import Any

from .. import control

TIMEOUT = 5.0


class CellNamer:
    """While registered, names every cell this kernel runs to the share's helper."""

    def __init__(self, share: Any) -> None:
        self.share = share
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=1000)
        self._shell: Any = None
        threading.Thread(target=self._send, daemon=True, name="share_magic cells").start()

    def register(self) -> CellNamer:
        from IPython import get_ipython

        self._shell = get_ipython()
        if self._shell is not None and getattr(self._shell, "kernel", None) is not None:
            self._shell.events.register("pre_run_cell", self.pre_run_cell)
        return self

    def unregister(self) -> None:
        if self._shell is not None:
            try:
                self._shell.events.unregister("pre_run_cell", self.pre_run_cell)
            except ValueError:
                pass
        self._queue.put(None)

    def pre_run_cell(self, info: Any) -> None:
        if not self.share.live or self.share.view_link is None:
            return
        try:
            parent = self._shell.kernel.get_parent()
            msg_id = parent["header"]["msg_id"]
            cell_id = getattr(info, "cell_id", None) or (parent.get("metadata") or {}).get("cellId")
        except Exception:  # a kernel that keeps its requests otherwise: cells then show as new ones
            return
        if msg_id and cell_id:
            try:
                self._queue.put_nowait((str(msg_id), str(cell_id)))
            except queue.Full:
                pass

    def _send(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            where = self.share._control
            if where is None or not self.share.live:
                continue
            try:
                control.request(where, {"cmd": "cell", "msg_id": item[0], "cell_id": item[1]}, TIMEOUT)
            except Exception:  # the helper went away: its watcher says so
                pass
