"""The lobby: with ``%share --approve``, a visitor who opens the share's own edit link waits until the owner lets
them in (helper side).

The gate (:mod:`.access`) asks the lobby what to do with a browser that came with the anyone-link; the lobby keeps
the waiting browsers and answers their pages. A waiting browser holds a gateway cookie like any other, of a session
that does not exist yet: nothing of Jupyter answers it (the gate refuses it everywhere but here). The waiting page
asks for a name in one text field (with sign-in, it shows the verified name and e-mail instead), and only then holds
one event stream (:mod:`.lobby_page`: what a waiting browser costs the plan); when the owner admits them, the gate
makes that very cookie a live session and the page, told at once, goes on by itself. Turned away, the cookie is
marked for good: the link reaches nothing from that browser for this share.

A name typed here is a label the visitor chose, not an identity: it is kept as text (control characters out, at
most :data:`NAME_LIMIT` characters), shown escaped and always with "(name they gave)" beside it; two visitors giving
the same name are told apart ("Grace", "Grace (2)"). The list is bounded: :data:`WAITING_LIMIT` names waiting at
once, of which :data:`PER_SOURCE` from one source; and the browsers the lobby knows, :data:`PENDING_LIMIT`, of
which only those no page uses any more make room for newcomers. A source is what the gate can prove about where a
visitor comes from (:func:`source_of`): the e-mail verified at the edge, when the share has sign-in, else the client
address the edge vouched for with the share's secret; without either, each browser session is its own source.

Every page here is strict: a Content-Security-Policy with a nonce for its one script, no framing, no referrer, and
the name travels in a same-origin POST that carries a token bound to the browser's cookie (no other site can read
it, and the gate checks ``Sec-Fetch-Site``).
"""
from __future__ import annotations

import hmac
import html
import json
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qs

from ..contract import Identity
from .answers import response
from .grants import Grant, Held, digest, new_key
from .lobby_page import PAGE, RECONNECT_MS, Streams, event

PAGE_PATH = "share_magic/lobby"  # below the base URL: the waiting page (GET), its name (POST)
EVENTS_PATH = "share_magic/lobby/events"  # the page's stream: the owner's decision, pushed
NAME_LIMIT = 40
WAITING_LIMIT = 20  # names waiting at once
PER_SOURCE = 3  # names waiting at once from one source
PENDING_LIMIT = 512  # browsers known to the lobby at once (waiting, naming, decided); see Lobby.enter
UNUSED_FOR = 10.0  # seconds a browser's record is kept, at least, while its page never came (it follows at once)
IDLE_FOR = 120.0  # ...and since its page last asked anything or held a stream (a visitor may be typing their name)
GONE_AFTER = 60.0  # seconds without a stream: the waiting page was closed, the name leaves the list (a page whose
# stream dropped opens another within RECONNECT_MS)
CHOSEN = "name they gave"

Headers = list[tuple[str, str]]

@dataclass(eq=False)
class Waiter:
    """One browser the lobby knows: asked to join (``label`` set), deciding, or decided."""

    session: bytes  # the digest of its gateway cookie
    target: str  # where it goes once admitted
    token: bytes  # the digest of the token its page's POST carries
    identity: Identity | None = None
    source: str | None = None
    label: str | None = None  # what the owner and the trail call it; None: no name given yet
    chosen: bool = True  # the label is a name they typed, not one the edge verified
    state: str = "naming"  # naming, waiting, admitted, denied, gone
    since: float = field(default_factory=time.time)
    seen: float = field(default_factory=time.monotonic)
    asked: bool = False  # its page has asked the lobby something
    streams: int = 0  # its page's streams open now (on the gateway's loop)

    def describe(self) -> dict[str, object]:
        """As the owner's kernels get it."""
        return {"name": self.label, "chosen": self.chosen, "email": self.identity.email if self.identity else None,
                "since": self.since}


class Full(Exception):
    """No room for another name."""


def source_of(identity: Identity | None, client: str | None = None) -> str | None:
    """Where a visitor comes from, as far as the gate can prove it: the e-mail the edge verified, else the client
    address the edge vouched for with the share's secret (a header the visitor could set never counts)."""
    if identity is not None:
        return f"email:{identity.key}"
    return f"address:{client}" if client else None


def clean_name(text: str) -> str:
    """A name typed on the waiting page, as a label: whitespace collapsed, no control or format characters; a
    ValueError says what is wrong with it."""
    name = " ".join("".join(" " if ch.isspace() else ch for ch in text
                            if ch.isspace() or not unicodedata.category(ch).startswith("C")).split())
    if not name:
        raise ValueError("Give a name, so that the person who shared this notebook knows who is asking.")
    if len(name) > NAME_LIMIT:
        raise ValueError(f"Give a shorter name: at most {NAME_LIMIT} characters.")
    return name


