"""The edge and agent as ngrok's are: a visitor's connection carries many requests, the agent pools its connections
to the gateway and sends anyone's next request on any of them, X-Forwarded-For is appended to and the edge's own
cookies ride along. The stand-in does so (the first tests, against a tiny upstream), and the share stays right
behind it: every request judged on its own, revoking one person never breaks another's request, and nothing a
visitor (or the edge) adds about where a request came from, nor the edge's cookies, reaches Jupyter."""
from __future__ import annotations

import asyncio
import json
import os
import ssl
from pathlib import Path

import h11
import pytest
import websocket
from harness import AUTHTOKEN, HERE, edge_meter
from test_people import invited
from test_signin import sign_in

FORGED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http",
          "X-Forwarded-Port": "80", "Forwarded": "for=203.0.113.9;proto=http", "X-Real-IP": "203.0.113.9",
          "True-Client-IP": "203.0.113.9"}
FORWARDING = {name.lower() for name in FORGED}


# -- the stand-in, against a tiny upstream ---------------------------------------------------------------------------


class TinyUpstream:
    """Answers each request with what it got (JSON: its connection's number, the request line and headers); a
    request whose target names ``drop`` on a reused connection is met with a close instead of an answer."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, served = self.connections, 0
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is h11.IDLE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage):
                    if b"drop" in request.target and served:
                        return  # closed without answering
                    served += 1
                    body = json.dumps({"connection": number, "target": request.target.decode(),
                                       "headers": [[k.decode(), v.decode()] for k, v in request.headers]}).encode()
                    writer.write(conn.send(h11.Response(status_code=200, headers=[("Content-Length",
                                                                                   str(len(body)))]))
                                 + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (h11.ProtocolError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        assert self.server is not None
        self.server.close()


class Browser:
    """One kept-alive connection to the edge, from a loopback address of its own."""

    def __init__(self, port: int, source: str) -> None:
        self.port, self.source = port, source
        self.conn = h11.Connection(h11.CLIENT)

    async def open(self) -> Browser:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=context,
                                                                 server_hostname="edge", local_addr=(self.source, 0))
        return self

    async def ask(self, method: str, target: str, headers: dict[str, str] = (), body: bytes = b"") -> tuple:
        fields = [("Host", "abc.ngrok-free.app"), *dict(headers).items()]
        if body:
            fields.append(("Content-Length", str(len(body))))
        self.writer.write(self.conn.send(h11.Request(method=method, target=target, headers=fields))
                          + (self.conn.send(h11.Data(data=body)) if body else b"") + self.conn.send(h11.EndOfMessage()))
        status, answer = None, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await asyncio.wait_for(self.reader.read(65536), 10))
            elif isinstance(event, h11.Response):
                status, response_headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                answer += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.conn.start_next_cycle()  # the edge keeps the connection: the next request goes on it
                return status, response_headers, answer

    def close(self) -> None:
        self.writer.close()


def run_edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: dict | None, script) -> None:
    """An endpoint of the stand-in in this process, forwarding to a TinyUpstream; ``script(edge, upstream)``."""
    monkeypatch.setenv("STANDIN_NGROK_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("STANDIN_NGROK_INTERSTITIAL", "0")
    import standin_ngrok

    async def main() -> None:
        upstream = TinyUpstream()
        port = await upstream.start()
        agent = standin_ngrok.Agent(standin_ngrok.Service(AUTHTOKEN), str(tmp_path), {})
        url = f"http://127.0.0.1:{port}"
        edge = standin_ngrok.Endpoint(agent, "e", url, {"upstream": {"url": url},
                                                         **({"traffic_policy": policy} if policy else {})})
        await edge.start()
        try:
            await script(edge, upstream)
        finally:
            await edge.stop()
            upstream.close()

    asyncio.run(main())


def edge_port(edge) -> int:
    return edge.server.sockets[0].getsockname()[1]


def values(answer: bytes, name: str) -> list[str]:
    return [v for k, v in json.loads(answer)["headers"] if k.lower() == name]


def test_the_stand_in_keeps_visitors_connections_pools_upstream_ones_and_appends_forwarding(
        tmp_path, monkeypatch) -> None:
    policy = {"on_http_request": [{"actions": [{"type": "add-headers",
                                                "config": {"headers": {"x-client": "${conn.client_ip}"}}}]}]}

    async def script(edge, upstream) -> None:
        ada = await Browser(edge_port(edge), "127.0.0.2").open()
        bob = await Browser(edge_port(edge), "127.0.0.3").open()
        try:
            seen = []
            for guest, extra in ((ada, FORGED), (bob, {}), (ada, {}), (bob, FORGED)):
                status, _, answer = await guest.ask("GET", "/x", extra)
                assert status == 200
                seen.append(json.loads(answer)["connection"])
                assert values(answer, "x-client") == [guest.source]  # the policy ran on this request, for its sender
                forwarded = [guest.source] if extra is not FORGED else [f"203.0.113.9, {guest.source}"]
                assert values(answer, "x-forwarded-for") == forwarded  # appended to: the visitor's own in front
                assert values(answer, "x-forwarded-proto") == ["https"]
                assert values(answer, "x-forwarded-host") == (["evil.example"] if extra is FORGED else [])
            assert seen == [1, 1, 1, 1] and upstream.connections == 1 and edge.pool.dialed == 1
            assert edge.http == 4 and edge.conns == 2  # billed per request, on two kept-alive visitor connections
        finally:
            ada.close()
            bob.close()

    run_edge(tmp_path, monkeypatch, policy, script)


def test_a_request_the_upstream_drops_on_a_pooled_connection_is_retried_only_as_go_would(
        tmp_path, monkeypatch) -> None:
    async def script(edge, upstream) -> None:
        ada = await Browser(edge_port(edge), "127.0.0.2").open()
        try:
            assert (await ada.ask("GET", "/first"))[0] == 200
            status, _, answer = await ada.ask("GET", "/drop")  # replayable: sent again, on a new connection
            assert status == 200 and json.loads(answer)["connection"] == 2
            status, headers, answer = await ada.ask("POST", "/drop", body=b"{}")  # a body: not sent twice
            assert status == 502 and headers[b"ngrok-error-code"] == b"ERR_NGROK_8012", answer
        finally:
            ada.close()

    run_edge(tmp_path, monkeypatch, None, script)


def test_the_stand_in_forwards_the_edges_own_sign_in_cookies(tmp_path, monkeypatch) -> None:
    policy = {"on_http_request": [{"actions": [{"type": "oauth", "config": {"provider": "github"}}]}]}

    async def script(edge, upstream) -> None:
        ada = await Browser(edge_port(edge), "127.0.0.2").open()
        try:
            status, headers, _ = await ada.ask("GET", "/lab")
            assert status == 302
            nonce = headers[b"set-cookie"].split(b";", 1)[0].decode()
            status, headers, _ = await ada.ask("POST", "/ngrok/standin/sign-in", {
                "Content-Type": "application/x-www-form-urlencoded", "Cookie": nonce},
                body=b"email=ada%40example.com&next=%2Flab")
            session = headers[b"set-cookie"].split(b";", 1)[0].decode()
            status, _, answer = await ada.ask("GET", "/lab", {"Cookie": f"{nonce}; {session}"})
            assert status == 200 and values(answer, "cookie") == [f"{nonce}; {session}"]
        finally:
            ada.close()

    run_edge(tmp_path, monkeypatch, policy, script)


# -- the share behind it ---------------------------------------------------------------------------------------------


def dialed(sandbox: dict[str, str]) -> int:
    """Connections the agent has opened to the gateway so far."""
    return edge_meter(sandbox["STANDIN_NGROK_STATE"])["upstream_connections"]


def name_of(guest) -> str:
    response = guest.get("/api/me")
    assert response.status_code == 200, (response.status_code, response.text[:200])
    return response.json()["identity"]["name"]


def test_people_on_one_pooled_connection_are_each_judged_and_revoking_one_leaves_the_other(
        jupyter, owner, visitor, sandbox, monkeypatch) -> None:
    monkeypatch.setenv("STANDIN_NGROK_IDLE_CONNS", "1")  # the agent keeps one: each next request rides it
    notebook = owner(jupyter())
    links = invited(notebook, notebook.execute("%load_ext share_magic\n%share invite Ada Bob"))
    ada, bob = visitor(links["Ada"]), visitor(links["Bob"])
    assert ada.get(ada.link).status_code == 200 and bob.get(bob.link).status_code == 200
    before = dialed(sandbox)
    for guest, name in ((ada, "Ada"), (bob, "Bob"), (ada, "Ada"), (bob, "Bob"), (ada, "Ada")):
        assert name_of(guest) == name  # each request as its own sender, whoever the connection carried before
    assert dialed(sandbox) == before  # all five on one connection, Ada's the last

    assert notebook.execute("%share revoke Ada")["stdout"].startswith("Ada is cut off")
    assert name_of(bob) == "Bob"
    assert dialed(sandbox) == before  # on the connection Ada's request last used: it was not cut under him
    refused = ada.get("/api/me")  # the revoked person's request after another's...
    assert refused.status_code == 403 and "revoked your access" in refused.text
    assert name_of(bob) == "Bob"  # ...and another's after the revoked person's
    assert ada.get("/api/me").status_code == 403 and name_of(bob) == "Bob"



def test_a_refused_websocket_says_its_connection_closes_so_the_agent_never_sends_the_next_request_on_it(
        jupyter, owner, visitor, sandbox, monkeypatch) -> None:
    """The gateway closes a connection whose websocket upgrade the server refused (its bytes were the websocket's):
    the answer says so. Unsaid, the agent pools it, and whoever's request it sends on it next gets ngrok's 502 (or
    the close lands while it idles). JupyterLab meets refused websockets often: a kernel gone, a foreign page."""
    monkeypatch.setenv("STANDIN_NGROK_IDLE_CONNS", "1")  # the agent keeps one: the next request rides it
    notebook = owner(jupyter())
    guest = visitor(invited(notebook, notebook.execute("%load_ext share_magic\n%share invite Ada"))["Ada"])
    assert guest.get(guest.link).status_code == 200
    for path, origin, status in ((f"/api/kernels/{notebook.kernel_id}/channels", "https://elsewhere.example", 403),
                                 ("/api/kernels/00000000-0000-0000-0000-000000000000/channels", None, 404)):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            guest.websocket(path, origin=origin)
        assert refused.value.status_code == status
        made = guest.send("POST", "/api/contents", json={"type": "notebook"})  # a body: never retried
        assert made.status_code == 201, (made.status_code, made.text[:200])
    assert edge_meter(sandbox["STANDIN_NGROK_STATE"])["upstream_connections_lost"] == 0


@pytest.fixture
def echoing(jupyter, monkeypatch):
    """A Jupyter server with an API that answers with the headers and cookies it received."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    return jupyter(extra=['--ServerApp.jpserver_extensions=echo_extension=True'])


def received(guest, headers: dict[str, str] = ()) -> dict:
    response = guest.get("/share-test/echo", headers=dict(headers))
    assert response.status_code == 200, (response.status_code, response.text[:200])
    answer = response.json()
    answer["names"] = {name.lower() for name, _ in answer["headers"]}
    return answer


def test_nothing_a_visitor_says_about_where_they_are_reaches_jupyter(echoing, owner, visitor) -> None:
    notebook = owner(echoing)
    guest = visitor(invited(notebook, notebook.execute("%load_ext share_magic\n%share invite Ada"))["Ada"])
    assert guest.get(guest.link).status_code == 200
    guest.http.cookies.set("tracker", "1")  # any other cookie of the public domain
    answer = received(guest, FORGED)
    assert not answer["names"] & FORWARDING, answer["headers"]  # neither the visitor's nor the edge's own
    assert not any(name.startswith("x-share-magic-") for name in answer["names"])
    assert answer["remote_ip"] in ("127.0.0.1", "::1")
    assert "tracker" not in answer["cookies"] and "share_magic" not in answer["cookies"]
    assert any(name.startswith("username-") for name in answer["cookies"])  # the session's login, as before


def test_the_edges_sign_in_cookies_never_reach_jupyter(echoing, owner, visitor) -> None:
    notebook = owner(echoing)
    result = notebook.execute("%load_ext share_magic\n%share --sign-in github")
    assert result["error"] is None, result
    from harness import share_links

    ada = visitor(share_links(notebook)["edit"])
    assert sign_in(ada, "ada@example.com", "Ada Lovelace").status_code == 200
    sent = {cookie.name for cookie in ada.http.cookies}
    assert {"ngrok_oauth_session", "ngrok_oauth_nonce"} <= sent  # the browser sends them: the edge passes them on
    answer = received(ada)
    assert not {"ngrok_oauth_session", "ngrok_oauth_nonce", "share_magic"} & set(answer["cookies"]), answer
    assert any(name.startswith("username-") for name in answer["cookies"])
