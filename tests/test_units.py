"""The pieces on their own: header translation, runtime files, and the cost of %load_ext."""
from __future__ import annotations

import gzip
import html
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import pytest

from share_magic.errors import ShareError
from share_magic.helper.access import Access, Admitted, Grant, Reply, Session
from share_magic.helper.gateway import Gateway, origin_of
from share_magic.helper.meter import Compression
from share_magic.jupyter import JupyterServer
from share_magic.kernel.discovery import read_runtime_file
from share_magic.kernel.share import parse_duration

PUBLIC = "https://abc123.ngrok-free.app:8443"


@pytest.mark.parametrize("url, origin", [
    ("https://Example.ORG/path?q", "https://example.org"),
    ("https://example.org:443/", "https://example.org"),
    ("http://example.org:80", "http://example.org"),
    ("https://abc.ngrok-free.app:8443/lab", "https://abc.ngrok-free.app:8443"),
    ("http://[::1]:8888/", "http://[::1]:8888"),
    ("null", None),
    ("", None),
])
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


class LetEveryoneIn:
    """A gate that admits every request as it is: these tests are about the relay, not about who may pass."""

    def check(self, method: str, target: str, headers: list[tuple[str, str]]) -> Admitted:
        return Admitted(Session(Grant("test")), target, headers)


def gateway() -> Gateway:
    gw = Gateway(JupyterServer("http", "127.0.0.1", 8888, "/a%40b/", token="t"), LetEveryoneIn())
    gw.open_to(PUBLIC + "/")
    return gw


def translate(**headers: str) -> dict[str, str]:
    return dict(gateway().upstream_headers([(name.replace("_", "-"), value) for name, value in headers.items()]))


def test_only_this_shares_public_origin_is_translated() -> None:
    assert translate(Host="abc123.ngrok-free.app:8443", Origin=PUBLIC)["Origin"] == "http://127.0.0.1:8888"
    assert translate(Origin=PUBLIC.upper().replace("HTTPS", "https"))["Origin"] == "http://127.0.0.1:8888"
    for foreign in ("https://attacker.example", "null", "https://abc123.ngrok-free.app",  # other port
                    "http://abc123.ngrok-free.app:8443", "https://abc123.ngrok-free.app.attacker.example:8443"):
        assert translate(Origin=foreign)["Origin"] == foreign


def test_host_referer_and_hop_by_hop_headers() -> None:
    out = translate(Host="abc123.ngrok-free.app:8443", Referer=PUBLIC + "/a%40b/lab/tree/x.ipynb?a=1",
                    Connection="keep-alive, X-Private", X_Private="secret", Keep_Alive="5", TE="trailers",
                    Cookie="c=1", X_Forwarded_For="203.0.113.9", X_Forwarded_Host="evil.example",
                    X_Forwarded_Proto="http", Forwarded="for=203.0.113.9", X_Real_IP="203.0.113.9",
                    True_Client_IP="203.0.113.9")
    assert out["Host"] == "127.0.0.1:8888"
    assert out["Referer"] == "http://127.0.0.1:8888/a%40b/lab/tree/x.ipynb?a=1"
    assert out["Cookie"] == "c=1"
    for dropped in ("X-Private", "Keep-Alive", "TE",  # and what a visitor can write about where they came from
                    "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-IP",
                    "True-Client-IP"):
        assert dropped not in out
    assert out["Connection"] == "keep-alive, X-Private"  # the visitor's connection is pinned to one upstream
    assert translate(Referer="https://attacker.example/x")["Referer"] == "https://attacker.example/x"


def test_host_is_added_when_missing_and_expect_is_answered_by_the_gateway() -> None:
    out = translate(Expect="100-continue")
    assert out == {"Host": "127.0.0.1:8888"}