class Lobby:
    """The waiting browsers of one share. ``cookie(session_id)`` is the gateway's Set-Cookie value for a session id;
    ``taken(label)`` says whether a person of the share already has that name; ``on_change()`` is called when the
    list of names waiting changes."""

    def __init__(self, cookie_path: str, cookie: Callable[[str], str], taken: Callable[[str], bool],
                 on_change: Callable[[], None] | None = None) -> None:
        self.cookie_path = cookie_path
        self.cookie = cookie
        self.taken = taken
        self.on_change = on_change
        self._waiters: dict[bytes, Waiter] = {}
        self._denied_identities: set[str] = set()
        self._denied: set[bytes] = set()  # the cookies of browsers turned away (as many as the owner turned away)
        self._lock = threading.Lock()
        self.streams = Streams(self._state, self._streaming)

    # -- the owner's side -------------------------------------------------------------------------------------------

    def waiting(self) -> list[Waiter]:
        """The names waiting now, first come first."""
        with self._lock:
            return [waiter for waiter in self._waiters.values() if waiter.state == "waiting"]

    def take(self, name: str) -> Waiter:
        """Whoever waits by ``name`` (a label, or a verified e-mail; exact first, then ignoring case); KeyError if
        nobody waiting goes by it."""
        with self._lock:
            waiter = self._find(name)
        if waiter is None:
            raise KeyError(name)
        return waiter

    def settle(self, waiter: Waiter, admitted: bool) -> None:
        """The owner's decision: the waiting page goes on (the gate has made its session live) or says no."""
        with self._lock:
            waiter.state = "admitted" if admitted else "denied"
            if not admitted:
                self._denied.add(waiter.session)
                if waiter.identity is not None:
                    self._denied_identities.add(waiter.identity.key)
        self.streams.push(waiter)  # its page hears at once, and its stream ends
        self._changed()

    def close(self) -> None:
        """The share ends: every waiting page is told so, and its stream ends."""
        self.streams.close()

    def _find(self, name: str) -> Waiter | None:
        waiting = [waiter for waiter in self._waiters.values() if waiter.state == "waiting"]
        for waiter in waiting:
            if waiter.label == name:
                return waiter
        folded = name.casefold()
        return next((waiter for waiter in waiting if (waiter.label or "").casefold() == folded
                     or (waiter.identity is not None and waiter.identity.key == folded)), None)

    def sweep(self) -> bool:
        """Drop the names whose waiting page is gone (no stream for :data:`GONE_AFTER`); return whether the list
        changed."""
        now = time.monotonic()
        with self._lock:
            gone = [waiter for waiter in self._waiters.values()
                    if waiter.state == "waiting" and not waiter.streams and now - waiter.seen > GONE_AFTER]
            for waiter in gone:
                waiter.state = "gone"
        if gone:
            self._changed()
        return bool(gone)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- the gate's questions ---------------------------------------------------------------------------------------

    def of(self, session_id: str | None) -> Waiter | None:
        """The lobby's record of the browser with this gateway cookie, if it has one."""
        return self._waiters.get(digest(session_id)) if session_id else None

    def refusal(self, session_id: str | None, identity: Identity | None) -> str | None:
        """Why the gate refuses this browser, if the lobby is the reason: it waits, or was turned away."""
        waiter = self.of(session_id)
        if (session_id and digest(session_id) in self._denied) or (
                identity is not None and identity.key in self._denied_identities):
            return "The person who shared this notebook did not let you in."
        if waiter is not None and waiter.state in ("naming", "waiting"):
            return ("You are waiting for the person who shared this notebook to let you in: the waiting page "
                    f"({self.cookie_path}{PAGE_PATH}) goes on by itself once they do.")
        return None

    def enter(self, target: str, identity: Identity | None, status: tuple[int, str] = (302, "Found"),
              client: str | None = None) -> bytes:
        """A browser that came with the anyone-link: a waiting session, and its way to the waiting page."""
        session_id = secrets.token_urlsafe(32)
        waiter = Waiter(digest(session_id), target, b"", identity, source_of(identity, client))
        with self._lock:
            if not self._room_for_one_more():
                return response(503, "Service Unavailable", [("Content-Type", "text/plain; charset=utf-8"),
                                                             ("Retry-After", "30")],
                                b"Too many people are joining this notebook at once: open the link again in a "
                                b"minute.\n")
            self._waiters[waiter.session] = waiter
        return response(*status, [("Location", self.cookie_path + PAGE_PATH), ("Set-Cookie", self.cookie(session_id)),
                                  ("Referrer-Policy", "no-referrer")])

    def _room_for_one_more(self) -> bool:
        """Whether the lobby may know one more browser: at most :data:`PENDING_LIMIT`. Past it, the longest-unseen
        record no page uses any more makes room -- never one of those waiting, nor one whose page holds its stream,
        nor a browser whose page came (or last held a stream) within :data:`IDLE_FOR` seconds (its visitor may be
        typing their name) or which was sent to it within :data:`UNUSED_FOR`. So link openings that never load the
        page, however many, push out only each other; if every record is in use, the newcomer is refused and tries
        again. Under the lock."""
        if len(self._waiters) < PENDING_LIMIT:
            return True
        now = time.monotonic()
        for key, other in sorted(self._waiters.items(), key=lambda item: item[1].seen):
            if other.state != "waiting" and not other.streams \
                    and now - other.seen >= (IDLE_FOR if other.asked else UNUSED_FOR):
                del self._waiters[key]
                if len(self._waiters) < PENDING_LIMIT:
                    return True
        return False

    def answer(self, method: str, target: str, headers: Headers, session_id: str | None,
               identity: Identity | None) -> Any:
        """The lobby's own requests: the waiting page, its name (whole answers, as bytes), its stream (while it
        waits, a :class:`~.grants.Held`: the gateway holds the connection, counted for this browser)."""

        path, _, query = target.partition("?")
        waiter = self.of(session_id)
        stream = path == self.cookie_path + EVENTS_PATH and method == "GET"
        if waiter is None:
            gone = {"state": "gone", "why": "This page needs the link the notebook's owner shared: open it again."}
            return _events(gone) if stream else _json(403, gone)
        with self._lock:
            waiter.seen, waiter.asked = time.monotonic(), True
        if stream:
            if waiter.state != "waiting":  # decided (or not asked yet): its one answer, and no stream held
                return _events(self._state(waiter)[0])
            return Held(("waiter", waiter), lambda answer: self.streams.hold(waiter, answer))
        if path != self.cookie_path + PAGE_PATH:
            return _json(404, {"error": "Not found."})
        if method == "POST":
            return self._ask(waiter, query, headers, identity)
        if method in ("GET", "HEAD"):
            return self._page(waiter)
        return _json(405, {"error": "Not allowed."})

    def _state(self, waiter: Waiter) -> tuple[dict[str, object], bool]:
        """What its page should show now, and whether that is the last its stream says."""
        answer: dict[str, object] = {"state": waiter.state}
        if waiter.state == "waiting":
            answer["name"] = f"{waiter.label} ({CHOSEN})" if waiter.chosen else waiter.label
        elif waiter.state == "admitted":
            answer["go"] = waiter.target
        elif waiter.state == "gone":
            answer["why"] = "You waited too long without this page open: open the link again to ask once more."
        return answer, waiter.state != "waiting"

    def _streaming(self, waiter: Waiter, opened: int) -> None:
        """A stream of ``waiter``'s page opened (1) or closed (-1): while one is open, the page counts as there."""
        with self._lock:
            waiter.streams += opened
            waiter.seen = time.monotonic()

    def _page(self, waiter: Waiter) -> bytes:
        token = secrets.token_urlsafe(32)
        with self._lock:
            waiter.token = digest(token)  # the latest page's token is the one that works
        nonce = secrets.token_urlsafe(16)
        identity = waiter.identity
        if identity is not None:
            who = html.escape(f"{identity.name} <{identity.email}>" if identity.name else identity.email)
            ask, name_field = f"You are signed in as <b>{who}</b>.", ""
        else:
            ask = "Tell them who you are: they see the name you give, and nothing else about you."
            name_field = (f'<label>Your name <input name="name" maxlength="{NAME_LIMIT}" required autofocus '
                          'autocomplete="name"></label> ')
        page = PAGE.format(title="Ask to join this notebook", action=html.escape(
            f"{self.cookie_path}{PAGE_PATH}?token={token}"), form_hidden=" hidden" if waiter.state != "naming" else "",
            ask=ask, field=name_field, status="", nonce=nonce, reconnect_ms=RECONNECT_MS,
            events_url=json.dumps(self.cookie_path + EVENTS_PATH),
            asked="false" if waiter.state == "naming" else "true")  # a page reloaded while waiting listens at once
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; connect-src 'self'; "
               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
        return response(200, "OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Security-Policy", csp),
                                    ("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"),
                                    ("Referrer-Policy", "no-referrer")], page.encode())

    def _ask(self, waiter: Waiter, query: str, headers: Headers, identity: Identity | None) -> bytes:
        """The page's POST: this browser asks to join, by the name given (or the identity the edge verified)."""
        fields = {name.lower(): value for name, value in headers}
        params = parse_qs(query, keep_blank_values=True)
        token = (params.get("token") or [""])[0]
        if fields.get("sec-fetch-site", "same-origin") != "same-origin" or "x-share-lobby" not in fields \
                or not hmac.compare_digest(waiter.token, digest(token)):
            return _json(403, {"error": "This request did not come from the waiting page: reload it and try again."})
        if waiter.state != "naming":
            return _json(200, {"state": waiter.state})
        try:
            if identity is not None:
                name, chosen = identity.email, False
            else:
                name, chosen = clean_name((params.get("name") or [""])[0]), True
            with self._lock:
                self._take_a_place(waiter, name, chosen)
        except (ValueError, Full) as e:
            return _json(400, {"error": str(e)})
        self._changed()
        return _json(200, {"state": waiter.state})

    def _take_a_place(self, waiter: Waiter, name: str, chosen: bool) -> None:
        waiting = [other for other in self._waiters.values() if other.state == "waiting"]
        if len(waiting) >= WAITING_LIMIT:
            raise Full(f"{WAITING_LIMIT} people are already waiting to be let in: try again in a few minutes.")
        if waiter.source is not None and sum(other.source == waiter.source for other in waiting) >= PER_SOURCE:
            raise Full(f"{PER_SOURCE} people from where you are already wait: wait for the owner to decide.")
        labels = {other.label for other in self._waiters.values() if other.label and other.state != "gone"}
        label, number = name, 1
        while label in labels or self.taken(label):
            number += 1
            label = f"{name} ({number})"
        waiter.label, waiter.chosen, waiter.state = label, chosen, "waiting"
        waiter.seen = time.monotonic()


