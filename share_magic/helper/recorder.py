"""The trail: who did what through the share, learnt from what passes the gateway (helper side).

Two things tell it: the gate, of every request it lets through to Jupyter (:meth:`Recorder.request`, the bridge's
replayed calls included, since the bridge asks the gate again for each), and the relay, of every websocket of an
admitted session (:meth:`Recorder.tap`: a copy of the bytes the visitor sends, read by :mod:`.wiretap`). Both only
queue what they are told; one thread of the recorder's reads it, names the visitor, and writes the trail's file
(:mod:`share_magic.trail`) line by line. Should visitors send faster than it reads, it stops reading that websocket
(and says so in the trail) rather than slow anyone down.

One visitor cannot fill the trail: each person's lines of each kind (typed in a terminal, code run, everything
else) take at most :data:`PERSON_SHARE` bytes of it one by one; past that they are counted and summed up ("typed
45,000 more lines in a terminal"), at most once a minute and before that person's next line that is kept. Visitors
together take at most the trail's size but :data:`RESERVE`, which keeps room for the owner's lines and the
summaries.

Who: the invitation's name, the verified e-mail, or the name given in the lobby ("Grace (name they gave)"); else
"visitor 3 (anyone-link)", numbered in the order they came. What: joined, left and came back; opened a notebook or
file; ran code (its first lines, in which notebook); opened a terminal and typed in it, line by line; wrote,
created, renamed or deleted a file; downloaded or exported one. What it cannot see: what the code they ran did, and
edits typed with real-time collaboration that were never run.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote

from ..jupyter import JupyterServer
from ..trail import MAX_BYTES, TrailFile, clean
from .grants import Session
from .lobby import CHOSEN
from .wiretap import KernelReader, RoomReader, TerminalReader

BACKLOG_LIMIT = 16 * 1024 * 1024  # bytes of websocket traffic queued unread; past it, that websocket goes unread
REPEAT_AFTER = 300.0  # seconds before the same open or download of one visitor is written again
OWNER = "owner"
PERSON_SHARE = 256 * 1024  # bytes of the trail one person's lines of one kind take one by one
RESERVE = 1024 * 1024  # bytes of the trail kept for the owner's lines and the summaries
SUMMARY_EVERY = 60.0  # seconds between two summaries of what one person did past their share
KINDS = {"typed": "typing in terminals", "ran": "code run", "did": "everything else they do"}
UNREAD = "the rest of this connection is not in the trail"
SUMMARIES = {"typed": "typed {:,} more line{} in a terminal", "ran": "ran code {:,} more time{}",
             "did": "did {:,} more thing{} (opened, wrote, downloaded...)"}

Headers = list[tuple[str, str]]


class Recorder:
    """The trail of one share, written to the server's trail file as it goes."""

    def __init__(self, server: JupyterServer) -> None:
        self.server = server
        self.file = TrailFile(server.url)
        self.version = 0  # counts the visitors' lines written: the owner reports last actions when it moves
        self._base = server.base_url
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        # Bytes of websocket traffic queued (counted by the relay's thread only) and read (by the recorder's only):
        # one counter written from both threads would lose updates and drift.
        self._queued_bytes = 0
        self._read_bytes = 0
        self._names: dict[Session, str] = {}
        self._visitors = 0
        self._last: dict[str, tuple[float, str]] = {}  # who -> their last action
        self._repeats: dict[tuple[str, str], float] = {}
        self._notebooks: dict[str, str] = {}  # kernel id -> the notebook it runs
        self._documents: dict[str, str | None] = {}  # path -> file id, of documents opened for collaboration
        self._connected: set[Session] = set()
        self._away: set[Session] = set()  # left, and may come back
        self._waiting: set[str] = set()
        self._spent: dict[tuple[str, str], int] = {}  # (who, kind) -> bytes of their lines kept one by one
        self._visitors_spent = 0
        self._held: dict[tuple[str, str], list[float]] = {}  # (who, kind) -> [lines counted, since, last summary]
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, daemon=True, name="share_magic trail")
        self._thread.start()

    # -- what it is told (any thread; quick) -------------------------------------------------------------------------

    def request(self, session: Session, method: str, target: str) -> None:
        """The gate let this request through to Jupyter."""
        self._queue.put(("request", session, method, target, time.time()))

    def note(self, who: str | Session, what: str) -> None:
        """A line of the owner's (or about someone) to write as it is."""
        self._queue.put(("note", who, what, time.time()))

    def connected(self, sessions: set[Session]) -> None:
        """The sessions holding a live connection now: who left, and who came back."""
        with self._lock:
            left, back = self._connected - sessions, (sessions - self._connected) & self._away
            self._away = (self._away | left) - sessions
            self._connected = set(sessions)
        for session in left:
            self.note(session, "left (closed their last page of the share)")
        for session in back:
            self.note(session, "came back")

    def waiting(self, labels: list[str]) -> None:
        """Who waits in the lobby now (as the trail names them): those new to the list asked to join."""
        with self._lock:
            new = [label for label in labels if label not in self._waiting]
            self._waiting = set(labels)
        for label in new:
            self.note(label, "asked to join from the lobby")

    def tap(self, session: Session, target: str, request_headers: Headers, response_headers: Headers) -> Any:
        """The relay is about to carry this websocket: an observer of what the visitor sends, or None."""
        parts = self._path(target).split("/")
        if len(parts) == 4 and parts[:2] == ["api", "kernels"] and parts[3] == "channels":
            kernel = parts[2]
            return Tapped(self, session, lambda emit: KernelReader(response_headers, emit),
                          lambda code: ("ran", kernel, code))
        if len(parts) == 4 and parts[:3] == ["api", "collaboration", "room"] and parts[3].count(":") >= 2:
            file_id = parts[3].split(":", 2)[2]
            return Tapped(self, session, lambda emit: RoomReader(response_headers, emit),
                          lambda _: ("saved", file_id, ""))
        if len(parts) == 3 and parts[:2] == ["terminals", "websocket"]:
            terminal = parts[2]
            self.note(session, f"opened terminal {terminal}")
            return Tapped(self, session, lambda emit: TerminalReader(response_headers, emit),
                          lambda line: ("typed", terminal, line))
        return None

    def last_actions(self) -> dict[str, list[Any]]:
        """Each person's last action: who -> [epoch seconds, what]."""
        with self._lock:
            return {who: [moment, what] for who, (moment, what) in self._last.items()}

    def written(self) -> list[str]:
        """The helper's copy of the trail: the lines it wrote, whatever became of the file."""
        return self.file.written()

    def close(self) -> None:
        """Write what is queued (and what was counted), then close the file."""
        self._queue.put(("summaries",))
        self._queue.put(None)
        self._thread.join(10)
        self.file.close()

    # -- the recorder's thread --------------------------------------------------------------------------------------

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._handle(item)
            except Exception:  # a line it cannot make is a line missing from the trail, nothing more
                pass

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "request":
            _, session, method, target, moment = item
            what = self._what(method, target)
            who = self.who(session, moment)
            if what and self._fresh(who, what, method, moment):
                self._write(moment, who, clean(what))
        elif kind == "note":
            _, who, what, moment = item
            self._write(moment, who if isinstance(who, str) else self.who(who, moment), what)
        elif kind == "bytes":
            _, tapped, data, shown = item
            self._read_bytes += len(data)
            tapped.read(data, shown)
        elif kind == "closed":
            item[1].finish()
        elif kind == "summaries":
            for who in {who for who, _ in self._held}:
                self._summarize(who, time.time())
        elif kind == "said":
            _, session, (what, where, text), moment = item
            who = self.who(session, moment)
            if what == "ran":
                self._write(moment, who, f"ran code in {clean(self._notebook(where))}:\n{text}", "ran")
            elif what == "saved":
                self._write(moment, who, f"wrote {clean(self._document(where))} (saved in real-time collaboration)")
            else:
                self._write(moment, who, f"typed in terminal {clean(where)}: {text}", "typed")

    def who(self, session: Session, moment: float | None = None) -> str:
        """What the trail calls this session's person (a first request writes that they joined)."""
        name = self._names.get(session)
        if name is not None:
            return name
        grant = session.grant
        if grant.person and grant.chosen:
            name, how = f"{grant.person} ({CHOSEN})", "was let in from the lobby"
        elif grant.person:
            name, how = grant.person, "joined with a personal link"
        elif session.identity is not None:
            name, how = session.identity.email, "joined with the share's link, signed in"
        else:
            self._visitors += 1
            name, how = f"visitor {self._visitors} (anyone-link)", "joined with the share's link"
        self._names[session] = name
        self._write(moment or time.time(), name, how)
        return name

    def _write(self, moment: float, who: str, what: str, kind: str = "did") -> None:
        if who != OWNER and not self._kept(moment, who, what, kind):
            return
        self.file.write(moment, who, what)
        if who == OWNER:  # what kernels show is each visitor's last action
            return
        with self._lock:
            self._last[who] = (moment, what.splitlines()[0] if what else what)
            self.version += 1

    def _kept(self, moment: float, who: str, what: str, kind: str) -> bool:
        """Whether a visitor's line is kept one by one (their earlier counted lines summed up first); else it is
        counted."""
        size = len(who) + len(what) + 40
        key = (who, kind)
        spent = self._spent.get(key, 0)
        if spent + size <= PERSON_SHARE and self._visitors_spent + size <= MAX_BYTES - RESERVE:
            self._spent[key] = spent + size
            self._visitors_spent += size
            self._summarize(who, moment)
            return True
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = [0, moment, moment]
            full = "their share of the trail" if spent + size > PERSON_SHARE else "the visitors' part of the trail"
            self.file.write(moment, who, f"{full} for {KINDS[kind]} is used up: from here on that is counted, and "
                                         "summed up every minute")
        held[0] += 1
        if moment - held[2] >= SUMMARY_EVERY:
            self._summarize(who, moment)
        return False

    def _summarize(self, who: str, moment: float) -> None:
        """The lines of ``who`` counted since the last summary, summed up (one line for each kind)."""
        for (person, kind), held in self._held.items():
            if person == who and held[0]:
                count = int(held[0])
                since = time.strftime("%H:%M:%S", time.localtime(held[1]))
                self.file.write(moment, who, f"since {since}, {SUMMARIES[kind].format(count, 's' if count > 1 else '')}"
                                             " (counted: past their share of the trail)")
                held[:] = [0, moment, moment]

    def _fresh(self, who: str, what: str, method: str, moment: float) -> bool:
        """Whether to write ``what`` now: an open or a download already written a little while ago is not."""
        if not what.startswith(("opened ", "downloaded ", "exported ")):
            return True
        last = self._repeats.get((who, what))
        self._repeats[(who, what)] = moment
        return last is None or moment - last > REPEAT_AFTER

    def _path(self, target: str) -> str:
        path = target.split("?", 1)[0]
        return unquote(path[len(self._base):] if path.startswith(self._base) else path.lstrip("/"))

    def _what(self, method: str, target: str) -> str | None:
        """A request, in words; None for what the trail leaves out (polls, static files, checkpoints)."""
        query = parse_qs(target.partition("?")[2])
        path = self._path(target)
        if path.startswith("api/contents"):
            name = path[len("api/contents"):].strip("/")
            if "/checkpoints" in "/" + name:
                return None
            shown = name or "the top folder"
            if method == "GET" and query.get("content", ["1"])[0] != "0":
                return f"opened {shown}"
            return {"PUT": f"wrote {shown}", "POST": f"created a file in {shown}", "PATCH": f"renamed {shown}",
                    "DELETE": f"deleted {shown}"}.get(method)
        if method == "PUT" and path.startswith("api/collaboration/session/"):
            name = path[len("api/collaboration/session/"):]
            self._documents.setdefault(name, None)
            return f"opened {name}"
        if method == "GET" and path.startswith("files/"):
            return f"downloaded {path[len('files/'):]}"
        if method == "GET" and path.startswith("nbconvert/"):
            form, _, name = path[len("nbconvert/"):].partition("/")
            return f"exported {name} as {form}"
        if method == "POST" and path.rstrip("/") == "api/terminals":
            return "started a new terminal"
        return None

    def _document(self, file_id: str) -> str:
        """The path of a collaboration room's document: Jupyter's file ids are learnt the way JupyterLab learns
        them, asking for a collaboration session of each path a visitor opened."""
        for path, known in list(self._documents.items()):
            if known is None:
                notebook = path.endswith(".ipynb")
                body = json.dumps({"format": "json" if notebook else "text",
                                   "type": "notebook" if notebook else "file"})
                try:
                    status, answer = self.server.request("PUT", "api/collaboration/session/" + quote(path), body=body,
                                                         timeout=3)
                    self._documents[path] = json.loads(answer).get("fileId") if status in (200, 201) else ""
                except (OSError, ValueError):
                    pass
        found = [path for path, known in self._documents.items() if known == file_id]
        return found[0] if found else f"a document (file id {file_id[:8]})"

    def _notebook(self, kernel: str) -> str:
        """The notebook a kernel runs, as Jupyter's sessions say (asked once per kernel)."""
        if kernel not in self._notebooks:
            try:
                status, body = self.server.request("GET", "api/sessions", timeout=3)
                sessions = json.loads(body) if status == 200 else []
                for entry in sessions:
                    self._notebooks[entry["kernel"]["id"]] = entry.get("path") or entry.get("name") or ""
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return self._notebooks.get(kernel) or f"kernel {kernel[:8]}"