def test_locations_pointing_at_the_server_are_made_public() -> None:
    gw = gateway()
    assert gw.public_location("http://127.0.0.1:8888/a%40b/lab?x=1") == PUBLIC + "/a%40b/lab?x=1"
    assert gw.public_location("/a%40b/login?next=%2F") == "/a%40b/login?next=%2F"
    assert gw.public_location(PUBLIC + "/a%40b/tree") == PUBLIC + "/a%40b/tree"


@pytest.mark.parametrize("location", ["https://elsewhere.example/", "//evil.example/x", "/\\evil.example/x",
                                      "\\\\evil.example", " \t//evil.example", "/\t/evil.example",
                                      "javascript:alert(1)", "HTTPS://evil.example"])
def test_locations_never_lead_off_the_share(location: str) -> None:
    assert gateway().public_location(location) == "/a%40b/"


def write(path, info: dict) -> str:
    path.write_text(json.dumps(info))
    return str(path)


def test_runtime_files(tmp_path) -> None:
    modern = read_runtime_file(write(tmp_path / "jpserver-10.json", {
        "url": "http://0.0.0.0:8888/a%40b/", "hostname": "0.0.0.0", "port": 8888, "base_url": "/a%40b/",
        "token": "tok", "pid": 10, "secure": False, "sock": "", "password": False}))
    assert modern is not None
    assert (modern.host, modern.port, modern.base_url, modern.token, modern.ui) == (
        "127.0.0.1", 8888, "/a%40b/", "tok", "lab")
    assert modern.page_path("dir/my notebook.ipynb") == "lab/tree/dir/my%20notebook.ipynb"

    (tmp_path / "jpserver-11-open.html").write_text(
        '<meta http-equiv="refresh" content="1;url=http://localhost:8889/tree?token=x" />')
    notebook7 = read_runtime_file(write(tmp_path / "jpserver-11.json", {
        "url": "https://[::]:8889/", "hostname": "::", "port": 8889, "base_url": "/", "pid": 11, "secure": True}))
    assert notebook7 is not None
    assert (notebook7.host, notebook7.scheme, notebook7.ui) == ("::1", "https", "tree")
    assert notebook7.page_path("x.ipynb") == "notebooks/x.ipynb" and notebook7.page_path(None) == "tree"
    assert notebook7.host_header == "[::1]:8889" and notebook7.tls_context() is not None

    classic = read_runtime_file(write(tmp_path / "nbserver-12.json", {
        "url": "http://localhost:8890/", "hostname": "localhost", "port": 8890, "base_url": "/",
        "notebook_dir": "/home/x", "pid": 12, "token": "t"}))
    assert classic is not None and classic.ui == "classic" and classic.page_path("a.ipynb") == "notebooks/a.ipynb"
    assert read_runtime_file(str(tmp_path / "missing.json")) is None


def test_loading_the_extension_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "before = set(sys.modules)\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'share_magic')\n"
        "heavy = ('ipywidgets', 'anywidget', 'pyngrok', 'tornado.web', 'tornado.httpserver', 'jupyter_server',"
        " 'jupyter_client')\n"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {h.split('.')[0] for h in heavy}"
        " and any(m == h or m.startswith(h + '.') for h in heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


TCP_FIN_WAIT2, TCP_TIME_WAIT = 5, 6  # include/net/tcp_states.h


def close_and_confirm(conn: socket.socket) -> None:
    """Close our side and return only once the peer's TCP stack has acknowledged the FIN: from then on the peer
    sees the connection as closed. This forces "the close landed before the next request" instead of hoping."""
    conn.shutdown(socket.SHUT_WR)
    while conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] not in (TCP_FIN_WAIT2, TCP_TIME_WAIT):
        threading.Event().wait(0.001)  # polling our own socket's state, not waiting for luck
    conn.close()


