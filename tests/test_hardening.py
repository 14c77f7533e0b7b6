"""What an attacker with a local account, a revoked invitation or a raw socket tries against a live share (issue
19): the relay cannot be squatted, revoking a person retires the links they could read, no visitor sees the
server's token, nothing rides past the gate, stalled connections cannot hold the helper, the authtoken never
touches a command line, and dead helpers leave nothing behind."""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml
from harness import processes_with, share_links, wait_for
from test_access import key_of, refused_by_the_gate, share
from test_people import invited
from test_units import PUBLIC, LetEveryoneIn, Upstream, echo, gateway_to, read_head

import share_magic
from share_magic.helper.access import Access, Reply
from share_magic.helper.gateway import Gateway, Limits, _Blanking
from share_magic.jupyter import JupyterServer
from share_magic.kernel.authtoken import AuthtokenForm
from share_magic.kernel.widget import ShareView


def gateway_port(notebook) -> int:
    return int(notebook.run("import share_magic; print(share_magic.current().gateway_port)"))


def test_the_agent_forwards_to_the_address_the_gateway_holds(jupyter, owner, visitor, sandbox) -> None:
    """The upstream is 127.0.0.1, never ``localhost`` (which may resolve to ::1 first); and the gateway does not
    listen on ::1, so a local user who holds [::1]:PORT catches nothing."""
    notebook = owner(jupyter())
    link = share(notebook)
    port = gateway_port(notebook)
    endpoint = json.loads((Path(sandbox["STANDIN_NGROK_STATE"]) / "endpoints.jsonl").read_text().splitlines()[-1])
    assert endpoint["upstream"]["url"] == f"http://127.0.0.1:{port}"
    squatter = socket.create_server(("::1", port), family=socket.AF_INET6)  # free: the gateway does not hold it
    try:
        squatter.setblocking(False)
        guest = visitor(link)
        assert guest.get(link).status_code == 200 and guest.get("/api/contents").status_code == 200
        with pytest.raises(BlockingIOError):  # nobody ever connected to it
            squatter.accept()
    finally:
        squatter.close()


def test_a_program_that_repoints_the_public_url_ends_the_share(jupyter, owner, visitor, sandbox) -> None:
    """The agent's local API takes changes from any program on the machine, another account's too. One that swaps
    the share's endpoint for its own (same public URL, its own listener) would catch the next visitor's key: the
    helper notices the swap and ends the share, which kills every key it made."""
    notebook = owner(jupyter())
    link = share(notebook)
    guest = visitor(link)
    assert guest.get(link).status_code == 200
    agent = json.loads(next((Path(sandbox["STANDIN_NGROK_STATE"]) / "agents").glob("*.json")).read_text())
    api = f"http://{agent['web_addr']}/api/endpoints"
    with requests.Session() as local:
        (ours,) = local.get(api, timeout=5).json()["endpoints"]
        assert local.delete(f"{api}/{ours['name']}", timeout=5).status_code == 204
        squatter = socket.create_server(("127.0.0.1", 0))
        try:
            theirs = local.post(api, timeout=5, json={
                "name": "squatter", "upstream": {"url": f"http://127.0.0.1:{squatter.getsockname()[1]}"}})
            assert theirs.status_code == 201 and theirs.json()["url"] == ours["url"]  # the same public URL
            wait_for(lambda: not processes_with("share_magic.helper"), 10, "the share to end")
        finally:
            squatter.close()
    status = notebook.run("%share status")
    assert "lost" in status and "another program changed the ngrok agent's endpoints" in status
    assert not guest.reaches_jupyter()


