"""The view-only page of one notebook: what a view link shows, and nothing else.

A view session never reaches Jupyter. The gateway hands its requests here, and only two exist: the page
(``<base_url>share_magic/view``) and its update stream (``.../events``). The page is the notebook as saved on the
server, rendered by nbconvert's lab template and locked down by a Content-Security-Policy that lets only the page's
own small script (and MathJax) run: no script or event handler from a notebook output runs, and the page can reach
nothing but its own update stream. Light and dark follow the reader's system.

The helper asks the server for the notebook's ``last_modified`` every second over loopback (free: no ngrok
request); each new saved version is rendered once, whoever watches, and pushed to every open page over its one
long-lived event stream, so an open view costs one ngrok request for as long as it stays open. The page swaps the
notebook in place, keeping the reader's scroll position.
"""
from __future__ import annotations

import datetime
import html
import json
import os
import re
import secrets
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

from .access import Local, response
from .server import JupyterServer

VIEW_PAGE = "share_magic/view"  # below the server's base URL
POLL_INTERVAL = 1.0
KEEPALIVE = 20.0  # seconds between comments on an idle stream, so that no proxy takes it for dead
MATHJAX = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js?config=TeX-AMS_CHTML-full,Safe"

MATHJAX_CONFIG = ("window.MathJax = {tex2jax: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], "
                  "processEscapes: true}, messageStyle: 'none'};")
PAGE_SCRIPT = """
(function () {
  var current = %(version)s;
  var stream = new EventSource(%(events)s);
  stream.addEventListener("notebook", function (event) {
    var update = JSON.parse(event.data);
    if (update.version === current) { return; }
    var x = window.scrollX, y = window.scrollY;
    document.getElementById("share-magic-notebook").innerHTML = update.body;
    document.getElementById("share-magic-saved").textContent = update.saved;
    current = update.version;
    window.scrollTo(x, y);
    if (window.MathJax && window.MathJax.Hub) { window.MathJax.Hub.Queue(["Typeset", window.MathJax.Hub]); }
  });
  var dark = window.matchMedia("(prefers-color-scheme: dark)");
  function theme() { document.body.setAttribute("data-jp-theme-light", dark.matches ? "false" : "true"); }
  theme();
  if (dark.addEventListener) { dark.addEventListener("change", theme); }
})();
"""
BANNER = """<div class="share-magic-banner" style="position: sticky; top: 0; z-index: 10; padding: 6px 12px;
font: 13px/1.4 system-ui, sans-serif; background: var(--jp-layout-color2); color: var(--jp-ui-font-color1);
border-bottom: 1px solid var(--jp-border-color2)"><b>{name}</b> · view only ·
<span id="share-magic-saved">{saved}</span></div>"""


@dataclass(frozen=True)
class Rendered:
    version: str
    head: str  # everything up to and including the opening <body> tag
    body: str  # the notebook's cells
    saved: str  # "saved at HH:MM:SS"


class NotebookSource:
    """The saved notebook, as the server has it: through its contents API (with its token), else from disk."""

    def __init__(self, server: JupyterServer, path: str) -> None:
        self.server = server
        self.path = path

    def version(self) -> str | None:
        """The notebook's ``last_modified`` (None if it cannot be read now)."""
        if self.server.token:
            status, body = self.server.request("GET", f"api/contents/{quote(self.path)}?content=0&type=notebook")
            return json.loads(body)["last_modified"] if status == 200 else None
        try:
            return str(os.stat(self._file()).st_mtime_ns)
        except OSError:
            return None

    def read(self) -> tuple[str, dict[str, Any]]:
        """The notebook's version and content."""
        if self.server.token:
            status, body = self.server.request("GET", f"api/contents/{quote(self.path)}?content=1&type=notebook",
                                               timeout=30)
            if status != 200:
                raise OSError(f"the server answered {status} for {self.path}")
            model = json.loads(body)
            return model["last_modified"], model["content"]
        with open(self._file(), encoding="utf-8") as f:
            version = str(os.fstat(f.fileno()).st_mtime_ns)
            return version, json.load(f)

    def _file(self) -> str:
        return os.path.join(self.server.root_dir, *self.path.split("/"))