class Upstream:
    """A tiny HTTP/1.1 server with a script. ``respond(start_line, headers, body)`` makes an answer;
    ``script(connection_number, request_number)`` (both from 1) says what to do with each request it reads: "keep"
    (answer, keep the connection), "close" (answer, then close -- confirmed before the gateway's next request) or
    "drop" (close without answering: the close lands after the request was written). Every request it reads is
    logged with its connection number."""

    def __init__(self, respond: Callable[[str, dict[str, str], bytes], bytes],
                 script: Callable[[int, int], str] = lambda conn, req: "close") -> None:
        self.respond, self.script = respond, script
        self.log: list[tuple[int, str, bytes]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        number = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number += 1
            threading.Thread(target=self.serve, args=(conn, number), daemon=True).start()

    def serve(self, conn: socket.socket, number: int) -> None:
        with conn, conn.makefile("rb") as reader:
            request = 0
            while True:
                start_line, headers = read_head(reader)
                if not start_line:
                    return
                body = read_body(reader, headers)
                self.log.append((number, start_line, body))
                request += 1
                action = self.script(number, request)
                if action == "drop":
                    return
                conn.sendall(self.respond(start_line, headers, body))
                if action == "close":
                    close_and_confirm(conn)
                    return

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


@contextmanager
def gateway_to(upstream: Upstream, compression: Compression | None = None) -> Iterator[tuple[socket.socket, BinaryIO]]:
    """A gateway in front of ``upstream``, and a visitor connected to it."""
    gw = Gateway(JupyterServer("http", "127.0.0.1", upstream.port, "/"), LetEveryoneIn(), compression=compression)
    gw.open_to(PUBLIC)
    try:
        with socket.create_connection(("127.0.0.1", gw.listen()), timeout=10) as visitor, \
                visitor.makefile("rb") as reader:
            yield visitor, reader
    finally:
        gw.close()
        upstream.close()


def read_head(reader: BinaryIO) -> tuple[str, dict[str, str]]:
    lines = []
    while (line := reader.readline()) not in (b"\r\n", b""):
        lines.append(line.decode().rstrip("\r\n"))
    return (lines or [""])[0], {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}


def read_body(reader: BinaryIO, headers: dict[str, str]) -> bytes:
    if "chunked" not in headers.get("transfer-encoding", ""):
        return reader.read(int(headers.get("content-length", 0)))
    body = b""
    while size := int(reader.readline().split(b";")[0], 16):
        body += reader.read(size + 2)[:-2]
    while reader.readline() != b"\r\n":  # trailers
        pass
    return body


def echo(start_line: str, headers: dict[str, str], body: bytes) -> bytes:
    answer = f"{start_line} {body.decode()}".strip().encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)


def ask(visitor: socket.socket, reader: BinaryIO, request: bytes) -> tuple[str, bytes]:
    visitor.sendall(request)
    status, headers = read_head(reader)
    return status, reader.read(int(headers.get("content-length", 0)))


GET = b"GET /%s HTTP/1.1\r\nHost: abc123.ngrok-free.app:8443\r\n\r\n"


def test_a_server_close_that_lands_before_the_next_request_opens_a_fresh_connection() -> None:
    upstream = Upstream(echo, script=lambda conn, req: "close")
    with gateway_to(upstream) as (visitor, reader):
        assert ask(visitor, reader, GET % b"first") == ("HTTP/1.1 200 OK", b"GET /first HTTP/1.1")
        assert ask(visitor, reader, GET % b"second") == ("HTTP/1.1 200 OK", b"GET /second HTTP/1.1")
    assert [(conn, line) for conn, line, _ in upstream.log] == [(1, "GET /first HTTP/1.1"),
                                                                (2, "GET /second HTTP/1.1")]


