"""The view-only page of one notebook: what a view link shows, and nothing else.

A view session never reaches Jupyter. The gateway hands its requests here, and only three exist: the page
(``<base_url>share_magic/view``), its stylesheet (``.../style-<digest>.css``) and its update stream (``.../events``).
The page is the notebook as saved (on the server, or in the one file a kernel with no server names: :mod:`.sources`),
cleaned of the share's own secrets (see :func:`cleaned`), rendered by nbconvert's lab template cell by cell with math
turned into MathML here, and locked down by a Content-Security-Policy that lets only the page's own small script run and
loads nothing from another host: no script or event handler from a notebook output runs, no output's tag can navigate
the reader or report them elsewhere (see :func:`defanged`), and the page can reach nothing but its own update stream.
Light and dark follow the reader's system.

What a reader costs the owner's ngrok plan: the helper looks at the notebook's version every second over loopback or on
disk (free); a new saved version re-renders only the cells whose content changed (renders are kept by content digest),
whoever watches. A reader gets the notebook once: the page (gzipped, with a validator, so a reload of an unchanged view
is a 304) names its version, the stylesheet is one immutable resource, and the update stream starts from the page's
version (or, after a reconnect, from the last event it got) and carries only the cells added, changed, moved or removed
since, keyed by cell id, gzipped and flushed per update. A reader too far behind gets a fresh copy. The page patches the
notebook in place, keeping the reader's scroll position.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs

from ..contract import VIEW_PAGE
from .access import Local
from .answers import accepts_gzip, gzip_bytes, header, response
from .answers import text as _answer_text
from .live_view import LIVE_BANNER, LIVE_STYLE
from .render import cleaned, defanged, view_exporter
from .sources import saved_words
from .view_streams import Streams

POLL_INTERVAL = 1.0
KEEPALIVE = 20.0  # seconds between comments on an idle stream, so that no proxy takes it for dead
HISTORY = 64  # versions a reader may be behind and still get only what changed; further behind, a fresh copy
with open(os.path.join(os.path.dirname(__file__), "view_page.js"), encoding="utf-8") as _script:
    PAGE_SCRIPT = _script.read()
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title><link rel="stylesheet" href="{style}">{live_style}</head>
<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
{banner}<main id="share-magic-notebook" data-version="{version}" data-events="{events}">{cells}</main>
<script>{script}</script></body></html>"""
BANNER = """<div class="share-magic-banner" style="position: sticky; top: 0; z-index: 10; padding: 6px 12px;
font: 13px/1.4 system-ui, sans-serif; background: var(--jp-layout-color2); color: var(--jp-ui-font-color1);
border-bottom: 1px solid var(--jp-border-color2)"><b>{name}</b> · view only ·
<span id="share-magic-saved">{saved}</span>{live}</div>"""


@dataclass(frozen=True)
class Version:
    """One saved version as readers see it: its cells in order, each as (cell id, digest of its render)."""

    name: str  # "<this view's instance>-<number>": a page of another share's view never matches
    saved: str  # "saved at HH:MM:SS"
    cells: tuple[tuple[str, str], ...]
    renders: dict[str, str] = field(compare=False, repr=False)  # digest -> the cell's render


@dataclass(frozen=True)
class Page:
    """A version's whole page, plain and gzipped, and its validator."""

    etag: str
    plain: bytes
    gzipped: bytes


