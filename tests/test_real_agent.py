"""What the real ngrok agent and edge do that a kind stand-in would hide (issue #32): an agent that refuses fields it
does not know, reports an upstream URL in its own form, and a free plan that charges for remove-headers; accounts
on every kind of ngrok domain. Each runs the real share against the stand-in in that mode."""
from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest
import requests
from harness import edge_meter, processes_with, share_links, wait_for
from test_access import share
from test_signin import SIGN_IN, kernel_of, sign_in, sign_out

from share_magic.helper.identity import traffic_policy


def agent_api(sandbox) -> str:
    agent = json.loads(next((Path(sandbox["STANDIN_NGROK_STATE"]) / "agents").glob("*.json")).read_text())
    return f"http://{agent['web_addr']}/api/endpoints"


def sent_endpoint(sandbox) -> dict:
    return json.loads((Path(sandbox["STANDIN_NGROK_STATE"]) / "endpoints.jsonl").read_text().splitlines()[-1])


def test_the_share_sends_only_fields_the_agent_knows_and_the_agent_refuses_others(jupyter, owner, sandbox) -> None:
    notebook = owner(jupyter())
    share(notebook)
    endpoint = sent_endpoint(sandbox)
    assert set(endpoint) <= {"name", "upstream", "traffic_policy"}, endpoint
    assert isinstance(endpoint["traffic_policy"], str) and json.loads(endpoint["traffic_policy"])["on_http_request"]
    with requests.Session() as local:  # as the real agent: unknown fields and wrong types are refused, not ignored
        upstream = {"url": "http://127.0.0.1:9"}
        refused = local.post(agent_api(sandbox), timeout=5, json={"name": "x", "upstream": upstream, "inspect": False})
        assert refused.status_code == 400
        assert refused.json()["details"]["err"] == "field inspect not found in type config.Endpoint"
        as_object = local.post(agent_api(sandbox), timeout=5, json={
            "name": "y", "upstream": upstream, "traffic_policy": traffic_policy(None, "s" * 43)})
        assert as_object.status_code == 400 and "Endpoint.traffic_policy of type str" in as_object.json()["details"]["err"]


def test_a_share_lasts_when_the_agent_reports_its_upstream_normalized(jupyter, owner, visitor, sandbox,
                                                                      monkeypatch) -> None:
    """The helper checks the agent's endpoints every half second for tampering; an agent that reports
    ``http://127.0.0.1:PORT/`` for the ``http://127.0.0.1:PORT`` it was given has not been tampered with."""
    monkeypatch.setenv("STANDIN_NGROK_UPSTREAM_FORM", "normalized")
    notebook = owner(jupyter())
    link = share(notebook)
    with requests.Session() as local:
        (reported,) = local.get(agent_api(sandbox), timeout=5).json()["endpoints"]
    assert reported["upstream"]["url"].endswith("/") and not sent_endpoint(sandbox)["upstream"]["url"].endswith("/")
    seen = edge_meter(sandbox["STANDIN_NGROK_STATE"])["listings"]
    wait_for(lambda: edge_meter(sandbox["STANDIN_NGROK_STATE"])["listings"] >= seen + 4, 30,
             "the helper to check the agent's endpoints four more times")
    assert processes_with("share_magic.helper")
    assert "live" in notebook.run("%share status").splitlines()[0].lower()
    guest = visitor(link)
    assert guest.get(link).status_code == 200 and guest.get("/api/contents").status_code == 200


def test_sign_in_starts_on_a_free_plan_that_charges_for_remove_headers(jupyter, owner, sandbox) -> None:
    notebook = owner(jupyter())
    result = notebook.execute("%load_ext share_magic\n%share --sign-in github")
    assert result["error"] is None, result["error"]
    assert share_links(notebook)["edit"]
    with requests.Session() as local:  # the stand-in's free plan is as strict as ngrok's: remove-headers costs credit
        policy = {"on_http_request": [{"actions": [{"type": "remove-headers", "config": {"headers": ["x-a"]}}]}]}
        charged = local.post(agent_api(sandbox), timeout=5, json={
            "name": "z", "upstream": {"url": "http://127.0.0.1:9"}, "traffic_policy": json.dumps(policy)})
    assert charged.status_code == 402 and "ERR_NGROK_4026" in charged.json()["details"]["err"]


@pytest.mark.parametrize("domain", ["ngrok-free.dev", "ngrok.app", "notebooks.example.org"])
def test_a_share_works_on_every_kind_of_ngrok_domain(jupyter, owner, visitor, monkeypatch, domain: str) -> None:
    monkeypatch.setenv("STANDIN_NGROK_DOMAIN", domain)
    notebook = owner(jupyter())
    link = share(notebook)
    assert urllib.parse.urlsplit(link).hostname.endswith("." + domain)
    guest = visitor(link)
    assert guest.get(link).status_code == 200
    sessions = guest.get("/api/sessions").json()
    kernel_id = next(s["kernel"]["id"] for s in sessions if s["path"] == "shared.ipynb")
    assert guest.kernel(f"/api/kernels/{kernel_id}/channels").execute("print(6 * 7)")["stdout"] == "42\n"
    saved = guest.send("PUT", "/api/contents/saved-there.txt",
                       data=json.dumps({"type": "file", "format": "text", "content": "hi"}))
    assert saved.status_code == 201, saved.text


def test_a_github_account_without_a_public_email_is_told_what_to_change(jupyter, owner, visitor) -> None:
    server = jupyter(log_requests=True)
    notebook = owner(server)
    link = share(notebook, "%share --sign-in github")
    guest = visitor(link)
    page = guest.get(link)
    assert 'name="email" type="email">' in page.text  # github's sign-in page takes no e-mail
    answer = sign_in(guest, "", "Private Person")
    assert answer.status_code == 403 and "Server" not in answer.headers  # the gate's answer, not Jupyter's
    html = guest.get(link, headers={"Accept": "text/html"})
    assert html.status_code == 403 and "Your GitHub account did not give an e-mail address" in html.text
    assert "Public email" in html.text and '<a href="/ngrok/logout">sign out</a>' in html.text
    assert "another sign-in provider" in html.text
    assert "Public email" in guest.get("/api/contents?probe=no-email").text  # an API call is told, in plain text
    assert not any(cookie.name == "share_magic" for cookie in guest.http.cookies)
    assert not server.saw("probe=no-email")
    # With the e-mail made public (signed in again), the same browser gets in.
    sign_out(guest)
    assert guest.get(link, allow_redirects=False).headers["Location"].startswith(SIGN_IN)
    assert sign_in(guest, "private@example.com", "Private Person").status_code == 200
    assert kernel_of(guest, notebook).execute("print('in')")["stdout"] == "in\n"