@pytest.mark.parametrize("request_bytes, logged", [
    (GET % b"second", (b"GET /second HTTP/1.1", b"")),
    (b"OPTIONS /second HTTP/1.1\r\nHost: x\r\n\r\n", (b"OPTIONS /second HTTP/1.1", b"")),
    (b"PUT /save HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\ncontent", (b"PUT /save HTTP/1.1", b"content")),
    (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
     (b"GET /ws HTTP/1.1", b"")),
], ids=["GET", "OPTIONS", "PUT-small-body", "websocket-upgrade"])
def test_a_server_close_that_lands_after_the_request_was_sent_is_retried_once(request_bytes: bytes,
                                                                               logged: tuple[bytes, bytes]) -> None:
    """The reused connection takes the request, then closes without a word: the gateway sends it again, whole, on
    a fresh connection, and the visitor never notices."""
    upstream = Upstream(echo, script=lambda conn, req: "drop" if (conn, req) == (1, 2) else "keep")
    with gateway_to(upstream) as (visitor, reader):
        assert ask(visitor, reader, GET % b"first")[1] == b"GET /first HTTP/1.1"
        status, answer = ask(visitor, reader, request_bytes)
        assert status == "HTTP/1.1 200 OK" and answer == b" ".join(filter(None, logged))
    line, body = logged[0].decode(), logged[1]
    assert upstream.log == [(1, "GET /first HTTP/1.1", b""), (1, line, body), (2, line, body)]


def test_a_streamed_body_never_rides_a_reused_connection() -> None:
    """A chunked body cannot be sent twice, so it goes out on a fresh connection from the start: the reused one,
    which would have dropped it, never sees it."""
    upstream = Upstream(echo, script=lambda conn, req: "drop" if (conn, req) == (1, 2) else "keep")
    with gateway_to(upstream) as (visitor, reader):
        assert ask(visitor, reader, GET % b"first")[1] == b"GET /first HTTP/1.1"
        status, answer = ask(visitor, reader, b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                              b"\r\n5\r\nhello\r\n0\r\n\r\n")
        assert (status, answer) == ("HTTP/1.1 200 OK", b"POST /upload HTTP/1.1 hello")
    assert upstream.log == [(1, "GET /first HTTP/1.1", b""), (2, "POST /upload HTTP/1.1", b"hello")]


@pytest.mark.parametrize("first_request_answered", [False, True])
def test_a_request_the_server_drops_on_a_fresh_connection_gets_a_clean_502(first_request_answered: bool) -> None:
    """Retried once at most: a server that closes every connection on the request gets the visitor a 502 from the
    gateway, and the visitor's connection is then closed, not left hanging."""
    answered = {(1, 1)} if first_request_answered else set()
    upstream = Upstream(echo, script=lambda conn, req: "keep" if (conn, req) in answered else "drop")
    with gateway_to(upstream) as (visitor, reader):
        if first_request_answered:
            assert ask(visitor, reader, GET % b"first")[1] == b"GET /first HTTP/1.1"
        status, answer = ask(visitor, reader, GET % b"dropped")
        assert status == "HTTP/1.1 502 Bad Gateway" and b"without answering" in answer
        assert reader.read() == b""  # the gateway closed the visitor's connection
    tries = [conn for conn, line, _ in upstream.log if line == "GET /dropped HTTP/1.1"]
    assert tries == ([1, 2] if first_request_answered else [1])


def test_the_gateway_answers_expect_continue_and_relays_chunked_bodies_with_trailers() -> None:
    def respond(start_line: str, headers: dict[str, str], body: bytes) -> bytes:
        saw = f"expect={headers.get('expect')};".encode()
        return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-Sum: 11\r\n\r\n" % (len(saw), saw, len(body), body))

    with gateway_to(Upstream(respond, script=lambda conn, req: "close")) as (visitor, reader):
        visitor.sendall(b"POST /upload HTTP/1.1\r\nHost: abc123.ngrok-free.app:8443\r\nContent-Length: 11\r\n"
                        b"Expect: 100-continue\r\n\r\n")
        assert read_head(reader)[0].startswith("HTTP/1.1 100 ")  # tornado's: "100 (Continue)"
        visitor.sendall(b"hello world")
        status, headers = read_head(reader)
        assert status == "HTTP/1.1 200 OK" and headers["transfer-encoding"] == "chunked"
        expected = b"c\r\nexpect=None;\r\nb;ext=1\r\nhello world\r\n0\r\nX-Sum: 11\r\n\r\n"
        assert reader.read(len(expected)) == expected
        visitor.sendall(b"GET /again HTTP/1.1\r\nHost: abc123.ngrok-free.app:8443\r\n\r\n")  # same connection
        assert read_head(reader)[0] == "HTTP/1.1 200 OK"


