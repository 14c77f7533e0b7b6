"""What people see: the share as an ipywidgets view, and the authtoken form when ngrok has no token yet.

Live, the view shows the link (clickable, a Copy button, a QR code), a Stop button, what the link grants, a
status line kept current from the helper's events, and, once the share can have people, their panel
(:mod:`.people_panel`, loaded only then). Once the share ends, the view replaces its own output with a
static record, so the saved notebook shows what happened instead of a live-looking dead link (and front-ends
without the kernel have nothing to fail to render). Colours come from JupyterLab's theme variables.

No live key ever lands in the notebook: a saved notebook is a file other people read (the view link renders it), and
JupyterLab can save every widget model's state into it. So the links (and their QR codes, which encode the key too)
are :class:`LiveLink` widgets that hold no link in their state: the browser asks the kernel for the link when it draws
one, and gets it in a custom message, which nothing saves. The text and HTML fallbacks name the links without
giving them. Every output shown here carries :func:`own_output` metadata, so that a view can leave it out.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import anywidget
import ipywidgets as widgets
import traitlets
from IPython.display import DisplayHandle, display

from ..contract import own_output
from .status import LINKS_KEPT_OUT as KEPT_OUT_TEXT

if TYPE_CHECKING:
    from .people_panel import PeoplePanel
    from .share import Share

MUTED = "color: var(--jp-ui-font-color2); font-size: var(--jp-ui-font-size1); line-height: 1.45"
GRANTS = ("Anyone with this link has <b>full control of this server</b> — files, terminals, kernels — until the "
          "share ends; then the link never works again. Free ngrok accounts first show visitors an ngrok warning "
          "page: they click <i>Visit Site</i>.")
VIEW_GRANTS = ("The view-only link shows this notebook as last saved{}; readers cannot run code or open anything "
               "else.")
NO_COLLABORATION = ("jupyter-collaboration is not installed on this server: if you both edit this notebook, "
                    "each save overwrites the other's. For real-time co-editing: "
                    "<code>pip install jupyter-collaboration</code>, then restart Jupyter.")
LINKS_KEPT_OUT = html.escape(KEPT_OUT_TEXT).replace("%share links", "<code>%share links</code>")
EDIT_LABEL = "Anyone with this link:"
VIEW_LABEL = "View only (this notebook, nothing else):"


def qr_svg(text: str) -> str:
    """An inline SVG QR code: dark on light whatever the theme, or phones cannot scan it."""
    import segno

    return segno.make(text, error="m").svg_inline(scale=3, border=2, dark="#000", light="#fff")


def status_line(share: Share) -> str:
    colour = {"live": "--jp-success-color1", "starting": "--jp-warn-color1"}.get(share.status, "--jp-error-color1")
    dot = f'<span style="color: var({colour})">●</span>'
    if share.live:
        since, who = share.live_summary()
        cost = html.escape(share.cost_summary())
        return (f'{dot} <span class="share-magic-status">{since} · {html.escape(who)}</span>'
                f'<div class="share-magic-cost" style="{MUTED}">{cost}</div>')
    return f'{dot} <span class="share-magic-status">{html.escape(share.describe().splitlines()[0])}</span>'


def record_html(share: Share) -> str:
    """The static record of a share that has ended, or the fallback for front-ends without widgets: which links
    there are and who is invited, never the links themselves."""
    if share.live:
        lines = [html.escape(line) for line in share.link_summary()]
        body = ("".join(f"<div>{line}</div>" for line in lines)
                + f'<div style="{MUTED}">{LINKS_KEPT_OUT} {grants(share)} Stop with <code>%share stop</code>.</div>')
    else:
        body = f'<div class="share-magic-status">{html.escape(share.describe())}</div>'
    return f'<div class="share-magic">{body}</div>'


class _OwnOutput:
    """A widget displayed in an output of its own, which it can later hand over to something else."""

    _handle: DisplayHandle | None = None

    def show(self, where: DisplayHandle | None = None) -> None:
        """Display it in an output of its own, or in ``where`` (an output shown before, which it replaces)."""
        if where is None:
            self._handle = display(self, display_id=True, metadata=own_output())
        else:
            where.update(self, metadata=own_output())
            self._handle = where

    def _hand_over(self, successor: Any) -> DisplayHandle | None:
        """Put ``successor`` in this widget's output and close the widget; None if it was never shown."""
        handle = self._handle
        if handle is not None:
            handle.update(successor, metadata=own_output())
            self.close()  # type: ignore[attr-defined]
        return handle


def grants(share: Share) -> str:
    """What the share's links let people do, in a sentence or two."""
    if share.link or share.people:
        return GRANTS + (" " + view_grants(share) if share.view_link else "")
    return view_grants(share)


def view_grants(share: Share) -> str:
    return VIEW_GRANTS.format(" and each cell as you run it" if share.live_view else " (save-only)")