class NotebookView:
    """Serves the view of one notebook to view sessions; renders each changed cell once, whoever reads."""

    def __init__(self, source: Any, base_url: str,
                 secrets_to_blank: Callable[[], Iterable[str]] = tuple, kernel_connection: str | None = None) -> None:
        """``secrets_to_blank`` returns what no reader may see, wherever the notebook holds it: every key the share
        ever made (live, revoked or retired) and the server's token. ``source`` is where the saved notebook comes
        from (:mod:`.sources`). With ``kernel_connection`` (the share's kernel's connection file), readers also see
        every cell as it runs (:mod:`.live_feed`)."""
        self.source = source
        self.secrets_to_blank = secrets_to_blank
        self.page_path = base_url + VIEW_PAGE
        self.events_path = self.page_path + "/events"
        self._instance = secrets.token_hex(4)
        self._count = 0
        self._current: Version | None = None
        self._source_version: str | None = None
        self._blanked: frozenset[str] = frozenset()
        self._cells: dict[str, str] = {}  # digest -> the cell's render, for the latest version's cells
        self._history: OrderedDict[str, Version] = OrderedDict()
        self._page: Page | None = None
        self._updates: OrderedDict[tuple[str, str], bytes] = OrderedDict()  # (since, version) -> the event
        self._updates_lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.streams = Streams(self)  # the readers' open update streams
        self._exporter: Any = None
        self._style: tuple[str, bytes, bytes] | None = None  # path, plain, gzipped
        self.renders = 0  # cells rendered since the start: what a save costs the owner's CPU
        self._frame: dict[str, Any] = {"nbformat": 4, "nbformat_minor": 5}
        self._metadata: dict[str, Any] = {}
        self._saved_cells: list[dict[str, Any]] = []  # the latest version's cells as the live runs compare them
        self.live: Any = None
        if kernel_connection:
            from .live_view import LiveCells

            self.live = LiveCells(kernel_connection, lambda cell, exporter: self._render_cell(
                self._frame, self._metadata, cell, exporter), self._hidden, self._saved_ids, self._send_live)
        threading.Thread(target=self._watch, daemon=True, name="share_magic view").start()

    # -- rendering ----------------------------------------------------------------------------------------------

    @property
    def rendered(self) -> Version | None:
        """The latest version rendered so far (None before the first render)."""
        return self._current

    def current(self) -> Version:
        """The latest saved version, rendered (each changed cell once, however many readers ask)."""
        with self._render_lock:
            source_version = self.source.version()
            hidden = self._hidden()
            if (self._current is None or hidden != self._blanked
                    or (source_version is not None and source_version != self._source_version)):
                version, content = self.source.read()
                self._update(version, content, hidden)
            assert self._current is not None
            return self._current

    def _update(self, source_version: str, content: dict[str, Any], hidden: frozenset[str]) -> None:
        notebook = cleaned(content, hidden)
        metadata = notebook.get("metadata") or {}
        frame = {key: notebook.get(key) for key in ("nbformat", "nbformat_minor")}
        cells, renders, seen = [], {}, set()
        for number, cell in enumerate(notebook.get("cells", [])):
            cell_id = str(cell.get("id") or f"cell-{number}")
            while cell_id in seen:  # ids are unique in a valid notebook; a hand-edited one may repeat them
                cell_id += "+"
            seen.add(cell_id)
            digest = hashlib.sha256(json.dumps([frame, metadata, cell], sort_keys=True).encode()).hexdigest()[:24]
            if digest not in renders:
                renders[digest] = self._cells.get(digest) or self._render_cell(frame, metadata, cell)
            cells.append((cell_id, digest))
        self._cells = renders
        self._frame, self._metadata = frame, metadata
        self._saved_cells = [{key: cell.get(key) for key in ("id", "cell_type", "source", "execution_count")}
                             for cell in notebook.get("cells", [])]
        self._source_version = source_version
        self._blanked = hidden
        saved = saved_words(source_version)
        if self._current is not None and self._current.cells == tuple(cells) and self._current.saved == saved:
            return
        self._count += 1
        self._current = Version(f"{self._instance}-{self._count}", saved, tuple(cells), renders)
        self._history[self._current.name] = self._current
        while len(self._history) > HISTORY:
            self._history.popitem(last=False)
        self._page = None

    def _hidden(self) -> frozenset[str]:
        return frozenset(secret for secret in self.secrets_to_blank() if secret)

    def _render_cell(self, frame: dict[str, Any], metadata: dict[str, Any], cell: dict[str, Any],
                     exporter: Any = None) -> str:
        import nbformat

        exporter = exporter or self._html_exporter()
        notebook = nbformat.from_dict({**frame, "metadata": metadata, "cells": [cell]})
        markup, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": self._title(),
                                                                                  "path": self._folder()}})
        if exporter is self._exporter:
            self.renders += 1
        return defanged(markup)

    # -- live cells (on the feed's thread, then the gateway's loop) -----------------------------------------------

    def _saved_ids(self) -> list[str]:
        current = self._current
        return [cell_id for cell_id, _ in current.cells] if current is not None else []

    def _send_live(self, event: bytes) -> None:
        self.streams.send(event)

    def _html_exporter(self) -> Any:
        if self._exporter is None:
            # Not nbconvert's sanitize_html: it escapes headings, paragraphs and tables too. The page's
            # Content-Security-Policy is what keeps a notebook's scripts and event handlers from running.
            self._exporter = view_exporter()
        return self._exporter

    def style(self) -> tuple[str, bytes, bytes]:
        """The template's stylesheet (light, and dark for readers who prefer it) as one resource: its path (named by
        its digest, so it can be cached for good), its bytes, gzipped."""
        if self._style is None:
            from nbconvert import HTMLExporter

            exporter = HTMLExporter(template_name="lab", theme="light")
            empty, _ = exporter.from_notebook_node(_empty_notebook(), resources={"metadata": {"name": ""}})
            found = [os.path.join(folder, "static", "theme-dark.css") for folder in exporter.template_paths]
            with open(next(path for path in found if os.path.exists(path)), encoding="utf-8") as f:
                dark = f.read()
            head = empty[:empty.find("</head>")]
            css = "\n".join(re.findall(r"<style[^>]*>(.*?)</style>", head, flags=re.S))
            css += f"\n@media (prefers-color-scheme: dark) {{\n{dark}\n}}\n"
            plain = css.encode()
            path = f"{self.page_path}/style-{hashlib.sha256(plain).hexdigest()[:16]}.css"
            self._style = (path, plain, gzip_bytes(plain))
        return self._style

    def _folder(self) -> str:
        return self.source.folder

    def _title(self) -> str:
        return self.source.name.rsplit("/", 1)[-1].removesuffix(".ipynb")

    def page(self) -> Page:
        """The whole page of the latest version. The watcher keeps it current; a save it has not seen yet reaches the
        page over its update stream."""
        version = self._current or self.current()
        page = self._page
        if page is not None and page.etag == f'"{version.name}"':
            return page
        cells = "".join(_cell_markup(cell_id, version.renders[digest]) for cell_id, digest in version.cells)
        document = PAGE.format(
            title=html.escape(self._title()), style=html.escape(self.style()[0]), version=html.escape(version.name),
            events=html.escape(self.events_path), cells=cells, script=PAGE_SCRIPT,
            banner=BANNER.format(name=html.escape(self.source.name), saved=html.escape(version.saved),
                                 live=LIVE_BANNER if self.live is not None else ""),
            live_style=LIVE_STYLE if self.live is not None else "")
        plain = document.encode()
        self._page = page = Page(f'"{version.name}"', plain, gzip_bytes(plain))
        return page

    def update_for(self, since: str | None) -> tuple[str, bytes] | None:
        """The event that brings a reader holding version ``since`` to the latest (None if they hold it): the cells
        added or re-rendered, the new order if it changed; a whole fresh copy if ``since`` is unknown."""
        version = self._current or self.current()
        if since == version.name:
            return None
        held = self._history.get(since or "")
        key = (held.name if held else "", version.name)  # every reader too far behind shares one fresh copy
        event = self._updates.get(key)
        if event is None:
            if held is None:
                update = {"version": version.name, "saved": version.saved, "reset": True,
                          "order": [cell_id for cell_id, _ in version.cells],
                          "cells": {cell_id: version.renders[digest] for cell_id, digest in version.cells}}
            else:
                before = dict(held.cells)
                update = {"version": version.name, "saved": version.saved,
                          "cells": {cell_id: version.renders[digest] for cell_id, digest in version.cells
                                    if before.get(cell_id) != digest}}
                if [cell_id for cell_id, _ in held.cells] != [cell_id for cell_id, _ in version.cells]:
                    update["order"] = [cell_id for cell_id, _ in version.cells]
            event = f"id: {version.name}\nevent: notebook\ndata: {json.dumps(update)}\n\n".encode()
            with self._updates_lock:
                self._updates[key] = event
                while len(self._updates) > HISTORY:
                    self._updates.popitem(last=False)
        return version.name, event

    # -- serving ------------------------------------------------------------------------------------------------

    async def respond(self, request: Local, answer: Any) -> None:
        """Answer a view session's request on the gateway's ``answer`` (a :class:`~.gateway.LocalAnswer`): the
        page and the stylesheet whole, then the connection closes; the update stream for as long as the reader
        stays."""
        path, _, query = request.target.partition("?")
        if request.method not in ("GET", "HEAD"):
            await answer.finish(_text(405, "Method Not Allowed", "A view link only reads."))
        elif path == self.page_path:
            try:
                page = self._page if self._page is not None and self._current is not None \
                    and self._page.etag == f'"{self._current.name}"' else await answer.run(self.page)
            except Exception:  # a notebook nbconvert cannot read: the reader is told, the log keeps the trace (not
                traceback.print_exc()  # the reader: nbformat's message quotes the file's first bytes, unblanked)
                await answer.finish(_text(503, "Service Unavailable", "The notebook cannot be shown right now: its "
                                                                      "saved file is not a readable notebook."))
                return
            headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Security-Policy", _policy(PAGE_SCRIPT)),
                       ("Referrer-Policy", "no-referrer"), ("X-Content-Type-Options", "nosniff"),
                       ("ETag", page.etag), ("Cache-Control", "private, no-cache"), ("Vary", "Accept-Encoding")]
            await answer.finish(self._answer(request, headers, page.plain, page.gzipped, validator=page.etag))
        elif path == (self._style or await answer.run(self.style))[0]:
            _, plain, gzipped = self.style()
            await answer.finish(self._answer(request, [
                ("Content-Type", "text/css; charset=utf-8"), ("Vary", "Accept-Encoding"),
                ("Cache-Control", "private, max-age=31536000, immutable"), ("X-Content-Type-Options", "nosniff")],
                plain, gzipped))
        elif path == self.events_path:
            since = header(request.headers, "last-event-id") or (parse_qs(query).get("since") or [None])[0]
            await self.streams.serve(answer, since, _accepts_gzip(request.headers))
        else:
            await answer.finish(_text(404, "Not Found", "A view link shows one notebook and nothing else: "
                                                        f"{self.page_path}"))

    @staticmethod
    def _answer(request: Local, headers: list[tuple[str, str]], plain: bytes, gzipped: bytes,
                validator: str | None = None) -> bytes:
        if validator is not None and header(request.headers, "if-none-match") == validator:
            return response(304, "Not Modified", [(name, value) for name, value in headers
                                                  if name in ("ETag", "Cache-Control", "Vary")])
        body = plain
        if _accepts_gzip(request.headers):
            body, headers = gzipped, [*headers, ("Content-Encoding", "gzip")]
        whole = response(200, "OK", headers, body)
        return whole[:len(whole) - len(body)] if request.method == "HEAD" else whole

    def _watch(self) -> None:
        """Render each new saved version as soon as it is saved, and update every open stream."""
        quiet_since, unreadable = time.monotonic(), ""
        while not self._closed:  # the first render starts at once, before any reader asks
            before = self._current
            try:
                after = self.current()
            except (OSError, ValueError):
                after = before  # the server is busy or the notebook is mid-save: the next look will do
            except Exception as e:  # a file that is JSON but no notebook (``[1]``): the log says so once, the view
                if repr(e) != unreadable:  # goes on
                    traceback.print_exc()
                    unreadable = repr(e)
                after = before
            if after is not before:
                if self.streams.call(self.streams.broadcast):
                    quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE and self.streams.call(self.streams.keep_alive):
                quiet_since = time.monotonic()
            self._saved_anew()
            self._wake.wait(POLL_INTERVAL)

    def _saved_anew(self) -> None:
        """After a new saved version: the live runs it holds are the saved view again."""
        if self.live is not None:
            with self._render_lock:
                current, cells, stamp = self._current, self._saved_cells, self._source_version
            self.live.saved(current, cells, stamp)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self.live is not None:
            self.live.close()
        self.streams.close()


def _cell_markup(cell_id: str, markup: str) -> str:
    return f'<div class="share-magic-cell" data-cell="{html.escape(cell_id)}">{markup}</div>'


def _empty_notebook() -> Any:
    import nbformat

    return nbformat.from_dict({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []})


def _accepts_gzip(headers: list[tuple[str, str]]) -> bool:
    return accepts_gzip(header(headers, "accept-encoding") or "")


def _policy(script: str) -> str:
    """Only the page's own script runs (allowed by its digest); nothing loads from another host; images are inline
    or the share's own; the page reaches only its own update stream."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return ("default-src 'none'; img-src data: 'self'; style-src 'self' 'unsafe-inline'; font-src data: 'self'; "
            f"script-src 'sha256-{digest}'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-src 'none'; object-src 'none'; frame-ancestors 'none'")


def _text(status: int, reason: str, message: str) -> bytes:
    return _answer_text(status, reason, message)
