"""The lifecycle of one share, seen from a kernel: find the server, start the helper or find the one running, follow
it, tell it what to do.

The helper process (``helper.py``) owns the share: the gateway, the ngrok agent, the keys and the people. This side
is a thin client of it: it starts it (settings on a private pipe), then, like every other kernel of the server,
talks to it through its control channel (``control.py``): a snapshot and events to stay current, and commands.

A server has at most one share. The helper records it in Jupyter's runtime folder, so that ``%share`` in another
notebook of the same server -- or in the same notebook after a restart -- shows and runs that share instead of
opening a second tunnel, which a free ngrok account could not open anyway: all its endpoints get the same URL.

The share is bound to its kernel's id where the server can say whether that kernel still exists (it runs this
kernel and has a token): restarts keep it, a shutdown ends it. Otherwise (``--port``/``--url`` of another server,
or a server without a token) it is bound to this kernel process by the helper's standard input: when the process
ends, however it ends, the pipe closes and the share ends.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from . import control
from .access import KEY_PARAM
from .errors import ShareError, TunnelError, UnsafeServer
from .identity import FREE_PLAN_USERS, PROVIDER_NAMES, Identity, check_provider, is_email
from .meter import FREE_BYTES, FREE_REQUESTS
from .server import JupyterServer, find_server, kernel_id, server_at
from .view import VIEW_PAGE

STARTUP_TIMEOUT = 20.0  # for the ngrok agent to come up (pyngrok itself would wait forever)
REPORT_GRACE = 5.0  # on top of that, for the helper to report
STOP_TIMEOUT = 8.0
ENDED = ("stopped", "expired", "lost", "failed")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
MAX_DURATION = 30 * 86400
NAME_CHARACTERS = " .-_@"
NAME_RULE = "1-40 letters, digits, spaces and . - _ @"
COMMAND_TIMEOUT = 10.0
LINKS_KEPT_OUT = ("The links show only in the live widget, never in the saved notebook; %share links prints "
                  "them.")
NO_NOTEBOOK = ("This kernel has no notebook (a console, or a kernel no notebook uses), so a view link would have "
               "nothing to show. Run %share --view in the notebook you want people to see.")


@dataclasses.dataclass
class Person:
    """Someone invited to a share with a link of their own."""

    name: str
    link: str | None  # None once revoked
    connected_since: datetime.datetime | None = None
    revoked_at: datetime.datetime | None = None
    email: str | None = None  # verified at the edge, while they are connected with sign-in

    @property
    def connected(self) -> bool:
        return self.connected_since is not None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return f"revoked at {_clock(self.revoked_at)}"
        return f"connected since {_clock(self.connected_since)}" if self.connected else "invited, not connected"


@dataclasses.dataclass
class SignedIn:
    """Someone connected right now who signed in at the edge."""

    identity: Identity
    jupyter_name: str | None  # what Jupyter calls them
    invitation: str | None  # the invitation they came with; None: the share's own link
    connected_since: datetime.datetime | None = None

    def describe(self) -> str:
        came = f"invited as {self.invitation}" if self.invitation else "with the share's link"
        return f"{self.identity.describe()} ({came}, connected since {_clock(self.connected_since)})"


def check_email(name: str) -> str:
    """With sign-in, a name with an @ must be an e-mail address: it is matched against the signed-in one."""
    if "@" in name and not is_email(name):
        raise ShareError(f"{name!r} is not an e-mail address, and with sign-in a name with an @ is matched against "
                         "the visitor's verified e-mail. Give the whole address, e.g. %share invite ada@example.com, "
                         "or a name without @.")
    return name


def check_name(name: str) -> str:
    """``name`` if it is one a person can be invited by, else a :class:`ShareError` saying what names may be."""
    if is_email(name) and len(name) <= 254 and name.strip() == name:
        return name
    if not (isinstance(name, str) and 1 <= len(name) <= 40 and name.strip() == name
            and all(ch.isalnum() or ch in NAME_CHARACTERS for ch in name)):
        raise ShareError(f"{name!r} cannot name a person: use {NAME_RULE}, e.g. %share invite Ada "
                         "'Grace Hopper' (quote names with spaces).")
    return name


class Share:
    """A public link to a Jupyter server, live until :meth:`stop`, until it expires (``duration`` seconds), or until
    its kernel ends: the kernel *id* when the server can tell the helper about it (a restart keeps the share), else
    the kernel process that started it.

    The link carries a key made for this share only; the gateway admits nobody without it, and it dies with the
    share. With ``include_token`` the gateway also logs admitted visitors in with the server's token (which they
    never see); without it they must know the token or password as well.

    ``status`` is ``starting``, ``live``, ``stopped`` (by someone), ``expired``, ``lost`` (the agent, the server,
    the share's kernel or its helper went away) or ``failed`` (never went live). The helper process owns the share;
    this object is one kernel's view of it, kept current by the helper's events, and every kernel of the server
    may show it, invite, revoke and stop. It is *attached* when another kernel started it.
    """

    def __init__(self, server: JupyterServer, notebook_path: str | None = None, include_token: bool = True,
                 authenticated: bool = True, duration: float | None = None, view: bool = False,
                 economy: bool = True, sign_in: str | None = None) -> None:
        self.server = server
        self.sign_in = sign_in  # ngrok's sign-in provider at the edge, if visitors must sign in
        self.notebook_path = notebook_path  # of this kernel: the links shown here open it
        self.include_token = include_token
        self.authenticated = authenticated
        self.duration = duration
        self.economy = economy
        self.cost = (0, 0)  # what visitors cost the owner's ngrok plan so far: requests, bytes sent to them
        self.expires_at: datetime.datetime | None = None
        self.status = "starting"
        self.public_url: str | None = None
        self.gateway_port: int | None = None  # the helper's gateway on 127.0.0.1 (the tunnel's upstream)
        self.visitors = 0
        self.started_at: datetime.datetime | None = None
        self.ended_at: datetime.datetime | None = None
        self.reason: str | None = None
        self.people: dict[str, Person] = {}  # invited by name, in the order they were
        self.signed_in: list[SignedIn] = []  # connected visitors who signed in at the edge
        self.naming: bool | None = None  # False: this Jupyter server cannot name visitors (older than 2.17)
        self.refused: list[str] = []  # e-mails revoked with sign-in: refused on every link
        self.owner_notebook: str | None = None  # set on an attached share: the notebook that started it
        self.share_notebook: str | None = notebook_path  # the notebook the share's view link shows
        self.kernel_bound = False  # does the share outlive this kernel's process (bound to its kernel id)?
        self.collaborative: bool | None = None  # jupyter-collaboration on the server? None: unknown
        self._key: str | None = None  # of the share's own edit link, if it has one
        self._view_key: str | None = None  # of its view link, if it has one
        self.view_first = view
        self._helper_pid: int | None = None
        self._control: dict[str, Any] | None = None  # where the helper listens, and its key
        self._process: subprocess.Popen[str] | None = None  # the helper, when this process started it
        self._watcher: threading.Thread | None = None
        self._helper_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._people_version = -1
        self._stopping = False
        self._observers: list[Callable[[Share], None]] = []

    # -- what it is -------------------------------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return self.owner_notebook is not None

    @property
    def live(self) -> bool:
        return self.status == "live"

    @property
    def link(self) -> str | None:
        """The link for anyone who has it: this notebook, in the owner's UI, with this share's key; None for a
        share that has only a view link."""
        return self._link_with(self._key)

    @property
    def view_link(self) -> str | None:
        """The view-only link of the share's notebook, if the share has one."""
        return self._link_with(self._view_key, VIEW_PAGE)

    def _link_with(self, key: str | None, page: str | None = None) -> str | None:
        """A link with ``key`` to ``page`` (below the base URL; default: this notebook in the owner's UI)."""
        if self.public_url is None or key is None:
            return None
        page = page or self.server.page_path(self.notebook_path)
        return f"{self.public_url.rstrip('/')}{self.server.base_url}{page}?{KEY_PARAM}={key}"

    # -- people -----------------------------------------------------------------------------------------------------

    def invite(self, name: str) -> str:
        """A link of ``name``'s own (the same one while they have a live one), which :meth:`revoke` ends alone."""
        name = check_name(name)
        if self.sign_in:
            check_email(name)
        reply = self._command("invite", name=name)
        link = self._link_with(reply["key"])
        assert link is not None
        return link

    def revoke(self, name: str) -> None:
        """Cut ``name`` off at once: their link and cookies stop working and their connections close. The share's
        own links (:attr:`link`, :attr:`view_link`), which they could have read, are replaced by new ones; people
        already in keep working."""
        self.check_invited(name)
        reply = self._command("revoke", name=name)
        if not reply["found"]:
            raise ShareError(f"Nobody named {name!r} has a live invitation to this share any more (revoked from "
                             "another notebook?). %share status shows who has.")
        self._links_from(reply["links"])  # the event saying so may come after this answer: it goes another way

    def _links_from(self, links: dict[str, Any]) -> None:
        """The share's own keys, as the helper has them now (a revocation replaces them)."""
        with self._state_lock:
            changed = (self._key, self._view_key) != (links["key"], links["view_key"])
            self._key, self._view_key = links["key"], links["view_key"]
        if changed:
            self._changed()

    def check_invited(self, name: str) -> None:
        """A :class:`ShareError` unless ``name`` has a live invitation (with sign-in, any e-mail address can be
        revoked: that identity is then refused on every link)."""
        if self.sign_in and is_email(name):
            return
        person = self.people.get(name)
        if person is None or person.revoked_at is not None:
            live = [p.name for p in self.people.values() if p.revoked_at is None]
            raise ShareError(f"Nobody named {name!r} has a live invitation to this share, so there is nothing to "
                             "revoke. " + (f"Invited: {', '.join(live)}." if live else
                                           "Invite people with %share invite NAME."))

    def enable(self, role: str) -> None:
        """Add the share's own edit link (``"edit"``) or view link (``"view"``) to a live share, if it lacks it."""
        if (self._key if role == "edit" else self._view_key) is not None:
            return
        if role == "view" and not self.share_notebook:
            raise ShareError(NO_NOTEBOOK if not self.attached else
                             "This share was started from a console, which has no notebook for a view link to "
                             "show. Stop it (%share stop) and run %share --view in the notebook to show.")
        key = self._command("link", role=role)["key"]
        with self._state_lock:
            if role == "edit":
                self._key = key
            else:
                self._view_key = key
        self._changed()

    def _command(self, command: str, **fields: str) -> dict[str, Any]:
        """Send the helper a command and wait for its answer (with the people it changed, applied before)."""
        if not self.live or self._control is None:
            raise ShareError("Nothing is shared from this kernel right now. Start a share with %share, or "
                             f"%share {command} NAME starts one for you.")
        try:
            reply = control.request(self._control, {"cmd": command, **fields}, COMMAND_TIMEOUT)
        except (OSError, EOFError):  # the helper went away meanwhile: its watcher says so
            self._wait_for_watcher(STOP_TIMEOUT)
            raise ShareError(f"The share ended before it could {command}: {self.describe()}") from None
        if "people" in reply:
            self._people_from(reply)
        return reply

    def _people_from(self, report: dict[str, Any]) -> None:
        """Apply a report of the people, unless a newer one was applied already (answers and events cross)."""
        with self._state_lock:
            if report["version"] < self._people_version:
                return
            self._people_version = report["version"]
            self.visitors = report["visitors"]
            self.people = {entry["name"]: Person(entry["name"], self._link_with(entry["key"]),
                                                 _from_epoch(entry["connected_since"]),
                                                 _from_epoch(entry["revoked_at"]), entry.get("email"))
                           for entry in report["people"]}
            self.signed_in = [SignedIn(Identity(entry["email"], entry.get("name") or "", entry.get("provider") or ""),
                                       entry.get("jupyter_name"), entry.get("invitation"),
                                       _from_epoch(entry.get("connected_since")))
                              for entry in report.get("signed_in") or []]
            self.naming = report.get("naming")
            self.refused = report.get("refused") or []
        self._changed()

    def sign_in_summary(self) -> str | None:
        """That visitors sign in, with whom, and what it costs on ngrok's free plan; None without sign-in."""
        if not self.sign_in:
            return None
        return (f"Visitors sign in with {PROVIDER_NAMES.get(self.sign_in, self.sign_in)} before anything reaches "
                f"this machine; ngrok's free plan allows {FREE_PLAN_USERS} signed-in users a month.")

    def cost_summary(self) -> str:
        """What visitors have cost the owner's ngrok plan, in ngrok's units, with the free plan's month for scale."""
        requests, sent = self.cost
        return (f"Cost to your ngrok plan so far: {requests:,} requests, {_size(sent)} sent (a free plan has "
                f"{FREE_REQUESTS:,} requests and {FREE_BYTES / 1e9:g} GB a month).")

    def live_summary(self) -> tuple[str, str]:
        """Since (and until) when it is live, and who: how many visitors are connected (and the notebook that
        started it, when another one did)."""
        who = f"{self.visitors} visitor{'' if self.visitors == 1 else 's'} connected"
        if self.attached:
            who += f", started from {self.owner_notebook}"
        when = f"live since {_clock(self.started_at)}"
        if self.expires_at is not None:
            when += f", ends at {_clock(self.expires_at)}"
        return when, who

    def describe(self) -> str:
        """The state in plain text, as ``%share status`` prints it."""
        if self.live:
            lines = [f"Sharing this Jupyter server ({', '.join(self.live_summary())}):",
                     *(f"  {line}" for line in self.link_summary())]
            if self.sign_in_summary():
                lines.append(f"  {self.sign_in_summary()}")
            for visitor in self.signed_in:
                lines.append(f"  Connected: {visitor.describe()}")
            if self.refused:
                lines.append(f"  Refused on every link (revoked): {', '.join(self.refused)}")
            if self.naming is False:
                lines.append("  This Jupyter server cannot name visitors (that needs jupyter_server 2.17 or later, "
                             "with name among IdentityProvider.updatable_fields): they show as Anonymous.")
            lines.append(LINKS_KEPT_OUT)
            if not self.link and not self.people:
                return "\n".join([*lines, "Readers see the notebook as last saved, live, and reach nothing else.",
                                  self.cost_summary(), "Stop sharing with: %share stop"])
            if not self.authenticated:
                lines.append("WARNING: this server has no authentication: anyone who finds this link can run "
                             "code on this machine.")
            elif not (self.include_token and self.server.token):
                lines.append("The link does not log visitors in: they also need this server's token or password.")
            lines += ["Anyone with this link has full control of this server (files, terminals, kernels) until the "
                      "share ends; then the link stops working for good.",
                      self.cost_summary(), "Stop sharing with: %share stop"]
            return "\n".join(lines)
        if self.status == "starting":
            return "Starting a share of this Jupyter server..."
        if self.status == "expired":
            return (f"Share expired at {_clock(self.ended_at)}: the link no longer works. Run %share for a new "
                    "one.")
        if self.status == "lost":
            return (f"Share lost at {_clock(self.ended_at)}: {self.reason}. The link no longer works; "
                    "run %share for a new one.")
        if self.status == "stopped":  # the host only: a dead link must not look clickable
            host = urlsplit(self.public_url or "").netloc or "the link"
            return f"Share stopped at {_clock(self.ended_at)}: {host} no longer reaches this server."
        return f"Share failed: {self.reason}"

    def link_summary(self) -> list[str]:
        """Which links the share has and who is invited, in words: never a link (a key) itself, since what a
        notebook shows ends up in its saved file."""
        lines = ["Edit link: this notebook in Jupyter, for anyone who has it"] if self.link else []
        if self.view_link:
            lines.append(f"View-only link: {self._view_shows()}, nothing else")
        return lines + [f"{person.name} ({person.state})" for person in self.people.values()]

    def links(self) -> list[tuple[str, str]]:
        """Every live link of the share, labelled: what ``%share links`` prints."""
        labelled = [("Anyone with this link", self.link), (f"View only ({self._view_shows()}, nothing else)",
                                                           self.view_link),
                    *((f"{person.name} (personal link)", person.link) for person in self.people.values())]
        return [(label, link) for label, link in labelled if link]

    def _view_shows(self) -> str:
        return "this notebook" if self.share_notebook == self.notebook_path else str(self.share_notebook)

    def __repr__(self) -> str:
        return f"<Share {self.status} {self.public_url or ''}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """In a notebook, a share shows as its widget (``share_magic.share()`` as a cell's last line)."""
        from .widget import ShareView

        return ShareView(self)._repr_mimebundle_(**kwargs)

    def observe(self, callback: Callable[[Share], None]) -> None:
        """Call ``callback(share)`` whenever the status or visitor count changes (from a background thread)."""
        self._observers.append(callback)

    def _changed(self) -> None:
        for callback in list(self._observers):
            callback(self)

    # -- start and stop ---------------------------------------------------------------------------------------------

    def start(self, authtoken: str | None = None, timeout: float = STARTUP_TIMEOUT, kernel: str | None = None) -> None:
        """Start the helper and wait until the link is live; raise :class:`ShareError` if it cannot be. With
        ``kernel`` (an id the server answers for), the share is bound to that id rather than to this process."""
        settings = {"server": dataclasses.asdict(self.server), "startup_timeout": timeout,
                    "edit": not self.view_first, "view": self.view_first, "notebook_path": self.notebook_path,
                    "economy": self.economy, "authenticated": self.authenticated, "kernel_id": kernel,
                    "sign_in": self.sign_in,
                    "authtoken": authtoken or os.environ.get("NGROK_AUTHTOKEN"), "include_token": self.include_token,
                    "duration": self.duration, "record": control.record_path(self.server.url)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "share_magic.helper"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=_helper_environment(), start_new_session=True)
        self._helper_pid = self._process.pid
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(settings) + "\n")
        self._process.stdin.flush()
        outcome: queue.Queue[dict[str, Any]] = queue.Queue()
        stdout = self._process.stdout
        threading.Thread(target=lambda: outcome.put(json.loads(stdout.readline() or '{"event": "exited"}')),
                         daemon=True, name="share_magic start").start()
        try:
            event = outcome.get(timeout=timeout + REPORT_GRACE)
        except queue.Empty:
            event = {"event": "silent"}
        except KeyboardInterrupt:
            self._end_helper()
            self._set("failed", "interrupted while starting")
            raise
        if event["event"] == "ready":
            stdout.close()  # all it had to say is said (its reader is done)
            self.gateway_port = event["gateway_port"]
            try:
                self._watch({"address": event["address"], "authkey": event["authkey"],
                             "helper_pid": self._helper_pid})
            except (OSError, EOFError) as e:
                event = {"event": "crashed", "traceback": f"its control channel did not answer: {e!r}"}
            if self.status == "live":
                return
        self._end_helper()
        message, code, is_bug = {
            "failed": (event.get("message"), event.get("code"), False),
            "crashed": (event.get("traceback"), None, True),
            "silent": (f"The share's helper did not report back within {timeout + REPORT_GRACE:g} s.", None, True),
        }.get(event["event"], ("The share's helper exited without a word (its error, if any, is in the Jupyter "
                               "server's log).", None, True))
        self._set("failed", message)
        if is_bug:
            raise RuntimeError(f"share_magic's helper process failed:\n{message}")
        raise TunnelError(message, code)

    def stop(self) -> None:
        """Close the tunnel and the gateway, cutting every visitor connection, for every notebook that shows the
        share. Safe to call more than once."""
        if self.status not in ("starting", "live"):
            return
        self._stopping = True
        if self._control is not None:
            try:
                control.request(self._control, {"cmd": "stop"}, COMMAND_TIMEOUT)
            except (OSError, EOFError):
                pass  # gone already
            self._wait_for_watcher(STOP_TIMEOUT)
        if self._process is not None:
            self._end_helper()
        elif self._watcher is not None and self._watcher.is_alive() and control.helper_alive(self._helper_pid):
            assert self._helper_pid is not None
            os.kill(self._helper_pid, signal.SIGTERM)  # deaf to commands: its signal handler stops it
            self._wait_for_watcher(STOP_TIMEOUT)
        self._set("stopped")

    def _wait_for_watcher(self, timeout: float) -> None:
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout)

    def _end_helper(self) -> None:
        """Give the helper this process started time to take the tunnel down, then end its whole process group."""
        with self._helper_lock:
            process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        _wait_unreaped(process.pid, STOP_TIMEOUT)
        try:  # the helper leads its own group; while it is unreaped, that group id cannot name anyone else's
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()
        if process.stdout is not None:
            process.stdout.close()

    # -- events from the helper -------------------------------------------------------------------------------------

    def _watch(self, where: dict[str, Any]) -> None:
        """Connect to the helper, take the share as it is now, and follow its events in a thread until it ends.
        Raises OSError or EOFError if the helper cannot be reached."""
        connection = control.connect(where)
        try:
            connection.send({"cmd": "watch"})
            if not connection.poll(COMMAND_TIMEOUT):
                raise TimeoutError(f"share_magic's helper did not answer within {COMMAND_TIMEOUT:g} s")
            self._apply(connection.recv())
            control.wait_forever(connection)
        except BaseException:
            connection.close()
            raise
        self._control, self._helper_pid = where, where.get("helper_pid")
        self._watcher = threading.Thread(target=self._follow, args=(connection,), daemon=True,
                                         name="share_magic events")
        self._watcher.start()

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.pop("event")
        if kind == "state":
            self.public_url = event["public_url"]
            self.gateway_port = event.get("gateway_port")
            self._key, self._view_key = event["key"], event["view_key"]
            self.started_at = _from_epoch(event["started_at"])
            self.expires_at = _from_epoch(event["expires_at"])
            self.share_notebook = event["notebook"]
            self.include_token = bool(event["include_token"])
            self.authenticated = bool(event["authenticated"])
            self.sign_in = event.get("sign_in")
            self.kernel_bound = bool(event["kernel_id"])
            if event["kernel_id"] != kernel_id() and self._process is None:
                self.owner_notebook = event["notebook"] or "a console"
            self.cost = tuple(event["cost"])  # type: ignore[assignment]
            self._people_from(event)
            with self._state_lock:
                if self.status == "starting":
                    self.status = "live"
            self._changed()
        elif kind == "cost":
            self.cost = (event["requests"], event["bytes"])
            self._changed()
        elif kind == "people":
            self._people_from(event)
        elif kind == "links":
            self._links_from(event)
        elif kind == "ended":
            self._set(event["status"], event["reason"])

    def _follow(self, connection: Any) -> None:
        try:
            while True:
                self._apply(connection.recv())
        except (EOFError, OSError):
            pass  # the helper is gone
        finally:
            connection.close()
        # If nobody stopped it and it did not say why it ended, the helper died.
        if self.status == "live" and not self._stopping:
            self._set("lost", "the share's helper process ended unexpectedly")
        self._end_helper()

    def _set(self, status: str, reason: str | None = None) -> None:
        """End the share (stopped, expired, lost or failed): the first ending sticks, and is announced once."""
        with self._state_lock:
            if self.status in ENDED:
                return
            self.status, self.reason = status, reason
            self.ended_at = datetime.datetime.now()
            self.visitors = 0
        self._changed()

    @classmethod
    def attach(cls, server: JupyterServer, record: dict[str, Any], notebook_path: str | None) -> Share:
        """The live share of ``server`` its helper's ``record`` points to, shown from this notebook: the links
        open this notebook. Raises OSError or EOFError if the helper cannot be reached."""
        share = cls(server, notebook_path)
        share._watch(record)
        return share


