"""Real parts for end-to-end tests and benchmarks: Jupyter servers and kernels in subprocesses, the stand-in ngrok
agent (``standin_ngrok.py``) on PYNGROK_NGROK_PATH, and visitors that reach a server only through a public link."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
import websocket

HERE = Path(__file__).parent
# ngrok's free dev domains (older accounts .app), its paid ones, and a custom domain of the tests' own
PUBLIC_SUFFIXES = (".ngrok-free.app", ".ngrok-free.dev", ".ngrok.app", ".ngrok.dev", ".notebooks.example.org")
AUTHTOKEN = "2standinAuthtoken_0123456789abcdef"
UNVERIFIED_TLS = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}  # self-signed: the stand-in's, a TLS server's
CHROMIUM = "/usr/bin/chromium"  # Debian's; never a downloaded browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# A visitor's browser: the stand-in's public names resolve to loopback.
VISITOR_ARGS = [*CHROMIUM_ARGS, "--host-resolver-rules=" + ", ".join(f"MAP *{suffix} 127.0.0.1"
                                                                    for suffix in PUBLIC_SUFFIXES)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def share_processes() -> list[int]:
    """Every process a share of this test starts: the helper, its lifeline and the (stand-in) ngrok agent."""
    return processes_with("share_magic.helper") + processes_with("share_magic.lifeline") + processes_with(
        "standin_ngrok.py")


def end_shares() -> None:
    """After a sandbox's servers and kernels are gone: wait for their shares to end by themselves, kill whatever did
    not, and collect garbage so that a socket left open is reported (as a ResourceWarning) here, not later."""
    import gc

    try:
        wait_for(lambda: not share_processes(), 10, "share processes to end after their kernels")
    finally:
        for pid in share_processes():
            os.kill(pid, signal.SIGKILL)
        gc.collect()


def processes_with(marker: str) -> list[int]:
    """Pids of live (non-zombie) processes of this test whose command line contains ``marker``. A process is this
    test's when it runs in the test's sandbox (its environment names the sandbox's Jupyter runtime folder), so
    that a developer's own live share on the same machine is never counted, let alone killed."""
    sandbox = f"JUPYTER_RUNTIME_DIR={os.environ['JUPYTER_RUNTIME_DIR']}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker not in cmdline:
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            environment = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if state != "Z" and sandbox in environment:
            found.append(int(entry))
    return found


def edge_meter(state: str | Path) -> dict[str, Any]:
    """What the running stand-in agent's edge billed so far: requests, bytes sent to visitors, the recent request
    lines. ``state`` is the sandbox's STANDIN_NGROK_STATE folder."""
    agent = json.loads((Path(state) / "agents" / f"{processes_with('standin_ngrok.py')[0]}.json").read_text())
    return requests.get(f"http://{agent['web_addr']}/api/standin/meter", timeout=5).json()


def command_lines(pids: list[int]) -> str:
    """The command lines of these processes, as any local user can read them."""
    lines = []
    for pid in pids:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return "\n".join(lines)


def resolve_public_names(patch: pytest.MonkeyPatch) -> None:
    """Resolve the stand-in's public host names to loopback in this test process, as a browser's
    --host-resolver-rules would: everything else about the visitor's connection is real."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(PUBLIC_SUFFIXES):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    patch.setattr(socket, "getaddrinfo", getaddrinfo)


@contextlib.contextmanager
def module_sandbox(folder: Path) -> Iterator[None]:
    """conftest's sandbox and public names, for a module-scoped fixture (its shares ended when it ends)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in sandbox_environment(folder).items():
            patch.setenv(key, value)
        for key in ("JPY_PARENT_PID", "JUPYTER_TOKEN", "JPY_SESSION_NAME"):
            patch.delenv(key, raising=False)
        resolve_public_names(patch)
        try:
            yield
        finally:
            end_shares()


def sandbox_environment(folder: Path) -> dict[str, str]:
    """Environment for one isolated run: a private HOME, Jupyter runtime/config folders, ngrok config and
    stand-in state; the stand-in agent on PYNGROK_NGROK_PATH and an authtoken in NGROK_AUTHTOKEN, as a user
    would have them."""
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    agent = folder / "bin" / "ngrok"
    agent.parent.mkdir(exist_ok=True)
    agent.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'standin_ngrok.py'} \"$@\"\n")
    agent.chmod(0o755)
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
        "JUPYTER_CONFIG_DIR": str(folder / "jupyter-config"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYNGROK_NGROK_PATH": str(agent),
        "NGROK_AUTHTOKEN": AUTHTOKEN,
        "STANDIN_NGROK_STATE": str(folder / "ngrok-service"),
    }


