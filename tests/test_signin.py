"""Sign-in at ngrok's edge, end to end (real server, kernel, pyngrok and the stand-in agent, whose edge runs the
share's Traffic Policy): nothing from a visitor who has not signed in reaches the gateway; the gateway believes an
identity only with the edge's secret; e-mail invitations admit only that account; revoking an e-mail refuses it on
every link; every visitor is named in Jupyter and cannot rename themselves."""
from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

import pytest
import requests
import websocket
from harness import command_lines, processes_with, share_links, share_processes, wait_for
from test_access import REFUSED, refused_by_the_gate, share
from test_failures import assert_one_calm_line
from test_people import invited

SIGN_IN = "/ngrok/standin/sign-in"
FORGED = {"X-Share-Magic-Email": "ada@example.com", "X-Share-Magic-Name": "Ada Lovelace",
          "X-Share-Magic-Secret": "a guess at the share's secret"}


def sign_in(guest, email: str, name: str = "", link: str | None = None) -> requests.Response:
    """Open ``link`` (default: the guest's), meet the edge's sign-in page, sign in as ``email``; the response is
    what the link then gives."""
    page = guest.get(link or guest.link)
    assert page.status_code == 200 and "Sign in with github" in page.text, (page.status_code, page.text[:300])
    back = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)["next"][0]
    return guest.http.post(guest.absolute(SIGN_IN), data={"email": email, "name": name, "next": back}, timeout=20)


def sign_out(guest) -> None:
    assert guest.get("/ngrok/logout").status_code == 200
    assert "ngrok_oauth_session" not in {cookie.name for cookie in guest.http.cookies}


def me(guest) -> dict:
    response = guest.get("/api/me")
    assert response.status_code == 200, (response.status_code, response.text[:200])
    return response.json()["identity"]


def kernel_of(guest, notebook):
    return guest.kernel(f"/api/kernels/{notebook.kernel_id}/channels")


def gateway_requests(notebook) -> int:
    return int(notebook.run("import share_magic; print(share_magic.current().cost[0])"))


def test_nothing_reaches_the_gateway_before_sign_in_then_a_signed_in_visitor_works(jupyter, owner, visitor) -> None:
    server = jupyter(log_requests=True)
    notebook = owner(server)
    link = share(notebook, "%share --sign-in github")
    stranger = visitor(link)
    probes = [link, "/api/contents", "/api/kernels", "/lab", f"/api/contents?token={server.token}",
              "/api/me"]
    for path in probes:
        response = stranger.get(path, allow_redirects=False, headers=FORGED)
        assert response.status_code == 302 and response.headers["Location"].startswith(SIGN_IN), path
    with pytest.raises(websocket.WebSocketException) as refused:  # the edge sends it to sign in
        stranger.websocket(f"/api/kernels/{notebook.kernel_id}/channels")
    assert SIGN_IN in str(refused.value)
    assert not any(cookie.name == "share_magic" for cookie in stranger.http.cookies)

    ada = visitor(link)
    page = sign_in(ada, "ada@example.com", "Ada Lovelace")
    assert page.status_code == 200 and "jupyter-config-data" in page.text
    # Two requests reached the gateway (the link with its key, then the page): none of the stranger's.
    assert wait_for(lambda: gateway_requests(notebook) >= 2 and gateway_requests(notebook), 10,
                    "the gateway's count") == 2
    assert me(ada)["name"] == "Ada Lovelace" and me(ada)["display_name"] == "Ada Lovelace"
    assert kernel_of(ada, notebook).execute("print(6 * 7)")["stdout"] == "42\n"
    status = wait_for(lambda: (out := notebook.run("%share status")) and "Connected:" in out and out, 10,
                      "the status to name her")
    assert "Connected: Ada Lovelace <ada@example.com>, signed in with GitHub (with the share's link" in status
    assert "Visitors sign in with GitHub" in status and "3 signed-in users a month" in status
    # Visitors cannot rename themselves; the owner's own Jupyter user is untouched.
    for path in ("/api/me", "/api//me/", "/api/%6De"):
        renamed = ada.send("PATCH", path, json={"name": "Mallory", "display_name": "Mallory"})
        assert renamed.status_code == 403 and "cannot rename themselves" in renamed.text, path
    assert me(ada)["name"] == "Ada Lovelace"
    assert server.api("GET", "api/me").json()["identity"]["name"] != "Ada Lovelace"


