"""From the runs the kernel broadcasts to what each view reader is sent: rendered, cleaned, placed, coalesced.

One thread turns :class:`~.live.LiveRuns` into updates, at most :data:`TICK` apart whatever the kernel sends (a
progress bar that writes ten thousand times sends a reader ten updates a second of its one line). Each update names
only the cells that changed since the last, the view's order when it changed, and the kernel's state; a cell's images
travel apart from it (a cell's markup names each by digest), once while any live cell shows it, so a figure is not
sent again with every line its cell prints. A live cell is cleaned exactly as a saved one (:func:`.render.cleaned`:
the share's secrets blanked, its own outputs and widgets dropped) and rendered by the same template and defanging.

Readers share one sequence of updates on the gateway's loop (:class:`LiveState`); a reader who joins gets the state
as a whole once (the saved notebook's page first, then this), and the sequence from there.
"""
from __future__ import annotations

import copy
import hashlib
import html
import json
import threading
import time
from typing import Any, Callable

from .live import LiveRuns, Run
from .render import cleaned

TICK = 0.1  # seconds between two updates at least: ~10 a second per cell at most
HINT_WAIT = 0.3  # how long a new run waits for the kernel's word on which cell it is, before showing as a new cell
IMAGES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")
PLACEHOLDER = "share-magic-image-"
MARK = ('<div class="share-magic-mark" style="font: 11px system-ui, sans-serif; color: var(--jp-ui-font-color2); '
        'padding: 2px 0 0 8px">{}</div>')
KERNEL_WORDS = {"idle": "kernel idle", "busy": "running", "restarted": "kernel restarted",
                "restarting": "kernel restarting", "shut down": "kernel shut down"}


class LiveFeed:
    """Renders what changed and hands each update to ``publish`` (a dict; see :class:`LiveState`)."""

    def __init__(self, runs: LiveRuns, render: Callable[[dict[str, Any]], str],
                 hidden: Callable[[], frozenset[str]], saved_ids: Callable[[], list[str]],
                 publish: Callable[[dict[str, Any]], None]) -> None:
        self.runs = runs
        self.render, self.hidden, self.saved_ids, self.publish = render, hidden, saved_ids, publish
        self.renders = 0
        self._shown: dict[str, tuple[str, int, str, frozenset[str]]] = {}  # key -> msg_id, changes, markup, images
        self._images: dict[str, str] = {}  # digest -> data URL, of the images the live cells show now
        self._sent: set[str] = set()  # the digests readers hold now
        self._order: list[str] | None = None
        self._state: dict[str, Any] = {}
        self._blanked: frozenset[str] = frozenset()
        self._saved: tuple[str, ...] = ()
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="share_magic live view")
        self._thread.start()

    def nudge(self) -> None:
        """The saved notebook changed: the order may have."""
        self.runs.wake.set()

    def close(self) -> None:
        """Stop, after a last update of what came since the last one (the kernel shut down, say), so that readers
        learn it before their streams close."""
        self._closed = True
        self.runs.wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)
        if not self._thread.is_alive():
            try:
                update, _ = self.tick()
            except Exception:
                return
            if update is not None:
                self.publish(update)

    def _run(self) -> None:
        last = 0.0
        while not self._closed:
            self.runs.wake.wait(5.0)
            if self._closed:
                return
            pause = last + TICK - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # coalesces what comes meanwhile into the next update
            self.runs.wake.clear()
            last = time.monotonic()
            try:
                update, waiting = self.tick()
            except Exception:  # one cell nbconvert cannot render must not end the feed
                import traceback

                traceback.print_exc()
                continue
            if update is not None:
                self.publish(update)
            if waiting:
                self.runs.wake.set()  # a run still waits for its place: look again at the next tick

    def tick(self) -> tuple[dict[str, Any] | None, bool]:
        """The update since the last one (None if readers would see no change), and whether a run waits."""
        hidden = self.hidden()
        if hidden != self._blanked:
            self._shown, self._blanked, self._sent = {}, hidden, set()  # a new secret: every live cell cleaned again
        saved = tuple(self.saved_ids())
        now = time.monotonic()
        with self.runs.lock:
            waiting = False
            shown: list[tuple[str, Run]] = []
            for run in self.runs.runs.values():
                if run.place is None and run.busy and now - run.started < HINT_WAIT:
                    waiting = True
                    continue
                shown.append((key_of(run), run))
            changed = {}
            for key, run in shown:
                held = self._shown.get(key)
                if held is None or held[:2] != (run.msg_id, run.changes):
                    changed[key] = (run.msg_id, run.changes, _cell(run))
            order = layout(list(saved), [(key, run) for key, run in shown])
            running = self.runs.runs.get(self.runs.running or "")
            state = {"kernel": self.runs.kernel, "words": KERNEL_WORDS.get(self.runs.kernel, self.runs.kernel),
                     "running": key_of(running) if running is not None and any(
                         run is running for _, run in shown) else None, "dropped": self.runs.dropped}
        cells = {}
        for key, (msg_id, changes, cell) in changed.items():
            markup, images = self._rendered(cell, hidden)
            self._shown[key] = (msg_id, changes, markup, frozenset(images))
            for digest, url in images.items():
                self._images.setdefault(digest, url)
            cells[key] = markup
        live_keys = {key for key, _ in shown}
        for key in [key for key in self._shown if key not in live_keys]:
            del self._shown[key]
        referenced = set().union(*(held[3] for held in self._shown.values())) if self._shown else set()
        new_images = {digest: self._images[digest] for key in cells for digest in self._shown[key][3]
                      if digest not in self._sent}  # readers keep an image while a live cell shows it
        self._images = {digest: url for digest, url in self._images.items() if digest in referenced}
        self._sent = (self._sent | set(new_images)) & referenced
        update: dict[str, Any] = {}
        if cells:
            update["live"] = cells
        if new_images:
            update["images"] = new_images
        if order != self._order or saved != self._saved:
            update["order"] = order
            self._order, self._saved = order, saved
        if state != self._state:
            update.update(state)
            self._state = state
        elif update:
            update.update(state)
        return (update or None), waiting

    def _rendered(self, cell: dict[str, Any], hidden: frozenset[str]) -> tuple[str, dict[str, str]]:
        clean = cleaned({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}, hidden)["cells"][0]
        images: dict[str, str] = {}
        for output in clean.get("outputs", []):
            data = output.get("data") or {}
            for mime in IMAGES:
                if isinstance(data.get(mime), (str, list)):
                    encoded = "".join(data[mime]) if isinstance(data[mime], list) else data[mime]
                    encoded = "".join(encoded.split())
                    digest = hashlib.sha256(encoded.encode()).hexdigest()[:24]
                    images[digest] = f"data:{mime};base64,{encoded}"
                    data[mime] = PLACEHOLDER + digest
        markup = self.render(clean)
        self.renders += 1
        return MARK.format("run live · not saved") + markup, images


