"""The cells run live: what the kernel's broadcast channel says of each run, kept as notebook cells would keep it.

Every run (an ``execute_input`` and what follows with its request as parent) becomes a :class:`Run`: its code, its
execution count and its outputs in nbformat's shape, changed as the messages come: streams appended (a ``\\r``
rewrites its line, as a terminal and JupyterLab show it, so a progress bar stays one line), ``clear_output`` (with
``wait=True``, at the next output), ``update_display_data`` wherever that display is. A run's place is the saved cell
it ran (its id, as the front-end named it: IOPub does not carry the request's metadata, so the share's kernel tells
the helper, see :meth:`LiveRuns.place`); a run with no saved cell shows after the run before it.

Kept bounded (:data:`MAX_RUNS` runs, :data:`MAX_BYTES` of outputs): the oldest go first, and are counted.
"""
from __future__ import annotations

import datetime
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_RUNS = 200
MAX_BYTES = 50 * 1024 * 1024
MAX_STREAM = 2 * 1024 * 1024  # one stream output's text kept at most; a longer one keeps its end
OWN = re.compile(r"^\s*%%?share\b|run_line_magic\(\s*['\"]share['\"]", re.M)
OUTPUTS = ("stream", "display_data", "execute_result", "error", "update_display_data", "clear_output")


@dataclass
class Run:
    msg_id: str
    code: str
    count: int | None
    previous: str | None  # the run before this one, which a run with no saved cell follows
    started: float = field(default_factory=time.monotonic)
    place: str | None = None  # the id of the notebook cell it ran, when the front-end named one
    busy: bool = True
    ended_at: float | None = None  # wall clock, to compare with a save's time
    outputs: list[dict[str, Any]] = field(default_factory=list)
    clear_pending: bool = False
    changes: int = 0
    size: int = 0
    own: bool = False  # it runs %share: what it prints is the share's (links, status), never shown

    def __post_init__(self) -> None:
        self.own = bool(OWN.search(self.code))

    def changed(self) -> None:
        self.changes += 1