class NotebookView:
    """Serves the view of one notebook to view sessions; renders each saved version once."""

    def __init__(self, source: NotebookSource, base_url: str) -> None:
        self.source = source
        self.page_path = base_url + VIEW_PAGE
        self.events_path = self.page_path + "/events"
        self._rendered: Rendered | None = None
        self._render_lock = threading.Lock()
        self._changed = threading.Condition()
        self._closed = False
        self._exporter: Any = None
        self._dark_css = ""
        threading.Thread(target=self._watch, daemon=True, name="share_magic view").start()

    # -- rendering ----------------------------------------------------------------------------------------------

    def current(self) -> Rendered:
        """The latest saved version, rendered (once per version, however many readers ask)."""
        with self._render_lock:
            version = self.source.version()
            if self._rendered is None or (version is not None and version != self._rendered.version):
                self._rendered = self._render(*self.source.read())
            return self._rendered

    def _render(self, version: str, content: dict[str, Any]) -> Rendered:
        import nbformat

        exporter = self._html_exporter()
        notebook = nbformat.from_dict(content)
        page, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": self._title()}})
        opening = re.search(r"<body[^>]*>", page)
        closing = page.rfind("</body>")
        if opening is None or closing < 0:
            raise ValueError("nbconvert's page has no <body>")
        # The template's own scripts (require.js, mermaid, MathJax with an eval'd config) go; the page brings
        # MathJax itself, under its policy.
        head = re.sub(r"<script\b.*?</script>", "", page[:opening.start()], flags=re.S)
        head = head.replace("</head>", f"<style>@media (prefers-color-scheme: dark) {{\n{self._dark_css}\n}}"
                                       "</style></head>", 1)
        return Rendered(version, head + page[opening.start():opening.end()], page[opening.end():closing],
                        f"saved at {_saved_at(version)}")

    def _html_exporter(self) -> Any:
        if self._exporter is None:
            from nbconvert import HTMLExporter

            # Not nbconvert's sanitize_html: it escapes headings, paragraphs and tables too. The page's
            # Content-Security-Policy is what keeps a notebook's scripts and event handlers from running.
            self._exporter = HTMLExporter(template_name="lab", theme="light", mathjax_url=MATHJAX,
                                          embed_images=True)
            static = os.path.join(os.path.dirname(self._exporter.template.filename or ""), "static")
            with open(os.path.join(static, "theme-dark.css"), encoding="utf-8") as f:
                self._dark_css = f.read()
        return self._exporter

    def _title(self) -> str:
        return self.source.path.rsplit("/", 1)[-1].removesuffix(".ipynb")

    def page(self) -> tuple[bytes, str]:
        """The whole page for a new reader, and the nonce its script runs under. The watcher keeps the render
        current; a save it has not seen yet reaches the page over its update stream."""
        rendered = self._rendered or self.current()
        nonce = secrets.token_urlsafe(16)
        script = PAGE_SCRIPT % {"version": json.dumps(rendered.version), "events": json.dumps(self.events_path)}
        banner = BANNER.format(name=html.escape(self.source.path), saved=html.escape(rendered.saved))
        mathjax = (f'<script nonce="{nonce}">{MATHJAX_CONFIG}</script>'
                   f'<script nonce="{nonce}" src="{html.escape(MATHJAX)}"></script>')
        document = (rendered.head.replace("</head>", mathjax + "</head>", 1) + banner
                    + f'<div id="share-magic-notebook">{rendered.body}</div>'
                    f'<script nonce="{nonce}">{script}</script></body></html>')
        return document.encode(), nonce

    # -- serving ------------------------------------------------------------------------------------------------

    def respond(self, request: Local, reader: Any, sock: Any, live: Callable[[bool], None]) -> None:
        """Answer a view session's request on ``sock`` (the gateway closes it after). ``live(True/False)`` marks
        the time an update stream is open."""
        path = request.target.split("?", 1)[0]
        if request.method not in ("GET", "HEAD"):
            sock.sendall(_text(405, "Method Not Allowed", "A view link only reads."))
        elif path == self.page_path:
            try:
                body, nonce = self.page()
            except Exception as e:  # a notebook nbconvert cannot read: the reader is told, the log keeps the trace
                traceback.print_exc()
                sock.sendall(_text(503, "Service Unavailable", f"The notebook cannot be shown right now ({e})."))
                return
            sock.sendall(response(200, "OK", [("Content-Type", "text/html; charset=utf-8"),
                                              ("Content-Security-Policy", _policy(nonce)),
                                              ("Referrer-Policy", "no-referrer"),
                                              ("X-Content-Type-Options", "nosniff")],
                                  b"" if request.method == "HEAD" else body))
        elif path == self.events_path:
            live(True)
            try:
                self._stream(sock)
            finally:
                live(False)
        else:
            sock.sendall(_text(404, "Not Found", "A view link shows one notebook and nothing else: "
                                                 f"{self.page_path}"))

    def _stream(self, sock: Any) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                     b"X-Accel-Buffering: no\r\nConnection: close\r\n\r\nretry: 3000\n\n")
        sent = None
        while not self._closed:
            rendered = self._rendered or self.current()
            if rendered.version != sent:
                data = json.dumps({"version": rendered.version, "body": rendered.body, "saved": rendered.saved})
                sock.sendall(f"event: notebook\ndata: {data}\n\n".encode())
                sent = rendered.version
            with self._changed:
                if self._rendered is rendered and not self._closed:
                    if not self._changed.wait(KEEPALIVE):
                        sock.sendall(b": still here\n\n")

    def _watch(self) -> None:
        """Render each new saved version as soon as it is saved, and wake every open stream."""
        while not self._closed:  # the first render starts at once, before any reader asks
            try:
                before = self._rendered
                after = self.current()
            except (OSError, ValueError):
                after = before  # the server is busy or the notebook is mid-save: the next look will do
            if after is not before:
                with self._changed:
                    self._changed.notify_all()
            time.sleep(POLL_INTERVAL)

    def close(self) -> None:
        self._closed = True
        with self._changed:
            self._changed.notify_all()


def _saved_at(version: str) -> str:
    try:
        moment = datetime.datetime.fromisoformat(version.replace("Z", "+00:00")).astimezone()
    except ValueError:
        moment = datetime.datetime.fromtimestamp(int(version) / 1e9)
    return moment.strftime("%H:%M:%S")


def _policy(nonce: str) -> str:
    """Only the page's own script (and MathJax) runs; the page reaches only its own update stream."""
    return ("default-src 'none'; img-src data: https:; style-src 'unsafe-inline' https:; font-src data: https:; "
            f"script-src 'nonce-{nonce}' https://cdnjs.cloudflare.com; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _text(status: int, reason: str, text: str) -> bytes:
    return response(status, reason, [("Content-Type", "text/plain; charset=utf-8")], f"{text}\n".encode())

