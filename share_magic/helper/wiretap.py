"""Reading what a visitor sends on a websocket, for the trail (helper side): the code they run on a kernel's
websocket, the lines they type in a terminal.

The relay hands the trail a copy of the bytes the visitor sent, exactly as they passed (masked frames, compressed
with permessage-deflate when the two ends agreed on it); :class:`Frames` reads them back into messages with wsproto,
the extension set up from the response's ``Sec-WebSocket-Extensions``. A kernel's messages are Jupyter's JSON (text
frames) or, with the ``v1.kernel.websocket.jupyter.org`` subprotocol, its binary layout (offsets, then the channel
and the message's parts). Nothing here ever writes to a socket: a frame it cannot read ends its reading, never the
relay.
"""
from __future__ import annotations

import json
import re
from typing import Callable

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, Opcode

V1 = "v1.kernel.websocket.jupyter.org"
MESSAGE_LIMIT = 4 * 1024 * 1024  # a larger message (an upload over a websocket) is passed over unread
CODE_LINES = 8  # the first lines of code the trail keeps
LINE_LIMIT = 200  # characters of one line the trail keeps
ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")

Headers = list[tuple[str, str]]
Emit = Callable[[str], None]


def header(headers: Headers, name: str) -> str:
    return ", ".join(value for key, value in headers if key.lower() == name)


class Frames:
    """Messages out of the bytes a browser sends on a websocket (the server's side of it)."""

    def __init__(self, response_headers: Headers) -> None:
        extensions = []
        offered = header(response_headers, "sec-websocket-extensions")
        if offered.strip().lower().startswith("permessage-deflate"):
            deflate = PerMessageDeflate()
            deflate.finalize(offered)
            extensions.append(deflate)
        self.protocol = FrameProtocol(client=False, extensions=extensions)
        self.parts: list[bytes | str] = []
        self.size = 0
        self.skipping = False

    def messages(self, data: bytes) -> list[tuple[Opcode, bytes | str]]:
        """The whole messages ``data`` completes (control frames left out)."""
        self.protocol.receive_bytes(data)
        done = []
        for frame in self.protocol.received_frames():
            if frame.opcode.iscontrol():
                continue
            if not self.skipping:
                self.size += len(frame.payload)
                self.skipping = self.size > MESSAGE_LIMIT
                self.parts = [] if self.skipping else [*self.parts, frame.payload]
            if frame.message_finished:
                if not self.skipping:
                    done.append((frame.opcode, (b"" if frame.opcode is Opcode.BINARY else "").join(self.parts)))
                self.parts, self.size, self.skipping = [], 0, False
        return done


def kernel_message(opcode: Opcode, payload: bytes | str, subprotocol: str) -> dict | None:
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
    """The first lines of ``code``, each cut short if long, with a note of how many more there were."""
    lines = [line[:LINE_LIMIT] + ("..." if len(line) > LINE_LIMIT else "") for line in code.strip("\n").splitlines()]
    kept = lines[:CODE_LINES]
    if len(lines) > CODE_LINES:
        kept.append(f"... ({len(lines) - CODE_LINES} more lines)")
    return "\n".join(kept)


class KernelReader:
    """A kernel's websocket: each execute request is code run (``emit("ran code...")``)."""

    def __init__(self, response_headers: Headers, emit: Callable[[str], None]) -> None:
        self.frames = Frames(response_headers)
        self.subprotocol = header(response_headers, "sec-websocket-protocol").strip()
        self.emit = emit

    def read(self, data: bytes) -> None:
        for opcode, payload in self.frames.messages(data):
            message = kernel_message(opcode, payload, self.subprotocol)
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
        self.frames = Frames(response_headers)
        self.emit = emit

    def read(self, data: bytes) -> None:
        for _, payload in self.frames.messages(data):
            if isinstance(payload, str) or not payload:
                continue
            kind, at = _var_uint(payload, 0)
            if kind == self.RAW:
                size, at = _var_uint(payload, at)
                if payload[at:at + size] == b"save":
                    self.emit("save")


class TerminalReader:
    """A terminal's websocket: what is typed (``["stdin", text]`` messages), a line at a time, as it would show;
    erased characters taken out, cursor keys and other escapes left out."""

    def __init__(self, response_headers: Headers, emit: Callable[[str], None]) -> None:
        self.frames = Frames(response_headers)
        self.emit = emit
        self.line = ""

    def read(self, data: bytes) -> None:
        for _, payload in self.frames.messages(data):
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            if isinstance(message, list) and len(message) >= 2 and message[0] == "stdin":
                self.type(str(message[1]))

    def type(self, text: str) -> None:
        for ch in ESCAPES.sub("", text):
            if ch in "\r\n":
                if self.line.strip():
                    self.emit(self.line[:LINE_LIMIT])
                self.line = ""
            elif ch in "\x7f\b":
                self.line = self.line[:-1]
            elif ch == "\x03":  # Ctrl-C: the line is dropped
                self.line = ""
            elif ch == "\t" or ch >= " ":
                self.line += ch

    def close(self) -> None:
        if self.line.strip():
            self.emit(self.line[:LINE_LIMIT] + "  (not entered)")
        self.line = ""
