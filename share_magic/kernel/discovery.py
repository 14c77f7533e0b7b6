"""Which Jupyter server launched this kernel (kernel side).

The kernel's environment names its launcher (``JPY_PARENT_PID``); the server describes itself in
``jpserver-<pid>.json`` (``nbserver-<pid>.json`` for classic Notebook) in Jupyter's runtime folder. A runtime file
can be stale or belong to another server, so a candidate only counts once it answers ``GET api/kernels/<id>`` for
this kernel's id with its token. Everything here uses the standard library: importing ``jupyter_server.serverapp``
would cost seconds.
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys
from urllib.parse import urlsplit

from ..errors import ServerNotFound, UnsupportedPlatform
from ..jupyter import JupyterServer, connectable, runtime_dir
from ..processes import pid_alive

NO_SERVER = ("%share found no Jupyter server running this kernel (VS Code, PyCharm, jupyter console run kernels "
             "without one); an editing share needs one: open the notebook in JupyterLab (`jupyter lab`) and %share "
             "there, or name a server: %share --port 8888. Here, %share --view shares it as saved and as you run it.")


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
    raise ServerNotFound(NO_SERVER)


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
