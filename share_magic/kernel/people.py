"""The people of a share as a kernel shows them: invited by name, waiting in the lobby or signed in at the edge, and
what the owner does about them (kernel side). Loaded only once a share has people or is asked about them."""
from __future__ import annotations

import dataclasses
import datetime
from typing import TYPE_CHECKING, Any

from ..contract import Identity, is_email
from ..errors import ShareError
from .client import from_epoch
from .status import clock

if TYPE_CHECKING:
    from .share import Share

CHOSEN = "name they gave"  # beside every name a visitor typed in the lobby: a label, not an identity
NAME_CHARACTERS = " .-_@"
NAME_RULE = "1-40 letters, digits, spaces and . - _ @"


@dataclasses.dataclass
class Person:
    """Someone invited to a share with a link of their own."""

    name: str
    link: str | None  # None once revoked
    connected_since: datetime.datetime | None = None
    revoked_at: datetime.datetime | None = None
    email: str | None = None  # verified at the edge, while they are connected with sign-in
    chosen: bool = False  # let in from the lobby: ``name`` is the name they gave
    last_action: str | None = None  # what the trail saw them do last

    @property
    def label(self) -> str:
        """Their name as the share shows it: a name they gave themselves says so."""
        return f"{self.name} ({CHOSEN})" if self.chosen else self.name

    @property
    def connected(self) -> bool:
        return self.connected_since is not None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return f"revoked at {clock(self.revoked_at)}"
        if self.connected:
            return f"connected since {clock(self.connected_since)}"
        return "let in from the lobby, not connected" if self.chosen else "invited, not connected"


@dataclasses.dataclass
class Waiting:
    """Someone who opened the share's link and waits in the lobby for the owner to let them in."""

    name: str  # what the owner admits or turns them away by
    chosen: bool  # a name they typed (else the e-mail the edge verified)
    email: str | None
    since: datetime.datetime | None

    @property
    def label(self) -> str:
        return f"{self.name} ({CHOSEN})" if self.chosen else self.name

    def describe(self) -> str:
        return f"{self.label}, waiting since {clock(self.since)}"


@dataclasses.dataclass
class SignedIn:
    """Someone connected right now who signed in at the edge."""

    identity: Identity
    jupyter_name: str | None  # what Jupyter calls them
    invitation: str | None  # the invitation they came with; None: the share's own link
    connected_since: datetime.datetime | None = None

    def describe(self) -> str:
        came = f"invited as {self.invitation}" if self.invitation else "with the share's link"
        return f"{self.identity.describe()} ({came}, connected since {clock(self.connected_since)})"


def check_email(name: str) -> str:
    """With sign-in, a name with an @ must be an e-mail address: it is matched against the signed-in one."""
    if "@" in name and not is_email(name):
        raise ShareError(f"{name!r} is not an e-mail address, and with sign-in a name with an @ is matched against "
                         "the visitor's verified e-mail. Give the whole address, e.g. %share invite ada@example.com, "
                         "or a name without @.")
    return name


def check_name(name: str) -> str:
    """``name`` if it is one a person can be invited by, else a :class:`ShareError` saying what names may be."""
    if is_email(name) and len(name) <= 254 and name.strip() == name:
        return name
    if not (isinstance(name, str) and 1 <= len(name) <= 40 and name.strip() == name
            and all(ch.isalnum() or ch in NAME_CHARACTERS for ch in name)):
        raise ShareError(f"{name!r} cannot name a person: use {NAME_RULE}, e.g. %share invite Ada "
                         "'Grace Hopper' (quote names with spaces).")
    return name


def invite(share: Share, name: str) -> str:
    name = check_name(name)
    if share.sign_in:
        check_email(name)
    reply = share._command("invite", name=name)
    link = share._link_with(reply["key"])
    assert link is not None
    return link


def revoke(share: Share, name: str) -> None:
    check_invited(share, name)
    reply = share._command("revoke", name=name)
    if not reply["found"]:
        raise ShareError(f"Nobody named {name!r} has a live invitation to this share any more (revoked from "
                         "another notebook?). %share status shows who has.")
    share._links_from(reply["links"])  # the event saying so may come after this answer: it goes another way


def check_invited(share: Share, name: str) -> None:
    """A :class:`ShareError` unless ``name`` has a live invitation (with sign-in, any e-mail address can be
    revoked: that identity is then refused on every link)."""
    if share.sign_in and is_email(name):
        return
    person = share.people.get(name)
    if person is None or person.revoked_at is not None:
        live = [p.name for p in share.people.values() if p.revoked_at is None]
        raise ShareError(f"Nobody named {name!r} has a live invitation to this share, so there is nothing to "
                         "revoke. " + (f"Invited: {', '.join(live)}." if live else
                                       "Invite people with %share invite NAME."))


def decide(share: Share, command: str, name: str) -> None:
    """Admit or deny someone waiting in the lobby."""
    if share.live and not share.approve:
        raise ShareError(f"This share lets everyone with its link in, so nobody waits to be let in. Start it "
                         f"with %share --approve, or run %share --approve now, to {command} each newcomer.")
    if not share._command(command, name=name)["found"]:
        waiting = ", ".join(repr(waiter.name) for waiter in share.waiting)
        raise ShareError(f"Nobody waiting to be let in gave the name {name!r}. " + (
            f"Waiting: {waiting} (names they gave); %share {command} NAME with one of them."
            if waiting else "Nobody is waiting right now; %share status lists who waits."))


def from_report(share: Share, report: dict[str, Any]) -> tuple[dict[str, Person], list[Waiting], list[SignedIn]]:
    """The people, who waits and who signed in, from a report of the helper's."""
    people = {entry["name"]: Person(entry["name"], share._link_with(entry["key"]), from_epoch(entry["connected_since"]),
                                    from_epoch(entry["revoked_at"]), entry.get("email"), bool(entry.get("chosen")))
              for entry in report["people"]}
    for person in people.values():
        person.last_action = share.last_action(person.label)
    waiting = [Waiting(entry["name"], bool(entry["chosen"]), entry.get("email"), from_epoch(entry.get("since")))
               for entry in report.get("waiting") or []]
    signed_in = [SignedIn(Identity(entry["email"], entry.get("name") or "", entry.get("provider") or ""),
                          entry.get("jupyter_name"), entry.get("invitation"), from_epoch(entry.get("connected_since")))
                 for entry in report.get("signed_in") or []]
    return people, waiting, signed_in


def lobby_summary(share: Any) -> list[str]:
    """Who waits to be let in, and what visitors without a row of their own did last (``%share status``)."""
    lines = []
    if share.approve:
        lines.append("  Visitors with the share's own link wait until you let them in: %share admit NAME, "
                     "%share deny NAME.")
        lines += [f"  Waiting to be let in: {waiter.describe()}" for waiter in share.waiting]
    named = {person.label for person in share.people.values()} | {"owner"}
    lines += [f"  {who}: last {moment:%H:%M:%S} {what}" for who, (moment, what) in share.actions.items()
              if who not in named and moment]
    return lines
