"""Listening to the share's kernel's broadcast channel (IOPub), and nothing else.

The kernel publishes every cell run on IOPub -- its code, each output as it comes, busy and idle -- to whichever
front-end subscribes. The tap is one more subscriber: a zmq SUB socket to the address in the kernel's connection file,
each message checked against that file's key (jupyter_client's :class:`~jupyter_client.session.Session` verifies its
signature; a message that fails is dropped). A SUB socket cannot send to the kernel, and the tap opens no other: it
never reaches the kernel's shell, control or stdin channels, so nothing a reader does can reach the kernel. The key
stays in the kernel's own file (private to its user), read here and kept in memory only.

A kernel restarted by Jupyter keeps its ports and key (zmq reconnects by itself), though Jupyter writes its connection
file again; a connection file that names another channel (another kernel in its place) moves the socket to it.
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable

POLL_MS = 500
RECHECK = 2.0  # seconds between looks at whether the connection file changed


class KernelTap:
    """Delivers each verified IOPub message of one kernel, as a dict, to ``deliver`` (on the tap's own thread)."""

    def __init__(self, connection_file: str, deliver: Callable[[dict[str, Any]], None]) -> None:
        self.connection_file = connection_file
        self.deliver = deliver
        self.rejected = 0  # messages whose signature did not verify
        self.received = 0
        self.looks = 0  # times the connection file was read (it changed)
        self.subscriptions = 0  # sockets opened to a channel
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="share_magic kernel tap")

    def start(self) -> KernelTap:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        import zmq

        context = zmq.Context()
        socket = None
        stamp: tuple[int, int] | None = None
        followed: tuple | None = None  # the channel and key the socket follows
        session = None
        try:
            while not self._closed.is_set():
                now = _stamp(self.connection_file)
                if now != stamp:
                    stamp = now
                    connection = _read(self.connection_file) if now is not None else None
                    self.looks += 1
                    channel = _channel(connection)
                    if channel != followed:  # a restart rewrites the file as it was: kept, as zmq reconnects by
                        if socket is not None:  # itself; a new socket would lose what comes before it joins
                            socket.close(linger=0)
                            socket = None
                        followed = channel
                        if connection is not None:
                            socket, session = _subscribe(context, connection)
                            self.subscriptions += 1
                if socket is None:
                    self._closed.wait(RECHECK)
                    continue
                deadline = RECHECK * 1000
                while deadline > 0 and not self._closed.is_set():
                    if socket.poll(POLL_MS):
                        self._receive(socket, session)
                    else:
                        deadline -= POLL_MS
        finally:
            if socket is not None:
                self._receive(socket, session)  # what came before the close (a shutdown's reply) is still said
                socket.close(linger=0)
            context.term()

    def _receive(self, socket: Any, session: Any) -> None:
        import zmq

        while True:
            try:
                parts = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                _, signed = session.feed_identities(parts, copy=True)
                message = session.deserialize(signed, content=True, copy=True)
            except Exception:  # not signed with the kernel's key, or not a Jupyter message: never shown
                self.rejected += 1
                continue
            self.received += 1
            try:
                self.deliver(message)
            except Exception:  # a message the view cannot use must not end the tap
                import traceback

                traceback.print_exc()


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_ino


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            connection = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(connection, dict) or not connection.get("key") or "iopub_port" not in connection:
        return None  # an unsigned kernel's messages could come from anyone on its port: not followed
    return connection


def _channel(connection: dict[str, Any] | None) -> tuple | None:
    """What a connection file says of the channel the tap follows: where IOPub is, and how it is signed."""
    if connection is None:
        return None
    return tuple(connection.get(name) for name in ("transport", "ip", "iopub_port", "key", "signature_scheme"))


def _subscribe(context: Any, connection: dict[str, Any]) -> tuple[Any, Any]:
    import zmq
    from jupyter_client.session import Session

    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    socket.setsockopt(zmq.LINGER, 0)
    transport, ip = connection.get("transport", "tcp"), connection.get("ip", "127.0.0.1")
    port = connection["iopub_port"]
    socket.connect(f"tcp://{ip}:{port}" if transport == "tcp" else f"ipc://{ip}-{port}")
    session = Session(key=str(connection["key"]).encode(),
                      signature_scheme=connection.get("signature_scheme", "hmac-sha256"), check_pid=False)
    return socket, session
