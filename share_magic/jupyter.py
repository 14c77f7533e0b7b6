"""How to talk to a Jupyter server (both sides): its address, its REST API with its token, its login cookie, and
Jupyter's runtime folder. Standard library only: this runs inside the user's kernel too, which may not have
jupyter_server installed.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import quote

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


def runtime_dir() -> str:
    from jupyter_core.paths import jupyter_runtime_dir

    return jupyter_runtime_dir()