def trust_edge(environment: dict[str, str]) -> None:
    """Make browsers of this sandbox trust the stand-in edge's certificate, as browsers trust ngrok's: an NSS store
    in the sandbox's HOME (where Chromium looks), holding the account's certificate (made now if no agent has made
    it yet). Service workers need it: a browser registers none from an origin whose certificate it does not trust."""
    from standin_ngrok import Service, edge_certificate

    saved = {name: os.environ.get(name) for name in ("STANDIN_NGROK_STATE",)}
    os.environ["STANDIN_NGROK_STATE"] = environment["STANDIN_NGROK_STATE"]
    try:
        cert, _ = edge_certificate(Service(AUTHTOKEN))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    store = Path(environment["HOME"]) / ".pki" / "nssdb"
    store.mkdir(parents=True, exist_ok=True)
    if not (store / "cert9.db").exists():
        subprocess.run(["certutil", "-N", "-d", f"sql:{store}", "--empty-password"], check=True,
                       capture_output=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{store}", "-n", "standin-edge", "-t", "C,,", "-i", cert],
                   check=True, capture_output=True)


def open_notebook(server: JupyterServer, name: str = "shared.ipynb") -> KernelClient:
    """Open a notebook on ``server`` (a kernel through the sessions API) and connect to its kernel as the owner."""
    return connect_kernel(server, server.new_notebook(name))


def connect_kernel(server: JupyterServer, kernel_id: str) -> KernelClient:
    """Connect to a running kernel of ``server`` as the owner: a front-end of its own, beside any other."""
    ws_url = server.url.replace("http", "ws", 1) + f"api/kernels/{kernel_id}/channels"

    def connect() -> websocket.WebSocket:
        cookies = "; ".join(f"{c.name}={c.value}" for c in server.session.cookies)
        return websocket.create_connection(ws_url, timeout=60, header=[f"Authorization: token {server.token}"],
                                           cookie=cookies, sslopt=UNVERIFIED_TLS)

    client = KernelClient(connect(), connect)
    client.kernel_id = kernel_id  # type: ignore[attr-defined]
    return client


def restart_kernel(server: JupyterServer, client: KernelClient) -> None:
    """Restart ``client``'s kernel through Jupyter's API, then connect again, as JupyterLab does: a connection made
    before the restart may miss the new kernel's first messages (its iopub not yet joined again), and a run that
    loses its idle status would be waited on forever."""
    assert server.api("POST", f"api/kernels/{client.kernel_id}/restart").ok  # type: ignore[attr-defined]
    client.reconnect()


