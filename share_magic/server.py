"""Which Jupyter server launched this kernel, and how to talk to it.

The kernel's environment names its launcher (``JPY_PARENT_PID``); the server describes itself in
``jpserver-<pid>.json`` (``nbserver-<pid>.json`` for classic Notebook) in Jupyter's runtime folder. A runtime file
can be stale or belong to another server, so a candidate only counts once it answers ``GET api/kernels/<id>`` for
this kernel's id with its token. Everything here uses the standard library: it runs inside the user's kernel, which
may not have jupyter_server installed, and importing ``jupyter_server.serverapp`` would cost seconds.
"""
from __future__ import annotations

import glob
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import sys
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from .errors import ServerNotFound, UnsupportedPlatform

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class JupyterServer:
    """A Jupyter server as this machine can reach it."""

    scheme: str  # "http" or "https"
    host: str  # an address to connect to (never 0.0.0.0 or ::)
    port: int  # 0 for a unix-socket server
    base_url: str  # always starts and ends with "/", kept percent-encoded exactly as the server routes it
    token: str = ""
    pid: int | None = None
    sock: str = ""  # unix socket path, when the server listens on one
    ui: str = "lab"  # "lab", "tree" (Notebook 7) or "classic" (Notebook < 7)
    root_dir: str = ""  # the folder notebook paths are relative to, when the runtime file says

    @property
    def host_header(self) -> str:
        """The Host the server accepts as local (it refuses any other unless remote access is allowed)."""
        if self.sock:
            return "localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host_header}"

    @property
    def url(self) -> str:
        return self.origin + self.base_url

    def page_path(self, notebook_path: str | None) -> str:
        """The path, below base_url, of the page that opens ``notebook_path`` in the UI the owner uses."""
        if self.ui == "lab":
            return "lab/tree/" + quote(notebook_path) if notebook_path else "lab"
        return "notebooks/" + quote(notebook_path) if notebook_path else "tree"

    def tls_context(self) -> ssl.SSLContext | None:
        """TLS settings for talking to this server: verification is off only for loopback (self-signed certs)."""
        if self.scheme != "https":
            return None
        if is_loopback(self.host):
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context()

    def request(self, method: str, path: str, *, authenticated: bool = True, timeout: float = 5,
                body: str | None = None) -> tuple[int, bytes]:
        """A small synchronous request to the server, straight over loopback; ``path`` is below base_url."""
        status, data, _ = self.exchange(method, path, authenticated=authenticated, timeout=timeout, body=body)
        return status, data

    def login_cookie(self) -> str | None:
        """A login cookie (``name=value``) for a new Jupyter user, got with the server's token; None without a
        token. Jupyter sets it on any token-authenticated response."""
        if not self.token:
            return None
        status, _, headers = self.exchange("GET", "api/status")
        cookies = [value.split(";", 1)[0].strip() for value in headers.get_all("Set-Cookie") or []]
        return next((cookie for cookie in cookies if not cookie.startswith("_xsrf=")), None) if status == 200 \
            else None

    def named_login_cookie(self, name: str) -> str | None:
        """A login cookie (``name=value``) for a new Jupyter user called ``name``; None where the server cannot name
        users (jupyter_server < 2.17 has no ``PATCH api/me``) or has no token. A token-authenticated PATCH without
        a cookie mints a new user, already named, in one step."""
        if not self.token:
            return None
        initials = "".join(word[0] for word in name.replace("@", " ").split()[:2]).upper() or None
        body = json.dumps({"name": name, "display_name": name, "initials": initials})
        try:
            status, _, headers = self.exchange("PATCH", "api/me", body=body)
        except OSError:
            return None
        cookies = [value.split(";", 1)[0].strip() for value in headers.get_all("Set-Cookie") or []]
        return next((cookie for cookie in cookies if not cookie.startswith("_xsrf=")), None) if status == 200 \
            else None

    def exchange(self, method: str, path: str, *, authenticated: bool = True, timeout: float = 5,
                 body: str | None = None) -> tuple[int, bytes, http.client.HTTPMessage]:
        """:meth:`request`, with the response's headers too."""
        headers = {"Host": self.host_header}
        if authenticated and self.token:
            headers["Authorization"] = f"token {self.token}"
        conn: http.client.HTTPConnection
        if self.sock:
            conn = _UnixHTTPConnection(self.sock, timeout=timeout)
        elif self.scheme == "https":
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.tls_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, self.base_url + path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(), response.headers
        finally:
            conn.close()

    def has_authentication(self) -> bool:
        """Probe: a server without token or password lists its kernels to anyone.

        The runtime file's ``password`` field cannot be trusted (it reads false for modern password setups).
        """
        status, _ = self.request("GET", "api/kernels", authenticated=False)
        return status != 200

    def has_collaboration(self) -> bool | None:
        """Whether jupyter-collaboration (real-time co-editing) runs on the server; None if it cannot be told."""
        try:  # its session endpoint takes PUT only: a GET is 405 where it exists, 404 where it does not
            status, _ = self.request("GET", "api/collaboration/session/share_magic-probe", timeout=3)
        except OSError:
            return None
        return {405: True, 404: False}.get(status)

    def owns_kernel(self, kernel_id: str) -> bool | None:
        """Whether this server runs the kernel ``kernel_id``; None when it cannot be asked (no token)."""
        try:
            status, _ = self.request("GET", f"api/kernels/{quote(kernel_id)}", timeout=3)
        except OSError:
            return False
        if status == 403 and not self.token:
            return None
        return status == 200

    def notebook_path(self, kernel_id: str | None) -> str | None:
        """The current path (relative to the server's root) of the notebook using this kernel, if any."""
        if not kernel_id:
            return None
        try:
            status, body = self.request("GET", "api/sessions")
        except OSError:
            return None
        if status == 403 and not self.token:  # cannot ask (password login): what the server told the kernel
            return self._path_from_session_name()
        if status != 200:
            return None
        for session in json.loads(body):
            if (session.get("kernel") or {}).get("id") == kernel_id:
                return session.get("path") or (session.get("notebook") or {}).get("path")
        return None

    def _path_from_session_name(self) -> str | None:
        """``JPY_SESSION_NAME`` is the notebook's absolute path when the kernel started (stale after a rename)."""
        name, root = os.environ.get("JPY_SESSION_NAME", ""), self.root_dir
        if not (name and root and os.path.isabs(name)):
            return None
        relative = os.path.relpath(name, root)
        return None if relative.startswith("..") else relative.replace(os.sep, "/")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def connectable(host: str) -> str:
    """The address to reach a server listening on ``host``: its loopback one when it listens on every interface."""
    if host in ("0.0.0.0", "", "*", "localhost"):
        return "127.0.0.1"
    return "::1" if host == "::" else host


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_platform(environ: os._Environ[str] | dict[str, str] = os.environ) -> None:
    """Refuse places where a tunnel to the kernel's server cannot work or breaks the platform's rules."""
    if "COLAB_RELEASE_TAG" in environ or "google.colab" in sys.modules:
        raise UnsupportedPlatform(
            "%share cannot share a Google Colab notebook: Colab runs the notebook on Google's servers, not on a "
            "Jupyter server of yours. Use Colab's own Share button instead."
        )
    if "KAGGLE_KERNEL_RUN_TYPE" in environ:
        raise UnsupportedPlatform(
            "%share does not run on Kaggle: Kaggle ends sessions that open tunnels. Share the notebook from "
            "Kaggle's own Share / Collaborators menu instead."
        )
    if "JUPYTERHUB_API_URL" in environ or "JUPYTERHUB_SERVICE_PREFIX" in environ or "BINDER_SERVICE_HOST" in environ \
            or "BINDER_REPO_URL" in environ:
        raise UnsupportedPlatform(
            "%share cannot share a JupyterHub or Binder server: the hub's own login does not work through a "
            "tunnel. Use the hub's sharing instead (JupyterHub 5: File > Share, or ask your admin)."
        )
    if any(key.startswith("VOILA_") for key in environ):
        raise UnsupportedPlatform(
            "%share cannot share a Voilà dashboard's kernel: Voilà serves a read-only app, not a Jupyter server. "
            "Deploy the dashboard, or run the notebook in JupyterLab and %share it there."
        )