def _helper_environment() -> dict[str, str]:
    """The kernel's environment, less the ngrok authtoken: the helper gets it on its private pipe, and nothing
    below the helper needs it in its environment."""
    env = {name: value for name, value in os.environ.items() if name != "NGROK_AUTHTOKEN"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in {os.path.abspath(entry) for entry in sys.path}:  # imported through a path only we have
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _wait_unreaped(pid: int, timeout: float) -> None:
    """Wait up to ``timeout`` for ``pid`` to exit, without reaping it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        time.sleep(0.02)


def _size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _from_epoch(seconds: float | None) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(seconds) if seconds else None


def _clock(moment: datetime.datetime | None) -> str:
    return moment.strftime("%H:%M:%S") if moment else "?"


# -- the share of this kernel ----------------------------------------------------------------------------------------

_current: Share | None = None
_lock = threading.RLock()


def current() -> Share | None:
    """The share this kernel shows, if it is starting or live: the one it started or showed, else the live share
    of this kernel's server, whichever kernel started it (a restarted kernel finds its own share this way)."""
    global _current
    share = _current
    if share is not None and (share.status == "starting" or share.live):
        return share
    with _lock:
        found = _find_live_share()
        if found is not None:
            _current = found
        return found


def latest() -> Share | None:
    """This kernel's share, or its most recent one, whatever its status."""
    return current() or _current


def _find_live_share(server: JupyterServer | None = None, notebook: str | None = None) -> Share | None:
    """The live share of ``server`` (default: the server running this kernel), shown from this kernel."""
    kernel = kernel_id()
    if server is None:
        if kernel is None:
            return None
        try:
            server = find_server(kernel)
        except ShareError:
            return None
        notebook = server.notebook_path(kernel)
    record = control.read_record(control.record_path(server.url))
    if record is None:
        return None
    try:
        share = Share.attach(server, record, notebook)
    except (OSError, EOFError):  # it ended meanwhile
        return None
    share.collaborative = server.has_collaboration()
    return share


def parse_duration(text: str | float | None) -> float | None:
    """Seconds from ``90s``, ``30m``, ``2h``, ``1h30m``, ``1d`` (or a number of seconds); None for no limit."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        spec = str(text).strip().lower().replace(" ", "")
        parts = DURATION_PART.findall(spec)
        if not parts or "".join(number + unit for number, unit in parts) != spec:
            raise ShareError(f"{text!r} is not a duration. Use a number with a unit, e.g. --for 30m (also 90s, 2h, "
                             "1h30m, 1d).")
        seconds = sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)
    if not 0 < seconds <= MAX_DURATION:
        raise ShareError(f"{text!r} is not a duration a share can last: give more than 0 s and at most 30 days, "
                         "e.g. --for 30m.")
    return seconds


def share(*, port: int | None = None, url: str | None = None, token: str | None = None,
          include_token: bool = True, authtoken: str | None = None, insecure: bool = False,
          timeout: float = STARTUP_TIMEOUT, duration: str | float | None = None, view: bool = False,
          economy: bool = True, sign_in: str | None = None) -> Share:
    """Share the Jupyter server behind this kernel (or the one at ``port``/``url``) and return the live share.

    ``duration`` (``"30m"``, ``"1h30m"``, or seconds) ends the share by itself after that long. With ``view``, the
    share gets a view-only link of this notebook (its ``view_link``); without, its edit ``link``. ``economy`` (on by
    default) compresses what visitors get and carries their pages' API calls over one websocket, to spare the
    owner's ngrok plan. ``sign_in`` (an ngrok-managed provider: google, github, ...) makes every visitor sign in at
    ngrok's edge first. Calling it again
    while a share is live returns that share, with the link asked for added; so does calling it from another
    notebook of the same server.
    """
    global _current
    seconds = parse_duration(duration)
    provider = check_provider(sign_in) if sign_in else None
    if os.name != "posix":
        raise ShareError("%share runs on Linux and macOS only for now: its helper relies on POSIX sessions and "
                         "process groups to stay alive through interrupts and die with the kernel.")
    with _lock:
        existing = current()
        if existing is not None:
            if (port or url) and server_at(url, port, token).url != existing.server.url:
                raise ShareError(f"This kernel already shares {existing.server.url} at "
                                 f"{existing.public_url}. Run %share stop first to share another server.")
            if provider and existing.sign_in != provider:
                raise ShareError(_sign_in_mismatch(existing, provider))
            existing.enable("view" if view else "edit")
            return existing
        kernel = kernel_id()
        server = server_at(url, port, token) if (port or url) else find_server(kernel)
        notebook = server.notebook_path(kernel)
        if view and not notebook:
            raise ShareError(NO_NOTEBOOK)
        found = _find_live_share(server, notebook)
        if found is not None:
            _current = found
            if provider and found.sign_in != provider:
                raise ShareError(_sign_in_mismatch(found, provider))
            found.enable("view" if view else "edit")
            return found
        authenticated = server.has_authentication()
        if not authenticated and not insecure:
            raise UnsafeServer(
                "This Jupyter server has no authentication (no token, no password), so a public link would let "
                "anyone on the internet run code on this machine. Fix: restart Jupyter with its default token, "
                "or set a password with `jupyter server password`. To share it anyway, run %share --insecure.")
        _current = Share(server, notebook, include_token=include_token, authenticated=authenticated,
                         duration=seconds, view=view, economy=economy, sign_in=provider)
        _current.collaborative = server.has_collaboration()
        # Bound to the kernel id where the server answers for this kernel (a restart keeps the share); else to
        # this process (another server's share, or one that cannot be asked without a token).
        bound = kernel if kernel and server.owns_kernel(kernel) else None
        _current.start(authtoken, timeout, kernel=bound)
        return _current


def _sign_in_mismatch(share: Share, provider: str) -> str:
    now = (f"with sign-in through {PROVIDER_NAMES.get(share.sign_in, share.sign_in)}" if share.sign_in
           else "without sign-in")
    return (f"This server is already shared {now}, and a live share's sign-in cannot change (ngrok fixes an "
            f"endpoint's policy when it starts). Fix: %share stop, then %share --sign-in {provider} (links made so far "
            "stop working).")


def stop(*, owned_only: bool = False) -> bool:
    """Stop this kernel's share; return whether there was one to stop.

    With ``owned_only``, only a share this kernel started (in this process or before a restart) and found already
    is stopped: one another notebook started is that notebook's.
    """
    share = _current if owned_only else current()
    if share is None or share.status not in ("starting", "live") or (owned_only and share.attached):
        return False
    share.stop()
    return True