# -- the gate on its own -----------------------------------------------------------------------------------------


def admit(access: Access, key: str, headers: list[tuple[str, str]] = ()) -> str:
    """Open the link: return the session cookie the gate set."""
    reply = access.check("GET", f"/a%40b/lab?x=1&share_key={key}", list(headers))
    assert isinstance(reply, Reply) and reply.response.startswith(b"HTTP/1.1 302 Found\r\n"), reply
    head = reply.response.decode().split("\r\n")
    assert "Location: /a%40b/lab?x=1" in head
    cookie = next(line for line in head if line.startswith("Set-Cookie: "))[len("Set-Cookie: "):]
    return cookie.split(";")[0]


def test_the_gate_admits_by_key_then_by_cookie_and_adds_jupyters_login_upstream() -> None:
    access = Access("/a%40b/", login=lambda: 'username-127-0-0-1-8888="signed"')
    key = access.link_key("edit")
    assert len(key) >= 43  # 256 bits, URL-safe
    cookie = admit(access, key)
    passed = access.check("GET", "/a%40b/api/contents", [("Host", "h"), ("Cookie", f"{cookie}; _xsrf=x; "
                                                                                  'username-127-0-0-1-8888="old"')])
    assert isinstance(passed, Admitted) and passed.target == "/a%40b/api/contents"
    assert passed.headers == [("Host", "h"), ("Cookie", '_xsrf=x; username-127-0-0-1-8888="signed"')]
    # Jupyter's login cookie stays with the gateway; other cookies reach the visitor.
    answer = [("Set-Cookie", 'username-127-0-0-1-8888="new"; Path=/'), ("Set-Cookie", "_xsrf=y; Path=/")]
    assert passed.response_headers(answer) == [("Set-Cookie", "_xsrf=y; Path=/")]


@pytest.mark.parametrize("method, target, headers", [
    ("GET", "/a%40b/lab", []),
    ("GET", "/a%40b/lab?share_key=wrong", []),
    ("GET", "/a%40b/lab?share_key=", []),
    ("POST", "/a%40b/api/contents?share_key=KEY", []),
    ("GET", "/a%40b/api/kernels/1/channels?share_key=KEY", [("Upgrade", "websocket")]),
    ("GET", "/a%40b/lab", [("Cookie", "share_magic=KEY")]),
    ("GET", "/a%40b/lab", [("Cookie", "share_magic=")]),
])
def test_the_gate_refuses_what_it_did_not_admit(method: str, target: str, headers: list) -> None:
    access = Access("/a%40b/")
    key = access.link_key("edit")
    reply = access.check(method, target.replace("KEY", key),
                         [(name, value.replace("KEY", key)) for name, value in headers])
    assert isinstance(reply, Reply) and reply.response.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"This link has ended or is not valid" in reply.response and b"Connection: close" in reply.response


def test_the_gate_answers_browsers_with_a_page_and_programs_with_text() -> None:
    access = Access("/")
    page = access.check("GET", "/lab", [("Accept", "text/html,*/*")])
    text = access.check("GET", "/api/contents", [("Accept", "application/json")])
    assert isinstance(page, Reply) and b"Content-Type: text/html" in page.response and b"<h1>" in page.response
    assert isinstance(text, Reply) and b"Content-Type: text/plain" in text.response


def test_a_session_ends_when_the_share_expires() -> None:
    access = Access("/", expires_at=time.time() + 3600)
    cookie = admit(access, access.link_key("edit"))
    assert isinstance(access.check("GET", "/lab", [("Cookie", cookie)]), Admitted)
    access.expires_at = time.time() - 1
    assert isinstance(access.check("GET", "/lab", [("Cookie", cookie)]), Reply)