def runtime_dir() -> str:
    from jupyter_core.paths import jupyter_runtime_dir

    return jupyter_runtime_dir()


def read_runtime_file(path: str) -> JupyterServer | None:
    """A server description from ``jpserver-<pid>.json`` / ``nbserver-<pid>.json``; None if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    classic = os.path.basename(path).startswith("nbserver-")
    url = urlsplit(info.get("url") or "")
    host = connectable(info.get("hostname") or url.hostname or "localhost")
    base_url = info.get("base_url") or "/"
    return JupyterServer(
        scheme="https" if info.get("secure") else "http",
        host=host,
        port=int(info.get("port") or 0),
        base_url=_slashed(base_url),
        token=info.get("token") or "",
        pid=info.get("pid"),
        sock=info.get("sock") or "",
        ui="classic" if classic else _default_ui(path, base_url),
        root_dir=info.get("root_dir") or info.get("notebook_dir") or "",
    )


def _default_ui(runtime_file: str, base_url: str) -> str:
    """The UI the server opens by default, from the only file that records it: ``jpserver-<pid>-open.html``."""
    try:
        with open(runtime_file[: -len(".json")] + "-open.html", encoding="utf-8") as f:
            match = re.search(r'url=([^"\s]+)"', f.read())
    except OSError:
        return "lab"
    if match:
        path = urlsplit(match.group(1)).path
        page = path[len(base_url):] if path.startswith(base_url) else path.lstrip("/")
        if page.startswith("tree") or page.startswith("notebooks"):
            return "tree"
    return "lab"


def _slashed(path: str) -> str:
    return "/" + path.strip("/") + "/" if path.strip("/") else "/"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runtime_servers() -> list[tuple[str, JupyterServer]]:
    folder = runtime_dir()
    found = []
    for path in glob.glob(os.path.join(folder, "jpserver-*.json")) + glob.glob(os.path.join(folder, "nbserver-*.json")):
        server = read_runtime_file(path)
        if server is not None and pid_alive(server.pid):
            found.append((path, server))
    return found


def kernel_id() -> str | None:
    """This kernel's id, from its connection file name (``kernel-<id>.json``)."""
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # not running inside an ipykernel
        return None
    match = re.match(r"kernel-(.+)\.json$", name)
    return match.group(1) if match else None


