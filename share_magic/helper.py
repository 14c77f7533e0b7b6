"""The share's helper process: the gateway and the ngrok agent, tied to the kernel by a pipe.

Run as ``python -m share_magic.helper`` by :mod:`share_magic.sharing`, in a session of its own, so that
interrupting the kernel (SIGINT to the kernel's process group) does not reach it, and a busy kernel never stalls
the visitors' traffic. Its standard input is the lifeline: the kernel writes one JSON line of settings, may later
write ``{"cmd": "invite" | "revoke", "name": ...}`` and ``{"cmd": "stop"}``, and when the kernel dies -- however it
dies -- the pipe closes and the helper takes the tunnel down and exits. Its standard output carries JSON events back:
ready (with the share's key), people (who is invited and connected), invited / revoked (the answers to those
commands, after the people they changed), failed, lost, expired, stopped. Secrets (the authtoken, the server's
token, keys) travel only on these pipes.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
import traceback
from typing import IO, Any, Callable

from .access import Access, Local, response
from .bridge import Bridge, with_script
from .errors import ShareError
from .gateway import Gateway
from .meter import Compression
from .server import JupyterServer, pid_alive
from .tunnel import Tunnel
from .view import NotebookSource, NotebookView

WATCH_INTERVAL = 0.5


class Events:
    """JSON lines to the kernel; a kernel that is gone is not an error."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        with self.lock:
            try:
                self.stream.write(json.dumps({"event": event, **fields}) + "\n")
                self.stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass


