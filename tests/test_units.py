"""The pieces on their own: header translation, runtime files, and the cost of %load_ext."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from share_magic.gateway import Gateway, origin_of
from share_magic.server import JupyterServer, read_runtime_file

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


def gateway() -> Gateway:
    gw = Gateway(JupyterServer("http", "127.0.0.1", 8888, "/a%40b/", token="t"))
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
                    Cookie="c=1", X_Forwarded_For="203.0.113.9")
    assert out["Host"] == "127.0.0.1:8888"
    assert out["Referer"] == "http://127.0.0.1:8888/a%40b/lab/tree/x.ipynb?a=1"
    assert out["Cookie"] == "c=1" and out["X-Forwarded-For"] == "203.0.113.9"
    for dropped in ("X-Private", "Keep-Alive", "TE"):
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
    assert gw.public_location("https://elsewhere.example/") == "https://elsewhere.example/"


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
        "heavy = ('ipywidgets', 'pyngrok', 'tornado.web', 'tornado.httpserver', 'jupyter_server', 'jupyter_client')\n"
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {h.split('.')[0] for h in heavy}"
        " and any(m == h or m.startswith(h + '.') for h in heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_gateway_reopens_an_upstream_connection_the_server_closed_while_idle() -> None:
    """A real (tiny) upstream that closes its side after every response, without saying so: the visitor's
    keep-alive connection must still get an answer to its next request."""
    import asyncio

    async def scenario() -> list[bytes]:
        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            body = head.split(b"\r\n", 1)[0]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        gw = Gateway(JupyterServer("http", "127.0.0.1", server.sockets[0].getsockname()[1], "/"))
        port = await gw.listen()
        gw.open_to(PUBLIC)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for path in ("/first", "/second"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: abc123.ngrok-free.app:8443\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            answers.append(await reader.readexactly(length))
            await asyncio.sleep(0.05)  # idle: the upstream's close arrives
        writer.close()
        await gw.close()
        server.close()
        return answers

    assert asyncio.run(scenario()) == [b"GET /first HTTP/1.1", b"GET /second HTTP/1.1"]
