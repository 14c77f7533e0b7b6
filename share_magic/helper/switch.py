"""The gate's question page: a browser in a share as one person or role opens a link that would make it another.

Any page can send a browser to a link, so the gate does not switch on a link alone: it asks (:meth:`Questions.ask`),
and only the page's own button -- a same-origin POST carrying a single-use token bound to the browser's current
session cookie, which no other site can read or send -- answers (:meth:`Questions.pressed`).
"""
from __future__ import annotations

import hmac
import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from .answers import response
from .grants import Grant, Headers, digest

SWITCH_PATH = "share_magic/switch"  # below the base URL: the question page's button posts here
SWITCH_PARAM = "token"
SWITCH_LIFETIME = 600.0  # seconds a question page's button works
SWITCH_LIMIT = 1024  # questions pending at once (one per browser), share-wide; the oldest go first

SWITCH_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>You are already in this share</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:15vh auto;padding:0 1em;color:#222}}
button{{font:inherit;padding:.4em 1em;margin-right:1em;cursor:pointer}}
@media (prefers-color-scheme: dark){{body{{background:#111;color:#ddd}} a{{color:#8ab4f8}}}}</style></head>
<body><h1>You are already in this share</h1>
<p>You are signed in to this share {current}. This link would open it {offered} instead.</p>
<p>If you did not just open a link you were given yourself (another page may have sent you here), stay as you are.</p>
<form method="post" action="{action}"><button type="submit">{verb}</button><a href="{stay}">Stay {stay_as}</a></form>
</body></html>
"""


@dataclass(eq=False)
class Switch:
    """A question the gate asked a browser: replace its session with one of ``grant``'s? Answered only by a POST
    with the token, from the browser that holds the session cookie the question was asked of."""

    grant: Grant
    target: str
    token: bytes  # the digest of the token its page's button posts
    asked: float = field(default_factory=time.monotonic)


class Questions:
    """The questions pending, one per browser (by its session cookie's digest), at most :data:`SWITCH_LIMIT`."""

    def __init__(self, cookie_path: str) -> None:
        self.cookie_path = cookie_path
        self._switches: dict[bytes, Switch] = {}  # each browser's latest question, by its session cookie's digest
        self._lock = threading.Lock()

    def ask(self, current: Grant, grant: Grant, target: str, stay: str, session_id: str) -> bytes:
        """The question page for the browser of ``session_id``, in as ``current``: go on to ``target`` as
        ``grant`` makes it, or stay (at ``stay``)?"""
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            for key in [key for key, switch in self._switches.items() if now - switch.asked > SWITCH_LIFETIME]:
                del self._switches[key]
            self._switches.pop(digest(session_id), None)  # a browser's latest question replaces its earlier one
            while len(self._switches) >= SWITCH_LIMIT:
                del self._switches[next(iter(self._switches))]
            self._switches[digest(session_id)] = Switch(grant, target, digest(token))
        now_as, offered = _standing(current), _standing(grant)
        page = SWITCH_PAGE.format(
            current=html.escape(now_as), offered=html.escape(offered),
            action=html.escape(f"{self.cookie_path}{SWITCH_PATH}?{SWITCH_PARAM}={token}"),
            verb=html.escape(_offer(grant)), stay=html.escape(stay), stay_as=html.escape(now_as))
        return response(200, "OK", [
            ("Content-Type", "text/html; charset=utf-8"), ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                        "base-uri 'none'; frame-ancestors 'none'"),
            ("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff")], page.encode())

    def pressed(self, target: str, headers: Headers, session_id: str) -> Switch | None:
        """The question the button posted to ``target`` answers, once; None when it was not pressed on the page that
        asked this browser (``session_id``), or that page is too old."""
        token = (parse_qs(target.partition("?")[2]).get(SWITCH_PARAM) or [""])[0]
        site = next((value for name, value in headers if name.lower() == "sec-fetch-site"), "same-origin")
        browser = digest(session_id)
        with self._lock:
            switch = self._switches.get(browser)
            pressed = switch is not None and site == "same-origin" and hmac.compare_digest(switch.token, digest(token))
            if pressed:  # one press, once; a wrong one (another site's) leaves the person's question as it was
                del self._switches[browser]
        if switch is None or not pressed or time.monotonic() - switch.asked > SWITCH_LIFETIME:
            return None
        return switch


def _standing(grant: Grant) -> str:
    """How the question page names what a grant makes a browser: "as ada, an editor with a personal link"."""
    if grant.person:
        return f"as {grant.person}, an editor with a personal link"
    return "as an editor" if grant.role == "edit" else "as a view-only reader"


def _offer(grant: Grant) -> str:
    """The question page's button: "Open as ada", "Open as view-only"."""
    return "Open as " + (grant.person or ("an editor" if grant.role == "edit" else "view-only"))
