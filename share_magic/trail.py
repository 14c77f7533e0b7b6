"""The trail's file (both sides): where each server's trail lives, how the helper writes it and how a kernel reads
it for ``%share log``.

One file per server (``trail-<hash of the server URL>.jsonl``, like the control record), one JSON object a line:
``{"t": epoch seconds, "who": ..., "what": ...}``, written as the share goes and kept after it ends, in a folder of
Jupyter's data folder that only this user may enter (0700; the files 0600). A new share of the same server moves the
last one's trail aside (``.1``, then ``.2``...), keeping :data:`KEEP` earlier trails; each file stops growing at
:data:`MAX_BYTES` (its last line says so).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import threading
from typing import Any

from .processes import private_dir

MAX_BYTES = 4 * 1024 * 1024  # per trail
KEEP = 3  # earlier trails of a server kept beside the latest one
FULL = "the trail is full: nothing more is written for this share"


def folder() -> str:
    """The folder of every trail, made only this user's if it is new; an OSError if it is someone else's."""
    from jupyter_core.paths import jupyter_data_dir

    return private_dir(os.path.join(jupyter_data_dir(), "share_magic", "trails"))


def path_for(server_url: str, earlier: int = 0) -> str:
    """The latest trail of the server at ``server_url`` (``earlier`` 1: the one before, and so on)."""
    digest = hashlib.sha256(server_url.encode()).hexdigest()[:16]
    return os.path.join(folder(), f"trail-{digest}.jsonl" + (f".{earlier}" if earlier else ""))


class TrailFile:
    """The helper's end: a new trail for a new share (the last one moved aside), appended line by line."""

    def __init__(self, server_url: str) -> None:
        self.path = path_for(server_url)
        for number in range(KEEP, 0, -1):  # .2 -> .3, .1 -> .2, latest -> .1; the oldest goes
            older = path_for(server_url, number - 1)
            if os.path.exists(older):
                os.replace(older, path_for(server_url, number))
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        os.fchmod(descriptor, 0o600)
        self._file = os.fdopen(descriptor, "a", encoding="utf-8")
        self._size = 0
        self._full = False
        self._lock = threading.Lock()

    def write(self, moment: float, who: str, what: str) -> None:
        line = json.dumps({"t": round(moment, 3), "who": who, "what": what}, ensure_ascii=False) + "\n"
        with self._lock:
            if self._full or self._file.closed:
                return
            if self._size + len(line.encode()) > MAX_BYTES - 200:
                line, self._full = json.dumps({"t": round(moment, 3), "who": "share_magic", "what": FULL}) + "\n", True
            self._file.write(line)
            self._file.flush()
            self._size += len(line.encode())

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read(server_url: str) -> list[dict[str, Any]]:
    """The latest trail of a server, oldest first; [] when it has none."""
    try:
        with open(path_for(server_url), encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short by a helper that was killed mid-write
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def format_entries(entries: list[dict[str, Any]]) -> str:
    """What ``%share log`` prints: time, who, what; a second line of code indented below the first."""
    width = max((len(str(entry.get("who", ""))) for entry in entries), default=0)
    lines = []
    for entry in entries:
        moment = datetime.datetime.fromtimestamp(float(entry.get("t") or 0))
        what = _printable(str(entry.get("what", ""))).splitlines() or [""]
        lead = f"{moment:%Y-%m-%d %H:%M:%S}  {_printable(str(entry.get('who', ''))):<{width}}  "
        lines.append(lead + what[0])
        lines += [" " * len(lead) + more for more in what[1:]]
    return "\n".join(lines)


def _printable(text: str) -> str:
    """``text`` without escape or control characters (but its line breaks): what a visitor typed or ran must not
    recolour or hide lines of the log where it is printed."""
    return "".join(ch for ch in text if ch == "\n" or (ch >= " " and not "\x7f" <= ch <= "\x9f"))