class LobbyGate:
    """The gate's side of the lobby (a part of :class:`~share_magic.helper.access.Access`): which links wait, where
    a browser with the share's own link goes, and the owner's decisions."""

    lobby: Lobby | None
    cookie_path: str

    def approve(self, on_change: Callable[[], None] | None = None) -> Lobby:
        """From now on, whoever comes with the share's own edit link waits in the lobby for the owner."""
        if self.lobby is None:
            self.lobby = Lobby(self.cookie_path, self._cookie, lambda label: any(  # type: ignore[attr-defined]
                grant.person == label for grant in list(self._grants.values())), on_change)  # type: ignore
        return self.lobby

    def decide(self, name: str, admit: bool) -> Any:
        """Let ``name`` in from the lobby -- a person of the share from now on, under the label they were shown by
        (its key is in no link), revocable like anyone invited -- or turn them away. Return the new session (None
        when turned away); KeyError if nobody waiting goes by ``name``."""
        if self.lobby is None:
            raise KeyError(name)
        waiter = self.lobby.take(name)
        session = None
        if admit:
            person = waiter.label if waiter.chosen or waiter.identity is None else waiter.identity.email
            grant = Grant(new_key(), person, chosen=waiter.chosen)
            with self._lock:  # type: ignore[attr-defined]
                self._grants[digest(grant.key)] = grant  # type: ignore[attr-defined]
            # the cookie the browser already holds becomes a live session
            session = self._start_session(grant, waiter.identity, waiter.session)  # type: ignore[attr-defined]
        self.lobby.settle(waiter, admitted=admit)  # only now: the waiting page goes on at once
        return session

    def _waits(self, grant: Any) -> bool:
        """Whether a browser that comes with ``grant``'s key waits in the lobby: only the share's own edit link
        does (personal links were made for one person; view links reach nothing of Jupyter)."""
        return self.lobby is not None and grant.person is None and grant.role == "edit"

    def _lobby_link(self, session: Any, grant: Any, target: str, session_id: str | None, identity: Identity | None,
                    headers: Headers, client: str | None = None) -> tuple[str, Any]:
        """The share's own link with the lobby on, as the gate should answer it: ("go", target) for an editor
        already in or a browser waiting (back to its page); ("refuse", why) for one turned away; ("ask", None) for a
        view reader (the question page, whose button leads here again); ("wait", response) for anyone else."""
        assert self.lobby is not None
        waiter = self.lobby.of(session_id)
        if waiter is not None and waiter.state in ("naming", "waiting"):
            return "go", self.cookie_path + PAGE_PATH
        lobby_says = self.lobby.refusal(session_id, identity)
        if lobby_says and session is None:
            return "refuse", lobby_says
        if session is not None and (identity is None or (session.identity is not None
                                                         and session.identity.key == identity.key)):
            return ("go", None) if session.grant.role == "edit" else ("ask", None)
        return "wait", self.lobby.enter(target, identity, client=client)


def _json(status: int, body: dict[str, object]) -> bytes:
    reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}
    return response(status, reasons[status], [("Content-Type", "application/json"),
                                              ("X-Content-Type-Options", "nosniff")], json.dumps(body).encode())


def _events(state: dict[str, object]) -> bytes:
    """A stream of one event, whole: what a page that has nothing to wait for hears."""
    return response(200, "OK", [("Content-Type", "text/event-stream"), ("X-Content-Type-Options", "nosniff")],
                    event(state))
