"""The view-only page of one notebook: what a view link shows, and nothing else.

A view session never reaches Jupyter. The gateway hands its requests here, and only two exist: the page
(``<base_url>share_magic/view``) and its update stream (``.../events``). The page is the notebook as saved on the
server, cleaned of the share's own secrets (see :func:`cleaned`), rendered by nbconvert's lab template with math turned
into MathML here, and locked down by a Content-Security-Policy that lets only the page's own small script run and
loads nothing from another host: no script or event handler from a notebook output runs, no output's tag can
navigate the reader or report them elsewhere (see :func:`defanged`), and the page can reach nothing but its own update
stream. Light and dark follow the reader's system.

The helper asks the server for the notebook's ``last_modified`` every second over loopback (free: no ngrok
request); each new saved version is rendered once, whoever watches, and pushed to every open page over its one
long-lived event stream, so an open view costs one ngrok request for as long as it stays open. The page swaps the
notebook in place, keeping the reader's scroll position.
"""
from __future__ import annotations

import base64
import binascii
import copy
import datetime
import hashlib
import html
import json
import mimetypes
import os
import re
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

from .access import Local, response
from .server import JupyterServer

VIEW_PAGE = "share_magic/view"  # below the server's base URL
POLL_INTERVAL = 1.0
KEEPALIVE = 20.0  # seconds between comments on an idle stream, so that no proxy takes it for dead
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
SHARE_OUTPUT = "share_magic"  # the metadata key of every output the share's own display makes
# Files a markdown image may embed from the notebook's folder: by extension, and only if the bytes agree.
IMAGE_SIGNATURES = {".png": (b"\x89PNG\r\n\x1a\n",), ".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",),
                    ".gif": (b"GIF87a", b"GIF89a"), ".webp": (b"RIFF",), ".bmp": (b"BM",)}