class CommandLineWatch:
    """Reads every process's command line, over and over, as any local user can, until stopped: what it saw."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.sightings = 0
        self.rounds = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)
        self.thread.start()

    def watch(self) -> None:
        while not self.done.is_set():
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        self.sightings += self.secret in Path(f"/proc/{entry}/cmdline").read_bytes()
                    except OSError:
                        pass
            self.rounds += 1

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.sightings


def test_the_authtoken_form_never_puts_the_token_on_a_command_line(jupyter, monkeypatch) -> None:
    """Saving writes ngrok's config file itself (0600, YAML, where `ngrok config add-authtoken` puts it, other
    settings kept) instead of running that command with the token as an argument."""
    server = jupyter()
    monkeypatch.delenv("NGROK_AUTHTOKEN")
    token = f"2standinAuthtoken_{uuid.uuid4().hex}"  # this test's own: no other test run can show it
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "ngrok" / "ngrok.yml"
    config.parent.mkdir(parents=True)
    config.write_text("version: '3'\nagent:\n  region: eu\n")
    form = AuthtokenForm("no authtoken", retry=lambda: share_magic.share(port=server.port))
    form.password.value = token
    watch = CommandLineWatch(token)
    try:
        wait_for(lambda: watch.rounds >= 2, 10, "the watch to be running")
        form.save.click()
        rounds = watch.rounds
        wait_for(lambda: watch.rounds >= rounds + 2, 10, "the watch to look again after the save")
    finally:
        sightings = watch.stop()
        share_magic.stop()
    assert sightings == 0
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert yaml.safe_load(config.read_text()) == {"version": "3", "agent": {"region": "eu", "authtoken": token}}
    assert isinstance(form.children[0], ShareView)  # the share started with the saved token


def ended_pid() -> int:
    """The pid of a process that has come and gone."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_next_share_removes_what_killed_helpers_left_and_nothing_else(jupyter, owner, sandbox, tmp_path,
                                                                          monkeypatch) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the server, its kernels and their helpers use this temp folder

    def folder(name: str, owner_line: str | None, age: float = 0, uid: int | None = None) -> Path:
        path = temp / f"share_magic-ngrok-{name}"
        path.mkdir(mode=0o700)
        if owner_line is not None:
            (path / "helper.pid").write_text(owner_line)
        if uid is not None:
            os.chown(path, uid, -1)
        moment = time.time() - age
        os.utime(path, (moment, moment))
        return path

    me = os.getpid()
    my_start = Path(f"/proc/{me}/stat").read_text().rsplit(")", 1)[1].split()[19]
    dead = folder("dead", f"{ended_pid()} 1\n")
    recycled = folder("recycled", f"{me} 1\n")  # a live pid, but not the process that wrote the file
    live = folder("live", f"{me} {my_start}\n")
    starting = folder("starting", None)  # no owner file yet: a helper between mkdtemp and writing it
    old_unowned = folder("old", None, age=3600)  # an older share_magic's, killed long ago
    others = [folder("theirs", f"{ended_pid()} 1\n", uid=12345)] if os.getuid() == 0 else []

    notebook = owner(jupyter())
    share(notebook)
    assert not dead.exists() and not recycled.exists() and not old_unowned.exists()
    assert live.exists() and starting.exists() and all(path.exists() for path in others)
    ours = [path for path in temp.glob("share_magic-ngrok-*") if path not in (live, starting, *others)]
    assert len(ours) == 1 and (ours[0] / "helper.pid").read_text().split()[0] == str(processes_with(
        "share_magic.helper")[0])

    os.killpg(processes_with("share_magic.helper")[0], signal.SIGKILL)  # the helper and its agent, no clean-up
    wait_for(lambda: "Share lost" in notebook.run("%share status"), 20, "the kernel to notice the share is gone")
    assert ours[0].exists()
    share(notebook)
    assert not ours[0].exists() and live.exists() and starting.exists()


# -- nothing rides past the gate -------------------------------------------------------------------------------------


