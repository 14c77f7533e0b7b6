"""The first share on a real machine: the ngrok agent missing, too old (pyngrok's own, or the user's), and the
user's own ngrok config with settings pyngrok or the agent would refuse. Each ends in a working share or one line.

No test reaches ngrok's CDN. :class:`FakeCDN` stands in for it where a real machine meets it: the helper downloads
from the very URL pyngrok's installer picks (``https://bin.ngrok.com/...``), through the user's HTTPS proxy
(``HTTPS_PROXY``, which urllib honours as it would behind a corporate proxy), which here answers the CONNECT itself
with TLS for bin.ngrok.com, under a certificate authority the helper trusts through ``SSL_CERT_FILE``. So the
helper has no test-only switch at all (nothing another local user could turn), and the download takes the path a
real one takes: DNS aside, the same URL, TLS verification, proxy and HTTP framing.
"""
from __future__ import annotations

import datetime
import io
import json
import os
import re
import socket
import ssl
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import pytest
import websocket
from pyngrok import installer
from harness import HERE, share_links, share_processes, wait_for
from test_failures import assert_one_calm_line

CDN_HOST = "bin.ngrok.com"
OLD = "3.24.0"
PARTWAY = re.compile(r"Downloading the ngrok agent \(first use\): [0-9.]+ of [0-9.]+ MB \(([1-9][0-9]?)%\)")


def agent_script(version: str | None = None, padding: int = 0) -> bytes:
    """An agent executable: the stand-in, at ``version`` (None: its current one), ``padding`` bytes bigger (a
    download long enough to show progress; random, so gzip cannot shrink it)."""
    env = f"STANDIN_NGROK_VERSION={version} " if version else ""
    script = f"#!/bin/sh\n{env}exec {sys.executable} {HERE / 'standin_ngrok.py'} \"$@\"\n"
    return script.encode() + (b"# " + os.urandom(padding).hex().encode()[:padding] + b"\n" if padding else b"")


def agent_archive(script: bytes) -> bytes:
    """ngrok's archive for Linux: a .tgz holding the one file ``ngrok``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        member = tarfile.TarInfo("ngrok")
        member.size, member.mode = len(script), 0o755
        bundle.addfile(member, io.BytesIO(script))
    return buffer.getvalue()


def certificate_authority(folder: Path) -> tuple[str, str]:
    """A self-signed certificate for bin.ngrok.com that is its own authority: (certificate, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CDN_HOST)])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(CDN_HOST)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cdn.pem", folder / "cdn.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def next_event(connection: h11.Connection, sock: Any) -> Any:
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(sock.recv(65536))
            continue
        return event


