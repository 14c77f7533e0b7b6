"""The share's control channel: how any kernel of the server finds the helper that owns the share and talks to it.

The helper listens on a Unix socket (``multiprocessing.connection``) in a folder of its own that only its user may
enter (0700, made by ``mkdtemp``; the socket itself is 0600). Its record in Jupyter's runtime folder
(``share_magic-<hash of the server URL>.json``, 0600) says where, with the key a client must prove it knows (the HMAC
challenge of ``multiprocessing.connection``, both ways). The key travels only in that record and on the helper's
private pipes, never on a command line. The helper removes both when it ends; a record left by a helper that was
killed is recognised (:func:`share_magic.processes.helper_alive`) and removed with its folder by whoever finds it.

Messages are JSON objects, one per ``send_bytes``: commands (``{"cmd": ...}``) from kernels, answers and events
(``{"event": ...}``) from the helper. Nothing on this channel is unpickled.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any

from .jupyter import runtime_dir
from .processes import helper_alive

CONNECT_TIMEOUT = 5.0


def record_path(server_url: str) -> str:
    digest = hashlib.sha256(server_url.encode()).hexdigest()[:16]
    return os.path.join(runtime_dir(), f"share_magic-{digest}.json")


def remove_record(path: str, pid: int) -> None:
    """Remove the record if it is ``pid``'s (a newer share's record is not ours to remove)."""
    try:
        with open(path, encoding="utf-8") as f:
            if json.load(f).get("helper_pid") == pid:
                os.unlink(path)
    except (OSError, ValueError):
        pass


def read_record(path: str) -> dict[str, Any] | None:
    """The record of a live helper at ``path``; a stale one (its helper is gone) is cleaned up and gives None."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if helper_alive(record.get("helper") or record.get("helper_pid")):
        return record
    _clean_up(path, record)
    return None


def _clean_up(path: str, record: dict[str, Any]) -> None:
    from .folders import remove_folder

    remove_folder(os.path.dirname(str(record.get("address") or "")))
    remove_record(path, record.get("helper_pid"))  # type: ignore[arg-type]


def connect(record: dict[str, Any], timeout: float = CONNECT_TIMEOUT) -> Connection:
    """A connection to the helper of ``record``, both sides authenticated. Reads time out after ``timeout`` seconds
    (raising an OSError) until :func:`wait_forever` lifts that."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _receive_timeout(sock, timeout)
        sock.connect(record["address"])
        connection = Connection(sock.detach())
    finally:
        sock.close()
    try:
        authkey = bytes.fromhex(record["authkey"])
        answer_challenge(connection, authkey)
        deliver_challenge(connection, authkey)
    except BaseException:
        connection.close()
        raise
    return connection


def wait_forever(connection: Connection) -> None:
    """Let reads on ``connection`` block for as long as it takes (a subscription waits for events)."""
    with socket.socket(fileno=os.dup(connection.fileno())) as sock:
        _receive_timeout(sock, 0)


def _receive_timeout(sock: socket.socket, seconds: float) -> None:
    # SO_RCVTIMEO keeps the socket blocking (what Connection expects) yet bounds every read.
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", whole, int((seconds - whole) * 1e6)))


def request(record: dict[str, Any], command: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one command to the helper and return its answer."""
    with connect(record, timeout) as connection:
        send(connection, command)
        if not connection.poll(timeout):
            raise TimeoutError(f"share_magic's helper did not answer {command.get('cmd')!r} within {timeout:g} s")
        return receive(connection)


def send(connection: Connection, message: dict[str, Any]) -> None:
    connection.send_bytes(json.dumps(message).encode())


def receive(connection: Connection) -> dict[str, Any]:
    message = json.loads(connection.recv_bytes())
    if not isinstance(message, dict):
        raise ValueError("a control message is a JSON object")
    return message