class JupyterServer:
    """A real Jupyter server in its own process group: ``app`` is jupyter_server (JupyterLab installed),
    jupyterlab or notebook (Notebook 7, whose default page is /tree)."""

    def __init__(self, root: Path, base_url: str = "/", token: str | None = None, extra: list[str] = (),
                 tls: bool = False, app: str = "jupyter_server", password: str | None = None,
                 log_requests: bool = False, shell: str | None = None) -> None:
        self.root = root
        if log_requests:  # every request it answers, in its log: what reached Jupyter can be told from there
            extra = [*extra, "--ServerApp.log_level=DEBUG"]
        self.password = password
        if password is not None:  # password login only, the way `jupyter server password` sets it up
            from jupyter_server.auth import passwd

            token = ""
            extra = [*extra, f"--PasswordIdentityProvider.hashed_password={passwd(password)}"]
        root.mkdir(parents=True, exist_ok=True)
        self.scheme = "https" if tls else "http"
        if tls:  # a self-signed certificate, as people make for their own machine
            from standin_ngrok import make_certificate

            certfile, keyfile = make_certificate("localhost", str(root.parent))
            extra = [*extra, f"--ServerApp.certfile={certfile}", f"--ServerApp.keyfile={keyfile}"]
        self.base_url = base_url
        self.token = token if token is not None else uuid.uuid4().hex
        self.port = free_port()
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=False
        self.session.verify = False
        self.log_path = root.parent / f"server-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", app, "--no-browser", "--allow-root", f"--port={self.port}",
             "--ServerApp.port_retries=0", f"--ServerApp.base_url={base_url}", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", *extra],
            stdout=subprocess.DEVNULL, stderr=self.log,
            env=os.environ if shell is None else {**os.environ, "SHELL": shell},  # what its terminals run
            cwd=root.parent,  # files a server leaves in its working folder (jupyter-collaboration's) stay here
            start_new_session=True)
        runtime = Path(os.environ["JUPYTER_RUNTIME_DIR"]) / f"jpserver-{self.process.pid}.json"
        try:
            wait_for(lambda: runtime.exists() and runtime.stat().st_size > 0 and self._ready(), 60, "jupyter server")
        except BaseException:  # whatever went wrong, the caller never gets this server to stop: stop it here
            self.stop()
            raise
        self.url = f"{self.scheme}://127.0.0.1:{self.port}{base_url}"

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"jupyter server exited: {self.process.returncode}")
        try:
            return self.session.get(f"{self.scheme}://127.0.0.1:{self.port}{self.base_url}api", timeout=2).ok
        except requests.RequestException:
            return False

    def saw(self, text: str) -> bool:
        """Whether the server's log mentions ``text`` (with log_requests: the target of every request it got)."""
        return text in self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        if self.token:
            headers = {"Authorization": f"token {self.token}"}
        else:  # a password, or no authentication at all: cookies, and the _xsrf token for state changes
            if "_xsrf" not in self.session.cookies:
                self.session.get(self.url + "login", timeout=10)
                if self.password is not None:
                    self.session.post(self.url + "login", timeout=10, data={
                        "password": self.password, "_xsrf": self.session.cookies.get("_xsrf", "")})
            headers = {"X-XSRFToken": self.session.cookies.get("_xsrf", "")}
        return self.session.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def new_notebook(self, name: str) -> str:
        """A notebook with a kernelspec, and a kernel for it started through the sessions API: like opening it."""
        notebook = {"cells": [], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                             "language": "python"}},
                    "nbformat": 4, "nbformat_minor": 5}
        (self.root / name).write_text(json.dumps(notebook))
        response = self.api("POST", "api/sessions", json={"path": name, "type": "notebook", "name": name,
                                                           "kernel": {"name": "python3"}})
        response.raise_for_status()
        return response.json()["kernel"]["id"]

    def stop(self) -> None:
        kill_group(self.process)
        self.log.close()
        self.session.close()


def close_websocket(ws: websocket.WebSocket) -> None:
    """Close a websocket-client socket for good. Its ``close()`` does nothing once the peer's close frame has been
    answered (``connected`` is already false), which leaves the socket itself open until garbage collection."""
    ws.close()
    ws.shutdown()


def receive(ws: websocket.WebSocket, deadline: float, awaited: str) -> str | bytes:
    """The next message on ``ws``, or a failure naming ``awaited`` at ``deadline`` (a time.monotonic()). recv() alone
    would wait past any timeout while the server pings: each ping answered starts its wait again."""
    while (left := deadline - time.monotonic()) > 0:
        ws.settimeout(left)
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            break
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return data.decode()
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return data
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ConnectionError(f"the websocket closed while waiting for {awaited}")
    raise AssertionError(f"gave up waiting for {awaited}")


