"""Reading what a visitor sends on a websocket, for the trail (helper side): the code they run on a kernel's
websocket, the lines they type in a terminal, the saves of a collaboration room.

The relay hands the trail a copy of the bytes the visitor sent, exactly as they passed; :class:`~.frames.Messages`
reads them back into messages with tornado's frame reader, as Jupyter reads them. A kernel's messages are Jupyter's
JSON (text frames) or, with the ``v1.kernel.websocket.jupyter.org`` subprotocol, its binary layout (offsets, then the
channel and the message's parts). A terminal's websocket is read both ways: what the terminal shows tells whether
what was typed was echoed (a password prompt does not echo: what is typed there is counted, never kept). Nothing
here ever writes to a socket.
"""
from __future__ import annotations

import json
import re
from typing import Callable

from ..trail import clean
from .frames import Messages

V1 = "v1.kernel.websocket.jupyter.org"
CODE_LINES = 8  # the first lines of code the trail keeps
LINE_LIMIT = 200  # characters of one line the trail keeps
ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
SHOWN_LIMIT = 64 * 1024  # characters of a terminal's output kept to find the echo of lines typed
KEYS_LIMIT = 4096  # keys of one line kept (the rest counted)
PENDING_KEYS = 1024 * 1024  # keys of lines entered that wait for their echo

Headers = list[tuple[str, str]]
Emit = Callable[[str], None]


def header(headers: Headers, name: str) -> str:
    return ", ".join(value for key, value in headers if key.lower() == name)


def kernel_message(payload: bytes | str, subprotocol: str) -> dict | None:
    """A kernel message as a dict (header, content...), from Jupyter's JSON or binary layouts; None if unreadable."""
    if isinstance(payload, str):
        message = json.loads(payload)
        return message if isinstance(message, dict) else None
    if subprotocol == V1:  # u64 count, u64 offsets; channel, header, parent_header, metadata, content, buffers
        count = int.from_bytes(payload[:8], "little")
        offsets = [int.from_bytes(payload[8 * (i + 1):8 * (i + 2)], "little") for i in range(count)]
        if count < 6:
            return None
        parts = [payload[offsets[i]:offsets[i + 1]] for i in range(count - 1)]
        return {"channel": parts[0].decode(), "header": json.loads(parts[1]), "content": json.loads(parts[4])}
    # the legacy binary layout (a message with buffers): u32 count, u32 offsets; the JSON message first
    count = int.from_bytes(payload[:4], "big")
    offsets = [int.from_bytes(payload[4 * (i + 1):4 * (i + 2)], "big") for i in range(count)]
    if not offsets:
        return None
    message = json.loads(payload[offsets[0]:offsets[1] if count > 1 else len(payload)])
    return message if isinstance(message, dict) else None


def first_lines(code: str) -> str:
    """The first lines of ``code``, each one clean and cut short if long, with a note of how many more there were
    and of the code's size when not all of it is shown."""
    lines = code.strip("\n").split("\n")
    kept = [clean(line, LINE_LIMIT) for line in lines[:CODE_LINES]]
    size = f"{len(code.encode('utf-8', 'replace')):,} bytes in all"
    if len(lines) > CODE_LINES:
        kept.append(f"... ({len(lines) - CODE_LINES:,} more lines, {size})")
    elif any(len(line) > LINE_LIMIT for line in lines):
        kept.append(f"({size})")
    return "\n".join(kept)


class KernelReader:
    """A kernel's websocket: each execute request is code run (``emit("ran code...")``)."""

    def __init__(self, response_headers: Headers, emit: Callable[[str], None]) -> None:
        self.frames = Messages(response_headers)
        self.subprotocol = header(response_headers, "sec-websocket-protocol").strip()
        self.emit = emit

    def read(self, data: bytes) -> None:
        for payload in self.frames.read(data):
            message = kernel_message(payload, self.subprotocol)
            if not message or (message.get("header") or {}).get("msg_type") != "execute_request":
                continue
            code = str((message.get("content") or {}).get("code") or "")
            if code.strip():
                self.emit(first_lines(code))


def _var_uint(data: bytes, at: int) -> tuple[int, int]:
    """A variable-length unsigned integer (lib0's encoding, as Yjs writes it) at ``at``: its value, and where the
    rest begins."""
    value, shift = 0, 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


class RoomReader:
    """A real-time collaboration room's websocket (jupyter-collaboration): the one message the trail reads is a
    save (a RAW message whose string is "save"); edits travel as CRDT updates it does not follow."""

    RAW = 2

    def __init__(self, response_headers: Headers, emit: Callable[[str], None]) -> None:
        self.frames = Messages(response_headers)
        self.emit = emit

    def read(self, data: bytes) -> None:
        for payload in self.frames.read(data):
            if isinstance(payload, str) or not payload:
                continue
            kind, at = _var_uint(payload, 0)
            if kind == self.RAW:
                size, at = _var_uint(payload, at)
                if payload[at:at + size] == b"save":
                    self.emit("save")