def test_the_cookie_lives_no_longer_than_the_share() -> None:
    access = Access("/", expires_at=time.time() + 90)
    reply = access.check("GET", f"/lab?share_key={access.link_key('edit')}", [])
    assert isinstance(reply, Reply)
    max_age = int(reply.response.decode().split("Max-Age=")[1].split("\r\n")[0])
    assert 0 < max_age <= 90


def question(access: Access, target: str, cookie: str, headers: list[tuple[str, str]] = ()) -> str:
    """Open ``target`` (a keyed link) in a browser holding ``cookie``: the gate asks; return its button's target."""
    reply = access.check("GET", target, [("Cookie", cookie), *headers])
    assert isinstance(reply, Reply) and reply.response.startswith(b"HTTP/1.1 200 OK\r\n"), reply
    assert b"Set-Cookie" not in reply.response and b"frame-ancestors 'none'" in reply.response
    return html.unescape(reply.response.decode().split('action="', 1)[1].split('"', 1)[0])


def test_a_keyed_link_keeps_a_live_session_of_its_standing_and_asks_before_any_other(monkeypatch) -> None:
    access = Access("/a%40b/")
    cookie = admit(access, access.link_key("edit"))
    access.invite("ada")
    access.revoke("ada")  # retires the share's own links: a session of the old edit link lives on
    same = access.check("GET", f"/a%40b/lab?x=1&share_key={access.link_key('edit')}", [("Cookie", cookie)])
    assert isinstance(same, Reply) and same.response.startswith(b"HTTP/1.1 302 Found\r\n")
    assert b"Location: /a%40b/lab?x=1\r\n" in same.response and b"Set-Cookie" not in same.response
    # Off the share, whatever the link says.
    button = question(access, f"//elsewhere.example/x?share_key={access.link_key('view')}", cookie)
    pressed = access.check("POST", button, [("Cookie", cookie)])
    assert isinstance(pressed, Reply) and b"Location: /a%40b/\r\n" in pressed.response
    # A question answered too late is refused.
    cookie = admit(access, access.link_key("edit"))
    button = question(access, f"/a%40b/lab?share_key={access.link_key('view')}", cookie)
    later = time.monotonic() + 601
    monkeypatch.setattr("share_magic.helper.access.time.monotonic", lambda: later)
    late = access.check("POST", button, [("Cookie", cookie)])
    assert isinstance(late, Reply) and late.response.startswith(b"HTTP/1.1 403 Forbidden\r\n")


def test_a_session_of_another_signed_in_account_is_replaced_without_asking() -> None:
    from share_magic.helper.identity import EdgeTrust

    access = Access("/a%40b/", edge=EdgeTrust("github", "edge-secret"))
    proof = [("X-Share-Magic-Secret", "edge-secret")]
    cookie = admit(access, access.link_key("edit"), [*proof, ("X-Share-Magic-Email", "ada@example.com")])
    view = f"/a%40b/lab?share_key={access.link_key('view')}"
    question(access, view, cookie, [*proof, ("X-Share-Magic-Email", "ada@example.com")])
    again = access.check("GET", view, [("Cookie", cookie), *proof, ("X-Share-Magic-Email", "bob@example.com")])
    assert isinstance(again, Reply) and b"Set-Cookie: share_magic=" in again.response  # ada's session: not bob's


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), (" 2H ", 7200), (45, 45), ("", None),
])
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "abc", "0s", "-5m", "1x", "m", "31d", "1h 30"])
def test_bad_durations(text) -> None:
    with pytest.raises(ShareError) as error:
        parse_duration(text)
    assert "--for 30m" in str(error.value)


# -- compression ---------------------------------------------------------------------------------------------------


def answer(kind: str, body: bytes, *extra: str) -> Callable[[str, dict[str, str], bytes], bytes]:
    head = "".join(f"{line}\r\n" for line in (f"Content-Type: {kind}", f"Content-Length: {len(body)}", *extra))
    return lambda *_: b"HTTP/1.1 200 OK\r\n" + head.encode() + b"\r\n" + body