def test_an_email_invitation_admits_only_that_account(jupyter, owner, visitor) -> None:
    notebook = owner(jupyter())
    links = invited(notebook, notebook.execute(
        "%load_ext share_magic\n%share invite ada@example.com Grace --sign-in github"))
    eve = visitor(links["ada@example.com"])
    answer = sign_in(eve, "eve@example.com", "Eve Adams")
    assert answer.status_code == 403 and "Server" not in answer.headers  # the gate's answer, not Jupyter's
    assert "made for another account" in answer.text and "eve@example.com" in answer.text
    html = eve.get(links["ada@example.com"], headers={"Accept": "text/html"})
    assert html.status_code == 403 and "Server" not in html.headers
    assert "made for another account" in html.text and '<a href="/ngrok/logout">Sign out</a>' in html.text
    assert not any(cookie.name == "share_magic" for cookie in eve.http.cookies)
    # Eve switches account: the same browser, signed in as Ada (her address in another case), gets in.
    sign_out(eve)
    page = sign_in(eve, "ADA@Example.com", "Ada Lovelace")
    assert page.status_code == 200 and "jupyter-config-data" in page.text
    assert me(eve)["name"] == "Ada Lovelace"  # an e-mail invitation: the verified name
    grace = visitor(links["Grace"])
    assert sign_in(grace, "grace@example.com", "Grace Brewster Murray Hopper").status_code == 200
    assert me(grace)["name"] == "Grace"  # invited by name: the invitation's name
    for guest in (eve, grace):  # connected: a kernel websocket each
        assert kernel_of(guest, notebook).execute("print(1)")["stdout"] == "1\n"
    status = wait_for(lambda: (out := notebook.run("%share status")) and out.count("Connected:") == 2 and out, 10,
                      "both to show")
    assert "Ada Lovelace <ADA@Example.com>, signed in with GitHub (invited as ada@example.com" in status
    person = notebook.run("import share_magic; print(share_magic.current().people['ada@example.com'].email)")
    assert person.strip() == "ADA@Example.com"


def test_identity_headers_forged_by_a_visitor_count_for_nothing(jupyter, owner, visitor) -> None:
    """The edge appends its identity headers to whatever the visitor sent (the policy removes nothing: that costs
    credit on the free plan), so a forger's request carries two of each and the gate refuses it."""
    notebook = owner(jupyter())
    links = invited(notebook, notebook.execute("%load_ext share_magic\n%share invite ada@example.com --sign-in github"))
    link = share_links(notebook)["edit"]
    eve = visitor(link)
    eve.http.headers.update(FORGED)
    answer = sign_in(eve, "eve@example.com", "Eve Adams")
    assert refused_by_the_gate(answer)  # two e-mail headers, two secrets
    assert refused_by_the_gate(eve.get("/api/contents"))
    assert refused_by_the_gate(eve.get(links["ada@example.com"]))  # never Ada


def test_a_local_request_straight_to_the_gateway_cannot_claim_an_identity(jupyter, owner) -> None:
    server = jupyter(log_requests=True)
    notebook = owner(server)
    link = share(notebook, "%share --sign-in github")
    port = int(notebook.run("import share_magic; print(share_magic.current().gateway_port)"))
    path = urllib.parse.urlsplit(link).path + "?" + urllib.parse.urlsplit(link).query
    host = urllib.parse.urlsplit(link).netloc
    attempts = [FORGED, {}, {"X-Share-Magic-Email": "ada@example.com"},
                {**FORGED, "X-Share-Magic-Secret": ""}]
    with requests.Session() as local:
        local.trust_env = False
        for number, headers in enumerate(attempts):
            marker = f"direct{number}"
            response = local.get(f"http://127.0.0.1:{port}{path}&probe={marker}", allow_redirects=False,
                                 headers={"Host": host, **headers}, timeout=10)
            assert response.status_code == 403 and REFUSED in response.text, headers
            assert "Set-Cookie" not in response.headers
    assert not server.saw("probe=direct")


def test_revoking_an_email_cuts_them_off_on_every_link_even_after_signing_in_again(jupyter, owner, visitor) -> None:
    notebook = owner(jupyter())
    links = invited(notebook, notebook.execute("%load_ext share_magic\n%share invite ada@example.com --sign-in github"))
    link = share_links(notebook)["edit"]
    eve, ada = visitor(link), visitor(links["ada@example.com"])
    assert sign_in(eve, "eve@example.com", "Eve Adams").status_code == 200
    assert sign_in(ada, "ada@example.com", "Ada Lovelace").status_code == 200
    kernels = {"eve": kernel_of(eve, notebook), "ada": kernel_of(ada, notebook)}
    for name, kernel in kernels.items():
        assert kernel.execute(f"print('{name}')")["stdout"] == f"{name}\n"

    revoked = notebook.execute("%share revoke eve@example.com")
    assert revoked["stdout"].startswith("eve@example.com is cut off"), revoked
    kernels["eve"].ws.settimeout(3)  # the bound
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        while True:
            kernels["eve"].ws.recv()
    assert refused_by_the_gate(eve.get("/api/contents"))
    sign_out(eve)  # a fresh sign-in, on the share's own link, changes nothing
    answer = sign_in(eve, "Eve@Example.com", "Eve Adams", link=link)
    assert refused_by_the_gate(answer) and "revoked your access" in answer.text
    assert kernels["ada"].execute("print('still here')")["stdout"] == "still here\n"
    assert ada.get("/api/contents").status_code == 200
    status = notebook.run("%share status")
    assert "Ada Lovelace <ada@example.com>" in status and "Eve Adams" not in status
    assert "Refused on every link (revoked): eve@example.com" in status

    notebook.run("%share stop")
    wait_for(lambda: not share_processes(), 10, "the share to end")
    assert not ada.reaches_jupyter()


