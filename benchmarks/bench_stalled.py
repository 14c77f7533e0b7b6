"""Benchmark what outsiders who say nothing cost a share's helper: threads and memory of the helper process while
300 connections to its gateway stall (half with a head that never ends, half with a refused POST whose 1 MB body
never comes), side by side in one run for the gateway's default limits and for no limits at all (huge timeouts and
connection cap: what the gateway did before it had any).

Run:  python benchmarks/bench_stalled.py [--connections 300]
Everything runs on loopback: a real Jupyter server, the share's real helper process, the stand-in ngrok agent. The
connections go straight to the gateway's port (the stand-in edge's own costs are not the helper's).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import JupyterServer, sandbox_environment  # noqa: E402

from share_magic.helper.gateway import Limits  # noqa: E402
from share_magic.kernel.discovery import server_at  # noqa: E402

NO_LIMITS = {"head_timeout": 3600.0, "body_timeout": 3600.0, "linger": 3600.0, "max_connections": 1_000_000}


def process_status(pid: int) -> tuple[int, float]:
    """Threads and resident memory (MiB) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


class Helper:
    """The share's helper process, started as sharing.Share starts it, with these gateway limits."""

    def __init__(self, server: JupyterServer, limits: dict) -> None:
        settings = {"server": dataclasses.asdict(server_at(port=server.port, token=server.token)),
                    "startup_timeout": 20, "edit": True, "economy": True, "limits": limits,
                    "authtoken": os.environ["NGROK_AUTHTOKEN"], "record": None}
        self.process = subprocess.Popen([sys.executable, "-m", "share_magic.helper"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.process.stdin.write(json.dumps(settings) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            event = json.loads(line)
            if event["event"] == "ready":
                self.port = event["gateway_port"]
                break
            if event["event"] in ("failed", "crashed"):
                raise RuntimeError(event)

    def stop(self) -> None:
        self.process.stdin.close()  # the lifeline: the helper takes the tunnel down and exits
        self.process.wait(30)
        self.process.stdout.close()


def stall(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that stall: every other one a head that never ends, the rest a refused POST whose
    body never comes."""
    sockets = []
    for number in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"GET /api/contents HTTP/1.1\r\nHost: x\r\nX-Slow: a" if number % 2 else
                     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        sockets.append(sock)
    return sockets


def settle(pid: int, seconds: float = 1.0) -> tuple[int, float]:
    """The helper's threads and memory once they have stopped changing (or after ``seconds``)."""
    deadline, last = time.monotonic() + seconds, process_status(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = process_status(pid)
        if now[0] == last[0]:
            return now
        last = now
    return last


def measure(server: JupyterServer, limits: dict, connections: int, wait_release: float) -> dict:
    helper = Helper(server, limits)
    pid = helper.process.pid
    try:
        idle = settle(pid)
        sockets = stall(helper.port, connections)
        try:
            time.sleep(0.5)  # a benchmark, not a test: let the accept loop take them all
            held = settle(pid)
            released, after = None, None
            if wait_release:
                start = time.monotonic()
                while time.monotonic() < start + wait_release and process_status(pid)[0] > idle[0] + 2:
                    time.sleep(0.2)
                released, after = process_status(pid), time.monotonic() - start
        finally:
            for sock in sockets:
                sock.close()
        return {"idle": idle, "held": held, "released": released, "after": after}
    finally:
        helper.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=300)
    args = parser.parse_args()
    defaults = Limits()
    with tempfile.TemporaryDirectory(prefix="share-bench-") as folder:
        os.environ.update(sandbox_environment(Path(folder)))
        server = JupyterServer(Path(folder) / "root")
        try:
            unlimited = measure(server, NO_LIMITS, args.connections, 0)
            limited = measure(server, {}, args.connections, defaults.head_timeout + 10)
        finally:
            server.stop()
    print(f"Helper process under {args.connections} stalled connections (half endless heads, half refused POSTs "
          f"with a 1 MB body that never comes); defaults: head {defaults.head_timeout:g} s, body "
          f"{defaults.body_timeout:g} s, at most {defaults.max_connections} connections.\n")
    rows = [("threads, idle", unlimited["idle"][0], limited["idle"][0]),
            (f"threads, {args.connections} stalled", unlimited["held"][0], limited["held"][0]),
            ("threads, once released", "(held)", limited["released"][0]),
            ("  released after (s)", "never", limited["after"]),
            ("memory, idle (MiB)", unlimited["idle"][1], limited["idle"][1]),
            (f"memory, {args.connections} stalled (MiB)", unlimited["held"][1], limited["held"][1]),
            ("memory, once released (MiB)", "(held)", limited["released"][1])]
    print(f"| {'measure':<34} | {'no limits':>10} | {'defaults':>10} |")
    print(f"|{'-' * 36}|{'-' * 12}|{'-' * 12}|")
    for name, before, after in rows:
        cells = [f"{value:>10.1f}" if isinstance(value, float) else f"{value:>10}" for value in (before, after)]
        print(f"| {name:<34} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