class Helper:
    def __init__(self, settings: dict[str, Any], events: Events) -> None:
        self.settings = settings
        self.events = events
        self.server = JupyterServer(**settings["server"])
        duration = settings.get("duration")
        self.expires_at = time.time() + duration if duration else None
        self.access = Access(self.server.base_url, expires_at=self.expires_at,
                             login=self.server.login_cookie if settings.get("include_token", True) else None)
        economy = settings.get("economy", True)
        self.gateway = Gateway(self.server, self.access, on_change=self.report_people,
                               compression=Compression(enabled=economy))
        self.gateway.local = self.answer_locally
        self.gateway.rewrite_page = self.rewrite_page
        self.view: NotebookView | None = None
        self.bridge: Bridge | None = None
        if economy:
            self.bridge = Bridge(self.server.base_url, self.access, self.gateway.fetch, self.gateway.is_public)
            self.access.local_paths.add(self.bridge.path)
        self.tunnel = Tunnel(settings.get("authtoken"))
        self.stopping = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def request_stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)

    def watch_kernel(self, stdin: IO[str]) -> None:
        """Runs in a thread: the kernel's commands; its pipe closing, or a stop command, ends the share."""
        for line in stdin:
            command = json.loads(line or "{}")
            if command.get("cmd") == "stop":
                break
            self.obey(command)
        self.request_stop()

    def link_key(self, role: str) -> str:
        """The key of the share's own edit or view link; the view starts watching the notebook with the first."""
        if role == "view" and self.view is None:
            self.view = NotebookView(NotebookSource(self.server, self.settings["notebook_path"]), self.server.base_url,
                                     secrets_to_blank=self.secrets)
        return self.access.link_key(role)

    def secrets(self) -> list[str]:
        """What no view may show, wherever the notebook holds it: every key of the share and the server's token."""
        return [*self.access.keys(), self.server.token or ""]

    def rewrite_page(self, page: bytes) -> bytes:
        """A Jupyter page as an editing visitor gets it: without the server's token, which JupyterLab's page config
        would otherwise hand them (the gateway logs them in; the page does not use it to talk to its own host), and
        with the bridge's script."""
        if self.server.token:
            page = page.replace(self.server.token.encode(), b"")
        return with_script(page, self.server.base_url) if self.bridge else page

    def answer_locally(self, request: Local, reader: IO[bytes], out: Any, live: Callable[[bool], None]) -> None:
        """What the gate hands to the gateway itself: a view session's requests, and an editor's bridge."""
        service = self.view if request.session.grant.role == "view" else self.bridge
        if service is None:
            out.sendall(response(404, "Not Found", []))
            return
        service.respond(request, reader, out, live)

    def obey(self, command: dict[str, Any]) -> None:
        name = command.get("name")
        if command.get("cmd") == "link" and command.get("role") in ("edit", "view"):
            self.events.emit("link", role=command["role"], key=self.link_key(command["role"]))
        elif command.get("cmd") == "invite" and name:
            key = self.access.invite(name)
            self.report_people()
            self.events.emit("invited", name=name, key=key)
        elif command.get("cmd") == "revoke" and name:
            try:
                sessions = self.access.revoke(name)
            except KeyError:
                self.events.emit("revoked", name=name, found=False)
                return
            self.gateway.cut(sessions)
            self.report_people()
            self.events.emit("revoked", name=name, found=True)

    def report_people(self) -> None:
        """Who is invited, connected (since when) or revoked, and how many browsers are connected in all."""
        connected = self.gateway.connected()
        people = []
        for grant in self.access.people():
            since = [moment for session, moment in connected.items() if session.grant is grant]
            people.append({"name": grant.person, "key": None if grant.revoked_at else grant.key,
                           "connected_since": min(since, default=None), "revoked_at": grant.revoked_at})
        self.events.emit("people", visitors=len(connected), people=people)

    async def run(self) -> None:
        port = self.gateway.listen()
        opening = in_thread(self.tunnel.open, port)
        stopped = asyncio.ensure_future(self.stopping.wait())
        timeout = float(self.settings.get("startup_timeout", 25))
        done, _ = await asyncio.wait({opening, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:  # pyngrok waits forever on an agent that prints nothing
            self.events.emit("failed", code=None, message=(
                f"The ngrok agent did not start within {timeout:g} s: it printed nothing. Fix: run "
                f"`{self.tunnel.config.ngrok_path} start --none --log stdout` in a terminal to see what it is "
                "waiting for (a proxy? a firewall?), then run %share again."))
            return
        if opening not in done:  # the kernel went away while the agent was starting
            return
        try:
            public_url = opening.result()
        except ShareError as e:
            self.events.emit("failed", code=getattr(e, "code", None), message=str(e))
            return
        self.gateway.open_to(public_url)
        keys = {role: self.link_key(role) for role in ("edit", "view") if self.settings.get(role, role == "edit")}
        self.events.emit("ready", public_url=public_url, gateway_port=port, key=keys.get("edit"),
                         view_key=keys.get("view"), expires_at=self.expires_at)
        ending = await self.watch()
        self.gateway.close()
        if self.view is not None:
            self.view.close()
        await in_thread(self.tunnel.close)
        if ending == "expired":
            self.events.emit("expired")
        elif ending:
            self.events.emit("lost", reason=ending)
        else:
            self.events.emit("stopped")

    async def watch(self) -> str | None:
        """Wait for a stop; return why the share ended by itself ("expired", or what went away), if it did."""
        server_pid = self.server.pid
        cost = (0, 0)
        while not self.stopping.is_set():
            meter = self.gateway.meter
            if (meter.requests, meter.bytes_out) != cost:
                cost = (meter.requests, meter.bytes_out)
                self.events.emit("cost", requests=cost[0], bytes=cost[1])
            interval = WATCH_INTERVAL
            if self.expires_at is not None:
                interval = min(interval, self.expires_at - time.time())
                if interval <= 0:
                    return "expired"
            try:
                await asyncio.wait_for(self.stopping.wait(), interval)
            except asyncio.TimeoutError:
                pass
            if not self.tunnel.agent_alive():
                return "the ngrok agent exited (crash or lost network); run %share again for a new link"
            if server_pid and not pid_alive(server_pid):
                return "the Jupyter server stopped"
        return None


def in_thread(function: Callable[..., Any], *args: Any) -> asyncio.Future:
    """Run a blocking call in a daemon thread: unlike an executor's, it cannot keep the process alive when pyngrok
    blocks forever on a silent agent."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(result: Any = None, error: BaseException | None = None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def target() -> None:
        try:
            result = function(*args)
        except BaseException as error:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, None, error)
        else:
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=target, daemon=True).start()
    return future


def _remove_record(path: str | None) -> None:
    """Other notebooks must not find a share that is gone; a record of another helper's share is not ours."""
    try:
        with open(path or "", encoding="utf-8") as f:
            if json.load(f).get("helper_pid") == os.getpid():
                os.unlink(path or "")
    except (OSError, ValueError):
        pass


def _end_process_group() -> None:
    """The helper's last act: whatever still runs in its own group (an agent pyngrok could not stop, or one that
    ignores SIGTERM) ends with it. The helper itself goes too; all it had to say is said."""
    if os.getpgrp() != os.getpid():  # not started as a session of its own: the group is not ours to end
        return
    os.killpg(os.getpgrp(), signal.SIGKILL)


async def amain() -> None:
    # Events go out on a private copy of stdout; anything else that prints lands on stderr.
    events = Events(os.fdopen(os.dup(1), "w", encoding="utf-8"))
    os.dup2(2, 1)
    settings = json.loads(sys.stdin.readline() or "{}")
    if not settings:
        return
    helper = Helper(settings, events)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: helper.request_stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=helper.watch_kernel, args=(sys.stdin,), daemon=True).start()
    try:
        await helper.run()
    except Exception:
        events.emit("crashed", traceback=traceback.format_exc())
        raise
    finally:
        helper.tunnel.remove_folder()
        _remove_record(settings.get("record"))


def main() -> None:
    code = 0
    try:
        asyncio.run(amain())
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        _end_process_group()
        os._exit(code)  # no lingering thread (a pyngrok call blocked on a silent agent) may keep the process alive


if __name__ == "__main__":
    main()
