"""A kernel's end of the share's helper process: start it, follow its events, send it commands, end it (kernel
side). The helper (:mod:`share_magic.helper`) owns the share; every kernel of the server is a client of it."""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from .. import control
from ..errors import ServerNotFound, ShareError, TunnelError
from ..processes import helper_alive
from .cells import connection_file, name_cells
from .discovery import NO_SERVER, kernel_id

STARTUP_TIMEOUT = 20.0  # for the ngrok agent to come up (pyngrok itself would wait forever), once it is there
REPORT_GRACE = 5.0  # on top of that, for the helper to report
STOP_TIMEOUT = 8.0
COMMAND_TIMEOUT = 10.0
ENDED = ("stopped", "expired", "lost", "failed")


class HelperClient:
    """The part of :class:`~share_magic.kernel.share.Share` that talks to the helper process."""

    def start(self, authtoken: str | None = None, timeout: float = STARTUP_TIMEOUT, kernel: str | None = None) -> None:
        """Start the helper and wait until the link is live; raise :class:`ShareError` if it cannot be. With
        ``kernel`` (an id the server answers for), the share is bound to that id rather than to this process."""
        settings = {"server": dataclasses.asdict(self.server), "startup_timeout": timeout,
                    "edit": not self.view_first, "view": self.view_first, "notebook_path": self.notebook_path,
                    "economy": self.economy, "authenticated": self.authenticated, "kernel_id": kernel,
                    "sign_in": self.sign_in, "approve": self.approve,
                    "authtoken": authtoken or os.environ.get("NGROK_AUTHTOKEN"), "include_token": self.include_token,
                    # what a view must not show, though the agent uses another: an output may print it
                    "authtokens": [token for token in (os.environ.get("NGROK_AUTHTOKEN"),) if token],
                    "duration": self.duration, "record": control.record_path(self.server.url), "alone": self.alone,
                    "download_stall": self.download_stall,
                    # the view follows the cells run in this kernel, from its broadcast channel
                    "live": self.live_view, "connection_file": connection_file()}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "share_magic.helper"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=_helper_environment(), start_new_session=True)
        self._helper_pid = self._process.pid
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(settings) + "\n")
        self._process.stdin.flush()
        outcome: queue.Queue[dict[str, Any]] = queue.Queue()
        stdout = self._process.stdout
        threading.Thread(target=_read_events, args=(stdout, outcome), daemon=True, name="share_magic start").start()
        try:
            while True:  # the helper reports how a download of the agent goes often; each report resets the wait
                event = outcome.get(timeout=timeout + REPORT_GRACE)
                if event["event"] != "progress":
                    break
                self._progress_from(event)
        except queue.Empty:
            event = {"event": "silent"}
        except KeyboardInterrupt:
            self._end_helper()
            self._set("failed", "interrupted while starting")
            raise
        finally:
            self.progress = None
        if event["event"] == "ready":
            stdout.close()  # all it had to say is said (its reader is done)
            self.gateway_port = event["gateway_port"]
            try:
                self._watch({"address": event["address"], "authkey": event["authkey"],
                             "helper_pid": self._helper_pid})
            except (OSError, EOFError) as e:
                event = {"event": "crashed", "traceback": f"its control channel did not answer: {e!r}"}
            if self.status == "live":
                self._unname = name_cells(self)
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

    def _progress_from(self, event: dict[str, Any]) -> None:
        """What the helper says of fetching the agent, in words (``%share status`` and the widget show them)."""
        from .progress import described

        self.progress, self.progress_fraction = described(event)
        self._changed()

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
        elif self._watcher is not None and self._watcher.is_alive() and helper_alive(self._helper_pid):
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

    def _command(self, command: str, **fields: str) -> dict[str, Any]:
        """Send the helper a command and wait for its answer (with the people it changed, applied before)."""
        if not self.live or self._control is None:
            raise ShareError("Nothing is shared from this kernel right now. Start a share with %share, or "
                             f"%share {command} NAME starts one for you.")
        if self.alone and (command == "invite" or fields.get("role") == "edit"):
            raise ServerNotFound(NO_SERVER)
        try:
            reply = control.request(self._control, {"cmd": command, **fields}, COMMAND_TIMEOUT)
        except (OSError, EOFError):  # the helper went away meanwhile: its watcher says so
            self._wait_for_watcher(STOP_TIMEOUT)
            raise ShareError(f"The share ended before it could {command}: {self.describe()}") from None
        if "people" in reply:
            self._people_from(reply)
        return reply

    def _watch(self, where: dict[str, Any]) -> None:
        """Connect to the helper, take the share as it is now, and follow its events in a thread until it ends.
        Raises OSError or EOFError if the helper cannot be reached."""
        connection = control.connect(where)
        try:
            control.send(connection, {"cmd": "watch"})
            if not connection.poll(COMMAND_TIMEOUT):
                raise TimeoutError(f"share_magic's helper did not answer within {COMMAND_TIMEOUT:g} s")
            self._apply(control.receive(connection))
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
            self.started_at = from_epoch(event["started_at"])
            self.expires_at = from_epoch(event["expires_at"])
            self.share_notebook = event["notebook"]
            self.include_token = bool(event["include_token"])
            self.authenticated = bool(event["authenticated"])
            self.sign_in = event.get("sign_in")
            self.kernel_bound = bool(event["kernel_id"])
            self.live_view = bool(event.get("live_view", self.live_view))
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
                self._apply(control.receive(connection))
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
        if getattr(self, "_unname", None) is not None:
            self._unname()
            self._unname = None
        self._changed()


def _read_events(stdout: Any, events: queue.Queue[dict[str, Any]]) -> None:
    """The helper's reports on its standard output: progress, then the start's outcome (the last thing it says)."""
    while True:
        line = stdout.readline()
        event = json.loads(line) if line else {"event": "exited"}
        events.put(event)
        if event["event"] != "progress":
            return


def _helper_environment() -> dict[str, str]:
    """The kernel's environment, less the ngrok authtoken: the helper gets it on its private pipe, and nothing
    below the helper needs it in its environment."""
    env = {name: value for name, value in os.environ.items() if name != "NGROK_AUTHTOKEN"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # above share_magic/
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


def from_epoch(seconds: float | None) -> datetime.datetime | None:
    return datetime.datetime.fromtimestamp(seconds) if seconds else None
