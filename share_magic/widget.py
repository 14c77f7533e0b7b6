"""What people see: the share as an ipywidgets view, and the authtoken form when ngrok has no token yet.

Live, the view shows the link (clickable, a Copy button, a QR code), a Stop button, what the link grants, a
status line kept current from the helper's events, and the people invited by name: one row each (name, Copy, whether
they are connected, Revoke) and a field to invite someone. Once the share ends, the view replaces its own output with a
static record, so the saved notebook shows what happened instead of a live-looking dead link (and front-ends
without the kernel have nothing to fail to render). Colours come from JupyterLab's theme variables.
"""
from __future__ import annotations

import html
from typing import Any, Callable

import ipywidgets as widgets
from IPython.display import DisplayHandle, display

from .errors import ShareError
from .sharing import Person, Share

MUTED = "color: var(--jp-ui-font-color2); font-size: var(--jp-ui-font-size1); line-height: 1.45"
GRANTS = ("Anyone with this link has <b>full control of this server</b> — files, terminals, kernels — until the "
          "share ends; then the link never works again. Free ngrok accounts first show visitors an ngrok warning "
          "page: they click <i>Visit Site</i>.")
VIEW_GRANTS = ("The view-only link shows this notebook as last saved, updated live; readers cannot run code or "
               "open anything else.")
NO_COLLABORATION = ("jupyter-collaboration is not installed on this server: if you both edit this notebook, "
                    "each save overwrites the other's. For real-time co-editing: "
                    "<code>pip install jupyter-collaboration</code>, then restart Jupyter.")
COPY_BUTTON = (  # runs in the browser: the kernel has no access to the user's clipboard
    '<button class="jupyter-button widget-button share-magic-copy" title="Copy the link" data-link="{link}" '
    'onclick="const b = this, l = b.dataset.link; const done = () => {{ b.textContent = \'Copied\'; '
    'setTimeout(() => b.textContent = \'Copy\', 2000); }}; if (navigator.clipboard) '
    '{{ navigator.clipboard.writeText(l).then(done); }} else {{ const t = document.createElement(\'textarea\'); '
    't.value = l; document.body.appendChild(t); t.select(); document.execCommand(\'copy\'); t.remove(); done(); }}"'
    '>Copy</button>'
)


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


def _anchor(link: str) -> str:
    link = html.escape(link)
    return f'<a href="{link}" target="_blank" rel="noopener">{link}</a>'


def record_html(share: Share) -> str:
    """The static record of a share that has ended, or the fallback for front-ends without widgets."""
    if share.live:
        lines = [f"Anyone with this link: {_anchor(share.link)}"] if share.link else []
        if share.view_link:
            lines.append(f"View only: {_anchor(share.view_link)}")
        lines += [f"{html.escape(person.name)} ({html.escape(person.state)})"
                  + (f": {_anchor(person.link)}" if person.link else "") for person in share.people.values()]
        body = ("".join(f"<div>{line}</div>" for line in lines)
                + f'<div style="{MUTED}">{grants(share)} Stop with <code>%share stop</code>.</div>')
    else:
        body = f'<div class="share-magic-status">{html.escape(share.describe())}</div>'
    return f'<div class="share-magic">{body}</div>'


class _OwnOutput:
    """A widget displayed in an output of its own, which it can later hand over to something else."""

    _handle: DisplayHandle | None = None

    def show(self) -> None:
        self._handle = display(self, display_id=True)

    def _hand_over(self, successor: Any) -> DisplayHandle | None:
        """Put ``successor`` in this widget's output and close the widget; None if it was never shown."""
        handle = self._handle
        if handle is not None:
            handle.update(successor)
            self.close()  # type: ignore[attr-defined]
        return handle


def grants(share: Share) -> str:
    """What the share's links let people do, in a sentence or two."""
    if share.link or share.people:
        return GRANTS + (" " + VIEW_GRANTS if share.view_link else "")
    return VIEW_GRANTS


def link_html(label: str, link: str, css_class: str) -> str:
    link = html.escape(link)
    return (f'<b>{label}</b> <a class="{css_class}" href="{link}" target="_blank" rel="noopener" title="{link}" '
            f'style="color: var(--jp-content-link-color); word-break: break-all">{link}</a>')


class ShareView(_OwnOutput, widgets.VBox):
    """Shows one :class:`Share`; call :meth:`show` to display it."""

    def __init__(self, share: Share, **kwargs: Any) -> None:
        self.share = share
        self.link = widgets.HTML()
        self.copy = widgets.HTML()
        self.view_link = widgets.HTML()  # the view link, beside an edit link
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop",
                                          tooltip="Stop sharing: the link stops working at once")
        self.stop_button.on_click(lambda _: share.stop())
        self.status = widgets.HTML()
        self.notes = widgets.HTML()
        self.qr = widgets.HTML()
        self._links: tuple = ()
        details = widgets.VBox([self.link, widgets.HBox([self.copy, self.stop_button, self.status]), self.view_link,
                                self.notes])
        self.people = PeoplePanel(share)
        super().__init__([widgets.HBox([details, self.qr]), self.people], **kwargs)
        self.add_class("share-magic")
        share.observe(lambda _: self.refresh())
        self.refresh()

    def refresh(self) -> None:
        if self.share.status == "starting" or self.share.live:
            self.status.value = status_line(self.share)
            self._show_links()
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
        main = share.link or share.view_link or ""
        label = "Anyone with this link:" if share.link else "View only (this notebook, nothing else):"
        self.link.value = link_html(label, main, "share-magic-link")
        self.copy.value = COPY_BUTTON.format(link=html.escape(main))
        self.view_link.value = (link_html("View only (this notebook, nothing else):", share.view_link,
                                          "share-magic-view-link") + " " + COPY_BUTTON.format(
                                    link=html.escape(share.view_link))) if share.link and share.view_link else ""
        notes = grants(share)
        if share.collaborative is False and share.link:
            notes += "<br>" + NO_COLLABORATION
        self.notes.value = f'<div style="{MUTED}; max-width: 46em">{notes}</div>'
        self.qr.value = f'<div title="Scan to open the link on a phone or tablet">{qr_svg(main)}</div>'

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = self.share.describe()
        bundle["text/html"] = record_html(self.share)
        return bundle


