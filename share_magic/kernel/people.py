"""The people of a share as a kernel shows them: invited by name, or signed in at the edge (kernel side)."""
from __future__ import annotations

import dataclasses
import datetime

from ..contract import Identity, is_email
from ..errors import ShareError
from .status import clock

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
