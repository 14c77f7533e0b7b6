"""%share end to end: a real server and kernel, the real pyngrok and the stand-in agent, and a visitor who reaches
the server only through the public link."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.parse

import pytest
import websocket
from harness import KernelClient, kill_group, share_links, wait_for

from share_magic.kernel.discovery import read_runtime_file

FOREIGN_ORIGIN = "https://attacker.example"


@pytest.mark.parametrize("base_url", ["/", "/a%40b/"])
def test_a_visitor_works_in_the_shared_notebook(jupyter, owner, visitor, base_url: str) -> None:
    decoy = jupyter(name="decoy")  # another server on the machine, with its own token and kernels
    owner(decoy, "decoy.ipynb")
    server = jupyter(base_url=base_url)
    (server.root / "marker-of-the-shared-server.txt").write_text("the right server")
    notebook = owner(server, "shared.ipynb")
    # Stale runtime files: a dead server's, and one whose pid now belongs to another live process.
    runtime = server.root.parent / "runtime"
    stale = {"url": f"http://localhost:{decoy.port}/", "hostname": "localhost", "port": decoy.port,
             "base_url": "/", "token": decoy.token, "secure": False, "sock": ""}
    (runtime / "jpserver-999999.json").write_text(json.dumps({**stale, "pid": 999999}))
    (runtime / f"jpserver-{os.getpid()}.json").write_text(json.dumps({**stale, "pid": os.getpid()}))
    # Make discovery try that file first, as a launcher that mislabels the kernel's parent would: only the
    # kernel-id check over REST can tell it is not this kernel's server.
    notebook.run(f"import os; os.environ['JPY_PARENT_PID'] = '{os.getpid()}'")

    result = notebook.execute("%load_ext share_magic\n%share")
    assert result["error"] is None, result["error"]
    link = share_links(notebook)["edit"]
    public = urllib.parse.urlsplit(link)
    assert public.hostname.endswith(".ngrok-free.app")
    assert public.path == f"{base_url}lab/tree/shared.ipynb"
    assert list(urllib.parse.parse_qs(public.query)) == ["share_key"]
    assert "full control" in result["text"] and "%share stop" in result["text"]
    assert server.token not in "".join(result["messages"])  # not in the text, the HTML, nor the widget's state

    guest = visitor(link)
    page = guest.get(link)
    assert page.status_code == 200 and "jupyter-config-data" in page.text
    assert page.url == link.split("?")[0]  # the key does not stay in the address bar
    assert server.token not in page.text  # JupyterLab's page config would have told it: the gateway takes it out
    # Logged in by the gateway, to the shared server and not the decoy.
    listing = guest.get(f"{base_url}api/contents")
    assert listing.status_code == 200
    assert "marker-of-the-shared-server.txt" in {item["name"] for item in listing.json()["content"]}

    # The kernel connects with the cookie only (as JupyterLab does) and runs code.
    sessions = guest.get(f"{base_url}api/sessions").json()
    kernel_id = next(s["kernel"]["id"] for s in sessions if s["path"] == "shared.ipynb")
    kernel = guest.kernel(f"{base_url}api/kernels/{kernel_id}/channels")
    ran = kernel.execute("print(6 * 7)")
    assert ran["stdout"] == "42\n"

    # Saving works: a PUT with cookie, _xsrf and the page's Origin.
    saved = guest.send("PUT", f"{base_url}api/contents/from-the-visitor.ipynb",
                       data=json.dumps({"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4,
                                                                        "nbformat_minor": 5}}))
    assert saved.status_code == 201, saved.text
    assert (server.root / "from-the-visitor.ipynb").exists()

    # Another site's page cannot ride the visitor's cookie: the server still refuses foreign origins.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        guest.websocket(f"{base_url}api/kernels/{kernel_id}/channels", origin=FOREIGN_ORIGIN)
    assert refused.value.status_code == 403
    forged = guest.send("POST", f"{base_url}api/contents", origin=FOREIGN_ORIGIN, json={"type": "notebook"})
    assert forged.status_code in (403, 404), (forged.status_code, forged.headers, forged.text)
    assert not any(p.name.startswith("Untitled") for p in server.root.iterdir())

    # Without the key, nothing (tests/test_access.py probes this in depth).
    stranger = visitor(link.split("?")[0])
    for path in ("api/contents", "api/kernels", "lab"):
        refused = stranger.get(f"{base_url}{path}")
        assert refused.status_code == 403 and "This link has ended or is not valid" in refused.text

    # %share again: the same share.
    again = notebook.execute("%share")
    assert again["error"] is None and share_links(notebook)["edit"] == link

    # Stop: the link no longer reaches Jupyter, and the visitor's open websocket is closed.
    stopped = notebook.execute("%share stop")
    assert stopped["error"] is None, stopped["error"]
    assert "stopped" in stopped["stdout"]
    kernel.ws.settimeout(10)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        while True:  # drain whatever was in flight; the close must come
            kernel.ws.recv()
    assert not guest.reaches_jupyter(f"{base_url}api/contents")


def test_status_and_stop_without_a_share(jupyter, owner) -> None:
    server = jupyter()
    notebook = owner(server)
    result = notebook.execute("%load_ext share_magic\n%share status")
    assert "Nothing is shared" in result["stdout"]
    stop = notebook.execute("%share stop")
    assert stop["stderr"].startswith("UsageError: Nothing is shared from this kernel")
    assert "Traceback" not in stop["stderr"] and stop["stderr"].count("\n") == 1


def test_the_share_is_served_while_the_kernel_is_busy(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    notebook.run("%load_ext share_magic\n%share")
    link = share_links(notebook)["edit"]
    guest = visitor(link)
    assert guest.get(link).status_code == 200
    notebook.submit("import time; time.sleep(6)")
    wait_for(lambda: server.api("GET", f"api/kernels/{notebook.kernel_id}").json()["execution_state"] == "busy",
             10, "the kernel to be busy")
    response = guest.get("/api/contents", timeout=3)
    assert response.status_code == 200


def test_a_password_server_the_visitor_logs_in_through_the_share(jupyter, owner, visitor) -> None:
    server = jupyter(password="correct horse battery")
    notebook = owner(server)
    result = notebook.execute("%load_ext share_magic\n%share")
    link = share_links(notebook)["edit"]
    assert "they also need this server's token or password" in result["text"]
    assert "/lab/tree/shared.ipynb?share_key=" in link  # found without asking the server: JPY_SESSION_NAME
    guest = visitor(link)
    login = guest.get(link)
    assert login.status_code == 200 and "/login" in login.url
    # The login form's POST carries the public Origin and Referer, as a browser's does.
    guest.send("POST", login.url, data={"password": "correct horse battery", "_xsrf": guest.http.cookies["_xsrf"]},
               headers={"Referer": login.url}, allow_redirects=False).raise_for_status()
    assert guest.get("/api/contents").status_code == 200
    sessions = guest.get("/api/sessions").json()
    kernel = guest.kernel(f"/api/kernels/{sessions[0]['kernel']['id']}/channels")
    assert kernel.execute("print('logged in by password')")["stdout"] == "logged in by password\n"
    kernel.close()
    intruder = visitor(link)
    intruder.get(link)
    refused = intruder.send("POST", login.url, data={"password": "guess", "_xsrf": intruder.http.cookies["_xsrf"]},
                            allow_redirects=False)
    assert intruder.get("/api/contents").status_code == 403, refused.status_code


@pytest.mark.parametrize("variant", ["tls-self-signed", "ip-0.0.0.0"])
def test_server_variants(jupyter, owner, visitor, variant: str) -> None:
    server = jupyter(tls=True) if variant == "tls-self-signed" else jupyter(extra=["--ip=0.0.0.0"])
    notebook = owner(server)
    notebook.run("%load_ext share_magic\n%share")
    link = share_links(notebook)["edit"]
    guest = visitor(link)
    assert guest.get(link).status_code == 200
    sessions = guest.get("/api/sessions").json()
    kernel = guest.kernel(f"/api/kernels/{sessions[0]['kernel']['id']}/channels")
    assert kernel.execute("print('hello from', 'afar')")["stdout"] == "hello from afar\n"
    kernel.close()


def test_naming_the_server_by_port_or_url(jupyter, plain_kernel, visitor, monkeypatch) -> None:
    """From a kernel no server launched: --port finds the token in the runtime file; --url takes --token."""
    server = jupyter(base_url="/a%40b/")
    result = plain_kernel.execute(f"%load_ext share_magic\n%share --port {server.port}")
    assert result["error"] is None and not result["stderr"], result
    link = share_links(plain_kernel)["edit"]
    assert "/a%40b/lab?share_key=" in link and server.token not in result["text"]
    assert visitor(link).get("/a%40b/api/contents").status_code == 403  # cookies come from opening the link
    guest = visitor(link)
    assert guest.get(link).status_code == 200 and guest.get("/a%40b/api/contents").status_code == 200
    assert "stopped" in plain_kernel.execute("%share stop")["stdout"]

    by_url = plain_kernel.execute(f"%share --url http://localhost:{server.port}/a%40b/ --token {server.token} "
                                  "--no-token")
    link = share_links(plain_kernel)["edit"]
    assert "they also need this server's token or password" in by_url["text"]
    guest = visitor(link)
    login = guest.get(link)
    assert login.status_code == 200 and "/login" in login.url  # admitted by the gate, not logged in to Jupyter
    assert guest.get("/a%40b/api/contents").status_code == 403
    guest.send("POST", login.url, data={"password": server.token, "_xsrf": guest.http.cookies["_xsrf"]},
               headers={"Referer": login.url}, allow_redirects=False).raise_for_status()
    assert guest.get("/a%40b/api/contents").status_code == 200  # knowing the token too, they get in
    plain_kernel.execute("%share stop")

    configured = plain_kernel.execute(f"%config ShareMagics.include_token = False\n%share --port {server.port}")
    assert "they also need this server's token" in configured["text"]
    plain_kernel.execute("%share stop\n%config ShareMagics.include_token = True")

    wrong = plain_kernel.execute(f"%share --url http://localhost:{server.port}/a%40b/ --token wrong")
    assert wrong["stderr"].startswith("UsageError: The token given for") and "--token" in wrong["stderr"]


def test_a_server_on_a_unix_socket(sandbox, tmp_path, visitor) -> None:
    """A server listening on a unix socket only (--sock): found from its runtime file and reached by the gateway."""
    path, token = str(tmp_path / "jupyter.sock"), "unix-token"
    (tmp_path / "root").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--sock={path}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path / 'root'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        runtime = tmp_path / "runtime" / f"jpserver-{process.pid}.json"
        wait_for(lambda: runtime.exists() and runtime.stat().st_size > 0, 60, "the unix-socket server")
        server = read_runtime_file(str(runtime))
        assert server is not None and server.sock == path and server.port == 0

        def api(method: str, route: str, body: dict | None = None) -> dict:
            status, data = server.request(method, route, body=json.dumps(body) if body else None)
            assert status < 300, (status, data)
            return json.loads(data)

        (tmp_path / "root" / "unix.ipynb").write_text(json.dumps({
            "cells": [], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
            "nbformat": 4, "nbformat_minor": 5}))
        wait_for(lambda: answers(server), 30, "the server's API")
        kernel_id = api("POST", "api/sessions", {"path": "unix.ipynb", "type": "notebook",
                                                 "kernel": {"name": "python3"}})["kernel"]["id"]
        with socket.socket(socket.AF_UNIX) as connection:  # closed even if an assertion fails
            connection.connect(path)
            owner_ws = websocket.create_connection(f"ws://localhost/api/kernels/{kernel_id}/channels",
                                                   socket=connection, header=[f"Authorization: token {token}"],
                                                   timeout=60)
            notebook = KernelClient(owner_ws)
            result = notebook.execute("%load_ext share_magic\n%share")
            assert result["error"] is None and not result["stderr"], result
            link = share_links(notebook)["edit"]
            guest = visitor(link)
            assert guest.get(link).status_code == 200
            assert "unix.ipynb" in {item["name"] for item in guest.get("/api/contents").json()["content"]}
            kernel = guest.kernel(f"/api/kernels/{kernel_id}/channels")
            assert kernel.execute("print('over a unix socket')")["stdout"] == "over a unix socket\n"
            kernel.close()
            notebook.execute("%share stop")
    finally:
        kill_group(process)


def answers(server) -> bool:
    try:
        return server.request("GET", "api", authenticated=False)[0] == 200
    except OSError:
        return False
