"""The lifecycle of one share, seen from a kernel: find the server, start the helper or find the one running, follow
it, tell it what to do.

The helper process (:mod:`share_magic.helper`) owns the share: the gateway, the ngrok agent, the keys and the
people. This side is a thin client of it: it starts it (settings on a private pipe), then, like every other kernel
of the server, talks to it through its control channel (:mod:`share_magic.control`): a snapshot and events to stay
current, and commands.

A server has at most one share. The helper records it in Jupyter's runtime folder, so that ``%share`` in another
notebook of the same server -- or in the same notebook after a restart -- shows and runs that share instead of
opening a second tunnel, which a free ngrok account could not open anyway: all its endpoints get the same URL.

The share is bound to its kernel's id where the server can say whether that kernel still exists (it runs this
kernel and has a token): restarts keep it, a shutdown ends it. Otherwise (``--port``/``--url`` of another server,
or a server without a token) it is bound to this kernel process by the helper's standard input: when the process
ends, however it ends, the pipe closes and the share ends.
"""
from __future__ import annotations

import datetime
import os
import re
import subprocess
import threading
from typing import TYPE_CHECKING, Any, Callable

from .. import control
from ..contract import KEY_PARAM, VIEW_PAGE, check_provider, own_output
from ..errors import ServerNotFound, ShareError, UnsafeServer
from ..jupyter import JupyterServer
from .client import STARTUP_TIMEOUT, HelperClient, from_epoch
from .discovery import find_server, kernel_id, server_at
from .status import Described

if TYPE_CHECKING:
    from .people import Person, SignedIn, Waiting

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
MAX_DURATION = 30 * 86400
NO_NOTEBOOK = ("This kernel has no notebook (a console, or a kernel no notebook uses), so a view link would have "
               "nothing to show. Run %share --view in the notebook you want people to see.")


