"""The people of a share in its widget: a row for each person invited by name, waiting in the lobby or signed in
(name, Copy, whether they are connected, their last action, Revoke, Admit or Deny) and a field to invite someone.
Loaded only once a share can have people, so that a view link alone costs the kernel none of it."""
from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Callable

import ipywidgets as widgets

from ..contract import PROVIDER_NAMES
from ..errors import ShareError
from .people import CHOSEN
from .widget import MUTED, LiveLink

if TYPE_CHECKING:
    from .people import Person, SignedIn, Waiting
    from .share import Share

ANONYMOUS_SHOWN = 5  # visitors with the share's link, no name: the latest ones' last actions


class PeoplePanel(widgets.VBox):
    """The people invited to a share by name: a row each, and a field to invite someone."""

    def __init__(self, share: Share, **kwargs: Any) -> None:
        self.share = share
        self.rows = widgets.VBox()
        self.name = widgets.Text(placeholder="a name or e-mail, e.g. Ada" if share.sign_in else "a name, e.g. Ada",
                                 layout=widgets.Layout(width="16em"))
        self.invite_button = widgets.Button(description="Invite", icon="user-plus",
                                            tooltip="Give this person a link of their own, which you can revoke")
        self.invite_button.on_click(lambda _: self.invite())
        self.feedback = widgets.HTML()
        self._shown: tuple = ()
        heading = widgets.HTML(f'<div style="{MUTED}">People with links of their own, or let in from the lobby '
                               "(each one can be revoked alone):</div>")
        super().__init__([heading, self.rows, widgets.HBox([self.name, self.invite_button, self.feedback])],
                         **kwargs)
        self.add_class("share-magic-people")
        self.refresh()

    def refresh(self) -> None:
        share = self.share
        visitors = [visitor for visitor in share.signed_in if visitor.invitation is None]
        named = {person.label for person in share.people.values()} | {v.identity.email for v in visitors} | {"owner"}
        others = sorted((who for who in share.actions if who not in named and who.endswith("(anyone-link)")),
                        key=lambda who: share.actions[who][0] or 0)[-ANONYMOUS_SHOWN:]  # no row of their own
        shown = (tuple((p.name, p.link, p.state, p.email, p.last_action) for p in share.people.values()),
                 tuple((visitor.describe(), share.last_action(visitor.identity.email)) for visitor in visitors),
                 tuple((w.name, w.email) for w in share.waiting),
                 tuple((who, share.last_action(who)) for who in others))
        if shown != self._shown:
            self._shown = shown
            self.rows.children = [*(self._waiting_row(waiter) for waiter in share.waiting),
                                  *(self._row(person) for person in share.people.values()),
                                  *(self._visitor_row(visitor) for visitor in visitors),
                                  *(self._other_row(who) for who in others)]

    def _waiting_row(self, waiter: Waiting) -> widgets.HBox:
        """"Grace (name they gave) is waiting — Admit · Turn away"."""
        about = (f' <span style="{MUTED}">({CHOSEN})</span>' if waiter.chosen else
                 f' <span class="share-magic-identity" style="{MUTED}">verified by the sign-in</span>')
        since = f"{waiter.since:%H:%M:%S}" if waiter.since else "?"
        who = widgets.HTML(f'<b class="share-magic-waiting-name">{html.escape(waiter.name)}</b>{about} is waiting '
                           f'<span style="{MUTED}">since {since}</span> —')
        admit = widgets.Button(description="Admit", icon="check", button_style="success",
                               tooltip=f"Let {waiter.name} in: their page goes on into Jupyter")
        admit.on_click(lambda _, name=waiter.name: self._act(self.share.admit, name))
        deny = widgets.Button(description="Turn away", icon="times",
                              tooltip=f"Turn {waiter.name} away: the link reaches nothing from their browser")
        deny.on_click(lambda _, name=waiter.name: self._act(self.share.deny, name))
        row = widgets.HBox([who, admit, widgets.HTML("·"), deny])
        row.add_class("share-magic-waiting")
        return row

    def _other_row(self, who: str) -> widgets.HBox:
        """Someone with no row of their own (with the share's link, no sign-in): what they did last."""
        return widgets.HBox([widgets.HTML(f'<span class="share-magic-person">{html.escape(who)}</span>'
                                          f"{_last(self.share.last_action(who))}")])

    def _visitor_row(self, visitor: SignedIn) -> widgets.HBox:
        """Someone signed in with the share's own link: who they are, and a Revoke that refuses their e-mail."""
        identity = visitor.identity
        provider = PROVIDER_NAMES.get(identity.provider, identity.provider)
        since = f"{visitor.connected_since:%H:%M:%S}" if visitor.connected_since else "?"
        who = widgets.HTML(f'<b class="share-magic-person">{html.escape(identity.name or identity.email)}</b> '
                           f'<span class="share-magic-identity">&lt;{html.escape(identity.email)}&gt;, signed in with '
                           f'{html.escape(provider)}</span> <span style="{MUTED}">· connected since {since}</span>'
                           + _last(self.share.last_action(identity.email)))
        email = visitor.identity.email
        revoke = widgets.Button(description="Revoke", icon="user-times", button_style="warning",
                                tooltip=f"Cut {email} off now, on every link of this share")
        revoke.on_click(lambda _: self._act(self.share.revoke, email))
        return widgets.HBox([who, revoke])

    def _row(self, person: Person) -> widgets.HBox:
        colour = ("--jp-success-color1" if person.connected else
                  "--jp-error-color1" if person.revoked_at else "--jp-ui-font-color2")
        name = widgets.HTML(f'<b class="share-magic-person">{html.escape(person.name)}</b>'
                            + (f' <span style="{MUTED}">({CHOSEN})</span>' if person.chosen else "")
                            + (f' <span class="share-magic-identity" style="{MUTED}">&lt;{html.escape(person.email)}'
                               "&gt;</span>" if person.email and person.connected else ""),
                            layout=widgets.Layout(min_width="8em"))
        state = widgets.HTML(f'<span style="color: var({colour})">●</span> <span style="{MUTED}">'
                             f"{html.escape(person.state)}</span>{_last(person.last_action)}")
        if person.revoked_at is not None:  # nothing to copy or revoke
            return widgets.HBox([name, state])
        if person.link is None:  # let in from the lobby: no link of their own to copy
            copy = widgets.HTML("")
        else:
            copy = LiveLink(lambda: self._link_of(person.name), parts=["copy"])
        revoke = widgets.Button(description="Revoke", icon="user-times", button_style="warning",
                                tooltip=f"Cut {person.name} off now: their link stops working, their connections "
                                        "close")
        revoke.on_click(lambda _, who=person.name: self._act(self.share.revoke, who))
        return widgets.HBox([name, copy, state, revoke])

    def _link_of(self, name: str) -> str | None:
        person = self.share.people.get(name)
        return person.link if person else None

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


def _last(action: str | None) -> str:
    """A person's last action, beside their name."""
    if not action:
        return ""
    return f' <span class="share-magic-last-action" style="{MUTED}">· last: {html.escape(action)}</span>'