def fetch(visitor: socket.socket, reader: BinaryIO, path: str, accept: str = "gzip, deflate, br") -> tuple[dict, bytes]:
    visitor.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {accept}\r\n\r\n".encode())
    _, headers = read_head(reader)
    return headers, read_body(reader, headers)


def compressing_gateway_to(upstream: Upstream):
    return gateway_to(upstream, Compression(enabled=True))


def test_text_is_gzipped_for_visitors_who_accept_it() -> None:
    text = b"the same line again and again\n" * 1000
    with compressing_gateway_to(Upstream(answer("application/json", text), script=lambda c, r: "keep")) as (v, r):
        headers, body = fetch(v, r, "/api/contents")
        assert headers["content-encoding"] == "gzip" and "accept-encoding" in headers["vary"].lower()
        assert gzip.decompress(body) == text and len(body) < len(text) / 20
        headers, body = fetch(v, r, "/api/contents", accept="identity")
        assert "content-encoding" not in headers and body == text


@pytest.mark.parametrize("kind, body", [("image/png", b"\x89PNG" + bytes(5000)), ("text/plain", b"short")])
def test_binaries_and_small_bodies_pass_as_they_are(kind: str, body: bytes) -> None:
    with compressing_gateway_to(Upstream(answer(kind, body))) as (v, r):
        headers, got = fetch(v, r, "/files/x")
        assert "content-encoding" not in headers and got == body


def test_immutable_assets_are_compressed_once_and_kept() -> None:
    script = b"console.log('a versioned asset');\n" * 500
    upstream = Upstream(answer("application/javascript", script, "Cache-Control: public, max-age=31536000, immutable"),
                        script=lambda c, r: "keep")
    with compressing_gateway_to(upstream) as (v, r):
        first = fetch(v, r, "/static/lab/main.abc123.js")
        second = fetch(v, r, "/static/lab/main.abc123.js")
    assert gzip.decompress(first[1]) == gzip.decompress(second[1]) == script
    assert second[0]["content-encoding"] == "gzip"
    assert [line for _, line, _ in upstream.log] == ["GET /static/lab/main.abc123.js HTTP/1.1"]  # asked once


def test_markdown_images_are_embedded_by_the_views_own_rule_alone(tmp_path, monkeypatch) -> None:
    """render.py replaces a private method of nbconvert's markdown renderer (``_src_to_base64``): if nbconvert stops
    calling it, images would be embedded by nbconvert's own rule (any file) or not at all. This notices either."""
    import nbformat

    from share_magic.helper import render as view

    (tmp_path / "figure.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    (tmp_path / "credentials.png").write_text("AWS_SECRET=not an image at all")
    asked: list[str] = []
    rule = view.embeddable_image
    monkeypatch.setattr(view, "embeddable_image", lambda folder, src: asked.append(src) or rule(folder, src))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "![a figure](figure.png) ![not a figure](credentials.png)")])
    body, _ = view.view_exporter().from_notebook_node(notebook, resources={"metadata": {"path": str(tmp_path)}})
    assert asked == ["figure.png", "credentials.png"]
    assert "data:image/png;base64," in body and "AWS_SECRET" not in body


def test_the_tamper_check_reads_an_upstream_url_as_an_address_not_as_text() -> None:
    from share_magic.helper.tunnel import same_address

    sent = "http://127.0.0.1:8123"
    for same in (sent, sent + "/", "HTTP://127.0.0.1:8123/"):
        assert same_address(same, sent), same
    for other in ("http://127.0.0.1:8124", "http://127.0.0.2:8123", "https://127.0.0.1:8123", "http://localhost:8123",
                  "http://127.0.0.1:8123/elsewhere", "http://u@127.0.0.1:8123", "http://127.0.0.1:x", None, 8123):
        assert not same_address(other, sent), other