class TerminalReader:
    """A terminal's websocket: what is typed (``["stdin", text]`` messages), a line at a time, kept only once the
    terminal echoed it (``["stdout", text]`` messages, read by :meth:`show`).

    A line of printable characters and erasures is kept as it shows (the erased characters out); a line with any
    other key (Ctrl-A, cursor keys, Tab...) is kept as the keys sent, escaped, since what ran may differ. Ctrl-C drops
    the line. A line is kept once everything it types appears in what the terminal showed since its first key; a
    line not echoed by the time a later one is (or the terminal closes) is counted, never kept."""

    def __init__(self, response_headers: Headers, emit: Callable[[str], None]) -> None:
        self.frames = Messages(response_headers)
        self.shown_frames = Messages(response_headers, sent_by="server")
        self.emit = emit
        self.keys = ""  # the line being typed, as sent
        self.more = 0  # keys of it past KEYS_LIMIT, counted
        self.start: int | None = None  # where in what was shown its first key came
        self.shown = ""  # what the terminal showed (escapes out), from the oldest line's start
        self.base = 0  # how much was shown before self.shown
        self.entered: list[tuple[int, str, int]] = []  # lines entered, waiting for their echo: (start, keys, more)
        self.pending = 0  # keys of those lines
        self.after = 0  # where the echo of the last line said ended

    def read(self, data: bytes) -> None:
        for payload in self.frames.read(data):
            message = _terminal_message(payload)
            if message and message[0] == "stdin":
                self.type(str(message[1]))
        self._settle()

    def show(self, data: bytes) -> None:
        for payload in self.shown_frames.read(data):
            message = _terminal_message(payload)
            if not message or message[0] != "stdout":
                continue
            # readline's echo of a character is the character; around it, the drawing: cursor moves, erasures,
            # and at the right margin a space and a carriage return
            text = ESCAPES.sub("", str(message[1])).replace(" \r", "")
            if self.start is None and not self.entered:  # nobody waits for an echo: nothing to keep
                self.base += len(self.shown) + len(text)
                self.shown = ""
            else:
                self.shown += text
        if len(self.shown) > SHOWN_LIMIT:  # what waits that long for its echo was not echoed
            cut = len(self.shown) - SHOWN_LIMIT
            self.base += cut
            self.shown = self.shown[cut:]
        self._settle()

    def type(self, text: str) -> None:
        for ch in text:
            if ch in "\r\n":
                if self.keys:
                    self.entered.append((self._start(), self.keys, self.more))
                    self.pending += len(self.keys)
                self.keys, self.start, self.more = "", None, 0
            elif ch == "\x03":  # Ctrl-C: the line is dropped
                self.keys, self.start, self.more = "", None, 0
            elif len(self.keys) < KEYS_LIMIT:
                self._start()
                self.keys += ch
            else:
                self.more += 1
        while self.pending > PENDING_KEYS:  # so much typed ahead of its echo: the oldest is given up on
            start, keys, more = self.entered.pop(0)
            self.pending -= len(keys)
            self._say(start, keys, more)

    def close(self) -> None:
        for start, keys, more in self.entered:
            self._say(start, keys, more)
        if self.keys:
            self._say(self._start(), self.keys, self.more, entered=False)
        self.entered, self.keys = [], ""

    def _start(self) -> int:
        if self.start is None:
            self.start = self.base + len(self.shown)
        return self.start

    def _settle(self) -> None:
        """Say the lines entered whose echo came, in order; a line before one echoed was not echoed."""
        while self.entered:
            at, ends, hit = self.after, [], None
            for n, (start, keys, _) in enumerate(self.entered[:8]):  # echoes come in order, each after the last
                end = self._echo(start, keys, at)
                ends.append(end)
                if end is not None:
                    at, hit = end, n
            if hit is None:
                if max(self.entered[0][0], self.after) >= self.base:
                    return
                hit = 0  # where its echo would be is no longer kept: so much was shown since, and not that
            for (start, keys, more), end in zip(self.entered[:hit + 1], ends):
                self._say(start, keys, more, end=end)
            self.pending -= sum(len(keys) for _, keys, _ in self.entered[:hit + 1])
            del self.entered[:hit + 1]

    def _echo(self, start: int, keys: str, after: int) -> int | None:
        """Where the echo of ``keys`` ends in what was shown (each part of it, in order, after both where its first
        key came and ``after``, where the echo of the line before ended); None if it is not there."""
        at = max(start, after) - self.base
        if at < 0:
            return None
        for part in _typed_parts(keys):
            found = self.shown.find(part, at)
            if found < 0:
                return None
            at = found + len(part)
        return self.base + at

    def _say(self, start: int, keys: str, more: int, entered: bool = True, end: int | None = -1) -> None:
        line, edited = _as_shown(keys)
        if not line.strip():
            return
        if end == -1:
            end = self._echo(start, keys, self.after)
        if end is None:
            count = len(ESCAPES.sub("", keys)) + more
            self.emit(f"typed {count:,} character{'s' if count != 1 else ''} without an echo the trail saw (not kept: "
                      "what a password prompt reads)" + ("" if entered else ", not entered"))
            return
        self.after = end
        if edited:
            line = f"{clean(keys, LINE_LIMIT)}  (the keys sent, editing keys included: what ran may differ)"
        else:
            line = clean(line, LINE_LIMIT)
        if more:
            line += f"  (and {more:,} more keys)"
        self.emit(line + ("" if entered else "  (not entered)"))


def _terminal_message(payload: str | bytes) -> list | None:
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    return message if isinstance(message, list) and len(message) >= 2 else None


def _as_shown(keys: str) -> tuple[str, bool]:
    """The line ``keys`` make if only printable characters and erasures (True: it has other keys, so it is not
    known)."""
    line = ""
    for ch in keys:
        if ch in "\x7f\b":
            line = line[:-1]
        elif ch >= " ":
            line += ch
        else:
            return keys, True
    return line, False


def _typed_parts(keys: str) -> list[str]:
    """What the terminal shows, in this order, when it echoes ``keys``: each run of printable characters typed."""
    return [part for part in re.split(r"[\x00-\x1f\x7f]+", ESCAPES.sub("\x00", keys)) if part]
