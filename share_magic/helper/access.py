"""Who may pass the gateway: the share's keys, the browser sessions they admitted, and the credentials the gateway
adds upstream for admitted visitors.

A share link carries a key (``?share_key=...``) made for this share alone. The first request with a valid key gets
a session cookie of the gateway's own (``HttpOnly; Secure; SameSite=Lax``, scoped to the server's base URL) and a
redirect to the same address without the key, so the key does not stay in the address bar. From then on the cookie
admits the browser. Anything else -- no key, a wrong one, a cookie of an earlier share -- gets a short refusal from
the gateway and never reaches Jupyter. Keys and sessions live in the helper's memory only, so they end with the share:
a later share at the same public URL knows none of them.

For a token server the gateway also logs each admitted session in: it asks Jupyter once, with the server's token, for
a login cookie, keeps that cookie to itself and adds it to the session's requests upstream. Visitors never see the
token or Jupyter's login cookie, and Jupyter's own protections (XSRF and Origin checks, which it skips for
token-authenticated requests) stay on.

Every key is a *grant*: the share's own link (anyone with it), one person's invitation, or the view link. A view
session never reaches Jupyter: its requests are answered by the gateway's local service (the view page), whatever
path they name. Revoking a person's grant
ends their sessions at once (the gateway then cuts their connections) and their key stays dead; inviting them again
makes a new key. Revoking also retires the share's own links, which any editor could have read, and makes new ones;
sessions those links admitted go on. Keys and session ids are looked up by their SHA-256 digests.

With sign-in at the edge (see :mod:`share_magic.identity`) every request must also carry the edge's proof of who
signed in: an e-mail-shaped invitation admits only that address, and a revoked e-mail is refused on every link. Each
session is named in Jupyter when the gateway logs it in (:func:`jupyter_name`); visitors cannot rename themselves.

A keyed link never replaces a live session of the same share without the person's say. Any page can send a browser to
a link (a top-level navigation carries the ``SameSite=Lax`` cookie), so a link of the session's own standing (same
person, same role) just goes on to the page it names, and a link that would change who the browser is (another role,
another person's link) gets the gateway's question page first: its one button POSTs a single-use token bound to the
browser's current session cookie, which no other site can read or send. A session that is gone (revoked, expired,
of an earlier share, or of another signed-in account) is replaced as before.
"""
from __future__ import annotations

import html
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any, Callable
from urllib.parse import unquote

from ..contract import KEY_PARAM, VIEW_PAGE, Identity, is_email
from .answers import response
from .grants import Admitted, Grant, Headers, Local, Observer, Reply, Session, Verdict, cookie_name, digest, new_key
from .identity import LOGOUT, WRONG_ACCOUNT_PAGE, EdgeTrust, NoEmail, Untrusted, no_email_page
from .lobby import PAGE_PATH as LOBBY_PAGE
from .lobby import EVENTS_PATH as LOBBY_EVENTS
from .lobby import Lobby, LobbyGate
from .switch import SWITCH_PATH, Questions

COOKIE = "share_magic"
# View sessions kept at once: more than the readers' part of the largest hall the gateway holds (14,336 of 16,384
# connections). Past it, one that has gone unused long enough makes room (see Access._room_for_a_reader).
VIEW_SESSIONS = 20_000
VIEW_IDLE = 120.0  # seconds without a request or a live page before a used view session may go (a page retries in 3)
VIEW_UNUSED = 10.0  # ...for one never used since its link was opened (a browser follows the redirect at once)
VIEW_SCAN = 256  # view sessions looked at for each newcomer, at most
JUPYTER_COOKIES = ("_xsrf",)  # Jupyter's XSRF cookie; the helper adds its login cookie's name (see .login)
LEARNED = 64  # cookie names the server may add to those, by setting them