class StartProgress:
    """How the start of a share goes while the ngrok agent is fetched (a first download, an update): an output shown
    at the first report, updated at each, that the share's view then replaces (:attr:`handle`); nothing is shown
    for a start that fetches nothing."""

    def __init__(self) -> None:
        self.handle: DisplayHandle | None = None

    def follow(self, share: Share) -> None:
        share.observe(self._changed)

    def _changed(self, share: Share) -> None:
        if share.status == "starting" and share.progress:
            from .progress import show

            self.handle = show(share, self.handle)

    def clear(self) -> None:
        """The start failed: its error says what happened, so the progress shown goes."""
        if self.handle is not None:
            self.handle.update({"text/plain": ""}, raw=True, metadata=own_output())


class LiveLink(anywidget.AnyWidget):
    """One live link (``parts``: the labelled link, a Copy button, its QR code), drawn in the browser.

    ``source`` gives the link now (None: nothing to draw). The link is never a trait: the front-end asks for it with
    a custom message when it renders, and :meth:`push` sends it again when it changes, once a front-end has asked
    (until then there is nobody to tell).
    """

    _esm = (Path(__file__).parent / "live_link.js").read_text(encoding="utf-8")
    _css = (".share-magic-live-link { display: flex; align-items: center; gap: 4px; flex-wrap: wrap } "
            ".share-magic-live-link a { color: var(--jp-content-link-color); word-break: break-all }")
    parts = traitlets.List(traitlets.Unicode()).tag(sync=True)
    label = traitlets.Unicode("").tag(sync=True)
    css_class = traitlets.Unicode("").tag(sync=True)

    def __init__(self, source: Callable[[], str | None], **kwargs: Any) -> None:
        self._source = source
        self._drawn = False
        super().__init__(**kwargs)
        self.on_msg(self._answer)

    def message(self) -> dict[str, Any]:
        """What the front-end is sent: the link, and its QR code if this widget shows one."""
        link = self._source()
        return {"type": "link", "link": link, "qr": qr_svg(link) if link and "qr" in self.parts else None}

    def push(self) -> None:
        if self._drawn:
            self.send(self.message())

    def _answer(self, _: Any, content: Any, buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "link?":
            self._drawn = True
            self.push()


class ShareView(_OwnOutput, widgets.VBox):
    """Shows one :class:`Share`; call :meth:`show` to display it."""

    def __init__(self, share: Share, **kwargs: Any) -> None:
        self.share = share
        main = lambda: share.link or share.view_link  # noqa: E731
        self.link = LiveLink(main, parts=["link"], css_class="share-magic-link")
        self.copy = LiveLink(main, parts=["copy"])
        self.view_link = LiveLink(lambda: share.view_link if share.link else None, parts=["link", "copy"],
                                  label=VIEW_LABEL, css_class="share-magic-view-link")  # beside an edit link
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop",
                                          tooltip="Stop sharing: the link stops working at once")
        self.stop_button.on_click(lambda _: share.stop())
        self.status = widgets.HTML()
        self.notes = widgets.HTML()
        self.qr = LiveLink(main, parts=["qr"])
        self._links: tuple = ()
        details = widgets.VBox([self.link, widgets.HBox([self.copy, self.stop_button, self.status]), self.view_link,
                                self.notes])
        self.people: PeoplePanel | None = None  # once there can be people: a view link alone has none
        self.people_box = widgets.VBox()
        super().__init__([widgets.HBox([details, self.qr]), self.people_box], **kwargs)
        self.add_class("share-magic")
        share.observe(lambda _: self.refresh())
        self.refresh()

    def refresh(self) -> None:
        if self.share.status == "starting" or self.share.live:
            self.status.value = status_line(self.share)
            self._show_links()
            share = self.share
            if self.people is None and (share.link or share.people or share.waiting or share.signed_in):
                from .people_panel import PeoplePanel

                self.people = PeoplePanel(share)
                self.people_box.children = [self.people]
            elif self.people is not None:
                self.people.refresh()
        elif self._hand_over(_Record(self.share)) is None:  # ended: a static record takes the live view's place
            self.status.value = status_line(self.share)
            self.stop_button.disabled = True

    def _show_links(self) -> None:
        """The edit link first (with Copy and the QR code), else the view link; a view link beside an edit link
        gets a row of its own."""
        share = self.share
        links = (share.link, share.view_link, bool(share.people))
        if links == self._links:
            return
        self._links = links
        self.link.label = EDIT_LABEL if share.link else VIEW_LABEL
        for live_link in (self.link, self.copy, self.view_link, self.qr):
            live_link.push()
        notes = grants(share)
        if share.sign_in_summary():
            notes += f'<br><span class="share-magic-sign-in">{html.escape(share.sign_in_summary() or "")}</span>'
        if share.collaborative is False and share.link:
            notes += "<br>" + NO_COLLABORATION
        self.notes.value = f'<div style="{MUTED}; max-width: 46em">{notes}</div>'

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = self.share.describe()
        bundle["text/html"] = record_html(self.share)
        return bundle, own_output()


class _Record:
    """A share as plain text and HTML only."""

    def __init__(self, share: Share) -> None:
        self.share = share

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, str], dict[str, Any]]:
        return {"text/plain": self.share.describe(), "text/html": record_html(self.share)}, own_output()