class KernelClient:
    """Runs code in a kernel over a websocket to its server's channels endpoint, as a front-end does."""

    def __init__(self, ws: websocket.WebSocket, connect: Callable[[], websocket.WebSocket] | None = None) -> None:
        self.ws = ws
        self.connect = connect
        self.session = uuid.uuid4().hex

    def reconnect(self) -> None:
        """A new websocket to the same kernel in place of this one, which is closed."""
        assert self.connect is not None, "a kernel client made from a websocket alone cannot connect again"
        fresh = self.connect()
        close_websocket(self.ws)
        self.ws = fresh

    def submit(self, code: str) -> str:
        """Send code to run; return the request id to :meth:`collect` its outputs with."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": self.session,
                       "date": "2026-01-01T00:00:00Z", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        return msg_id

    def collect(self, msg_id: str, timeout: float = 90, replied: bool = False) -> dict[str, Any]:
        """Everything the kernel sent in answer to ``msg_id`` until it is idle (and has replied, unless
        ``replied``: a comm message gets no reply)."""
        result: dict[str, Any] = {"text": "", "stdout": "", "stderr": "", "error": None, "bundles": [],
                                  "payload": [], "messages": [], "outputs": []}
        deadline = time.monotonic() + timeout
        idle = False
        while not (idle and replied):
            raw = receive(self.ws, deadline, f"the kernel's answer to {msg_id}")
            message = json.loads(raw)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            result["messages"].append(raw)  # everything the front-end got: outputs, widget comm messages
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                result[content["name"]] += content["text"]
            if kind in ("display_data", "execute_result", "update_display_data"):  # with their metadata
                result["outputs"].append({"type": kind, "data": content["data"], "metadata": content["metadata"]})
            if kind in ("display_data", "execute_result"):
                result["bundles"].append(content["data"])
                result["text"] += content["data"].get("text/plain", "") + "\n"
            elif kind == "error":
                result["error"] = content
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
            elif kind == "execute_reply":
                result["payload"] = content.get("payload", [])
                replied = True
        return result

    def execute(self, code: str, timeout: float = 90) -> dict[str, Any]:
        return self.collect(self.submit(code), timeout)

    def comm_send(self, comm_id: str, data: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """Send a widget's kernel side a comm message, as its front-end does; collect what the kernel sent back."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "comm_msg", "username": "test", "session": self.session,
                       "date": "2026-01-01T00:00:00Z", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"comm_id": comm_id, "data": data},
        }))
        return self.collect(msg_id, timeout, replied=True)

    def run(self, code: str, timeout: float = 90) -> str:
        """Run code that must succeed; return its stdout."""
        result = self.execute(code, timeout)
        assert result["error"] is None and "Error" not in result["stderr"], (result["error"], result["stderr"])
        return result["stdout"]

    def close(self) -> None:
        close_websocket(self.ws)


class PlainKernel:
    """A kernel started by jupyter_client alone, with no Jupyter server behind it (like VS Code or a script)."""

    def __init__(self) -> None:
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=dict(os.environ))
        self.client = self.manager.client()
        try:
            self.client.start_channels()
            self.client.wait_for_ready(60)
        except BaseException:  # the fixture never gets a kernel that failed to come up: stop it here
            self.stop()
            raise

    def execute(self, code: str, timeout: float = 90) -> dict[str, Any]:
        result: dict[str, Any] = {"text": "", "stdout": "", "stderr": "", "error": None}

        def hook(message: dict[str, Any]) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                result[content["name"]] += content["text"]
            elif kind in ("display_data", "execute_result"):
                result["text"] += content["data"].get("text/plain", "") + "\n"
            elif kind == "error":
                result["error"] = content

        self.client.execute_interactive(code, output_hook=hook, timeout=timeout)
        return result

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


LINK_LABELS = {"Anyone with this link": "edit"}