REFUSED_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Link not valid</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:15vh auto;padding:0 1em;color:#222}}
@media (prefers-color-scheme: dark){{body{{background:#111;color:#ddd}}}}</style></head>
<body><h1>This link has ended or is not valid</h1>
<p>{why} Ask the person who shared the notebook for a new link.</p></body></html>
"""

class Access(LobbyGate):
    """The gate of one share.

    ``login`` returns Jupyter's login cookie (``name=value``) for a new session, or None when the share adds no
    credentials; ``cookie_path`` is the server's base URL; ``expires_at`` (epoch seconds) caps the cookie's life.
    """

    def __init__(self, cookie_path: str, login: Callable[..., str | None] | None = None,
                 expires_at: float | None = None, edge: EdgeTrust | None = None,
                 jupyter_cookies: tuple[str, ...] = JUPYTER_COOKIES) -> None:
        self.cookie_path = cookie_path
        # The cookies passed on to the server: its own (XSRF, its login cookie), and any it is seen to set.
        self.jupyter_cookies = frozenset(jupyter_cookies)
        self.login = login  # login() for an anonymous Jupyter user, login(name) for one Jupyter calls name
        self.edge = edge or EdgeTrust()
        self._revoked_identities: set[str] = set()  # lower-cased e-mails refused on every link
        self.expires_at = expires_at
        self._grants: dict[bytes, Grant] = {}
        self._sessions: dict[bytes, Session] = {}
        self._view_sessions: OrderedDict[bytes, None] = OrderedDict()  # their digests, oldest first
        self.max_view_sessions, self.view_idle, self.view_unused = VIEW_SESSIONS, VIEW_IDLE, VIEW_UNUSED
        self.connected: Callable[[], Any] = tuple  # the sessions holding a live connection (the gateway says)
        self._revoked_sessions: set[bytes] = set()  # to tell their browsers why they are refused
        self.questions = Questions(cookie_path)  # asked of browsers whose link would make them someone else
        self.local_paths: set[str] = set()  # answered by the gateway itself for editing sessions (the bridge)
        self.lobby: Lobby | None = None  # with --approve: the anyone-link's visitors wait there for the owner
        self.observer: Observer | None = None  # told of every request admitted (the trail): must be quick
        self._lock = threading.Lock()

    def link_key(self, role: str) -> str:
        """The key of the share's own link for ``role`` ("edit" or "view"): made on first use, then the same."""
        return self._live_key(None, role)

    def invite(self, person: str) -> str:
        """``person``'s key: the one they have while it is not revoked, else a new one. Inviting a revoked e-mail
        again lets that identity in again."""
        self._revoked_identities.discard(person.lower())
        return self._live_key(person, "edit")

    def _live_key(self, person: str | None, role: str) -> str:
        with self._lock:
            for grant in self._grants.values():
                if grant.person == person and grant.role == role and grant.revoked_at is None \
                        and grant.retired_at is None and not grant.chosen:
                    return grant.key
            key = new_key()
            self._grants[digest(key)] = Grant(key, person, role=role)
            return key

    def revoke(self, person: str) -> list[Session]:
        """End ``person``'s grant and sessions; return the sessions, whose connections the caller cuts.

        An editor runs code as the owner, so they could have read the share's own links (``share.link``, the
        private record, the notebook's outputs): those are retired too and replaced by new ones (see
        :meth:`links`). Whoever is already in through them stays in; their old keys admit nobody new. With sign-in,
        an e-mail is instead refused on every link from now on, invited or not: the links need not change."""
        identity = person.lower() if self.edge.on and is_email(person) else None
        with self._lock:
            grants = [grant for grant in self._grants.values() if grant.revoked_at is None and (
                grant.person == person or (identity is not None and (grant.person or "").lower() == identity))]
            if not grants and identity is None:
                raise KeyError(person)
            now = time.time()
            for grant in grants:
                grant.revoked_at = now
            if identity is not None:
                self._revoked_identities.add(identity)
            ended = {sid: session for sid, session in self._sessions.items() if session.grant in grants or (
                identity is not None and session.identity is not None and session.identity.key == identity)}
            for sid in ended:
                del self._sessions[sid]
            self._revoked_sessions.update(ended)
            if identity is None:  # a revoked e-mail is refused on every link: those need not change
                for grant in list(self._grants.values()):
                    if grant.person is None and grant.revoked_at is None and grant.retired_at is None:
                        grant.retired_at = now
                        key = new_key()
                        self._grants[digest(key)] = Grant(key, None, role=grant.role)
        return list(ended.values())

    def links(self) -> dict[str, str]:
        """The keys of the share's own live links, by role ("edit", "view"); only those it has."""
        with self._lock:
            return {grant.role: grant.key for grant in self._grants.values()
                    if grant.person is None and grant.revoked_at is None and grant.retired_at is None}

    def refused_identities(self) -> list[str]:
        """The e-mails revoked with sign-in on, refused on every link (lower-cased)."""
        return sorted(self._revoked_identities)

    def keys(self) -> list[str]:
        """Every key this share ever made, live or not: what no view may show."""
        with self._lock:
            return [grant.key for grant in self._grants.values()]

    def people(self) -> list[Grant]:
        """Every person invited, in the order they were (a re-invited person once, with their latest grant)."""
        with self._lock:
            latest = {grant.person: grant for grant in self._grants.values() if grant.person is not None}
        return list(latest.values())

    # -- the question the gateway asks ------------------------------------------------------------------------------

    def check(self, method: str, target: str, headers: Headers) -> Verdict:
        """May this request pass, as whom? (The observer hears of each request let through to Jupyter.)"""
        verdict = self._check(method, target, headers)
        if isinstance(verdict, Admitted) and self.observer is not None:
            try:
                self.observer(verdict.session, method, verdict.target)
            except Exception:  # the trail never stands in a visitor's way
                pass
        return verdict

    def _check(self, method: str, target: str, headers: Headers) -> Verdict:
        raw_headers = headers
        try:
            identity, headers = self.edge.identify(headers)
        except Untrusted:
            return Reply(_refusal("This share needs you to sign in: open the link you were given.", headers))
        except NoEmail:
            return Reply(no_email_page(self.edge.provider or "", headers))
        clean_target, keys = _without_key(target)
        cookies = _cookies(headers)
        if identity is not None and identity.key in self._revoked_identities:
            return Reply(_refusal(f"The person who shared this notebook has revoked your access "
                                  f"(you are signed in as {identity.email}).", headers))
        if method == "POST" and clean_target.split("?", 1)[0] == self.cookie_path + SWITCH_PATH:
            return self._switch(clean_target, headers, cookies, identity, self.edge.source(raw_headers))
        if self.lobby is not None and clean_target.split("?", 1)[0] in (self.cookie_path + LOBBY_PAGE,
                                                                        self.cookie_path + LOBBY_EVENTS):
            answer = self.lobby.answer(method, clean_target, headers, cookies.get(COOKIE), identity)
            return Reply(answer) if isinstance(answer, bytes) else answer
        navigation = method in ("GET", "HEAD") and not any(name.lower() == "upgrade" for name, _ in headers)
        grant = self._grants.get(digest(keys[-1])) if keys and navigation else None
        session = self._session(cookies.get(COOKIE))
        if grant is not None and grant.revoked_at is None and grant.retired_at is None:
            # a key opens pages; websockets need the cookie
            safe = _safe_target(clean_target, self.cookie_path)
            if identity is not None and is_email(grant.person) and (grant.person or "").lower() != identity.key:
                return Reply(_wrong_account(identity, headers))
            if self._waits(grant):
                answer, about = self._lobby_link(session, grant, safe, cookies.get(COOKIE), identity, headers,
                                                 self.edge.source(raw_headers))
                if answer == "go":
                    return _go_on(about or safe)
                if answer == "refuse":
                    return Reply(_refusal(about, headers, ended=False))
                return self._ask(session, grant, clean_target, cookies[COOKIE]) if answer == "ask" else Reply(about)
            if session is None or (identity is not None and (session.identity is None
                                                             or session.identity.key != identity.key)):
                return self._admit_and_redirect(grant, clean_target, identity)  # nobody live to replace
            if session.grant.person == grant.person and session.grant.role == grant.role:
                return _go_on(safe)  # who they are already: the link changes nothing
            return self._ask(session, grant, clean_target, cookies[COOKIE])
        if session is not None and identity is not None and (session.identity is None
                                                             or session.identity.key != identity.key):
            return Reply(_wrong_account(identity, headers))  # signed in again, as someone else
        if session is None:
            lobby_says = self.lobby.refusal(cookies.get(COOKIE), identity) if self.lobby is not None else None
            if lobby_says:
                return Reply(_refusal(lobby_says, headers, ended=False))
            if digest(cookies.get(COOKIE, "")) in self._revoked_sessions:
                why = "The person who shared this notebook has revoked your access."
            elif grant is not None and grant.retired_at is not None:
                why = "The person who shared this notebook has replaced this link with a new one."
            elif keys:
                why = "This link's key is not valid (it may belong to a share that has ended)."
            else:
                why = "This page needs the link the notebook's owner shared."
            return Reply(_refusal(why, headers))
        if session.grant.role == "view" or clean_target.split("?", 1)[0] in self.local_paths:
            return Local(session, method, clean_target, raw_headers)  # answered here; the bridge re-asks the gate
        if method == "PATCH" and _is_me(clean_target, self.cookie_path):
            return Reply(response(403, "Forbidden", [("Content-Type", "text/plain; charset=utf-8")],
                                  b"Visitors cannot rename themselves: the person who shared this notebook "
                                  b"names them.\n"))
        return self._admitted(session, clean_target, headers, cookies)

    def _session(self, session_id: str | None) -> Session | None:
        if not session_id or (self.expires_at is not None and time.time() >= self.expires_at):
            return None
        session = self._sessions.get(digest(session_id))
        if session is None or session.grant.revoked_at is not None:
            return None
        session.seen, session.used = time.monotonic(), True
        return session

    def _ask(self, session: Session, grant: Grant, target: str, session_id: str) -> Reply:
        """The question page: this browser is in as someone else; replace that with what the link offers?"""
        base = self.cookie_path
        stay, target = _within(session, target, base), _safe_target(target, base)
        return Reply(self.questions.ask(session.grant, grant, target, stay, session_id))

    def _switch(self, target: str, headers: Headers, cookies: dict[str, str], identity: Identity | None,
                client: str | None = None) -> Reply:
        """The question page's button: a new session of the grant asked about, for the browser it was asked of."""
        switch = self.questions.pressed(target, headers, cookies.get(COOKIE, ""))
        if switch is None:
            return Reply(_refusal("This button was not pressed on the page that asked, or that page is too old: "
                                  "open the link again.", headers))
        grant = switch.grant
        if grant.revoked_at is not None or grant.retired_at is not None:
            return Reply(_refusal("The person who shared this notebook has ended this link.", headers))
        if identity is not None and is_email(grant.person) and (grant.person or "").lower() != identity.key:
            return Reply(_wrong_account(identity, headers))
        if self._waits(grant):  # into the lobby as from the link itself: its source counted, a refusal kept
            assert self.lobby is not None
            lobby_says = self.lobby.refusal(None, identity)
            if lobby_says:
                return Reply(_refusal(lobby_says, headers, ended=False))
            return Reply(self.lobby.enter(switch.target, identity, status=(303, "See Other"), client=client))
        return self._admit_and_redirect(grant, switch.target, identity, status=(303, "See Other"))

    def _admit_and_redirect(self, grant: Grant, target: str, identity: Identity | None = None,
                            status: tuple[int, str] = (302, "Found")) -> Reply:
        session_id = secrets.token_urlsafe(32)
        if self._start_session(grant, identity, digest(session_id)) is None:
            return Reply(response(503, "Service Unavailable", [("Content-Type", "text/plain; charset=utf-8"),
                                                               ("Retry-After", "30")],
                                  b"This notebook's view has as many readers as it can keep right now; open the "
                                  b"link again in a minute.\n"))
        return Reply(response(*status, [("Location", _safe_target(target, self.cookie_path)),
                                        ("Set-Cookie", self._cookie(session_id)),
                                        ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer")]))

    def _start_session(self, grant: Grant, identity: Identity | None, session_digest: bytes) -> Session | None:
        """A new session of ``grant``; None when it is a view session and there is no room for another."""
        name = jupyter_name(grant, identity)
        if grant.role == "view":  # never reaches Jupyter: no login to mint, and made in one step with its room
            session = Session(grant, identity=identity, name=name)
            with self._lock:
                if not self._room_for_a_reader():
                    return None
                self._sessions[session_digest] = session
                self._view_sessions[session_digest] = None
            return session
        cookie = None if self.login is None else self.login(name) if name else self.login()
        session = Session(grant, jupyter_cookie=cookie, identity=identity, name=name)
        with self._lock:
            self._sessions[session_digest] = session
        return session

    def _room_for_a_reader(self) -> bool:
        """Whether another view session may be made. Each opening of the view link without the cookie makes one, so
        one person with that link could otherwise grow the helper's memory without end: at most
        :attr:`max_view_sessions` are kept. Past that, one that has gone unused makes room -- no live page, and no
        request for :attr:`view_idle` seconds (:attr:`view_unused` for one never used) -- so a reader who is in,
        or whose page is about to reconnect, keeps theirs. If none has (every one in use: the hall is full), the
        newcomer is refused and tries again later. Looks at :data:`VIEW_SCAN` sessions at most, longest-unseen
        first; those still in use are looked at again last. Under the lock."""
        if len(self._view_sessions) < self.max_view_sessions:
            return True
        connected, now = set(self.connected()), time.monotonic()
        for _ in range(min(VIEW_SCAN, len(self._view_sessions))):
            session_digest, _ = self._view_sessions.popitem(last=False)
            session = self._sessions.get(session_digest)
            if session is not None and session not in connected:
                if now - session.seen >= (self.view_idle if session.used else self.view_unused):
                    del self._sessions[session_digest]
                    session = None
            if session is not None:
                self._view_sessions[session_digest] = None  # in use: looked at again last
            if len(self._view_sessions) < self.max_view_sessions:
                return True
        return False

    def _cookie(self, session_id: str) -> str:
        """The Set-Cookie value that gives a browser the gateway's session ``session_id``."""
        cookie = f"{COOKIE}={session_id}; Path={self.cookie_path}; Secure; HttpOnly; SameSite=Lax"
        if self.expires_at is not None:
            cookie += f"; Max-Age={max(0, int(self.expires_at - time.time()))}"
        return cookie

    def learn_cookie(self, name: str) -> None:
        """The server set a cookie of this name: the browser's copy goes back to it (up to :data:`LEARNED` names)."""
        if name and name not in self.jupyter_cookies and len(self.jupyter_cookies) < LEARNED:
            self.jupyter_cookies = self.jupyter_cookies | {name}

    def _admitted(self, session: Session, target: str, headers: Headers, cookies: dict[str, str]) -> Admitted:
        """Let the request through with only the server's own cookies: the browser sends every cookie of the public
        domain (the edge's sign-in session and nonce, whose names ngrok does not document, and the gate's), and the
        server is given those it set itself (:attr:`jupyter_cookies`), with the session's login cookie in place of
        any the visitor sent."""
        hidden = cookie_name(session.jupyter_cookie) if session.jupyter_cookie else None
        allowed = self.jupyter_cookies
        kept = [f"{name}={value}" for name, value in cookies.items()
                if name in allowed and name not in (COOKIE, hidden)]
        if session.jupyter_cookie:
            kept.append(session.jupyter_cookie)
        upstream = [(name, value) for name, value in headers if name.lower() != "cookie"]
        if kept:
            upstream.append(("Cookie", "; ".join(kept)))
        return Admitted(session, target, upstream, hidden)


def jupyter_name(grant: Grant, identity: Identity | None) -> str | None:
    """What Jupyter calls a new session's user: the invitation's name (unless it is an e-mail), else the verified
    name, else the verified or invited e-mail; None (Jupyter's anonymous name) for anyone else."""
    if grant.person and not is_email(grant.person):
        return grant.person
    if identity is not None:
        return identity.name or identity.email
    return grant.person


def _is_me(target: str, base_url: str) -> bool:
    """Whether ``target`` is Jupyter's ``api/me`` (however a visitor spells the path)."""
    path = "/" + "/".join(part for part in unquote(target.split("?", 1)[0]).split("/") if part)
    base = "/" + "/".join(part for part in unquote(base_url).split("/") if part)
    return path == base.rstrip("/") + "/api/me"


def _safe_target(target: str, base_url: str) -> str:
    if not target.startswith("/") or target.startswith("//") or "\\" in target.split("?", 1)[0]:
        return base_url  # //host/x would lead the browser off the share, key freshly accepted
    return target


def _within(session: Session, target: str, base_url: str) -> str:
    """Where ``target`` leads a browser that stays as ``session`` is: a view session sees only the view page,
    and an editor is not sent to a view page Jupyter does not have."""
    view_page = base_url + VIEW_PAGE
    if session.grant.role == "view":
        return view_page
    return base_url if target.split("?", 1)[0] == view_page else _safe_target(target, base_url)


def _go_on(target: str) -> Reply:
    """To the page a link names, as the browser's session already is: the key leaves the address bar, nothing else
    changes."""
    return Reply(response(302, "Found", [("Location", target), ("Cache-Control", "no-store"),
                                         ("Referrer-Policy", "no-referrer")]))


def _wrong_account(identity: Identity, headers: Headers) -> bytes:
    """The gate's page for a signed-in account the link was not made for: who they are, and how to switch."""
    accept = next((value for name, value in headers if name.lower() == "accept"), "")
    if "text/html" in accept:
        return response(403, "Forbidden", [("Content-Type", "text/html; charset=utf-8")],
                        WRONG_ACCOUNT_PAGE.format(email=html.escape(identity.email), logout=LOGOUT).encode())
    return response(403, "Forbidden", [("Content-Type", "text/plain; charset=utf-8")],
                    f"This link has ended or is not valid. This link was made for another account, and you are "
                    f"signed in as {identity.email}. Sign out at {LOGOUT}, then open the link again with the "
                    "account it was made for.\n".encode())


def _cookies(headers: Headers) -> dict[str, str]:
    """The request's cookies; a cookie header the standard parser cannot read is taken pair by pair."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name.lower() != "cookie":
            continue
        for pair in value.split(";"):
            key, sep, val = pair.strip().partition("=")
            if sep and key:
                found[key] = val
    return found


def _without_key(target: str) -> tuple[str, list[str]]:
    """The request target without its key parameters (every other byte kept as it was), and the keys it had."""
    path, question, query = target.partition("?")
    if KEY_PARAM not in query:
        return target, []
    kept, keys = [], []
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == KEY_PARAM:
            keys.append(unquote(value))
        else:
            kept.append(part)
    return path + (question + "&".join(kept) if kept else ""), keys


def _refusal(why: str, headers: Headers, ended: bool = True) -> bytes:
    """403 with ``why``; ``ended`` False: the lobby's refusals, which are not about the link being bad."""
    accept = next((value for name, value in headers if name.lower() == "accept"), "")
    title = "This link has ended or is not valid" if ended else "Not let in"
    if "text/html" in accept:
        page = REFUSED_PAGE.format(why=html.escape(why)).replace("This link has ended or is not valid", title)
        if not ended:
            page = page.replace(" Ask the person who shared the notebook for a new link.", "")
        return response(403, "Forbidden", [("Content-Type", "text/html; charset=utf-8")], page.encode())
    return response(403, "Forbidden", [("Content-Type", "text/plain; charset=utf-8")],
                    f"{title}. {why}\n".encode())