class PeoplePanel(widgets.VBox):
    """The people invited to a share by name: a row each, and a field to invite someone."""

    def __init__(self, share: Share, **kwargs: Any) -> None:
        self.share = share
        self.rows = widgets.VBox()
        self.name = widgets.Text(placeholder="a name, e.g. Ada", layout=widgets.Layout(width="16em"))
        self.invite_button = widgets.Button(description="Invite", icon="user-plus",
                                            tooltip="Give this person a link of their own, which you can revoke")
        self.invite_button.on_click(lambda _: self.invite())
        self.feedback = widgets.HTML()
        self._shown: tuple = ()
        heading = widgets.HTML(f'<div style="{MUTED}">People with links of their own (each one can be revoked '
                               "alone):</div>")
        super().__init__([heading, self.rows, widgets.HBox([self.name, self.invite_button, self.feedback])],
                         **kwargs)
        self.add_class("share-magic-people")
        self.refresh()

    def refresh(self) -> None:
        shown = tuple((p.name, p.link, p.state) for p in self.share.people.values())
        if shown != self._shown:
            self._shown = shown
            self.rows.children = [self._row(person) for person in self.share.people.values()]

    def _row(self, person: Person) -> widgets.HBox:
        colour = ("--jp-success-color1" if person.connected else
                  "--jp-error-color1" if person.revoked_at else "--jp-ui-font-color2")
        name = widgets.HTML(f'<b class="share-magic-person">{html.escape(person.name)}</b>',
                            layout=widgets.Layout(min_width="8em"))
        state = widgets.HTML(f'<span style="color: var({colour})">●</span> <span style="{MUTED}">'
                             f"{html.escape(person.state)}</span>")
        if person.link is None:  # revoked: nothing to copy or revoke
            return widgets.HBox([name, state])
        copy = widgets.HTML(COPY_BUTTON.format(link=html.escape(person.link)))
        revoke = widgets.Button(description="Revoke", icon="user-times", button_style="warning",
                                tooltip=f"Cut {person.name} off now: their link stops working, their connections "
                                        "close")
        revoke.on_click(lambda _, who=person.name: self._act(self.share.revoke, who))
        return widgets.HBox([name, copy, state, revoke])

    def invite(self) -> None:
        name, self.name.value = self.name.value.strip(), ""
        self._act(self.share.invite, name)

    def _act(self, action: Callable[[str], Any], name: str) -> None:
        try:
            action(name)
        except ShareError as e:
            self.feedback.value = f'<span style="color: var(--jp-error-color1)">{html.escape(str(e))}</span>'
            return
        self.feedback.value = ""
        self.refresh()


class _Record:
    """A share as plain text and HTML only."""

    def __init__(self, share: Share) -> None:
        self.share = share

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return {"text/plain": self.share.describe(), "text/html": record_html(self.share)}


class AuthtokenForm(_OwnOutput, widgets.VBox):
    """Shown when ngrok has no authtoken: paste it once, it is saved to ngrok's own config, and the share starts.

    The token goes from the password field straight to ``ngrok config add-authtoken``; the field is emptied at
    once, so it is neither echoed nor kept in the notebook's saved widget state.
    """

    def __init__(self, message: str, retry: Callable[[], Share], **kwargs: Any) -> None:
        self.message = message
        self.retry = retry
        self.password = widgets.Password(placeholder="paste your ngrok authtoken",
                                         layout=widgets.Layout(width="28em"))
        self.save = widgets.Button(description="Save and share", button_style="primary", icon="share")
        self.save.on_click(lambda _: self.submit())
        self.feedback = widgets.HTML()
        intro = widgets.HTML(
            "<b>ngrok needs your authtoken once.</b> Copy it from "
            '<a href="https://dashboard.ngrok.com/get-started/your-authtoken" target="_blank" rel="noopener">'
            "your ngrok dashboard</a> (a free account is enough) and paste it here. It is saved in ngrok's own "
            "config file, not in this notebook.")
        super().__init__([intro, widgets.HBox([self.password, self.save]), self.feedback], **kwargs)
        self.add_class("share-magic")

    def submit(self) -> None:
        from .tunnel import save_authtoken

        token, self.password.value = self.password.value.strip(), ""
        if not token:
            self.feedback.value = "Paste the authtoken first."
            return
        self.save.disabled = True
        self.feedback.value = "Saving and sharing..."
        try:
            save_authtoken(token)
            share = self.retry()
        except ShareError as e:
            self.feedback.value = f'<span style="color: var(--jp-error-color1)">{html.escape(str(e))}</span>'
            self.save.disabled = False
            return
        view = ShareView(share)
        view._handle = self._hand_over(view)
        if view._handle is None:
            self.children = [view]

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = self.message
        return bundle
