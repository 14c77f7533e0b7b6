"""Who a visitor is, when the share has sign-in at ngrok's edge (``%share --sign-in PROVIDER``).

The share's endpoint runs a Traffic Policy (:func:`traffic_policy`): ngrok's ``oauth`` action on every request, then
``add-headers`` with the verified e-mail, the verified name and a random secret of this share. ngrok documents no
identity headers of its own, so these are the only ones the gateway learns identity from, and it believes them only
with the secret: a request must carry exactly one secret header equal to the share's and exactly one e-mail header
(:meth:`EdgeTrust.identify`). ``add-headers`` appends, so a visitor's forged header makes two and the request is
refused; the policy does not remove them first, as ``remove-headers`` costs credit on ngrok's free plan and a share
must start on it.

Without sign-in the same headers are stripped and ignored: a visitor cannot claim to be anyone.

The same policy, on every share, also tells the gateway where a request came from: ``add-headers`` puts the
connection's client address (``${conn.client_ip}``) beside the share's secret (:meth:`EdgeTrust.client_address`),
so that the gateway can bound what one source holds. ngrok's own ``X-Forwarded-For`` is not used: a visitor can
send one of their own, which the edge appends to. The policy does not remove a visitor's address header first
either: the gateway believes an address only from a request with exactly one address header and exactly one
secret, so a visitor who sends their own only joins the one shared source of unvouched requests.

The secret guards against visitors, not against other local accounts: ngrok's local API (like the agent itself) is
readable by local processes and returns the endpoint's policy.
"""
from __future__ import annotations

import hmac
import secrets
from typing import Any

from ..contract import PROVIDER_NAMES, Identity, is_email
from .answers import response

PREFIX = "x-share-magic-"
EMAIL_HEADER = PREFIX + "email"
NAME_HEADER = PREFIX + "name"
SECRET_HEADER = PREFIX + "secret"
CLIENT_HEADER = PREFIX + "client"
HEADERS = (EMAIL_HEADER, NAME_HEADER, SECRET_HEADER, CLIENT_HEADER)
LOGOUT = "/ngrok/logout"
UNVOUCHED = "unvouched"  # the one source of every request the edge did not vouch for

Headers = list[tuple[str, str]]