class LiveState:
    """The live cells as every reader holds them, kept on the gateway's loop: updates applied in order, and the
    whole of it for a reader who joins."""

    def __init__(self) -> None:
        self.cells: dict[str, str] = {}
        self.images: dict[str, str] = {}
        self.order: list[str] | None = None
        self.state: dict[str, Any] = {}
        self._snapshot: bytes | None = None

    def apply(self, update: dict[str, Any]) -> bytes:
        """Take in an update; the event that carries it."""
        self.cells.update(update.get("live", {}))
        self.images.update(update.get("images", {}))
        if "order" in update:
            self.order = update["order"]
            kept = set(self.order)
            self.cells = {key: markup for key, markup in self.cells.items() if key in kept}
        for name in ("kernel", "words", "running", "dropped"):
            if name in update:
                self.state[name] = update[name]
        used = "".join(self.cells.values())
        self.images = {digest: url for digest, url in self.images.items() if PLACEHOLDER + digest in used}
        self._snapshot = None
        return event(update)

    def snapshot(self) -> bytes | None:
        """Everything live now, as one event (made once for all the readers who join before the next update)."""
        if self.order is None and not self.state:
            return None
        if self._snapshot is None:
            self._snapshot = event({"reset": True, "live": self.cells, "images": self.images,
                                    "order": self.order, **self.state})
        return self._snapshot


def event(update: dict[str, Any]) -> bytes:
    # No id: a reader's Last-Event-ID stays the saved version it holds; a reconnect gets the live state whole.
    return f"event: live\ndata: {json.dumps(update)}\n\n".encode()


def key_of(run: Run) -> str:
    return "live:" + (run.place or run.msg_id)


def layout(saved: list[str], shown: list[tuple[str, Run]]) -> list[str]:
    """The view's order: the saved cells, each replaced by its live run if it has one; every other run after the run
    before it (at the end if that one is gone)."""
    saved_set = set(saved)
    in_place = {run.place: key for key, run in shown if run.place in saved_set}
    keys = {run.msg_id: key for key, run in shown}
    followers: dict[str | None, list[str]] = {}
    for key, run in shown:
        if run.place in saved_set:
            continue
        followers.setdefault(keys.get(run.previous or ""), []).append(key)
    order: list[str] = []
    placed: set[str] = set()

    def emit(key: str) -> None:
        if key in placed:
            return
        placed.add(key)
        order.append(key)
        for follower in followers.get(key, ()):
            emit(follower)

    for cell_id in saved:
        emit(in_place.get(cell_id, cell_id))
    for anchor in list(followers):
        for key in followers[anchor]:
            emit(key)
    return order


def _cell(run: Run) -> dict[str, Any]:
    outputs = [{name: value for name, value in output.items() if name != "display_id"}
               for output in copy.deepcopy(run.outputs)]
    return {"cell_type": "code", "id": html.escape(run.place or run.msg_id), "metadata": {}, "source": run.code,
            "execution_count": run.count, "outputs": outputs}
