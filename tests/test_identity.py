"""The gate's identity decisions, without processes: what it believes of identity headers, with and without sign-in
(the end-to-end behaviour is in test_signin.py)."""
from __future__ import annotations

import pytest

from share_magic.helper.access import Access, Admitted, Reply
from share_magic.helper.identity import (
    EMAIL_HEADER,
    HEADERS,
    NAME_HEADER,
    SECRET_HEADER,
    EdgeTrust,
    NoEmail,
    Untrusted,
    traffic_policy,
)

SECRET = "s" * 43


def admit(access: Access, key: str, headers: list) -> str:
    reply = access.check("GET", f"/lab?share_key={key}", headers)
    assert isinstance(reply, Reply) and reply.response.startswith(b"HTTP/1.1 302 Found\r\n"), reply
    head = reply.response.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    return next(line for line in head if line.startswith("Set-Cookie: ")).split(": ", 1)[1].split(";")[0]


def edge(email: str = "ada@example.com", name: str = "Ada Lovelace", secret: str = SECRET) -> list:
    return [(EMAIL_HEADER, email), (NAME_HEADER, name), (SECRET_HEADER, secret)]


@pytest.mark.parametrize("headers", [
    [],  # nothing from the edge
    edge(secret="wrong"),
    edge(secret=SECRET[:-1]),
    edge(secret=""),
    [*edge(), (SECRET_HEADER, SECRET)],  # two secrets
    [*edge(), (EMAIL_HEADER, "eve@example.com")],  # add-headers appended to a forged e-mail
    [(EMAIL_HEADER, "eve@example.com"), *edge()],
    [*edge(), (NAME_HEADER, "Mallory")],
    [(SECRET_HEADER, SECRET), (NAME_HEADER, "Ada")],  # no e-mail
    edge(email="not an e-mail"),
    [(name.upper(), value) for name, value in edge(secret="wrong")],
])
def test_with_sign_in_only_the_edges_single_identity_is_believed(headers: list) -> None:
    access = Access("/", edge=EdgeTrust("github", SECRET))
    key = access.link_key("edit")
    reply = access.check("GET", f"/lab?share_key={key}", [("Host", "h"), *headers])
    assert isinstance(reply, Reply) and reply.response.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Set-Cookie" not in reply.response


def test_identity_headers_never_reach_jupyter_and_count_for_nothing_without_sign_in() -> None:
    named = []
    access = Access("/", login=lambda name=None: named.append(name) or "username-x=1")
    cookie = admit(access, access.link_key("edit"), edge())
    passed = access.check("GET", "/api/contents", [("Host", "h"), ("Cookie", cookie), *edge(),
                                                   ("X-Share-Magic-Anything", "x")])
    assert isinstance(passed, Admitted) and named == [None]
    assert passed.session.identity is None
    assert [name for name, _ in passed.headers] == ["Host", "Cookie"]


def test_with_sign_in_the_identity_is_stripped_upstream_and_names_the_session() -> None:
    named = []
    access = Access("/", login=lambda name=None: named.append(name) or "username-x=1",
                    edge=EdgeTrust("github", SECRET))
    cookie = admit(access, access.link_key("edit"), edge())
    passed = access.check("GET", "/api/contents", [("Host", "h"), ("Cookie", cookie), *edge()])
    assert isinstance(passed, Admitted) and named == ["Ada Lovelace"]
    assert passed.session.identity.email == "ada@example.com"
    assert all(not name.lower().startswith("x-share-magic-") for name, _ in passed.headers)
    # The same browser, signed in again as someone else, is not Ada any more.
    other = access.check("GET", "/api/contents", [("Cookie", cookie), *edge("eve@example.com", "Eve")])
    assert isinstance(other, Reply) and b"signed in as eve@example.com" in other.response


def test_an_email_invitation_matches_case_insensitively_and_revocation_outlives_sessions() -> None:
    access = Access("/", edge=EdgeTrust("github", SECRET))
    ada = access.invite("Ada@Example.com")
    refused = access.check("GET", f"/lab?share_key={ada}", edge("eve@example.com", "Eve"))
    assert isinstance(refused, Reply) and b"made for another account" in refused.response
    assert b"/ngrok/logout" in refused.response
    admit(access, ada, edge("ada@EXAMPLE.com"))
    admit(access, access.link_key("edit"), edge("eve@example.com", "Eve"))
    ended = access.revoke("EVE@example.com")
    assert [session.identity.email for session in ended] == ["eve@example.com"]
    again = access.check("GET", f"/lab?share_key={access.link_key('edit')}", edge("eve@example.com", "Eve"))
    assert isinstance(again, Reply) and b"revoked your access" in again.response
    admit(access, access.link_key("edit"), edge("grace@example.com", "Grace"))  # others go on


def test_a_visitor_cannot_rename_themselves() -> None:
    access = Access("/a%40b/")
    cookie = admit(access, access.link_key("edit"), [])
    for target in ("/a%40b/api/me", "/a%40b/api/me/", "/a%40b//api/me", "/a%40b/api/%6De?x=1"):
        reply = access.check("PATCH", target, [("Cookie", cookie)])
        assert isinstance(reply, Reply) and b"cannot rename themselves" in reply.response, target
    assert isinstance(access.check("GET", "/a%40b/api/me", [("Cookie", cookie)]), Admitted)


def test_the_policy_signs_in_then_adds_every_identity_header_and_removes_nothing() -> None:
    """remove-headers costs credit on ngrok's free plan: a sign-in share must start without it."""
    policy = traffic_policy("google", SECRET)
    actions = policy["on_http_request"][0]["actions"]
    assert [action["type"] for action in actions] == ["oauth", "add-headers"]
    assert set(actions[1]["config"]["headers"]) == set(HEADERS)


@pytest.mark.parametrize("headers", [edge(email=""), [(SECRET_HEADER, SECRET), (NAME_HEADER, "Ada")]],
                         ids=["empty-email", "no-email-header"])
def test_a_signed_in_account_without_an_email_gets_the_page_that_says_what_to_change(headers: list) -> None:
    """GitHub gives no e-mail for an account that keeps it private: the edge vouches, but there is no one to name."""
    with pytest.raises(NoEmail):
        EdgeTrust("github", SECRET).identify(headers)
    access = Access("/", edge=EdgeTrust("github", SECRET))
    reply = access.check("GET", f"/lab?share_key={access.link_key('edit')}", [("Accept", "text/html"), *headers])
    assert isinstance(reply, Reply) and reply.response.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Set-Cookie" not in reply.response
    page = reply.response.decode()
    assert "Your GitHub account did not give an e-mail address" in page and "Public email" in page
    assert '<a href="/ngrok/logout">sign out</a>' in page and "another sign-in provider" in page
    # An e-mail a visitor sends beside the edge's empty one makes two: untrusted, and no one's page.
    with pytest.raises(Untrusted):
        EdgeTrust("github", SECRET).identify([(EMAIL_HEADER, "ada@example.com"), *edge(email="")])