def test_without_sign_in_claimed_identity_headers_count_for_nothing(jupyter, owner, visitor) -> None:
    notebook = owner(jupyter())
    links = invited(notebook, notebook.execute("%load_ext share_magic\n%share invite Ada"))
    link = share_links(notebook)["edit"]
    claims = {**FORGED, "X-Share-Magic-Name": "Mallory"}
    ada, someone = visitor(links["Ada"]), visitor(link)
    for guest in (ada, someone):
        guest.http.headers.update(claims)
        assert guest.get(guest.link).status_code == 200
    assert me(ada)["name"] == "Ada"  # named by the invitation, not by what she claims
    assert me(someone)["name"].startswith("Anonymous")


def test_a_server_that_cannot_name_visitors_says_so_once_and_carries_on(jupyter, owner, visitor) -> None:
    """As on jupyter_server < 2.17 (no PATCH api/me), here because the server's configuration forbids it."""
    notebook = owner(jupyter(extra=["--IdentityProvider.updatable_fields=color"]))
    link = share(notebook, "%share --sign-in github")
    ada = visitor(link)
    assert sign_in(ada, "ada@example.com", "Ada Lovelace").status_code == 200
    assert me(ada)["name"].startswith("Anonymous")
    assert kernel_of(ada, notebook).execute("print('in')")["stdout"] == "in\n"
    status = wait_for(lambda: (out := notebook.run("%share status")) and "Connected:" in out and out, 10,
                      "the status")
    assert status.count("cannot name visitors") == 1 and "they show as Anonymous" in status


@pytest.mark.parametrize("line, expected", [
    ("%share --sign-in facebook", ["'facebook' is not a sign-in provider", "github"]),
    ("%share invite ada@example --sign-in github", ["'ada@example' is not an e-mail address"]),
])
def test_bad_sign_in_input_starts_nothing(jupyter, owner, line: str, expected: list[str]) -> None:
    notebook = owner(jupyter())
    assert_one_calm_line(notebook.execute(f"%load_ext share_magic\n{line}"), *expected)
    assert not share_processes()


def test_a_plan_without_credit_for_the_policy_is_one_calm_line(jupyter, owner, monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_NGROK_MODE", "no-credit")
    notebook = owner(jupyter())
    assert_one_calm_line(notebook.execute("%load_ext share_magic\n%share --sign-in github"),
                         "refused the sign-in policy", "ERR_NGROK_4026", "share without --sign-in")
    wait_for(lambda: not share_processes(), 10, "nothing left running")


def test_sign_in_cannot_be_added_to_a_live_share(jupyter, owner, visitor) -> None:
    notebook = owner(jupyter())
    link = share(notebook)
    assert_one_calm_line(notebook.execute("%share --sign-in github"), "already shared without sign-in",
                         "%share stop, then %share --sign-in github")
    assert_one_calm_line(notebook.execute("%config ShareMagics.sign_in = 'github'\n%share invite ada@example.com"),
                         "already shared without sign-in")
    assert "ada@example.com" not in notebook.run("%share status")
    assert visitor(link).get(link).status_code == 200  # the live share goes on as it was


def test_the_edges_secret_is_nowhere_a_visitor_or_the_notebook_can_read(jupyter, owner, visitor, sandbox) -> None:
    notebook = owner(jupyter())
    result = notebook.execute("%load_ext share_magic\n%share --sign-in github")
    link = share_links(notebook)["edit"]
    state = Path(sandbox["STANDIN_NGROK_STATE"])
    policy = json.loads((state / "endpoints.jsonl").read_text().splitlines()[-1])["traffic_policy"]
    assert isinstance(policy, str)  # as text, the form ngrok's agent API documents
    actions = json.loads(policy)["on_http_request"][0]["actions"]
    assert [action["type"] for action in actions] == ["oauth", "add-headers"]
    assert actions[0]["config"] == {"provider": "github"}
    added = actions[1]["config"]["headers"]
    secret = added["x-share-magic-secret"]
    assert len(secret) >= 22 and re.fullmatch(r"[A-Za-z0-9_-]+", secret)  # >= 128 bits, URL-safe
    assert added["x-share-magic-email"] == "${actions.ngrok.oauth.identity.email}"
    assert set(actions[1]["config"]["headers"]) >= set(added)

    guest = visitor(link)
    page = sign_in(guest, "ada@example.com", "Ada Lovelace")
    assert page.status_code == 200
    seen = [page.text, json.dumps(dict(page.headers)), guest.get("/api/me").text, *result["messages"],
            notebook.run("%share status"), command_lines([*share_processes()])]
    record = next(Path(sandbox["JUPYTER_RUNTIME_DIR"]).glob("share_magic-*.json"))
    seen.append(record.read_text())
    assert not [text for text in seen if secret in text]
    assert processes_with("standin_ngrok.py")