def find_server(kernel: str | None) -> JupyterServer:
    """The server that launched the kernel ``kernel``, confirmed over its REST API."""
    check_platform()
    candidates = _runtime_servers()
    parent = os.environ.get("JPY_PARENT_PID", "")
    candidates.sort(key=lambda item: str(item[1].pid) != parent)  # the launcher first
    if kernel:
        for _, server in candidates:
            owns = server.owns_kernel(kernel)
            # A server without a token (password login) cannot be asked; then only the launcher's own runtime
            # file counts: its pid is JPY_PARENT_PID, which that server set for this kernel.
            if owns or (owns is None and str(server.pid) == parent):
                return server
    raise ServerNotFound(
        "%share found no Jupyter server running this kernel: it was started by something else (VS Code, PyCharm, "
        "jupyter console, a script) or the server's runtime file is not readable here. To share a server you run "
        "yourself, name it: %share --port 8888 (or %share --url http://localhost:8888/)."
    )


def server_at(url: str | None = None, port: int | None = None, token: str | None = None) -> JupyterServer:
    """The server the user named with ``--url`` or ``--port``; its token comes from ``token``, then
    ``JUPYTER_TOKEN``, then the runtime file of the server listening there."""
    if url:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerNotFound(f"%share --url {url!r} is not a Jupyter server URL. Use e.g. "
                                 "%share --url http://localhost:8888/")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ServerNotFound(
                f"%share --url {url!r} has a bad port. Use e.g. %share --url http://localhost:8888/") from None
        scheme, host, base_url = parts.scheme, parts.hostname, _slashed(parts.path)
    else:
        scheme, host, base_url = "http", "127.0.0.1", ""
    host = connectable(host)
    known = next((s for _, s in _runtime_servers() if s.port == port and (not base_url or s.base_url == base_url)),
                 None)
    if known is not None:
        scheme = known.scheme if not url else scheme
        base_url = base_url or known.base_url
    server = JupyterServer(
        scheme=scheme,
        host=host,
        port=int(port or 0),
        base_url=base_url or "/",
        token=token or os.environ.get("JUPYTER_TOKEN") or (known.token if known else ""),
        pid=known.pid if known else None,
        ui=known.ui if known else "lab",
        root_dir=known.root_dir if known else "",
    )
    where = url or f"port {port}"
    try:
        status, body = server.request("GET", "api", authenticated=False)
        if status == 200 and b'"version"' in body and server.token:
            status, _ = server.request("GET", "api/status")
            if status == 403:
                raise ServerNotFound(f"The token given for {where} is not accepted by that server. Pass the right "
                                     "one with --token, or leave it out to use the one `jupyter server list` shows.")
        elif status != 200 or b'"version"' not in body:
            raise ServerNotFound(f"What answers at {where} is not a Jupyter server (GET api gave {status}). Check "
                                 "the port and base URL with: jupyter server list")
    except OSError as e:
        raise ServerNotFound(f"%share could not reach a Jupyter server at {where} ({e.strerror or e}). Check that "
                             "it is running, and its port, with: jupyter server list") from None
    return server