# Tags an output may not bring: they navigate (meta refresh), re-root links (base), submit (form), or load or frame
# other documents. Their "<" becomes "&lt;", so the browser reads text, not a tag, however the tag is spelled.
DEFANGED_TAGS = re.compile(r"<(?=/?(?:meta|base|form|link|iframe|frame|frameset|object|embed|portal)[\s/>])", re.I)
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
  });
  var dark = window.matchMedia("(prefers-color-scheme: dark)");
  function theme() { document.body.setAttribute("data-jp-theme-light", dark.matches ? "false" : "true"); }
  theme();
  if (dark.addEventListener) { dark.addEventListener("change", theme); }
})();
"""
CHUNK_LIMIT = 16 * 1024 * 1024  # the largest image file a markdown cell may embed
VIEW_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{% block data_latex scoped %}
<div class="jp-RenderedLatex jp-OutputArea-output {{ extra_class }}" data-mime-type="text/latex">
{{ output.data['text/latex'] | latex_to_view }}
</div>
{%- endblock data_latex %}
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

    def __init__(self, source: NotebookSource, base_url: str,
                 secrets_to_blank: Callable[[], Iterable[str]] = tuple) -> None:
        """``secrets_to_blank`` returns what no reader may see, wherever the notebook holds it: every key the share
        ever made (live, revoked or retired) and the server's token."""
        self.source = source
        self.secrets_to_blank = secrets_to_blank
        self._blanked: frozenset[str] = frozenset()
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
            hidden = frozenset(secret for secret in self.secrets_to_blank() if secret)
            if (self._rendered is None or hidden != self._blanked
                    or (version is not None and version != self._rendered.version)):
                self._rendered = self._render(*self.source.read(), hidden)
                self._blanked = hidden
            return self._rendered

    def _render(self, version: str, content: dict[str, Any], hidden: frozenset[str]) -> Rendered:
        import nbformat

        exporter = self._html_exporter()
        notebook = nbformat.from_dict(cleaned(content, hidden))
        page, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": self._title(),
                                                                                "path": self._folder()}})
        opening = re.search(r"<body[^>]*>", page)
        closing = page.rfind("</body>")
        if opening is None or closing < 0:
            raise ValueError("nbconvert's page has no <body>")
        # The template's own scripts (require.js, mermaid, MathJax) go: math is MathML already.
        head = re.sub(r"<script\b.*?</script>", "", page[:opening.start()], flags=re.S)
        head = head.replace("</head>", f"<style>@media (prefers-color-scheme: dark) {{\n{self._dark_css}\n}}"
                                       "</style></head>", 1)
        return Rendered(version, head + page[opening.start():opening.end()], defanged(page[opening.end():closing]),
                        f"saved at {_saved_at(version)}")

    def _html_exporter(self) -> Any:
        if self._exporter is None:
            # Not nbconvert's sanitize_html: it escapes headings, paragraphs and tables too. The page's
            # Content-Security-Policy is what keeps a notebook's scripts and event handlers from running.
            exporter = view_exporter()
            found = [os.path.join(folder, "static", "theme-dark.css") for folder in exporter.template_paths]
            with open(next(path for path in found if os.path.exists(path)), encoding="utf-8") as f:
                self._dark_css = f.read()
            self._exporter = exporter
        return self._exporter

    def _folder(self) -> str:
        return os.path.dirname(self.source._file())

    def _title(self) -> str:
        return self.source.path.rsplit("/", 1)[-1].removesuffix(".ipynb")

    def page(self) -> tuple[bytes, str]:
        """The whole page for a new reader, and its script (which the policy names by digest). The watcher keeps the
        render current; a save it has not seen yet reaches the page over its update stream."""
        rendered = self._rendered or self.current()
        banner = BANNER.format(name=html.escape(self.source.path), saved=html.escape(rendered.saved))
        script = self._script(rendered.version)
        document = (rendered.head + banner + f'<div id="share-magic-notebook">{rendered.body}</div>'
                    f'<script>{script}</script></body></html>')
        return document.encode(), script

    def _script(self, version: str) -> str:
        return PAGE_SCRIPT % {"version": json.dumps(version), "events": json.dumps(self.events_path)}

    # -- serving ------------------------------------------------------------------------------------------------

    def respond(self, request: Local, reader: Any, sock: Any, live: Callable[[bool], None]) -> None:
        """Answer a view session's request on ``sock`` (the gateway closes it after). ``live(True/False)`` marks
        the time an update stream is open."""
        path = request.target.split("?", 1)[0]
        if request.method not in ("GET", "HEAD"):
            sock.sendall(_text(405, "Method Not Allowed", "A view link only reads."))
        elif path == self.page_path:
            try:
                body, script = self.page()
            except Exception as e:  # a notebook nbconvert cannot read: the reader is told, the log keeps the trace
                traceback.print_exc()
                sock.sendall(_text(503, "Service Unavailable", f"The notebook cannot be shown right now ({e})."))
                return
            sock.sendall(response(200, "OK", [("Content-Type", "text/html; charset=utf-8"),
                                              ("Content-Security-Policy", _policy(script)),
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


def cleaned(content: dict[str, Any], hidden: Iterable[str]) -> dict[str, Any]:
    """A copy of the notebook a view may show: without the share's own outputs (its links, its widget), without
    widget views and saved widget state, and with every ``hidden`` secret blanked wherever it appears -- sources,
    outputs, attachments, metadata. Inline binaries (figures, attachments) that hold a secret are dropped."""
    secrets_ = sorted({secret for secret in hidden if secret}, key=len, reverse=True)
    secret_bytes = [secret.encode() for secret in secrets_]

    def blank(value: Any) -> Any:
        if isinstance(value, str):
            for secret in secrets_:
                if secret in value:
                    value = value.replace(secret, "")
            return value
        if isinstance(value, list):
            return [blank(item) for item in value]
        if isinstance(value, dict):
            return {blank(key): blank(item) for key, item in value.items()}
        return value

    def holds_secret(encoded: Any) -> bool:
        """Whether base64 data (a figure, an attachment) decodes to bytes that hold a secret."""
        if not secret_bytes or not isinstance(encoded, (str, list)):
            return False
        try:
            data = base64.b64decode("".join(encoded) if isinstance(encoded, list) else encoded)
        except (binascii.Error, ValueError):
            return False
        return any(secret in data for secret in secret_bytes)

    def mime_bundle(bundle: dict[str, Any], encoded: Callable[[str], bool]) -> dict[str, Any]:
        return {mime: data for mime, data in bundle.items() if not (encoded(mime) and holds_secret(data))}

    notebook = copy.deepcopy(content)
    metadata = notebook.get("metadata") or {}
    metadata.pop("widgets", None)
    for cell in notebook.get("cells", []):
        kept = []
        for output in cell.get("outputs", []) or []:
            data = output.get("data") or {}
            if SHARE_OUTPUT in (output.get("metadata") or {}) or WIDGET_VIEW in data:
                continue
            if data:
                output["data"] = mime_bundle(data, _is_binary)
            kept.append(output)
        if "outputs" in cell:
            cell["outputs"] = kept
        if "attachments" in cell:
            cell["attachments"] = {name: mime_bundle(bundle, lambda mime: True)  # every attachment is base64
                                   for name, bundle in (cell["attachments"] or {}).items()}
    return blank(notebook)


def _is_binary(mime: str) -> bool:
    return mime.startswith(("image/", "audio/", "video/", "application/pdf")) and mime != "image/svg+xml"


def defanged(markup: str) -> str:
    """Rendered cells with every tag that could navigate, re-root, submit or frame turned into text."""
    return DEFANGED_TAGS.sub("&lt;", markup)


def mathml(tex: str, display: bool) -> str:
    """TeX as MathML, rendered here (browsers show MathML natively); the TeX itself where it cannot be rendered."""
    from latex2mathml.converter import convert

    try:
        return convert(tex, display="block" if display else "inline")
    except Exception:  # latex2mathml knows most, not all, of TeX; the reader then sees the source
        shown = html.escape(f"$${tex}$$" if display else f"${tex}$")
        return f'<code class="share-magic-tex">{shown}</code>'


def embeddable_image(folder: str, src: str) -> str | None:
    """A markdown image's file as a data: URL -- only an image file (by name and by its first bytes) inside the
    notebook's folder; anything else (``![x](credentials.env)``, ``../x.png``, a link) is not embedded."""
    if not folder or "://" in src or src.startswith(("/", "data:")):
        return None
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, src.split("?", 1)[0].split("#", 1)[0]))
    extension = os.path.splitext(path)[1].lower()
    if os.path.commonpath([root, path]) != root or extension not in IMAGE_SIGNATURES:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(CHUNK_LIMIT + 1)
    except OSError:
        return None
    if len(data) > CHUNK_LIMIT or not data.startswith(IMAGE_SIGNATURES[extension]):
        return None
    if extension == ".webp" and data[8:12] != b"WEBP":
        return None
    mime = mimetypes.types_map.get(extension, "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def view_exporter() -> Any:
    """nbconvert's HTML exporter (lab template) with math rendered to MathML and images embedded only by
    :func:`embeddable_image`."""
    from jinja2 import pass_context as contextfilter
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class ViewRenderer(IPythonRenderer):
        def block_math(self, body: str) -> str:
            return mathml(body, display=True)

        def inline_math(self, body: str) -> str:
            return mathml(body, display=False)

        def latex_environment(self, name: str, body: str) -> str:
            return mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)

        def _src_to_base64(self, src: str) -> str | None:
            return embeddable_image(self.path, src)

    class ViewExporter(HTMLExporter):
        @contextfilter
        def markdown2html(self, context: Any, source: str) -> str:
            cell = context.get("cell", {})
            renderer = ViewRenderer(escape=False, attachments=cell.get("attachments", {}), embed_images=True,
                                    path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                                    anchor_link_text=self.anchor_link_text,
                                    exclude_anchor_links=self.exclude_anchor_links, **self.lexer_options)
            return MarkdownWithMath(renderer=renderer).render(source)

        def default_filters(self) -> Any:
            yield from super().default_filters()
            yield ("markdown2html", self.markdown2html)
            yield ("latex_to_view", lambda tex: _latex_output(tex))

    return ViewExporter(template_name="lab", theme="light", embed_images=True,
                        extra_loaders=[_template_loader()], template_file="share_magic_view.html.j2")


def _latex_output(tex: str) -> str:
    """A text/latex output (sympy's, IPython.display.Math's): its $...$ or $$...$$ formulas as MathML."""
    text = tex.strip()
    for opening, closing, display in (("$$", "$$", True), ("\\[", "\\]", True), ("$", "$", False),
                                      ("\\(", "\\)", False)):
        if text.startswith(opening) and text.endswith(closing) and len(text) >= len(opening) + len(closing):
            body = text[len(opening):len(text) - len(closing)]
            return mathml(body.replace("\\displaystyle", "").strip(), display)
    if text.startswith("\\begin{"):
        return mathml(text, display=True)
    return f'<code class="share-magic-tex">{html.escape(tex)}</code>'


def _template_loader() -> Any:
    from jinja2 import DictLoader

    return DictLoader({"share_magic_view.html.j2": VIEW_TEMPLATE})


def _saved_at(version: str) -> str:
    try:
        moment = datetime.datetime.fromisoformat(version.replace("Z", "+00:00")).astimezone()
    except ValueError:
        moment = datetime.datetime.fromtimestamp(int(version) / 1e9)
    return moment.strftime("%H:%M:%S")


def _policy(script: str) -> str:
    """Only the page's own script runs (allowed by its digest); nothing loads from another host; images are inline
    or the share's own; the page reaches only its own update stream."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return ("default-src 'none'; img-src data: 'self'; style-src 'self' 'unsafe-inline'; font-src data: 'self'; "
            f"script-src 'sha256-{digest}'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-src 'none'; object-src 'none'; frame-ancestors 'none'")


def _text(status: int, reason: str, text: str) -> bytes:
    return response(status, reason, [("Content-Type", "text/plain; charset=utf-8")], f"{text}\n".encode())