class FakeCDN:
    """ngrok's CDN behind an HTTPS proxy on loopback. It serves ``archive`` to every GET; with ``pause_at`` it sends
    that many bytes of it, then waits for :attr:`resume` (set by the test, or at :meth:`close`: a stall)."""

    def __init__(self, folder: Path, archive: bytes, pause_at: int | None = None) -> None:
        self.archive, self.pause_at = archive, pause_at
        self.ca, key = certificate_authority(folder)
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(self.ca, key)
        self.requests: list[tuple[str, str]] = []  # (the CONNECT's target, the GET's target)
        self.paused, self.resume = threading.Event(), threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def environment(self) -> dict[str, str]:
        proxy = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        return {"HTTPS_PROXY": proxy, "https_proxy": proxy, "SSL_CERT_FILE": self.ca,
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            proxy = h11.Connection(h11.SERVER)
            connect = next_event(proxy, sock)
            assert connect.method == b"CONNECT", connect
            sock.sendall(proxy.send(h11.Response(status_code=200, headers=[])))
            tls = self.tls.wrap_socket(sock, server_side=True)
            self.sockets.append(tls)
            http = h11.Connection(h11.SERVER)
            request = next_event(http, tls)
            self.requests.append((connect.target.decode(), request.target.decode()))
            tls.sendall(http.send(h11.Response(status_code=200, headers=[
                ("Content-Length", str(len(self.archive))), ("Content-Type", "application/octet-stream")])))
            cut = len(self.archive) if self.pause_at is None else self.pause_at
            tls.sendall(http.send(h11.Data(data=self.archive[:cut])))
            if cut < len(self.archive):
                self.paused.set()
                self.resume.wait()
                tls.sendall(http.send(h11.Data(data=self.archive[cut:])))
            tls.sendall(http.send(h11.EndOfMessage()))
        except (OSError, AssertionError, h11.ProtocolError):
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self.resume.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way (close() alone does not)
        except OSError:
            pass
        self.listener.close()
        for sock in self.sockets:
            sock.close()
        for thread in self.threads:
            thread.join(10)


@pytest.fixture
def fresh_machine(sandbox: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """No PYNGROK_NGROK_PATH: pyngrok's own path ($XDG_CONFIG_HOME/ngrok/ngrok), with no agent there yet."""
    monkeypatch.delenv("PYNGROK_NGROK_PATH")
    path = Path(sandbox["XDG_CONFIG_HOME"]) / "ngrok" / "ngrok"
    return {"path": path}


@pytest.fixture
def cdn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``cdn(archive, pause_at=None)``: the fake CDN, in the environment of every Jupyter server started after."""
    made: list[FakeCDN] = []

    def make(archive: bytes, pause_at: int | None = None) -> FakeCDN:
        made.append(FakeCDN(tmp_path, archive, pause_at))
        for name, value in made[-1].environment().items():
            monkeypatch.setenv(name, value)
        return made[-1]

    yield make
    for fake in made:
        fake.close()


class Watching:
    """A kernel client's websocket, with a look at each message before the client gets it."""

    def __init__(self, ws: Any, look: Any) -> None:
        self.ws, self.look = ws, look

    def recv_data(self, control_frame: bool = False) -> Any:  # what harness.receive reads with
        opcode, data = self.ws.recv_data(control_frame)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            self.look(data.decode())
        return opcode, data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ws, name)


def outputs_with(result: dict[str, Any], text: str) -> list[dict[str, Any]]:
    return [output for output in result["outputs"] if text in output["data"].get("text/plain", "")]


def leftovers(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.name.startswith(".ngrok-")) \
        if folder.exists() else []


def test_a_fresh_machine_downloads_the_agent_showing_progress_then_shares(fresh_machine, cdn, jupyter, owner,
                                                                          visitor) -> None:
    archive = agent_archive(agent_script(padding=2_000_000))
    fake = cdn(archive, pause_at=len(archive) // 2)
    notebook = owner(jupyter())
    notebook.run("%load_ext share_magic")

    def look(raw: str) -> None:  # the rest of the archive only once the kernel has shown the first half arrived
        if PARTWAY.search(raw):
            fake.resume.set()

    notebook.ws = Watching(notebook.ws, look)
    result = notebook.execute("%share")
    notebook.ws = notebook.ws.ws
    assert result["error"] is None and not result["stderr"], (result["error"], result["stderr"])
    assert fake.requests == [(f"{CDN_HOST}:443", urlsplit(installer.get_ngrok_cdn_url("3")).path)]
    shown = outputs_with(result, "Downloading the ngrok agent (first use)")
    halfway = [o for o in shown if PARTWAY.search(o["data"]["text/plain"])]
    assert halfway and halfway[0]["data"]["text/plain"].startswith("Starting a share of this Jupyter server: ")
    assert "<progress" in halfway[0]["data"]["text/html"]
    assert any("(100%), done" in o["data"]["text/plain"] for o in shown)
    # the share's widget took the progress' place
    assert "application/vnd.jupyter.widget-view+json" in result["outputs"][-1]["data"]
    assert result["outputs"][-1]["type"] == "update_display_data"
    assert fresh_machine["path"].read_bytes().startswith(b"#!/bin/sh\nexec ")
    assert leftovers(fresh_machine["path"].parent) == []
    assert visitor(share_links(notebook)["edit"]).reaches_jupyter()


def test_a_stalled_download_ends_in_one_line_and_leaves_nothing_behind(fresh_machine, cdn, jupyter, owner) -> None:
    archive = agent_archive(agent_script(padding=200_000))
    fake = cdn(archive, pause_at=len(archive) // 3)
    notebook = owner(jupyter())
    notebook.run("%load_ext share_magic\n%config ShareMagics.download_stall = 2")
    result = notebook.execute("%share")
    assert fake.paused.is_set()
    assert_one_calm_line(result, "not installed", "it stalled: nothing arrived for 2 s", "PYNGROK_NGROK_PATH",
                         "https://ngrok.com/download", str(fresh_machine["path"]))
    assert not fresh_machine["path"].exists()
    assert leftovers(fresh_machine["path"].parent) == []
    wait_for(lambda: not share_processes(), 10, "nothing left running after a stalled download")
    assert "Share failed: The ngrok agent is not installed" in notebook.run("%share status")


def test_an_old_agent_the_user_installed_gets_one_line_within_seconds(sandbox, jupyter, owner) -> None:
    notebook = owner(jupyter())
    # A start timeout longer than the test's own: the line comes from the version check, not from waiting on the
    # agent (pyngrok 9 would wait on an old agent's missing /api/endpoints until that timeout).
    notebook.run(f"%load_ext share_magic\nimport os; os.environ['STANDIN_NGROK_VERSION'] = '{OLD}'\n"
                 "%config ShareMagics.startup_timeout = 3600")
    result = notebook.execute("%share", timeout=240)
    assert_one_calm_line(result, f"{sandbox['PYNGROK_NGROK_PATH']} is version {OLD}", "needs ngrok 3.30.0 or later",
                         f"`{sandbox['PYNGROK_NGROK_PATH']} update`")
    assert not share_processes()


def test_an_old_stand_in_has_no_endpoints_api_as_an_old_agent(sandbox) -> None:
    """So pyngrok 9 never sees it healthy, as with a real agent before 3.30.0 (it would wait on it forever)."""
    import subprocess

    import requests

    agent = subprocess.Popen([sandbox["PYNGROK_NGROK_PATH"], "start", "--none", "--log", "stdout", "--authtoken",
                              sandbox["NGROK_AUTHTOKEN"]],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "STANDIN_NGROK_VERSION": OLD})
    try:
        assert agent.stdout is not None
        # the address it serves on, not the one it warns it could not bind (4040, when another agent holds it)
        address = wait_for(lambda: re.search(r"starting web service.* addr=(\S+)", agent.stdout.readline()), 30,
                           "the web address")[1]
        with requests.Session() as http:
            http.trust_env = False
            assert http.get(f"http://{address}/api/endpoints", timeout=5).status_code == 404
            assert http.get(f"http://{address}/api/tunnels", timeout=5).json()["tunnels"] == []
    finally:
        agent.kill()
        agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()


def test_pyngroks_own_old_agent_is_replaced_showing_progress(fresh_machine, cdn, jupyter, owner, visitor) -> None:
    path = fresh_machine["path"]
    path.parent.mkdir(parents=True)
    path.write_bytes(agent_script(OLD))
    path.chmod(0o700)
    fake = cdn(agent_archive(agent_script()))
    notebook = owner(jupyter())
    result = notebook.execute("%load_ext share_magic\n%share")
    assert result["error"] is None and not result["stderr"], (result["error"], result["stderr"])
    assert len(fake.requests) == 1
    assert outputs_with(result, f"Updating the ngrok agent from {OLD}")
    assert b"STANDIN_NGROK_VERSION" not in path.read_bytes()
    assert leftovers(path.parent) == []
    assert visitor(share_links(notebook)["edit"]).reaches_jupyter()


USER_CONFIG = """version: "3"
agent:
  log_format: json
  log_level: warn
  web_addr: false
  console_ui: true
  api_key: an-api-key-no-share-needs
  remote_management: true
  a_field_of_a_later_agent: 1
  connect_timeout: 30s
  crl_noverify: true
endpoints:
  - name: mine
    upstream:
      url: 8080
"""


def test_only_what_a_share_needs_is_taken_from_the_users_ngrok_config(sandbox, jupyter, owner, visitor) -> None:
    config = Path(sandbox["XDG_CONFIG_HOME"]) / "ngrok" / "ngrok.yml"
    config.parent.mkdir(parents=True)
    config.write_text(USER_CONFIG)
    notebook = owner(jupyter())
    result = notebook.execute("%load_ext share_magic\n%share")
    assert result["error"] is None and not result["stderr"], (result["error"], result["stderr"])
    assert visitor(share_links(notebook)["edit"]).reaches_jupyter()
    agents = list((Path(sandbox["STANDIN_NGROK_STATE"]) / "agents").glob("*.json"))
    read = json.loads(agents[0].read_text())["config"]
    assert read == {"version": "3", "agent": {"authtoken": sandbox["NGROK_AUTHTOKEN"], "connect_timeout": "30s",
                                              "crl_noverify": True, "inspect_db_size": -1}}


BAD_CONFIGS = [
    ("not YAML", 'version: "3"\nagent:\n  authtoken: [unclosed\n', ["is not valid YAML"]),
    ("a proxy without a scheme", 'version: "3"\nagent:\n  proxy_url: proxy.example:3128\n',
     ["sets agent.proxy_url: 'proxy.example:3128'", "not a proxy URL"]),
    ("a missing certificate file", 'version: "3"\nagent:\n  connect_cas: /nowhere/ca.pem\n',
     ["sets agent.connect_cas: '/nowhere/ca.pem'", "certificate file that exists"]),
    ("a version 2 config's name", "version: 2\nroot_cas: /nowhere/ca.pem\n", ["sets root_cas: '/nowhere/ca.pem'"]),
    ("an authtoken that is no text", 'version: "3"\nagent:\n  authtoken: 12345\n',
     ["sets agent.authtoken: ****", "is not text"]),
]


def test_a_setting_the_agent_would_refuse_gets_one_line_naming_it(sandbox, jupyter, owner) -> None:
    config = Path(sandbox["XDG_CONFIG_HOME"]) / "ngrok" / "ngrok.yml"
    config.parent.mkdir(parents=True)
    notebook = owner(jupyter())
    notebook.run("%load_ext share_magic")
    for case, text, expected in BAD_CONFIGS:
        config.write_text(text)
        line = assert_one_calm_line(notebook.execute("%share"), str(config), "ngrok config check", *expected)
        assert "12345" not in line, case
        assert not share_processes(), case


def test_a_download_that_is_no_current_agent_is_never_put_in_place(fresh_machine, cdn, jupyter, owner) -> None:
    cdn(agent_archive(agent_script(OLD)))
    notebook = owner(jupyter())
    result = notebook.execute("%load_ext share_magic\n%share")
    assert_one_calm_line(result, "does not run as ngrok 3.30.0 or later", f"said {OLD}", "PYNGROK_NGROK_PATH")
    assert not fresh_machine["path"].exists()
    assert leftovers(fresh_machine["path"].parent) == []
    assert not share_processes()