class Share(HelperClient, Described):
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
                 economy: bool = True, sign_in: str | None = None, approve: bool = False,
                 download_stall: float | None = None, live_view: bool = True) -> None:
        self.server = server
        self.live_view = live_view  # a view link shows each cell as it runs, not only the saved notebook
        self.download_stall = download_stall  # seconds without a byte before a download of the agent is given up
        self.progress: str | None = None  # while starting: how fetching the ngrok agent goes, in words
        self.progress_fraction: float | None = None
        self.approve = approve  # visitors with the share's own edit link wait until the owner lets them in
        self.waiting: list[Waiting] = []  # who waits in the lobby now, first come first
        self.actions: dict[str, tuple[datetime.datetime | None, str]] = {}  # each person's last action (the trail)
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
        self.full: str | None = None  # why the share turns new view readers away, while it does
        self.owner_notebook: str | None = None  # set on an attached share: the notebook that started it
        self.share_notebook: str | None = notebook_path  # the notebook the share's view link shows
        self.kernel_bound = False  # does the share outlive this kernel's process (bound to its kernel id)?
        self.alone: dict[str, Any] | None = None  # no Jupyter server: a view only, of the file named (standalone)
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
        from . import people

        return people.invite(self, name)

    def revoke(self, name: str) -> None:
        """Cut ``name`` off at once: their link and cookies stop working and their connections close. The share's
        own links (:attr:`link`, :attr:`view_link`), which they could have read, are replaced by new ones; people
        already in keep working."""
        from . import people

        people.revoke(self, name)

    def admit(self, name: str) -> None:
        """Let ``name`` in from the lobby: their waiting page goes on into Jupyter, and they are a person of the
        share from then on (listed, revocable with :meth:`revoke`)."""
        from . import people

        people.decide(self, "admit", name)

    def deny(self, name: str) -> None:
        """Turn ``name`` away: their waiting page says so, and the link reaches nothing from their browser."""
        from . import people

        people.decide(self, "deny", name)

    def _links_from(self, links: dict[str, Any]) -> None:
        """The share's own keys, as the helper has them now (a revocation replaces them)."""
        with self._state_lock:
            changed = (self._key, self._view_key) != (links["key"], links["view_key"])
            self._key, self._view_key = links["key"], links["view_key"]
        if changed:
            self._changed()

    def require_approval(self) -> None:
        """From now on, whoever opens the share's own edit link waits until someone lets them in (those already in
        stay in)."""
        if not self.approve:
            self._command("approve")

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

    def _people_from(self, report: dict[str, Any]) -> None:
        """Apply a report of the people, unless a newer one was applied already (answers and events cross)."""
        with self._state_lock:
            if report["version"] < self._people_version:
                return
            self._people_version = report["version"]
            self.visitors = report["visitors"]
            self.actions = {who: (from_epoch(moment), what) for who, (moment, what) in
                            (report.get("actions") or {}).items()}
            self.approve = bool(report.get("approve", self.approve))
            if report["people"] or report.get("waiting") or report.get("signed_in"):  # else none to load them for
                from . import people

                self.people, self.waiting, self.signed_in = people.from_report(self, report)
            else:
                self.people, self.waiting, self.signed_in = {}, [], []
            self.naming = report.get("naming")
            self.refused = report.get("refused") or []
            self.full = report.get("full")
        self._changed()

    def last_action(self, who: str) -> str | None:
        """What the trail saw ``who`` do last, with when: "10:02:03 ran code in shared.ipynb"."""
        found = self.actions.get(who)
        return f"{found[0]:%H:%M:%S} {found[1]}" if found and found[0] else None

    def __repr__(self) -> str:
        return f"<Share {self.status} {self.public_url or ''}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """A share as text; in IPython it shows as its widget (registered by ``share_magic``, so that this module
        needs no widget)."""
        return {"text/plain": self.describe()}, own_output()

    def observe(self, callback: Callable[[Share], None]) -> None:
        """Call ``callback(share)`` whenever the status or visitor count changes (from a background thread)."""
        self._observers.append(callback)

    def _changed(self) -> None:
        for callback in list(self._observers):
            callback(self)

    @classmethod
    def attach(cls, server: JupyterServer, record: dict[str, Any], notebook_path: str | None) -> Share:
        """The live share of ``server`` its helper's ``record`` points to, shown from this notebook: the links
        open this notebook. Raises OSError or EOFError if the helper cannot be reached."""
        share = cls(server, notebook_path)
        share._watch(record)
        return share


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
          economy: bool = True, sign_in: str | None = None, approve: bool = False,
          download_stall: float | None = None, starting: Callable[[Share], None] | None = None,
          live_view: bool = True) -> Share:
    """Share the Jupyter server behind this kernel (or the one at ``port``/``url``) and return the live share.

    ``duration`` (``"30m"``, ``"1h30m"``, or seconds) ends the share by itself after that long. With ``view``, the
    share gets a view-only link of this notebook (its ``view_link``); without, its edit ``link``. ``economy`` (on by
    default) compresses what visitors get and carries their pages' API calls over one websocket, to spare the
    owner's ngrok plan. ``sign_in`` (an ngrok-managed provider: google, github, ...) makes every visitor sign in at
    ngrok's edge first. ``live_view`` (on by default): a view link shows every cell as it runs in this kernel, not
    only the notebook as last saved. With ``approve``, whoever opens the share's own edit link waits until the owner
    lets them in (:meth:`Share.admit`, :meth:`Share.deny`; personal and view links never wait). Where the ngrok agent is
    missing (or too old, and pyngrok's own) it is downloaded first, before ``timeout`` starts, and given up after
    ``download_stall`` seconds without a byte; ``starting(share)`` is called before that, so that its observers
    can show how the download goes (:attr:`Share.progress`). Calling it again
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
            return _shown_again(existing, provider, view, approve)
        kernel, alone = kernel_id(), None
        try:
            server = server_at(url, port, token) if (port or url) else find_server(kernel)
        except ServerNotFound:
            if port or url or not view:
                raise
            from .standalone import no_server  # VS Code, PyCharm, a console: a view only
            server, alone = no_server()
        notebook = alone["name"] if alone else server.notebook_path(kernel)
        if view and not notebook and not alone:
            raise ShareError(NO_NOTEBOOK)
        found = None if alone else _find_live_share(server, notebook)
        if found is not None:
            _current = found
            return _shown_again(found, provider, view, approve)
        authenticated = alone is not None or server.has_authentication()
        if not authenticated and not insecure:
            raise UnsafeServer(
                "This Jupyter server has no authentication (no token, no password), so a public link would let "
                "anyone on the internet run code on this machine. Fix: restart Jupyter with its default token, "
                "or set a password with `jupyter server password`. To share it anyway, run %share --insecure.")
        _current = Share(server, notebook, include_token=include_token, authenticated=authenticated,
                         duration=seconds, view=view, economy=economy, sign_in=provider, approve=approve,
                         download_stall=download_stall, live_view=live_view)
        _current.alone = alone
        _current.collaborative = server.has_collaboration()
        if starting is not None:
            starting(_current)
        # Bound to the kernel id where the server answers for this kernel (a restart keeps the share); else to
        # this process (another server's share, or one that cannot be asked without a token).
        bound = kernel if kernel and server.owns_kernel(kernel) else None
        _current.start(authtoken, timeout, kernel=bound)
        return _current


def _shown_again(share: Share, provider: str | None, view: bool, approve: bool) -> Share:
    from . import commands

    return commands.shown_again(share, provider, view, approve)


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
