"""The share's helper process: it owns the share (the gateway and the ngrok agent); kernels are its clients.

Run as ``python -m share_magic.helper`` (``__main__.py``) by :mod:`share_magic.kernel.share`, in a session of its
own, so that interrupting the kernel (SIGINT to the kernel's process group) does not reach it, and a busy kernel
never stalls the visitors' traffic. The kernel that starts it writes one JSON line of settings on its standard input
and reads how the start went on its standard output (ready, failed or crashed); secrets (the authtoken, the server's
token) travel only on these pipes. From then on any kernel of the server talks to it through its control channel
(:mod:`share_magic.control`): ``watch`` (a snapshot of the share, then its events: people, cost, links -- new keys
after a revocation retired the share's own --, ended), ``invite`` / ``revoke`` / ``link`` (answered with the people
they changed) and ``stop``.

What ends it: a stop, the share's time running out, the agent or the server going away, and the share's kernel
ending. A share *bound to a kernel id* (the server runs the kernel that started it, and answers for it) survives
that kernel's restarts and ends when the id leaves the server's ``api/kernels`` (shut down, or Jupyter gave up
restarting it). Any other share is bound to the kernel process that started it, by the standard input pipe: when
the pipe closes -- however the kernel died -- the share ends. A lifeline process in the helper's group ends the agent
if the helper itself is killed.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from multiprocessing.connection import Connection
from typing import IO, Any, Callable

from ..control import receive, remove_record, send
from ..jupyter import JupyterServer
from . import lifetime
from .access import JUPYTER_COOKIES, Access, Local
from .answers import text
from .bridge import Bridge, with_script
from .capacity import limits_for
from .gateway import Gateway
from .identity import EdgeTrust, new_secret
from .listener import ControlListener, record_of_this_helper, write_record
from .login import login_cookie, login_cookie_name, named_login_cookie
from .meter import Compression
from .oversight import LobbyAndTrail
from .recorder import OWNER, Recorder
from .tunnel import Tunnel
from .sources import saved_source
from .view import NotebookView
from .worker import Worker



class Events:
    """Events to every kernel that watches the share, and the start's outcome to the kernel that started it (JSON
    lines on its pipe); a kernel that is gone is not an error."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream: IO[str] | None = stream
        self.lock = threading.Lock()
        self.watchers: list[Connection] = []

    def started(self, event: str, **fields: Any) -> None:
        """The start's outcome, the last thing the starting kernel reads on the pipe."""
        with self.lock:
            stream, self.stream = self.stream, None
            self._say(stream, {"event": event, **fields}, last=True)

    def progress(self, **fields: Any) -> None:
        """How the start goes, before its outcome (fetching the agent), to the kernel that started it."""
        with self.lock:
            self._say(self.stream, {"event": "progress", **fields}, last=False)

    @staticmethod
    def _say(stream: IO[str] | None, event: dict[str, Any], last: bool) -> None:
        """One line to the starting kernel (closing the pipe after the ``last``); a kernel gone is not an error."""
        if stream is None:
            return
        try:
            stream.write(json.dumps(event) + "\n")
            if last:
                stream.close()
            else:
                stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def watch(self, connection: Connection, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Send a new watcher the share as it is, then every event after that (none can slip in between)."""
        with self.lock:
            send(connection, {"event": "state", **snapshot()})
            self.watchers.append(connection)

    def forget(self, connection: Connection) -> None:
        with self.lock:
            if connection in self.watchers:
                self.watchers.remove(connection)
        connection.close()

    def emit(self, event: str, **fields: Any) -> None:
        with self.lock:
            for connection in list(self.watchers):
                try:
                    send(connection, {"event": event, **fields})
                except (OSError, ValueError):
                    self.watchers.remove(connection)


class Helper(LobbyAndTrail):
    def __init__(self, settings: dict[str, Any], events: Events) -> None:
        self.settings = settings
        self.events = events
        self.server = JupyterServer(**settings["server"])
        duration = settings.get("duration")
        self.expires_at = time.time() + duration if duration else None
        provider = settings.get("sign_in")
        # The secrets stay in here: the edge proves with one what it says (who signed in, where from).
        self.edge = EdgeTrust(provider, new_secret()) if provider else EdgeTrust(vouch=new_secret())
        self.naming: bool | None = None  # can the server name visitors? None: not asked yet
        self.access = Access(self.server.base_url, expires_at=self.expires_at, edge=self.edge,
                             login=self.login if settings.get("include_token", True) else None,
                             jupyter_cookies=(*JUPYTER_COOKIES, login_cookie_name(self.server)))
        if settings.get("approve"):
            self.access.approve(self.report_people)
        self.recorder: Recorder | None = None  # the trail, from the moment the share is live
        self.actions_version = 0
        economy = settings.get("economy", True) and not settings.get("alone")  # with no server, no editors
        self.gateway = Gateway(self.server, self.access, on_change=self.report_people,
                               compression=Compression(enabled=economy), limits=limits_for(settings.get("limits", {})))
        self.gateway.local = self.answer_locally
        self.gateway.on_full = lambda why: self.report_people()
        self.access.connected = self.gateway.connected  # view sessions of readers still in are kept
        self.gateway.rewrite_page = self.rewrite_page
        self.gateway.blanked = self.server.token.encode() if self.server.token else None
        self.view: NotebookView | None = None
        self.bridge: Bridge | None = None
        if economy:
            self.bridge = Bridge(self.server.base_url, self.gateway.check, self.gateway.fetch, self.gateway.is_public)
            self.access.local_paths.add(self.bridge.path)
            self.gateway.bridge = self.bridge.application(self.gateway.set_live)
            self.gateway.bridge_path = self.bridge.path
        self.worker: Worker | None = None
        if economy:  # the service worker: editors' static files from their browser's cache, or a few packs
            self.worker = Worker(self.server)
            self.access.local_paths.update(self.worker.paths)
        self.tunnel = Tunnel(settings.get("authtoken"))
        self.kernel_id: str | None = settings.get("kernel_id")  # the share is bound to this id, else to the pipe
        self.stopping = asyncio.Event()
        self.ending: str | None = None  # why the share ended by itself, if it did
        self.loop = asyncio.get_running_loop()
        self.control = ControlListener()
        self.public_url: str | None = None
        self.keys: dict[str, str] = {}
        self.started_at: float | None = None
        self.cost = (0, 0)
        self.people_version = 0
        self.reporting = threading.Lock()
        self.commands = threading.Lock()

    def request_stop(self, ending: str | None = None) -> None:
        def stop() -> None:
            if not self.stopping.is_set():
                self.ending = ending
                self.stopping.set()

        self.loop.call_soon_threadsafe(stop)

    def watch_pipe(self, stdin: IO[str]) -> None:
        """Runs in a thread: the starting kernel's pipe closes when that kernel process ends, however it ends. That
        ends a share bound to the process, and any share still starting; a live one bound to a kernel id lives on,
        for that kernel's next process."""
        for _ in stdin:
            pass
        if self.kernel_id is None or self.public_url is None:  # nobody would ever get a link still starting
            self.request_stop("the kernel that started it ended")

    def serve_control(self) -> None:
        """Runs in a thread: every kernel that proves it knows the control key gets a thread of its own."""
        while True:
            connection = self.control.accept()
            if connection is not None:
                threading.Thread(target=self.serve_client, args=(connection,), daemon=True).start()

    def serve_client(self, connection: Connection) -> None:
        try:
            command = receive(connection)
            if command.get("cmd") == "watch":
                self.events.watch(connection, self.snapshot)
                while True:  # a watcher only listens: this returns when it hangs up
                    receive(connection)
            with self.commands:
                reply = self.obey(command)
            send(connection, reply)
        except (OSError, EOFError, ValueError, AttributeError):
            pass
        finally:
            self.events.forget(connection)

    def snapshot(self) -> dict[str, Any]:
        """Everything a kernel shows of the share (no secret of the server's; the link keys it shows anyway)."""
        return {"public_url": self.public_url, "gateway_port": self.gateway.port, "key": self.keys.get("edit"),
                "view_key": self.keys.get("view"), "sign_in": self.edge.provider, "started_at": self.started_at,
                "expires_at": self.expires_at, "kernel_id": self.kernel_id,
                "notebook": self.settings.get("notebook_path"), "include_token": self.settings.get("include_token"),
                "authenticated": self.settings.get("authenticated", True), "cost": list(self.cost),
                "live_view": bool(self.settings.get("live", True) and self.settings.get("connection_file")),
                **self.people()}

    def login(self, name: str | None = None) -> str | None:
        """Jupyter's login cookie for a new visitor session, named ``name`` where the server can name users."""
        if name and self.naming is not False:
            cookie = named_login_cookie(self.server, name)
            if cookie is not None:
                self.naming = True
                return cookie
            self.naming = False
            self.report_people()  # says once that this server cannot name visitors
        return login_cookie(self.server)

    def link_key(self, role: str) -> str:
        """The key of the share's own edit or view link; the view starts watching the notebook with the first."""
        if role == "view" and self.view is None:
            live = self.settings.get("live", True) and self.settings.get("connection_file")
            self.view = NotebookView(saved_source(self.server, self.settings), self.server.base_url,
                                     secrets_to_blank=self.secrets, kernel_connection=live or None)
        return self.access.link_key(role)

    def secrets(self) -> list[str]:
        """What no view may show, wherever the notebook holds it: every key of the share, the server's token, every
        ngrok authtoken the share knows of (the kernel's -- given, or its NGROK_AUTHTOKEN --, and ngrok's config
        file's), the sign-in secret and the secret the edge vouches for client addresses with."""
        return [*self.access.keys(), self.server.token or "", *self.tunnel.authtokens(),
                *self.settings.get("authtokens", []), self.edge.secret or "", self.edge.vouch or ""]

    def rewrite_page(self, page: bytes) -> bytes:
        """A Jupyter page as an editing visitor gets it: with the bridge's script. (The gateway has already blanked
        the server's token out of it, as out of every HTML answer: JupyterLab's page config and Jupyter's error
        pages would otherwise hand it over; the gateway logs visitors in, and no page needs it to talk to its own
        host.)"""
        if self.bridge:
            page = with_script(page, self.server.base_url)
        return self.worker.rewrite(page) if self.worker else page

    async def answer_locally(self, request: Local, answer: Any) -> None:
        """What the gate hands to the gateway itself: a view session's requests, and an editor's service worker and
        its packs (an editor's bridge is the gateway's own tornado application)."""
        if self.worker is not None and request.session.grant.role == "edit" \
                and request.target.split("?", 1)[0] in self.worker.paths:
            await answer.finish(await answer.run(self.worker.answer, request))
            return
        if self.view is None or request.session.grant.role != "view":
            await answer.finish(text(404, "Not Found", "Nothing is served here."))
            return
        await self.view.respond(request, answer)

    def obey(self, command: dict[str, Any]) -> dict[str, Any]:
        """A command from a kernel, and the answer to it (with the people it changed, as they are now)."""
        name, cmd = command.get("name"), command.get("cmd")
        if cmd == "stop":
            self.request_stop()
            return {"stopping": True}
        if self.settings.get("alone") and (cmd == "invite" or command.get("role") == "edit"):
            return {"error": "no Jupyter server: this share has a view link only"}
        if cmd == "link" and command.get("role") in ("edit", "view"):
            self.keys[command["role"]] = self.link_key(command["role"])
            self.events.emit("links", key=self.keys.get("edit"), view_key=self.keys.get("view"))
            return {"key": self.keys[command["role"]]}
        if cmd == "cell":  # the share's kernel names the notebook cell a request runs (IOPub does not say)
            if self.view is not None and self.view.live is not None:
                self.view.live.place(str(command.get("msg_id")), str(command.get("cell_id")))
            return {}
        if cmd == "invite" and name:
            key = self.access.invite(name)
            self.note(OWNER, f"invited {name}")
            return {"key": key, **self.report_people()}
        if cmd == "trail":
            return self.trail_record()
        if cmd in ("approve", "admit", "deny"):
            return self.lobby_command(cmd, name)
        if cmd == "revoke" and name:
            try:
                sessions = self.access.revoke(name)
            except KeyError:
                return {"found": False, **self.people()}
            self.gateway.cut(sessions)
            self.note(OWNER, f"revoked {name}")
            links = self.access.links()
            if any(self.keys.get(role) != key for role, key in links.items()):  # retired: these replace them
                self.keys.update(links)
                self.events.emit("links", key=self.keys.get("edit"), view_key=self.keys.get("view"))
            return {"found": True, "links": {"key": self.keys.get("edit"), "view_key": self.keys.get("view")},
                    **self.report_people()}
        return {"error": f"unknown command {cmd!r}"}

    def people(self) -> dict[str, Any]:
        """Who is invited, connected (since when) or revoked, and how many browsers are connected in all; the
        version orders these reports (a kernel may get one as an answer before an older one as an event)."""
        connected = self.gateway.connected()
        people = []
        for grant in self.access.people():
            since = [moment for session, moment in connected.items() if session.grant is grant]
            email = next((session.identity.email for session in connected
                          if session.grant is grant and session.identity), None)
            people.append({"name": grant.person, "key": None if grant.revoked_at else grant.key,
                           "connected_since": min(since, default=None), "revoked_at": grant.revoked_at,
                           "email": email, "chosen": grant.chosen})
        return {"visitors": len(connected), "people": people, "version": self.people_version,
                "signed_in": signed_in(connected), "naming": self.naming,
                "refused": self.access.refused_identities(), "full": self.gateway.capacity.full,
                **self.lobby_and_trail(connected)}

    def report_people(self) -> dict[str, Any]:
        with self.reporting:
            self.people_version += 1
            people = self.people()
            self.events.emit("people", **people)
        return people

    async def run(self) -> None:
        port = self.gateway.listen()
        if not await lifetime.prepare_agent(self):
            return
        public_url = await lifetime.open_tunnel(self, port)
        if public_url is None:
            return
        self.start_trail()
        self.gateway.open_to(public_url)
        self.public_url, self.started_at = public_url, time.time()
        self.keys = {role: self.link_key(role) for role in ("edit", "view") if self.settings.get(role, role == "edit")}
        threading.Thread(target=self.serve_control, daemon=True, name="control").start()
        record = record_of_this_helper(address=self.control.address, authkey=self.control.authkey.hex(),
                                       server_url=self.server.url, kernel_id=self.kernel_id)
        write_record(self.settings["record"], record)
        self.events.started("ready", gateway_port=port, address=self.control.address,
                            authkey=self.control.authkey.hex())
        ending = await lifetime.watch(self)
        remove_record(self.settings["record"], os.getpid())  # no kernel may find a share that is ending
        if self.access.lobby is not None:
            self.access.lobby.close()  # waiting pages hear that the share ended (before their streams are cut)
        if self.view is not None:
            self.view.close()  # its readers' last updates go on the gateway's loop before the gateway stops
        self.gateway.close()
        if self.recorder is not None:
            self.recorder.note(OWNER, {"expired": "the share expired", None: "stopped the share"}.get(
                ending, f"the share ended: {ending}"))
            self.recorder.close()
        if self.worker is not None:
            self.worker.close()
        await lifetime.in_thread(self.tunnel.close)
        if ending == "expired":
            self.events.emit("ended", status="expired", reason=None)
        elif ending:
            self.events.emit("ended", status="lost", reason=ending)
        else:
            self.events.emit("ended", status="stopped", reason=None)

def signed_in(connected: dict[Any, float]) -> list[dict[str, Any]]:
    """Each signed-in person connected right now (once, however many browsers), as the status names them."""
    people: dict[str, dict[str, Any]] = {}
    for session, since in connected.items():
        identity = session.identity
        if identity is None:
            continue
        entry = people.setdefault(identity.key, {"email": identity.email, "name": identity.name,
                                                 "provider": identity.provider, "jupyter_name": session.name,
                                                 "invitation": session.grant.person, "connected_since": since})
        entry["connected_since"] = min(entry["connected_since"], since)
    return list(people.values())


