"""What a view shows of a notebook, and how it is drawn: the notebook cleaned of the share's secrets and of
everything that could run, load or navigate (:func:`cleaned`, :func:`defanged`), and nbconvert's lab template with
math rendered to MathML in the helper (:func:`view_exporter`). Used by :mod:`.view`, in the gateway's pool of
threads or the view's own watcher, never on the event loop."""
from __future__ import annotations

import base64
import binascii
import copy
import html
import mimetypes
import os
import re
from collections.abc import Iterable
from typing import Any, Callable

from ..contract import OUTPUT_KEY as SHARE_OUTPUT

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Files a markdown image may embed from the notebook's folder: by extension, and only if the bytes agree.
IMAGE_SIGNATURES = {".png": (b"\x89PNG\r\n\x1a\n",), ".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",),
                    ".gif": (b"GIF87a", b"GIF89a"), ".webp": (b"RIFF",), ".bmp": (b"BM",)}
# Tags an output may not bring: they navigate (meta refresh), re-root links (base), submit (form), or load or frame
# other documents. Their "<" becomes "&lt;", so the browser reads text, not a tag, however the tag is spelled.
DEFANGED_TAGS = re.compile(r"<(?=/?(?:meta|base|form|link|iframe|frame|frameset|object|embed|portal)[\s/>])", re.I)
CHUNK_LIMIT = 16 * 1024 * 1024  # the largest image file a markdown cell may embed
VIEW_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block header -%}{%- endblock header -%}
{%- block body_header -%}{%- endblock body_header -%}
{%- block body_footer -%}{%- endblock body_footer -%}
{%- block footer -%}{%- endblock footer -%}
{% block data_latex scoped %}
<div class="jp-RenderedLatex jp-OutputArea-output {{ extra_class }}" data-mime-type="text/latex">
{{ output.data['text/latex'] | latex_to_view }}
</div>
{%- endblock data_latex %}
"""

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