WRONG_ACCOUNT_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Signed in with another account</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:15vh auto;padding:0 1em;color:#222}}
@media (prefers-color-scheme: dark){{body{{background:#111;color:#ddd}} a{{color:#8ab4f8}}}}</style></head>
<body><h1>This link was made for another account</h1>
<p>You are signed in as <b>{email}</b>, and the person who shared this notebook made this link for someone else.</p>
<p><a href="{logout}">Sign out</a>, then open the link again and sign in with the account it was made for.</p>
</body></html>
"""


def new_secret() -> str:
    """The share's secret between edge and gateway: 256 bits."""
    return secrets.token_urlsafe(32)


def traffic_policy(provider: str | None, secret: str) -> dict[str, Any]:
    """The endpoint's policy. Every share: the client's address, and the secret that proves the edge said it.
    With sign-in (``provider``): sign in, then say who they are too (what a visitor claims makes a second copy, which
    the gateway refuses)."""
    vouched = {CLIENT_HEADER: "${conn.client_ip}", SECRET_HEADER: secret}
    if provider is None:
        return {"on_http_request": [{"actions": [{"type": "add-headers", "config": {"headers": vouched}}]}]}
    return {"on_http_request": [{"actions": [
        {"type": "oauth", "config": {"provider": provider}},
        {"type": "add-headers", "config": {"headers": {
            EMAIL_HEADER: "${actions.ngrok.oauth.identity.email}",
            NAME_HEADER: "${actions.ngrok.oauth.identity.name}",
            **vouched,
        }}},
    ]}]}


class Untrusted(Exception):
    """Identity headers that did not come from this share's edge."""


class NoEmail(Exception):
    """The edge vouches for a signed-in visitor whose provider gave no e-mail address (GitHub's, kept private)."""


NO_EMAIL_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>No e-mail address from {provider}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:15vh auto;padding:0 1em;color:#222}}
@media (prefers-color-scheme: dark){{body{{background:#111;color:#ddd}} a{{color:#8ab4f8}}}}</style></head>
<body><h1>Your {provider} account did not give an e-mail address</h1>
<p>You signed in, but {provider} told ngrok no e-mail address for your account, and this share knows the people it
lets in by their e-mail address.</p>
<p>{fix}</p>
<p>Then <a href="{logout}">sign out</a> and open the link again. Or ask the person who shared this notebook to share
it with another sign-in provider.</p>
</body></html>
"""
NO_EMAIL_FIX = {
    "github": "On GitHub, open Settings, then Public profile, and choose an address under Public email (or, under "
              "Emails, turn off Keep my email addresses private).",
}
NO_EMAIL_FIX_ANY = "Give your {provider} account an e-mail address it may share with the sites you sign in to."


def no_email_page(provider: str, headers: Headers) -> bytes:
    """The gate's answer to a signed-in visitor without an e-mail address: why, what to change, a sign-out link (a
    page for a browser's navigation, a sentence for anything else)."""
    from html import escape

    name = PROVIDER_NAMES.get(provider, provider)
    fix = NO_EMAIL_FIX.get(provider) or NO_EMAIL_FIX_ANY.format(provider=name)
    accept = next((value for key, value in headers if key.lower() == "accept"), "")
    if "text/html" in accept:
        return response(403, "Forbidden", [("Content-Type", "text/html; charset=utf-8")], NO_EMAIL_PAGE.format(
            provider=escape(name), fix=escape(fix), logout=LOGOUT).encode())
    return response(403, "Forbidden", [("Content-Type", "text/plain; charset=utf-8")], (
        f"Your {name} account gave no e-mail address, and this share knows people by theirs. {fix} Then sign out "
        f"at {LOGOUT} and open the link again.\n").encode())


class EdgeTrust:
    """What the gateway believes about identity headers: with a ``secret`` (sign-in on) only the edge's; without
    one, nothing."""

    def __init__(self, provider: str | None = None, secret: str | None = None, vouch: str | None = None) -> None:
        self.provider = provider
        self.secret = secret  # with sign-in only
        self.vouch = vouch or secret  # the secret beside a client address: every share's policy adds one

    def source(self, headers: Headers) -> str | None:
        """Where a request comes from, as far as the edge vouches: its client address, else the one source shared
        by every request the edge did not vouch for (a forged address header makes two, so neither is trusted);
        None where this edge vouches for nothing."""
        if self.vouch is None:
            return None
        return self.client_address(headers) or UNVOUCHED

    def client_address(self, headers: Headers) -> str | None:
        """The client address the edge vouched for: exactly one address header beside exactly one secret equal to
        the share's; None for anything else (a forged header makes two)."""
        if self.vouch is None:
            return None
        addresses = [value for name, value in headers if name.lower() == CLIENT_HEADER]
        proofs = [value for name, value in headers if name.lower() == SECRET_HEADER]
        if len(addresses) != 1 or len(proofs) != 1 or not addresses[0]:
            return None
        if not hmac.compare_digest(proofs[0].encode(), self.vouch.encode()):
            return None
        return addresses[0]

    @property
    def on(self) -> bool:
        return self.secret is not None

    def identify(self, headers: Headers) -> tuple[Identity | None, Headers]:
        """The verified identity (None without sign-in) and the headers without any identity header. Raise
        :class:`Untrusted` when sign-in is on and the request does not carry the edge's proof, :class:`NoEmail`
        when it does but the edge knew no e-mail (one empty e-mail header, or none)."""
        found: dict[str, list[str]] = {name: [] for name in HEADERS}
        rest: Headers = []
        for name, value in headers:
            lower = name.lower()
            if lower.startswith(PREFIX):
                if lower in found:
                    found[lower].append(value)
            else:
                rest.append((name, value))
        if self.secret is None:
            return None, rest
        proofs, emails, names = found[SECRET_HEADER], found[EMAIL_HEADER], found[NAME_HEADER]
        if len(proofs) != 1 or not hmac.compare_digest(proofs[0].encode(), self.secret.encode()):
            raise Untrusted("no proof from the edge")
        if len(names) <= 1 and (not emails or emails == [""]):
            raise NoEmail()
        if len(emails) != 1 or not is_email(emails[0]) or len(names) > 1:
            raise Untrusted("no single verified e-mail")
        return Identity(emails[0], names[0] if names else "", self.provider or ""), rest
