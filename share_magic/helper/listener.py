"""The helper's end of the control channel (:mod:`share_magic.control`): a listener in a private folder, and the
record that tells kernels where it is."""
from __future__ import annotations

import json
import os
import secrets
import tempfile
from multiprocessing.connection import Connection, Listener
from typing import Any

from ..folders import PREFIX, private_folder, remove_folder
from ..jupyter import runtime_dir
from ..processes import me

FOLDER_PREFIX = "control-"
SOCKET_NAME = "control"
MAX_SOCKET_PATH = 100  # sun_path holds 104 (macOS) to 108 (Linux) bytes


class ControlListener:
    """The helper's end: a listener in a private folder, beside the record when the path fits in a socket name."""

    def __init__(self) -> None:
        self.authkey = secrets.token_bytes(32)
        self.folder = private_folder(FOLDER_PREFIX, socket_parent())
        self.address = os.path.join(self.folder, SOCKET_NAME)
        self.listener = Listener(self.address, family="AF_UNIX", authkey=self.authkey)
        os.chmod(self.address, 0o600)

    def accept(self) -> Connection | None:
        """The next client that proved it knows the key; None for one that did not (or hung up)."""
        try:
            return self.listener.accept()
        except (OSError, EOFError, Exception):  # AuthenticationError among them: that client is simply dropped
            return None

    def close(self) -> None:
        try:
            self.listener.close()
        except OSError:
            pass
        remove_folder(self.folder)


def socket_parent() -> str:
    """Where the control folder goes: beside the record, else (a deep runtime folder) in the temporary folder, else
    (a deep TMPDIR too) in /tmp; a path too long for a socket's name cannot be bound at all."""
    runtime = runtime_dir()
    os.makedirs(runtime, mode=0o700, exist_ok=True)
    for parent in (runtime, tempfile.gettempdir(), "/tmp"):
        if len(os.path.join(parent, PREFIX + FOLDER_PREFIX + "x" * 8, SOCKET_NAME)) <= MAX_SOCKET_PATH:
            return parent
    raise RuntimeError(f"no folder for the control socket: {runtime} and {tempfile.gettempdir()} are too deep")


def write_record(path: str, record: dict[str, Any]) -> None:
    """Write the record (0600) in one step: a reader finds the whole of it or none."""
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(temporary, path)


def record_of_this_helper(**fields: Any) -> dict[str, Any]:
    """The record a helper writes: who it is (pid and start time, for :func:`read_record`) and ``fields``."""
    return {"helper_pid": os.getpid(), "helper": me(), **fields}