def share_links(kernel: KernelClient) -> dict[str, str]:
    """The live links ``%share links`` prints in ``kernel``: ``edit``, ``view`` and each invited person's name."""
    result = kernel.execute("%share links")
    assert result["error"] is None, result["error"]
    links = {}
    for line in result["text"].splitlines():
        label, found, link = line.partition(": https://")
        if found:
            name = "view" if label.startswith("View only (") else label.removesuffix(" (personal link)")
            links[LINK_LABELS.get(label, name)] = "https://" + link
    return links


class _OwnedConnections(requests.adapters.HTTPAdapter):
    """A requests adapter that closes, on :meth:`close`, every connection its pools ever opened and every response
    it handed out.

    A pool closes only the connections that came back to it: one still checked out when the share under it died (a
    request cut mid-answer, a streamed response never read to its end) would be left to the garbage collector, and
    reported as a ResourceWarning in whatever test runs the collector next. A response marked ``Connection: close``
    (as an edge may answer) holds the only open reference to its socket: its connection has already
    let go."""

    def __init__(self) -> None:
        self.opened: list[Any] = []
        self.responses: list[Any] = []
        super().__init__()

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        self.responses.append(resp)
        return super().build_response(req, resp)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        opened = self.opened

        def owned(pool_class: type) -> type:
            class Connection(pool_class.ConnectionCls):  # type: ignore[name-defined, misc]
                def connect(self) -> None:
                    opened.append(self)
                    super().connect()

            return type(f"Owned{pool_class.__name__}", (pool_class,), {"ConnectionCls": Connection})

        self.poolmanager.pool_classes_by_scheme = {
            scheme: owned(pool_class) for scheme, pool_class in self.poolmanager.pool_classes_by_scheme.items()}

    def close(self) -> None:
        super().close()
        for response in self.responses:
            response.close()
        for connection in self.opened:
            connection.close()
        self.responses.clear()
        self.opened.clear()


class Visitor:
    """Someone on another machine: knows only the link, talks HTTPS to the public host, keeps cookies."""

    def __init__(self, link: str) -> None:
        self.link = link
        parts = requests.utils.urlparse(link)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.http = requests.Session()
        self.http.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override verify=False
        self.http.verify = False
        for prefix in ("https://", "http://"):
            self.http.mount(prefix, _OwnedConnections())
        self.websockets: list[websocket.WebSocket] = []

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 20)
        return self.http.get(self.absolute(url), **kwargs)

    def send(self, method: str, url: str, origin: str | None = None, **kwargs: Any) -> requests.Response:
        """A state-changing request as JupyterLab makes it: cookie, _xsrf token, and the page's Origin."""
        headers = {"X-XSRFToken": self.http.cookies.get("_xsrf", ""), "Origin": origin or self.origin,
                   "Referer": self.link, **kwargs.pop("headers", {})}
        return self.http.request(method, self.absolute(url), headers=headers, timeout=20, **kwargs)

    def reaches_jupyter(self, path: str = "/api") -> bool:
        """Whether the link still gets an answer from Jupyter (not a refused connection or an ngrok error)."""
        try:
            response = self.get(path, timeout=5)
        except requests.RequestException:
            return False
        return "ngrok-error-code" not in response.headers

    def absolute(self, url: str) -> str:
        return url if "://" in url else self.origin + url

    def close(self) -> None:
        """Let go of every connection this visitor opened (the share may have cut them already)."""
        for socket_ in self.websockets:
            close_websocket(socket_)
        self.http.close()

    def websocket(self, path: str, origin: str | None = None) -> websocket.WebSocket:
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)
        socket_ = websocket.WebSocket(sslopt=UNVERIFIED_TLS)
        self.websockets.append(socket_)  # before connecting: close() must reach it even if the handshake is refused
        socket_.settimeout(30)
        socket_.connect("wss://" + self.origin.split("://", 1)[1] + path, origin=origin or self.origin,
                        cookie=cookies)
        return socket_

    def kernel(self, path: str, origin: str | None = None) -> KernelClient:
        return KernelClient(self.websocket(path, origin))