class LiveRuns:
    """The runs since the last save, in the order they started; fed by the tap's thread, read by the feed's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self.places: dict[str, str] = {}  # msg_id -> cell id, for a hint that came before its run
        self.kernel = "idle"  # idle, busy, restarted, shut down
        self.running: str | None = None  # msg_id of the run under way
        self.dropped = 0  # runs let go to keep within the bounds
        self.changes = 0  # bumps with every change readers would see
        self.wake = threading.Event()

    # -- from the kernel ----------------------------------------------------------------------------------------

    def message(self, message: dict[str, Any]) -> None:
        kind = message.get("header", {}).get("msg_type") or message.get("msg_type")
        content = message.get("content") or {}
        parent = (message.get("parent_header") or {}).get("msg_id")
        with self.lock:
            if kind == "status":
                self._status(content.get("execution_state"), parent,
                             (message.get("parent_header") or {}).get("msg_type"))
            elif kind == "execute_input" and parent:
                self._start(parent, str(content.get("code", "")), content.get("execution_count"))
            elif kind == "shutdown_reply":
                # said now: the new process's "starting" is often published before the tap has reconnected
                self.kernel = "restarted" if content.get("restart") else "shut down"
                self._settle()
            elif kind in OUTPUTS:
                run = self.runs.get(parent or "")
                if kind == "update_display_data":
                    self._update_display(content)
                elif run is not None:
                    self._output(run, kind, content)
                    self._resize(run)
            else:
                return
            self.changes += 1
        self.wake.set()

    def place(self, msg_id: str, cell_id: str) -> None:
        """The kernel's word on which notebook cell request ``msg_id`` runs (it may come before or after the run's
        first message)."""
        with self.lock:
            run = self.runs.get(msg_id)
            if run is None:
                self.places[msg_id] = cell_id
                while len(self.places) > MAX_RUNS:
                    self.places.pop(next(iter(self.places)))
                return
            self._placed(run, cell_id)
            self.changes += 1
        self.wake.set()

    def _placed(self, run: Run, cell_id: str) -> None:
        for other in list(self.runs.values()):  # a run of the same cell replaces the one before it
            if other is not run and other.place == cell_id:
                self._forget(other)
        run.place = cell_id
        run.changed()

    def _start(self, msg_id: str, code: str, count: Any) -> None:
        previous = next(reversed(self.runs), None)
        run = Run(msg_id, code, count if isinstance(count, int) else None, previous)
        self.runs[msg_id] = run
        self.running = msg_id
        if msg_id in self.places:
            self._placed(run, self.places.pop(msg_id))
        self._resize(run)

    def _status(self, state: Any, parent: str | None, parent_type: Any) -> None:
        if state == "starting":
            self.kernel = "restarted"
            self._settle()
        elif state == "busy" and parent_type == "execute_request":
            self.kernel = "busy"
            self.running = parent
        elif state == "idle" and parent_type == "execute_request":
            run = self.runs.get(parent or "")
            if run is not None and run.busy:
                run.busy, run.ended_at = False, time.time()
                run.changed()
            if self.running == parent:
                self.running = None
                self.kernel = "idle"

    def _settle(self) -> None:
        """The kernel restarted or ended: nothing runs any more."""
        for run in self.runs.values():
            if run.busy:
                run.busy, run.ended_at = False, time.time()
                run.changed()
        self.running = None

    def _output(self, run: Run, kind: str, content: dict[str, Any]) -> None:
        if kind == "clear_output":
            if content.get("wait"):
                run.clear_pending = True
            else:
                run.outputs = []
            run.changed()
            return
        if run.clear_pending:
            run.outputs, run.clear_pending = [], False
        if kind == "stream" and run.own:
            return
        if kind == "stream":
            name, text = str(content.get("name", "stdout")), str(content.get("text", ""))
            last = run.outputs[-1] if run.outputs else None
            if last is not None and last.get("output_type") == "stream" and last.get("name") == name:
                last["text"] = rewritten(last["text"] + text)
            else:
                run.outputs.append({"output_type": "stream", "name": name, "text": rewritten(text)})
        elif kind == "error":
            run.outputs.append({"output_type": "error", "ename": str(content.get("ename", "")),
                                "evalue": str(content.get("evalue", "")),
                                "traceback": [str(line) for line in content.get("traceback") or []]})
        else:
            output = {"output_type": kind, "data": dict(content.get("data") or {}),
                      "metadata": dict(content.get("metadata") or {})}
            if kind == "execute_result":
                output["execution_count"] = content.get("execution_count")
            display = (content.get("transient") or {}).get("display_id")
            if display:
                output["display_id"] = str(display)  # kept here only: never rendered, dropped before rendering
            run.outputs.append(output)
        run.changed()

    def _update_display(self, content: dict[str, Any]) -> None:
        display = (content.get("transient") or {}).get("display_id")
        if not display:
            return
        for run in self.runs.values():
            touched = False
            for output in run.outputs:
                if output.get("display_id") == display:
                    output["data"] = dict(content.get("data") or {})
                    output["metadata"] = dict(content.get("metadata") or {})
                    touched = True
            if touched:
                run.changed()
                self._resize(run)

    def _resize(self, run: Run) -> None:
        run.size = len(run.code) + sum(_size(output) for output in run.outputs)
        total = sum(each.size for each in self.runs.values())
        while self.runs and (len(self.runs) > MAX_RUNS or total > MAX_BYTES):
            oldest = next(iter(self.runs.values()))
            if oldest is run and len(self.runs) == 1:
                break
            total -= oldest.size
            self._forget(oldest)
            self.dropped += 1

    def _forget(self, run: Run) -> None:
        self.runs.pop(run.msg_id, None)
        for other in self.runs.values():
            if other.previous == run.msg_id:
                other.previous = run.previous

    # -- from the notebook --------------------------------------------------------------------------------------

    def saved(self, cells: list[dict[str, Any]], version: str) -> bool:
        """A new saved version: the runs it holds are the saved notebook's again (those of its cells, ended before
        it was saved, or whose code and count a saved cell has). Whether any run went."""
        held = {str(cell.get("id")) for cell in cells if cell.get("id")}
        counted = {(_source(cell), cell.get("execution_count")) for cell in cells if cell.get("cell_type") == "code"}
        saved_at = saved_time(version)
        gone = False
        with self.lock:
            for run in list(self.runs.values()):
                if run.busy or (saved_at is not None and run.ended_at is not None and run.ended_at > saved_at + 0.5):
                    continue
                if (run.place is not None and run.place in held) or (run.code, run.count) in counted:
                    self._forget(run)
                    gone = True
            if gone:
                self.changes += 1
        if gone:
            self.wake.set()
        return gone


def rewritten(text: str) -> str:
    """Stream text as a terminal shows it: what a ``\\r`` precedes on a line replaces that line's earlier text; the
    end kept if it grows past :data:`MAX_STREAM`."""
    if "\r" in text:
        lines = text.split("\n")
        for number, line in enumerate(lines):
            body = line.rstrip("\r")
            start = body.rfind("\r") + 1
            kept = body[start:]
            if number == len(lines) - 1 and body != line:
                kept += "\r"  # the next write replaces this line
            lines[number] = kept
        text = "\n".join(lines)
    if len(text) > MAX_STREAM:
        text = "[earlier output not kept]\n" + text[-MAX_STREAM:]
    return text


def saved_time(version: str) -> float | None:
    """A saved version's time on the wall clock: a file's modification time in ns, or the API's ISO time."""
    try:
        return int(version) / 1e9
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(version.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _size(value: Any) -> int:
    """About what a value weighs as JSON: its strings' lengths (cheap enough for every message of a big output)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(key)) + _size(item) for key, item in value.items())
    if isinstance(value, list):
        return sum(_size(item) for item in value)
    return 8


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)
