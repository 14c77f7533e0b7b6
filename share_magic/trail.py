"""The trail's file (both sides): where each server's trail lives, how the helper writes it and how a kernel reads
it for ``%share log``.

One file per server (``trail-<hash of the server URL>.jsonl``, like the control record), one JSON object a line:
``{"t": epoch seconds, "who": ..., "what": ...}``, written as the share goes and kept after it ends, in a folder of
Jupyter's data folder that only this user may enter (0700; the files 0600). A new share of the same server moves the
last one's trail aside (``.1``, then ``.2``...), keeping :data:`KEEP` earlier trails; each file stops growing at
:data:`MAX_BYTES` (its last line says so).

Every string is one line of plain text when it is written (:func:`clean`): control and format characters shown as
visible escapes, each line cut at :data:`LINE_LIMIT` characters. Anyone who runs code as the owner (every editor)
can rewrite the file, so the helper keeps the lines it wrote (:attr:`TrailFile.lines`) and ``%share log`` checks the
file against them while the share lives.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import threading
import unicodedata
from typing import Any

from .folders import private_dir

MAX_BYTES = 8 * 1024 * 1024  # per trail
KEEP = 3  # earlier trails of a server kept beside the latest one
FULL = "the trail is full: nothing more is written for this share"
LINE_LIMIT = 300  # characters of one line of a trail's entry
WHAT_LINES = 12  # lines of one entry's "what"
HIDDEN = {"Cc", "Cf", "Zl", "Zp", "Cs"}  # control, format (bidi overrides, zero widths), line breaks, surrogates


def clean(text: str, limit: int = LINE_LIMIT) -> str:
    """``text`` as one line that shows what it holds: control characters in caret notation (ESC is ``^[``, Ctrl-A
    ``^A``, DEL ``^?``), other invisible or reordering characters as ``<U+202E>``; cut at ``limit`` characters with
    a note of how many more there were. Cleaning clean text changes nothing."""
    shown = []
    for ch in text:
        if unicodedata.category(ch) not in HIDDEN:
            shown.append(ch)
        elif ch < " " or ch == "\x7f":
            shown.append("^" + chr(ord(ch) ^ 0x40))
        else:
            shown.append(f"<U+{ord(ch):04X}>")
    line = "".join(shown)
    return line if len(line) <= limit else f"{line[:limit]}... ({len(line) - limit:,} more characters)"


def clean_entry(who: str, what: str) -> tuple[str, str]:
    """An entry's ``who`` (one line) and ``what`` (its lines, each one clean, at most :data:`WHAT_LINES`)."""
    lines = [clean(line) for line in str(what).split("\n")]
    if len(lines) > WHAT_LINES:
        lines = [*lines[:WHAT_LINES - 1], f"... ({len(lines) - WHAT_LINES + 1} more lines)"]
    return clean(str(who), 120), "\n".join(lines)


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
        self.size = 0
        self.lines: list[str] = []  # what it wrote, as it wrote it: the file is checked against these
        self._full = False
        self._lock = threading.Lock()

    def write(self, moment: float, who: str, what: str) -> None:
        who, what = clean_entry(who, what)
        line = json.dumps({"t": round(moment, 3), "who": who, "what": what}, ensure_ascii=False) + "\n"
        with self._lock:
            if self._full or self._file.closed:
                return
            if self.size + len(line.encode()) > MAX_BYTES - 200:
                line, self._full = json.dumps({"t": round(moment, 3), "who": "share_magic", "what": FULL}) + "\n", True
            self.lines.append(line)
            self.size += len(line.encode())
            try:
                self._file.write(line)
                self._file.flush()
            except OSError:  # a full disk: the helper's copy still has it
                pass

    def written(self) -> list[str]:
        """The lines written so far (the helper's copy)."""
        with self._lock:
            return list(self.lines)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_lines(server_url: str) -> list[str]:
    """The lines of a server's latest trail file as they are now; [] when it has none."""
    try:
        with open(path_for(server_url), encoding="utf-8", errors="replace", newline="\n") as f:
            return f.readlines()
    except FileNotFoundError:
        return []


def read(server_url: str) -> list[dict[str, Any]]:
    """The latest trail of a server, oldest first; [] when it has none."""
    return entries_of(read_lines(server_url))


def entries_of(lines: list[str]) -> list[dict[str, Any]]:
    """The entries of a trail's lines (lines that are not one are left out)."""
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short by a helper that was killed mid-write
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


UNCHECKED = ("This share has ended, so its trail file cannot be checked against the helper's copy: anyone who ran "
             "code as you while it lived (every editor) could have changed it.")


def checked(in_file: list[str], kept: list[str] | None) -> tuple[list[dict[str, Any]], str | None]:
    """The trail to print, and what to say of it first: the file's lines checked against the helper's copy
    (``kept``; None once the share has ended). The helper's copy is printed when the file is not a copy of it."""
    if kept is None:
        return entries_of(in_file), UNCHECKED if in_file else None
    agree = 0
    for mine, theirs in zip(kept, in_file):
        if mine != theirs and not (agree == len(in_file) - 1 and mine.startswith(theirs)):  # a line half written
            break
        agree += 1
    if agree == len(in_file):  # the file so far is what the helper wrote (it may have written more since)
        return entries_of(kept), None
    if agree:
        moment = when((entries_of(kept[agree - 1:agree]) or [{}])[0])
        since = f"after {moment:%H:%M:%S} " + ("(its first line agrees)" if agree == 1 else
                                               f"(its first {agree:,} lines agree)")
    else:
        since = "from its first line on"
    return entries_of(kept), (f"The trail file was changed {since}: someone who runs code as you (an editor, or you) "
                              "rewrote it. The helper's copy follows.")


def format_entries(entries: list[dict[str, Any]]) -> str:
    """What ``%share log`` prints: time, who, what; a second line of code indented below the first."""
    width = min(max((len(clean(str(entry.get("who", "")), 120)) for entry in entries), default=0), 40)
    lines = []
    for entry in entries:
        who, what = clean_entry(str(entry.get("who", "")), str(entry.get("what", "")))
        lead = f"{when(entry):%Y-%m-%d %H:%M:%S}  {who:<{width}}  "
        first, *more = what.split("\n")
        lines.append(lead + first)
        lines += [" " * len(lead) + line for line in more]
    return "\n".join(lines)


def when(entry: dict[str, Any]) -> datetime.datetime:
    try:
        return datetime.datetime.fromtimestamp(float(entry.get("t") or 0))
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.datetime.fromtimestamp(0)