class Tapped:
    """One websocket's observer, as the relay sees it: ``feed`` (what the visitor sends) and ``close`` only queue
    (never raise, never wait); the recorder's thread reads. A terminal's also has ``back``, fed what the terminal
    shows the visitor."""

    def __init__(self, recorder: Recorder, session: Session, reader: Callable[[Callable[[str], None]], Any],
                 said: Callable[[str], tuple[str, str, str]]) -> None:
        self.recorder, self.session, self.said = recorder, session, said
        self.reader = reader(self._emit)
        self.unread = False  # too much to read, or unreadable: the rest of this websocket is not read
        if hasattr(self.reader, "show"):
            self.back = _Back(self)

    def feed(self, data: bytes, shown: bool = False) -> None:
        if self.unread:
            return
        recorder = self.recorder
        if recorder._queued_bytes - recorder._read_bytes + len(data) > BACKLOG_LIMIT:
            self.unread = True
            recorder.note(self.session, f"sent more on a websocket than the trail could read: {UNREAD}")
            return
        recorder._queued_bytes += len(data)
        recorder._queue.put(("bytes", self, data, shown))

    def close(self) -> None:
        self.recorder._queue.put(("closed", self))

    def read(self, data: bytes, shown: bool = False) -> None:
        if self.unread:
            return
        reader = self.reader
        frames = getattr(reader, "shown_frames" if shown else "frames", None)
        try:
            if getattr(frames, "ended", False):  # tornado's reader stopped, as Jupyter's did: the rest is not read
                raise EOFError
            (reader.show if shown else reader.read)(data)
        except Exception:
            self.unread = True
            self.recorder._handle(("note", self.session, f"sent on a websocket what the trail cannot read: {UNREAD}",
                                   time.time()))

    def finish(self) -> None:
        if not self.unread and hasattr(self.reader, "close"):
            self.reader.close()

    def _emit(self, text: str) -> None:
        self.recorder._queue.put(("said", self.session, self.said(text), time.time()))


class _Back:
    """The other direction of a terminal's websocket, fed to the same observer."""

    def __init__(self, tapped: Tapped) -> None:
        self.tapped = tapped

    def feed(self, data: bytes) -> None:
        self.tapped.feed(data, shown=True)