def raw_exchange(link: str, request: bytes) -> bytes:
    """Send these exact bytes to the share's public address over TLS, as an attacker's own client would; return
    everything that comes back until the connection closes."""
    parts = urllib.parse.urlsplit(link)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    answer = b""
    with socket.create_connection((parts.hostname, parts.port or 443), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
        tls.sendall(request)
        while chunk := tls.recv(65536):
            answer += chunk
    return answer


def test_smuggled_requests_never_reach_jupyter(jupyter, owner, visitor) -> None:
    """The issue's two shapes: a bare LF in a header value over HTTP (Jupyter would read a second request, carrying
    the session's hidden login cookie), and a bridge call whose method (or a header) holds a CRLF. Neither reaches
    the server; the edge splits the first in two requests, each judged on its own, the bridge falls back to HTTP."""
    server = jupyter(log_requests=True)
    notebook = owner(server)
    link = share(notebook)
    guest = visitor(link)
    assert guest.get(link).status_code == 200
    host = urllib.parse.urlsplit(link).netloc
    cookie = f"share_magic={guest.http.cookies['share_magic']}"
    marker = uuid.uuid4().hex.upper()  # upper case: the bridge upper-cased the method it was given

    answer = raw_exchange(link, (f"GET /api/status HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nX-Pad: a\n\n"
                                 f"GET /api/contents?SMUGGLEDA{marker} HTTP/1.1\r\nX-Rest: b\r\n\r\n").encode())
    # ngrok's edge (Go's HTTP server, as the stand-in's h11) reads a bare LF as a line end, so these bytes are two
    # requests there, each forwarded (or refused) on its own; what reaches the gateway whole is checked there again
    # (test_malformed_heads_get_the_gateways_own_400). Either way the second never reaches Jupyter (below).
    answers = answer.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2 and answers[0].startswith(b"200 ") and answers[1].startswith(b"400 "), answer[:300]

    bridge = guest.websocket("/share_magic/bridge")
    calls = [
        {"id": 1, "method": f"GET /api/contents?SMUGGLEDB{marker} HTTP/1.1\r\nHost: x\r\n\r\nGET", "target": "/api",
         "headers": []},
        {"id": 2, "method": "GET", "target": f"/api HTTP/1.1\r\nHost: x\r\n\r\nGET /api/contents?SMUGGLEDC{marker}",
         "headers": []},
        {"id": 3, "method": "GET", "target": "/api/status",
         "headers": [["X-Pad", f"a\r\n\r\nGET /api/contents?SMUGGLEDD{marker} HTTP/1.1"]]},
        {"id": 4, "method": "GET", "target": f"//evil.example/SMUGGLEDE{marker}", "headers": []},
    ]
    for call in calls:
        bridge.send(json.dumps({**call, "gzip": False}))
        assert json.loads(bridge.recv()) == {"id": call["id"], "fallback": True}, call

    sentinel = f"sentinel{uuid.uuid4().hex}"
    assert guest.get(f"/api/status?{sentinel}").status_code == 200
    wait_for(lambda: server.saw(sentinel), 10, "the server to log the admitted request")
    assert not server.saw(marker), "a smuggled request reached Jupyter"


@pytest.mark.parametrize("head", [
    b"GET /x HTTP/1.1\r\nHost: h\r\nX-Pad: a\r\n folded\r\n\r\n",  # obs-fold
    b"GET /x HTTP/1.1\r\nHost: h\r\nX-Pad: a\x01b\r\n\r\n",  # a control character
    b"GET /x HTTP/1.1\r\nHost: h\r\nX-Pad: a\x7fb\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: h\r\nX Pad: a\r\n\r\n",  # malformed names
    b"GET /x HTTP/1.1\r\nHost: h\r\nX-Pad : a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: h\r\nX-P\x00d: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: h\r\nX-Pad: a\nX-More: b\r\n\r\n",  # a bare LF
    b"GET /x HTTP/1.1\r\nHost: h\rX-More: b\r\n\r\n",  # a bare CR
    b"GET /x HTTP/1.1\nHost: h\n\n",  # a head of bare LFs, arriving whole
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",  # ambiguous framing
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
    # a Connection header that would drop the framing (or the routing) before Jupyter reads the body
    b"POST /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade, Content-Length\r\n"
    b"Content-Length: 34\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: Host\r\n\r\n",
    b"G(ET /x HTTP/1.1\r\nHost: h\r\n\r\n",  # not a method
    b"GET //evil.example/x HTTP/1.1\r\nHost: h\r\n\r\n",  # not a path on this server
    b"GET http://evil.example/x HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /x  HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /x HTTP/2.0\r\nHost: h\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 70_000,  # a head larger than any may be
], ids=["obs-fold", "control", "delete", "space-in-name", "space-before-colon", "nul-in-name", "bare-lf",
        "bare-cr", "all-bare-lf", "two-lengths", "length-and-chunked", "signed-length",
        "connection-drops-length-on-upgrade", "connection-drops-length", "connection-drops-host", "bad-method",
        "scheme-relative-target", "absolute-target", "two-spaces", "version", "oversized"])
def test_malformed_heads_get_the_gateways_own_400(head: bytes) -> None:
    upstream = Upstream(echo, script=lambda conn, req: "keep")
    with gateway_to(upstream) as (client, reader):
        client.sendall(head)
        status, headers = read_head(reader)
        assert status.split(" ", 2)[1] in ("400", "431", "501"), status
        assert b"The gateway refused this request" in reader.read(int(headers["content-length"]))
        client.shutdown(socket.SHUT_WR)  # done sending: the gateway need not linger for more
        assert reader.read() == b""  # and the connection is closed
    assert upstream.log == []


def test_the_gate_never_redirects_off_the_share(jupyter, owner, visitor) -> None:
    """``//evil.example/x?share_key=K``: the key is good, the redirect that drops it from the address bar stays on
    the share."""
    link = share(owner(jupyter()))
    key = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["share_key"][0]
    host = urllib.parse.urlsplit(link).netloc
    for target in (f"//evil.example/x?share_key={key}", f"/\\evil.example/x?share_key={key}"):
        answer = raw_exchange(link, f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        status = answer.split(b"\r\n", 1)[0]
        location = re.search(rb"\r\nLocation: ([^\r]*)\r\n", answer)
        assert status in (b"HTTP/1.1 302 Found", b"HTTP/1.1 400 Bad Request"), answer[:300]
        assert location is None or location.group(1) == b"/", answer[:300]
    unit = Access("/a%40b/").check("GET", "//evil.example/x?share_key=", [])
    assert isinstance(unit, Reply)  # no key: refused, no Location at all
    access = Access("/a%40b/")
    reply = access.check("GET", f"//evil.example/x?share_key={access.link_key('edit')}", [])
    assert isinstance(reply, Reply) and b"\r\nLocation: /a%40b/\r\n" in reply.response


# -- the server's token reaches no visitor ---------------------------------------------------------------------------


def test_no_html_answer_carries_the_servers_token(jupyter, owner, visitor) -> None:
    """Jupyter's error pages (404, 403) carry the token in their page config as its pages do: blanked in every HTML
    answer, over HTTP and through the bridge."""
    server = jupyter()
    notebook = owner(server)
    link = share(notebook)
    guest = visitor(link)
    assert guest.get(link).status_code == 200
    html = {"Accept": "text/html"}
    answers = {path: guest.get(path, headers=html) for path in ("/nope", "/files/shared.ipynb", "/lab",
                                                                "/lab/tree/missing.ipynb", "/tree")}
    answers["POST /nope"] = guest.send("POST", "/nope", headers=html)
    assert answers["/nope"].status_code == 404 and "text/html" in answers["/nope"].headers["Content-Type"]
    assert {response.status_code for response in answers.values()} >= {200, 404}
    for path, response in answers.items():
        assert response.text and server.token not in response.text, (path, response.status_code)

    bridge = guest.websocket("/share_magic/bridge")
    for number, target in enumerate(["/nope", "/lab", "/files/shared.ipynb", "/api/nope"], start=1):
        bridge.send(json.dumps({"id": number, "method": "GET", "target": target, "headers": [["Accept", "text/html"]],
                                "gzip": False}))
        answer = json.loads(bridge.recv())
        assert not answer.get("fallback"), (target, answer)
        body = base64.b64decode(answer["body"])
        assert body and server.token.encode() not in body, (target, answer["status"])


@pytest.mark.parametrize("pieces", [
    [b"<html>token=SECRET!</html>"],
    [b"<html>token=SEC", b"RET!</html>"],
    [b"<html>token=S", b"E", b"C", b"RETSECRET", b"!</html>"],
    [b"<html>SECSECRETRET</html>"],  # taking one out joins another
    [b"<html>SEC</html>"],  # a prefix that is not the secret is kept
])
def test_the_token_is_blanked_however_the_stream_is_cut(pieces: list[bytes]) -> None:
    sent = bytearray()

    class Sink:
        def sendall(self, data: bytes) -> None:
            sent.extend(data)

        def close(self) -> None:
            pass

    blanking = _Blanking(Sink(), b"SECRET")
    for piece in pieces:
        blanking.sendall(piece)
    blanking.close()
    whole = b"".join(pieces)
    while b"SECRET" in whole:
        whole = whole.replace(b"SECRET", b"")
    assert bytes(sent) == whole and b"SECRET" not in sent


# -- outsiders cannot hold the helper --------------------------------------------------------------------------------


@contextmanager
def gateway_with(limits: Limits, gate=None):
    """A gateway with these limits in front of a tiny server, behind the real gate unless told otherwise; every
    client socket made with ``connect`` is closed at the end."""
    upstream = Upstream(echo, script=lambda conn, req: "keep")
    gw = Gateway(JupyterServer("http", "127.0.0.1", upstream.port, "/"), gate or Access("/"), limits=limits)
    gw.open_to(PUBLIC)
    port = gw.listen()
    clients: list[socket.socket] = []

    def connect(data: bytes = b"") -> socket.socket:
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        clients.append(client)
        client.sendall(data)
        return client

    try:
        yield gw, connect, upstream
    finally:
        for client in clients:
            client.close()
        gw.close()
        upstream.close()


def closed_by_the_gateway(client: socket.socket) -> bool:
    """Whether the gateway has closed this connection (whatever it said first)."""
    try:
        while client.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def visitor_threads() -> int:
    return sum(thread.name == "gateway-visitor" for thread in threading.enumerate())


def test_a_refused_request_is_answered_from_its_head_without_waiting_for_its_body() -> None:
    """200 of these held 200 threads for good: the gate now answers at once, and closes once the sender stops."""
    with gateway_with(Limits(head_timeout=300, body_timeout=300)) as (gw, connect, upstream):
        clients = [connect(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n") for _ in range(20)]
        for client in clients:
            with client.makefile("rb") as reader:
                status, headers = read_head(reader)  # within the client's 30 s timeout, not the gateway's 300 s
                assert status == "HTTP/1.1 403 Forbidden"
                assert b"not valid" in reader.read(int(headers["content-length"]))
            client.shutdown(socket.SHUT_WR)
        assert all(closed_by_the_gateway(client) for client in clients)
        wait_for(lambda: gw.connections() == 0, 10, "every connection to be let go")
    assert upstream.log == []


def test_stalled_heads_and_bodies_time_out() -> None:
    """A head that never ends, and an admitted request's body that never comes, are let go after the limits (made
    short here: they are settings)."""
    with gateway_with(Limits(head_timeout=0.5, body_timeout=0.5), gate=LetEveryoneIn()) as (gw, connect, upstream):
        stalled = [connect(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: a") for _ in range(10)]
        stalled += [connect(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc") for _ in range(10)]
        stalled += [connect() for _ in range(10)]  # connects, says nothing
        wait_for(lambda: gw.connections() == 0, 30, "the stalled connections to time out")
        assert all(closed_by_the_gateway(client) for client in stalled)
    assert upstream.log == []


def test_a_connection_limit_keeps_threads_bounded() -> None:
    """Past the limit, a connection is answered 503 at once and gets no thread; once connections end, their
    places are free again."""
    limit = 20
    with gateway_with(Limits(head_timeout=300, body_timeout=300, max_connections=limit)) as (gw, connect, _):
        before = visitor_threads()
        held = [connect(b"GET / HTTP/1.1\r\nHost: h\r\n") for _ in range(limit)]
        wait_for(lambda: gw.connections() == limit, 10, "the gateway to hold the first connections")
        for _ in range(30):
            with connect().makefile("rb") as reader:  # (says nothing: the answer comes before any request)
                assert read_head(reader)[0] == "HTTP/1.1 503 Service Unavailable"
        assert gw.connections() == limit and visitor_threads() - before <= limit
        for client in held:
            client.close()
        wait_for(lambda: gw.connections() == 0, 10, "the held connections to be let go")
        with connect(b"GET / HTTP/1.1\r\nHost: h\r\nAccept: text/plain\r\n\r\n").makefile("rb") as reader:
            assert read_head(reader)[0] == "HTTP/1.1 403 Forbidden"  # the gate answers again


# -- revoking a person retires the links they could read -------------------------------------------------------------


def test_revoking_a_person_retires_the_shares_own_links(jupyter, owner, visitor, sandbox) -> None:
    """Dave, an editor, reads the share's own links by running code as the owner; once revoked he cannot get back
    in with them. Whoever is already in, and Ada with her own link, notice nothing; the new links work."""
    server = jupyter()
    notebook = owner(server)
    personal = invited(notebook, notebook.execute("%load_ext share_magic\n%share invite Dave Ada"))
    notebook.run("%share --view")
    dave = visitor(personal["Dave"])
    assert dave.get(dave.link).status_code == 200
    daves_kernel = dave.kernel(f"/api/kernels/{notebook.kernel_id}/channels")
    read = daves_kernel.execute("import share_magic; s = share_magic.current(); print(s.link); print(s.view_link)")
    old_link, old_view = read["stdout"].split()
    guest = visitor(old_link)  # someone the owner gave the link to, in before the revocation
    assert guest.get(old_link).status_code == 200
    guests_kernel = guest.kernel(f"/api/kernels/{notebook.kernel_id}/channels")

    revoked = notebook.execute("%share revoke Dave")
    assert "Dave is cut off" in revoked["stdout"], revoked
    for link in (old_link, old_view):
        refused = visitor(link).get(link, headers={"Accept": "text/html"})
        assert refused_by_the_gate(refused) and "replaced this link" in refused.text
    assert "changed too" in revoked["stdout"] and "%share links prints them" in revoked["stdout"]
    assert refused_by_the_gate(dave.get("/api/contents"))

    assert guests_kernel.execute("print('still in')")["stdout"] == "still in\n"
    assert guest.get("/api/contents").status_code == 200
    assert visitor(personal["Ada"]).get(personal["Ada"]).status_code == 200

    links = share_links(notebook)
    new_link, new_view = links["edit"], links["view"]
    assert {new_link, new_view}.isdisjoint({old_link, old_view})
    assert notebook.run("import share_magic; print(share_magic.current().link)").strip() == new_link
    newcomer = visitor(new_link)
    assert newcomer.get(new_link).status_code == 200 and newcomer.get("/api/contents").status_code == 200
    assert visitor(new_view).get(new_view).status_code == 200
    record = next(Path(sandbox["JUPYTER_RUNTIME_DIR"]).glob("share_magic-*.json")).read_text()
    assert not {key_of(link) for link in (new_link, new_view, old_link, old_view)} & set(re.findall(r"[\w-]+", record))


def test_the_widget_shows_the_new_link_after_a_revocation(jupyter) -> None:
    server = jupyter()
    try:
        share = share_magic.share(port=server.port)
        share.invite("Dave")
        view = ShareView(share)
        old = share.link
        shown = [part.message()["link"] for part in (view.link, view.copy, view.qr)]
        assert shown == [old] * 3
        share.revoke("Dave")  # the helper reports the new link before it answers
        assert share.link != old
        assert [part.message()["link"] for part in (view.link, view.copy, view.qr)] == [share.link] * 3
        assert ("Anyone with this link", share.link) in share.links() and old not in str(share.links())
    finally:
        share_magic.stop()


def test_the_authtoken_form_refuses_what_is_not_an_authtoken(sandbox) -> None:
    form = AuthtokenForm("no authtoken", retry=lambda: pytest.fail("nothing to share with"))
    form.password.value = "not an authtoken!"
    form.save.click()
    assert "does not look like an ngrok authtoken" in form.feedback.value
    assert "not an authtoken!" not in form.feedback.value
    assert not (Path(os.environ["XDG_CONFIG_HOME"]) / "ngrok" / "ngrok.yml").exists() and not form.save.disabled
