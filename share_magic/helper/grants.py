"""What the gate knows and says: grants (what one key admits), sessions (the browsers they admitted), and the
verdicts the gateway acts on. Below both the gate (:mod:`.access`) and the lobby (:mod:`.lobby`), which share them;
the gateway and the protocol layer need only the verdicts.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Hashable
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Union

from ..contract import Identity

Headers = list[tuple[str, str]]

def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_key() -> str:
    """A fresh random key: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


@dataclass(eq=False)
class Grant:
    """What one key admits: anyone with the share's link (``person`` None), or one invited person; to everything
    (``role`` "edit") or to the notebook's view only ("view")."""

    key: str  # kept so that the same link can be shown again
    person: str | None = None
    revoked_at: float | None = None  # the key admits nobody, and the sessions it admitted end
    role: str = "edit"
    retired_at: float | None = None  # the key admits nobody new; the sessions it admitted go on
    chosen: bool = False  # made when the owner admitted someone from the lobby: ``person`` is the name they gave


@dataclass(eq=False)
class Session:
    """One admitted browser."""

    grant: Grant
    since: float = field(default_factory=time.time)
    jupyter_cookie: str | None = None  # "name=value" of Jupyter's login cookie, added upstream by the gateway
    identity: Identity | None = None  # who signed in at the edge, when the share has sign-in
    name: str | None = None  # what Jupyter calls this visitor, when the gateway named them
    seen: float = field(default_factory=time.monotonic)  # when a request last came with its cookie, or it began
    used: bool = False  # a request has come with its cookie since its link was opened


@dataclass
class Admitted:
    """Let the request through, as ``target`` with these ``headers``; ``response_headers`` filters the answer."""

    session: Session
    target: str
    headers: Headers
    hidden_cookie: str | None = None  # the name of a cookie the visitor must not be handed

    def response_headers(self, headers: Headers) -> Headers:
        if self.hidden_cookie is None:
            return headers
        return [(name, value) for name, value in headers
                if not (name.lower() == "set-cookie" and cookie_name(value) == self.hidden_cookie)]


@dataclass
class Local:
    """Answer the request from the gateway's local service (the view page), never from Jupyter."""

    session: Session
    method: str
    target: str
    headers: Headers


@dataclass
class Reply:
    """Answer the request from the gateway itself (then close the connection)."""

    response: bytes


@dataclass
class Held:
    """Answer the request from the gateway itself on a connection it then holds (a waiting page's stream): ``await
    serve(answer)`` on the gateway's loop. ``holder`` is who the connection counts for, as a reader's would."""

    holder: Hashable
    serve: Callable[[Any], Awaitable[None]]


Verdict = Union[Admitted, Local, Reply, Held]


Observer = Callable[[Session, str, str], None]  # (session, method, target) of each request the gate admits


class Gate(Protocol):
    def check(self, method: str, target: str, headers: Headers) -> Verdict:
        """May this request pass, as whom?"""


def cookie_name(cookie: str) -> str:
    """The name in ``name=value`` or in a Set-Cookie header's value."""
    return cookie.split("=", 1)[0].strip()
