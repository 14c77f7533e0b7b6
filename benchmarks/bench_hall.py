"""How many view readers a share holds, and whether one hostile visitor can deny the share to everyone else: the
share's gateway before (commit 9bfc5e4 by default) and after (this checkout), side by side in one run: each side its
own Jupyter server, kernel and share, up at once, the two taking turns phase by phase so that a noisy neighbour on
this shared machine falls on both.

For each count of readers (100, 500, 1,000 and 2,000 by default), that many readers arrive at the gateway's port
(the port the ngrok agent forwards to), each as a browser opening the view link does: the view key, the redirect and
the session cookie the gate gives, the page, then the page's live update stream, held open. Per count: the share
served (readers that got the page and an open stream), page loads, the owner's saves reaching every open stream, and
the helper process's threads, memory and CPU (from /proc). Among 1,000 readers an editor opens JupyterLab's page
through the edit link and runs a cell over the kernel websocket. Then one hostile reader with the view link opens
1,500 connections (half request heads that never end, half whole page requests whose answers are never read) while
an editor arrives and runs a cell and a new reader arrives.

Readers are asyncio coroutines on raw sockets (no thread per reader, no browser); this process raises its own limit
on open files to the hard limit, and the Jupyter servers start with the limit it was started with (Jupyter raises
its own, and the kernels and helpers inherit that). Everything runs on loopback: real Jupyter servers, real kernels,
the share's real helper process and the stand-in ngrok agent from tests/. Every wait has a deadline; every socket and
every process the run opened is closed or ended, on failure too.

Run:  python benchmarks/bench_hall.py [--quick] [--readers 100,500,1000,2000] [--before 9bfc5e4] [--package PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import html
import io
import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import traceback
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from harness import (  # noqa: E402
    AUTHTOKEN,
    JupyterServer,
    KernelClient,
    open_notebook,
    processes_with,
    sandbox_environment,
    share_links,
    share_processes,
    wait_for,
)

BEFORE_COMMIT = "9bfc5e4"
NOTEBOOK = "hall.ipynb"
FIGURES = 4  # random 160x120 figures, ~57 kB each: a page of ~0.3 MB, as a notebook with a few plots makes
NOTES_CELL = 1  # the cell the owner's saves change
ARRIVAL_TIMEOUT = 30.0  # for one reader's page and stream
EDIT_TIMEOUT = 30.0  # for one save to reach every open stream
EDITOR_TIMEOUT = 45.0  # for an editor's page, websocket and cell
SETTLE_TIMEOUT = 60.0  # for the helper to let go of readers who left
SETTLE_SLACK = 8  # open files above idle that still count as idle (the helper's own short-lived connections)
HOSTILE_RCVBUF = 4096  # the hostile reader's receive buffer: what of an unread answer the gateway's socket cannot
# hold waits in the gateway
TAIL = 256  # bytes of a stream kept to find a marker split across reads


# -- the package under test -----------------------------------------------------------------------------------------


def package_at(commit: str, folder: Path) -> Path:
    """share_magic as it was at ``commit``, extracted into ``folder`` (which then goes on PYTHONPATH)."""
    archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", commit, "share_magic"],
                             check=True, capture_output=True).stdout
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)
    return folder


def package_folder(path: str) -> Path:
    """The folder to put on PYTHONPATH for a copy of the package: the one holding ``share_magic/``."""
    given = Path(path).resolve()
    for folder in (given, given.parent):
        if (folder / "share_magic" / "__init__.py").is_file():
            return folder
    raise SystemExit(f"--package {path}: no share_magic package there (expected {given}/share_magic/__init__.py)")


def helper_pid(server: JupyterServer) -> int:
    """The pid of the helper process that owns this server's share. The one place this benchmark knows anything of
    the package beyond %share: the helper's record in Jupyter's runtime folder (``share_magic-*.json``, with
    ``helper_pid`` and ``server_url``), else the only ``share_magic.helper`` process of this run."""
    for record in Path(os.environ["JUPYTER_RUNTIME_DIR"]).glob("share_magic-*.json"):
        try:
            fields = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if f":{server.port}/" in str(fields.get("server_url")) and fields.get("helper_pid"):
            return int(fields["helper_pid"])
    helpers = processes_with("share_magic.helper")
    if len(helpers) != 1:
        raise RuntimeError(f"cannot tell the share's helper process: {helpers}")
    return helpers[0]


# -- the helper process, from /proc ---------------------------------------------------------------------------------


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "?"


# -- open files -----------------------------------------------------------------------------------------------------


def raise_open_files_limit(needed: int) -> int:
    """Raise this process's soft limit on open files to the hard limit; return the soft limit it had."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target < needed:
        raise SystemExit(f"this run needs about {needed} open files and the hard limit is {hard}: raise it "
                         "(ulimit -Hn) or ask for fewer readers (--readers, --hostile)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft


@contextmanager
def inherited_limit(soft: int) -> Iterator[None]:
    """Start processes with the soft limit this benchmark was started with, as a user's Jupyter would be."""
    raised, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))


# -- the shared notebook --------------------------------------------------------------------------------------------


def figure(width: int = 160, height: int = 120) -> str:
    """A PNG of random pixels (incompressible, as a detailed plot nearly is), base64-encoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))
    return base64.b64encode(data).decode()


def hall_notebook() -> dict[str, Any]:
    cells: list[dict[str, Any]] = [
        {"cell_type": "markdown", "id": "title", "metadata": {}, "source": "# Results for the hall\n\nFour figures."},
        {"cell_type": "markdown", "id": "notes", "metadata": {}, "source": "Notes: none yet."},
    ]
    for i in range(FIGURES):
        cells.append({"cell_type": "markdown", "id": f"m{i}", "metadata": {}, "source": f"## Figure {i}"})
        cells.append({"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": i + 1,
                      "source": f"plot({i})", "outputs": [{"output_type": "display_data", "metadata": {},
                                                           "data": {"image/png": figure(), "text/plain": "<Figure>"}}]})
    return {"nbformat": 4, "nbformat_minor": 5, "cells": cells,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}


# -- one side: a server, the owner's kernel, a share with an edit and a view link ------------------------------------


def ours() -> list[int]:
    """Every process of this run that outlives its server by itself for a moment: kernels, helpers, agents."""
    return share_processes() + processes_with("ipykernel")


class Side:
    """One Jupyter server running ``package`` (on PYTHONPATH for the server, its kernels and the helper), the owner's
    kernel on the shared notebook, and a share with an edit link and a view link. Both sides are up at once, so each
    is an ngrok account of its own (the stand-in gives an account one public domain, as ngrok's free plan does)."""

    def __init__(self, name: str, label: str, folder: Path, package: Path, soft_limit: int) -> None:
        self.name, self.label = name, label
        self.kernel: KernelClient | None = None
        self.idle_files = 0
        os.environ["PYTHONPATH"] = str(package)
        os.environ["NGROK_AUTHTOKEN"] = f"{AUTHTOKEN}_{name}"
        with inherited_limit(soft_limit):
            self.server = JupyterServer(folder / f"{name}-server")
        try:
            self.kernel = open_notebook(self.server, NOTEBOOK)  # (writes an empty notebook there)
            self.content = hall_notebook()
            self.path = self.server.root / NOTEBOOK
            self.path.write_text(json.dumps(self.content))
            result = self.kernel.execute("%load_ext share_magic\n%share\n%share --view", timeout=120)
            if result["error"] is not None:
                raise RuntimeError(f"%share on the {name} side: {result['error']}")
            links = share_links(self.kernel)
            self.edit_link, self.view_link = links["edit"], links["view"]
            self.host = urlsplit(self.view_link).netloc
            where, port = self.kernel.run("import share_magic\nprint(share_magic.__file__)\n"
                                          "print(share_magic.current().gateway_port)").split()
            if package.resolve() not in Path(where).resolve().parents:  # measure the code asked for, or nothing
                raise RuntimeError(f"the {name} side's kernel imported {where}, not the package in {package}")
            self.port = int(port)
            self.helper = helper_pid(self.server)
            self.saves = 0
        except BaseException:
            self.close()
            raise

    def save(self, marker: str) -> None:
        """The owner saves a one-line change, as JupyterLab saves."""
        self.saves += 1
        self.content["cells"][NOTES_CELL]["source"] = f"Notes: {marker}."
        answer = self.server.api("PUT", f"api/contents/{NOTEBOOK}", json={"type": "notebook", "content": self.content})
        if not answer.ok:
            raise RuntimeError(f"save {self.saves} on the {self.name} side: {answer.status_code} {answer.text[:200]}")

    def close(self) -> None:
        """Stop the share, the owner's kernel client and the server (:func:`end_everything` then waits for the
        processes that end with them)."""
        try:
            if self.kernel is not None:
                self.kernel.execute("%share stop", timeout=30)
        except Exception:  # a kernel that cannot answer: stopping its server ends the share too
            pass
        finally:
            try:
                if self.kernel is not None:
                    self.kernel.close()
            finally:
                self.server.stop()


def end_everything() -> None:
    """Wait for every kernel, helper and agent of this run to end with its server; kill what does not."""
    try:
        wait_for(lambda: not ours(), 30, "kernels and shares to end with their servers", interval=0.2)
    except AssertionError:
        print(f"killing what did not end: {ours()}", file=sys.stderr)
    for pid in ours():
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- HTTP/1.1 on raw asyncio streams ---------------------------------------------------------------------------------


class Answer:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    def decoded(self) -> bytes:
        if (self.header("content-encoding") or "").lower() == "gzip":
            return zlib.decompress(self.body, 16 + zlib.MAX_WBITS)
        return self.body


class Client:
    """Connections to the gateway, as the ngrok agent makes them (the public Host); every one is closed by
    :meth:`close_all`, whatever happened to it."""

    def __init__(self, port: int, host: str) -> None:
        self.port, self.host = port, host
        self.writers: set[asyncio.StreamWriter] = set()
        self.sockets: set[socket.socket] = set()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        self.writers.add(writer)
        return reader, writer

    def request(self, path: str, headers: dict[str, str]) -> bytes:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}", *(f"{k}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def get(self, path: str, headers: dict[str, str]) -> Answer:
        """One GET on a fresh connection, read whole (its body as sent), then closed."""
        reader, writer = await self.connect()
        try:
            writer.write(self.request(path, {**headers, "Connection": "close"}))
            status, fields = await read_head(reader)
            names = dict(fields)
            if status in (204, 304):
                body = b""
            elif "chunked" in names.get("transfer-encoding", "").lower():
                body = await read_chunked(reader)
            elif "content-length" in names:
                body = await reader.readexactly(int(names["content-length"]))
            else:
                body = await reader.read(-1)
            return Answer(status, fields, body)
        finally:
            self.release(writer)

    async def browse(self, path: str, jar: dict[str, str], headers: dict[str, str]) -> Answer:
        """GET ``path`` as a browser does: keeping cookies, following redirects (a few)."""
        for _ in range(4):
            cookie = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if jar else {}
            answer = await self.get(path, {**headers, **cookie})
            for key, value in answer.headers:
                if key == "set-cookie":
                    name, _, rest = value.partition("=")
                    jar[name.strip()] = rest.split(";", 1)[0]
            location = answer.header("location")
            if answer.status not in (301, 302, 303, 307, 308) or not location:
                return answer
            parts = urlsplit(location)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return answer

    def release(self, writer: asyncio.StreamWriter) -> None:
        self.writers.discard(writer)
        writer.close()

    async def close_all(self) -> None:
        for writer in list(self.writers):
            self.release(writer)
        for sock in list(self.sockets):
            sock.close()
        self.sockets.clear()
        await asyncio.sleep(0.1)  # transports close on the loop's next turns


async def read_head(reader: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    fields = []
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            fields.append((name.strip().lower(), value.strip()))
    return status, fields


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16):
        body += await reader.readexactly(size)
        await reader.readexactly(2)
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
        pass
    return bytes(body)


def path_of(link: str) -> str:
    parts = urlsplit(link)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def start_of(answer: Answer, size: int = 16384) -> str:
    """The first bytes of a body, decompressed if need be (the page names its version and stream up front)."""
    if (answer.header("content-encoding") or "").lower() == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(answer.body, size).decode(errors="replace")
    return answer.body[:size].decode(errors="replace")


# -- readers --------------------------------------------------------------------------------------------------------


class Edits:
    """The marker of the save being waited for: every reader notes when its stream brings it."""

    marker: bytes = b""


class Reader:
    """One view reader: the view link (key, redirect, cookie), the page, then the update stream, held open."""

    def __init__(self, client: Client, view_path: str, edits: Edits) -> None:
        self.client, self.view_path, self.edits = client, view_path, edits
        self.page_seconds: float | None = None
        self.open = False  # the stream's 200 came and it has not ended
        self.failure: str | None = None
        self.arrivals: dict[bytes, float] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None

    async def arrive(self, timeout: float = ARRIVAL_TIMEOUT) -> None:
        try:
            await asyncio.wait_for(self._arrive(), timeout)
        except asyncio.TimeoutError:
            self.failure = self.failure or "timeout"
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError,
                zlib.error) as e:
            self.failure = self.failure or type(e).__name__
        if not self.open:
            self.leave()

    async def _arrive(self) -> None:
        start = time.perf_counter()
        jar: dict[str, str] = {}
        page = await self.client.browse(self.view_path, jar, {"Accept": "text/html", "Accept-Encoding": "gzip"})
        if page.status != 200:
            self.failure = f"page {page.status}"
            return
        self.page_seconds = time.perf_counter() - start
        text = start_of(page)
        version = re.search(r'data-version="([^"]*)"', text)
        events = re.search(r'data-events="([^"]*)"', text)
        if not version or not events:
            self.failure = "a page without its version or stream"
            return
        reader, self.writer = await self.client.connect()
        self.writer.write(self.client.request(
            f"{html.unescape(events.group(1))}?since={quote(html.unescape(version.group(1)))}",
            {"Accept": "text/event-stream", "Accept-Encoding": "gzip", "Cache-Control": "no-cache",
             "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}))
        status, fields = await read_head(reader)
        if status != 200:
            self.failure = f"stream {status}"
            return
        gzipped = dict(fields).get("content-encoding", "").lower() == "gzip"
        self.open = True
        self.task = asyncio.create_task(self._follow(reader, gzipped))

    async def _follow(self, reader: asyncio.StreamReader, gzipped: bool) -> None:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        tail = b""
        try:
            while data := await reader.read(65536):
                tail = tail[-TAIL:] + (decompressor.decompress(data) if decompressor else data)
                marker = self.edits.marker
                if marker and marker not in self.arrivals and marker in tail:
                    self.arrivals[marker] = time.perf_counter()
        except (OSError, zlib.error):
            pass
        finally:
            self.open = False

    def leave(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.client.release(self.writer)
        self.open = False


async def arrive_all(client: Client, view_path: str, edits: Edits, count: int, rate: float) -> list[Reader]:
    """``count`` readers, arriving ``rate`` a second, each on its own (people arrive over time: a burst would
    measure the listen backlog, and a fixed number in flight would measure a queue of this client's making). Each
    has its own deadline; those still arriving are waited for."""
    readers = [Reader(client, view_path, edits) for _ in range(count)]
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(number: int, reader: Reader) -> None:
        await asyncio.sleep(max(0.0, start + number / rate - loop.time()))
        await reader.arrive()

    await asyncio.gather(*(one(number, reader) for number, reader in enumerate(readers)))
    return readers


async def save_reaches_everyone(side: Side, readers: list[Reader], edits: Edits, label: str,
                                number: int) -> tuple[list[float], int, int]:
    """The owner saves; wait (with a deadline) until every open stream brings the change. Return each reader's
    delay after the first stream's copy (by then the helper has seen and rendered the save), the streams that got
    it and the streams open when it was saved."""
    listening = [reader for reader in readers if reader.open]
    marker = f"EDIT-{label}-{number}-{uuid.uuid4().hex[:8]}"
    edits.marker = marker.encode()
    saved = time.perf_counter()
    await asyncio.to_thread(side.save, marker)
    deadline = time.monotonic() + EDIT_TIMEOUT
    while time.monotonic() < deadline and any(reader.open and edits.marker not in reader.arrivals
                                              for reader in listening):
        await asyncio.sleep(0.02)
    arrivals = [reader.arrivals[edits.marker] for reader in listening if edits.marker in reader.arrivals]
    if arrivals:
        print(json.dumps({"side": side.name, "save": marker, "save to first (s)": round(min(arrivals) - saved, 3),
                          "save to last (s)": round(max(arrivals) - saved, 3)}), file=sys.stderr, flush=True)
    first = min(arrivals, default=0.0)
    return [arrival - first for arrival in arrivals], len(arrivals), len(listening)


async def settle(pid: int, idle_files: int) -> float | None:
    """Seconds until the helper holds no more open files than when idle (readers gone); None past the deadline."""
    start = time.monotonic()
    while time.monotonic() < start + SETTLE_TIMEOUT:
        if open_files(pid) <= idle_files + SETTLE_SLACK:
            return time.monotonic() - start
        await asyncio.sleep(0.25)
    return None


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(round(0.95 * len(ordered))) - 1))]


# -- editors --------------------------------------------------------------------------------------------------------


async def editor_runs_a_cell(client: Client, side: Side, timeout: float = EDITOR_TIMEOUT) -> dict[str, Any]:
    """An editor opens the edit link (JupyterLab's page) and the kernel websocket through the gateway, and runs a
    cell: an execute_request, timed until its execute_reply."""
    outcome: dict[str, Any] = {"page": None, "page_s": None, "cell_s": None, "failure": None}
    try:
        await asyncio.wait_for(_edit(client, side, outcome), timeout)
    except asyncio.TimeoutError:
        outcome["failure"] = outcome["failure"] or "timeout"
    except Exception as e:  # a refused handshake, a reset: what the editor would see
        outcome["failure"] = outcome["failure"] or f"{type(e).__name__} {e}"[:60]
    return outcome


async def _edit(client: Client, side: Side, outcome: dict[str, Any]) -> None:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    start = time.perf_counter()
    jar: dict[str, str] = {}
    page = await client.browse(path_of(side.edit_link), jar, {"Accept": "text/html", "Accept-Encoding": "gzip"})
    outcome["page"] = page.status
    if page.status != 200:
        outcome["failure"] = f"page {page.status}"
        return
    page.decoded()  # a browser reads the whole page
    outcome["page_s"] = time.perf_counter() - start
    assert side.kernel is not None
    request = HTTPRequest(
        f"ws://127.0.0.1:{client.port}/api/kernels/{side.kernel.kernel_id}/channels?session_id={uuid.uuid4()}",
        headers={"Host": client.host, "Origin": f"https://{client.host}",
                 "Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())},
        connect_timeout=EDITOR_TIMEOUT, request_timeout=EDITOR_TIMEOUT)
    try:
        ws = await websocket_connect(request)
    except Exception as e:
        outcome["failure"] = f"websocket {getattr(e, 'code', type(e).__name__)}"
        return
    try:
        msg_id = uuid.uuid4().hex
        sent = time.perf_counter()
        await ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "editor",
                       "session": uuid.uuid4().hex, "date": "2026-01-01T00:00:00Z", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": "6 * 7", "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        while True:
            raw = await ws.read_message()
            if raw is None:
                outcome["failure"] = "websocket closed"
                return
            message = json.loads(raw)
            if message.get("msg_type") == "execute_reply" and message.get("parent_header", {}).get("msg_id") == msg_id:
                outcome["cell_s"] = time.perf_counter() - sent
                return
    finally:
        ws.close()


def editor_rows(prefix: str, outcome: dict[str, Any]) -> dict[str, Any]:
    page = (f"{outcome['page']}, {outcome['page_s']:.2f} s" if outcome["page_s"] is not None
            else f"no: {outcome['page'] or outcome['failure']}")
    cell = f"ran, {outcome['cell_s']:.3f} s" if outcome["cell_s"] is not None else f"no: {outcome['failure']}"
    return {f"{prefix}: JupyterLab page": page, f"{prefix}: cell (execute_reply)": cell}


# -- the hostile reader ---------------------------------------------------------------------------------------------


async def hostile_connections(client: Client, page_path: str, cookie: str, count: int) -> list[socket.socket]:
    """One reader with the view link opens ``count`` connections: every other one a request head that never ends,
    the rest whole page requests whose answers it never reads (with a small receive buffer, so that the answer stays
    in the gateway's hands)."""
    loop = asyncio.get_running_loop()
    endless = client.request(page_path, {"Cookie": cookie})[:-2] + b"X-Slow: a"
    whole = client.request(page_path, {"Cookie": cookie})
    opened: list[socket.socket] = []
    gate = asyncio.Semaphore(100)

    async def one(number: int) -> None:
        async with gate:
            sock = socket.socket()
            client.sockets.add(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, HOSTILE_RCVBUF)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", client.port)), 10)
                sock.send(endless if number % 2 == 0 else whole)
                opened.append(sock)
            except (OSError, asyncio.TimeoutError):
                pass

    await asyncio.gather(*(one(number) for number in range(count)))
    return opened


def answered(sockets: list[socket.socket]) -> dict[str, int]:
    """What each hostile connection got so far, peeked without reading it."""
    found = {"503": 0, "200": 0, "nothing yet": 0, "closed": 0, "other": 0}
    for sock in sockets:
        try:
            data = sock.recv(16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            found["nothing yet"] += 1  # an endless head the gateway still waits on
            continue
        except OSError:
            found["other"] += 1
            continue
        kind = "503" if data.startswith(b"HTTP/1.1 503") else "200" if data.startswith(b"HTTP/1.1 200") \
            else "closed" if not data else "other"
        found[kind] += 1
    return found


# -- one side's run -------------------------------------------------------------------------------------------------


async def measure(sides: list[Side], options: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every phase on every side, the sides taking turns (the first of each phase alternating), so that noise from
    this shared machine falls on both. A phase that fails on one side is noted, and the run goes on."""
    results: dict[str, dict[str, Any]] = {side.label: {} for side in sides}
    clients = {side.label: Client(side.port, side.host) for side in sides}
    phases: list[tuple[str, Any]] = [("idle", lambda side, client, into: idle(side, client, into))]
    for count in [*options.readers, *([] if options.editor_readers in options.readers else [options.editor_readers])]:
        phases.append((f"{count} readers", lambda side, client, into, count=count: hold(
            side, client, count, options, into)))
    phases.append(("hostile reader", lambda side, client, into: hostile(side, client, options, into)))
    try:
        for number, (phase, run) in enumerate(phases):
            for side in sides if number % 2 == 0 else sides[::-1]:
                try:
                    await run(side, clients[side.label], results[side.label])
                except Exception:
                    traceback.print_exc()
                    results[side.label][f"{phase}: failed"] = "yes (see stderr)"
    finally:
        for client in clients.values():
            await client.close_all()
    return results


async def idle(side: Side, client: Client, results: dict[str, Any]) -> None:
    """The helper idle, once a first reader has come and gone (the first render done, the view's imports made)."""
    pid = side.helper
    side.idle_files = open_files(pid)
    warm = await arrive_all(client, path_of(side.view_link), Edits(), 1, 1)
    if not warm[0].open:
        raise RuntimeError(f"a first reader could not get in on the {side.name} side: {warm[0].failure}")
    warm[0].leave()
    await asyncio.sleep(0.1)
    await settle(pid, side.idle_files)
    side.idle_files = open_files(pid)
    results["helper threads, idle"] = threads(pid)
    results["helper RSS, idle (MiB)"] = rss_mib(pid)
    results["helper open files limit"] = open_files_limit(pid)


async def hold(side: Side, client: Client, count: int, options: argparse.Namespace, results: dict[str, Any]) -> None:
    pid, edits, view_path = side.helper, Edits(), path_of(side.view_link)
    editor = count == options.editor_readers
    measured = count in options.readers
    label = f"{count} readers"
    cpu = cpu_seconds(pid)
    readers: list[Reader] = []
    try:
        readers = await arrive_all(client, view_path, edits, count, options.rate)
        await asyncio.sleep(1.0)
        served = [reader for reader in readers if reader.open]
        pages = [reader.page_seconds * 1000 for reader in readers if reader.page_seconds is not None]
        failures: dict[str, int] = {}
        for reader in readers:
            if not reader.open:
                failures[reader.failure or "stream ended"] = failures.get(reader.failure or "stream ended", 0) + 1
        print(json.dumps({"side": side.name, "readers": count, "served": len(served), "not served": failures}),
              file=sys.stderr, flush=True)
        held = {"threads": threads(pid), "rss": rss_mib(pid), "files": open_files(pid)}
        if measured:
            results[f"{label}: share served (%)"] = 100 * len(served) / count
            results[f"{label}: page load, median (ms)"] = statistics.median(pages) if pages else "-"
            results[f"{label}: page load, p95 (ms)"] = p95(pages) if pages else "-"
            delays, reached, listening = [], 0, 0
            for number in range(options.edits):
                got, arrived, were_open = await save_reaches_everyone(side, readers, edits, f"{side.name}-{count}",
                                                                      number)
                delays += got
                reached, listening = reached + arrived, listening + were_open
                await asyncio.sleep(1.2)  # the view looks for saves once a second: one save per look
            missed = listening - reached
            results[f"{label}: an edit reaching every reader, p95 (ms)"] = (
                "-" if not listening else "missed" if missed > 0.05 * listening
                else p95(delays + [float("inf")] * missed) * 1000)
            results[f"{label}: open streams the edit reached (%)"] = 100 * reached / listening if listening else "-"
            results[f"{label}: helper threads"] = held["threads"]
            results[f"{label}: helper open files"] = held["files"]
            results[f"{label}: helper RSS (MiB)"] = held["rss"]
            results[f"{label}: helper CPU (s)"] = cpu_seconds(pid) - cpu
        if editor:
            prefix = f"editor among {count} readers"
            results.update(editor_rows(prefix, await editor_runs_a_cell(client, side)))
    finally:
        for reader in readers:
            reader.leave()
        await asyncio.sleep(0.1)
    released = await settle(pid, side.idle_files)
    if measured:
        results[f"{label}: helper idle again after they leave (s)"] = (
            released if released is not None else f"> {SETTLE_TIMEOUT:g}")


async def hostile(side: Side, client: Client, options: argparse.Namespace, results: dict[str, Any]) -> None:
    pid, view_path = side.helper, path_of(side.view_link)
    label = f"hostile reader, {options.hostile} connections"
    jar: dict[str, str] = {}
    admitted = await asyncio.wait_for(client.get(view_path, {"Accept": "text/html"}), ARRIVAL_TIMEOUT)
    for key, value in admitted.headers:
        if key == "set-cookie":
            name, _, rest = value.partition("=")
            jar[name.strip()] = rest.split(";", 1)[0]
    location = admitted.header("location")
    if admitted.status != 302 or not jar or not location:
        raise RuntimeError(f"the view link did not admit the hostile reader: {admitted.status}")
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    started = time.monotonic()
    sockets = await hostile_connections(client, path_of(location), cookie, options.hostile)
    try:
        placed = time.monotonic() - started
        await asyncio.sleep(1.0)
        got = answered(sockets)
        print(json.dumps({"side": side.name, "hostile": options.hostile, "connected": len(sockets),
                          "placed in (s)": round(placed, 2), "got": got}), file=sys.stderr, flush=True)
        results[f"{label}: refused at once (503)"] = got["503"]
        results[f"{label}: helper threads"] = threads(pid)
        results[f"{label}: helper RSS (MiB)"] = rss_mib(pid)
        newcomer = Reader(client, view_path, Edits())
        outcome, _ = await asyncio.gather(editor_runs_a_cell(client, side), newcomer.arrive())
        results.update(editor_rows("  editor arriving under attack", outcome))
        results["  new reader under attack: page and stream"] = (
            f"yes, {newcomer.page_seconds * 1000:.0f} ms" if newcomer.open else f"no: {newcomer.failure}")
        newcomer.leave()
    finally:
        for sock in sockets:
            client.sockets.discard(sock)
            sock.close()
    back = time.monotonic()
    recovered = None
    while time.monotonic() < back + SETTLE_TIMEOUT and recovered is None:
        reader = Reader(client, view_path, Edits())
        await reader.arrive(timeout=5)
        if reader.open:
            recovered = time.monotonic() - back
        reader.leave()
        if recovered is None:
            await asyncio.sleep(0.5)
    results["  after the attack: a new reader gets in after (s)"] = (
        recovered if recovered is not None else f"> {SETTLE_TIMEOUT:g}")
    await settle(pid, side.idle_files)


# -- the table ------------------------------------------------------------------------------------------------------


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def print_table(columns: list[str], results: dict[str, dict[str, Any]], note: str) -> None:
    names: list[str] = []
    for side in results.values():
        names += [name for name in side if name not in names]
    width = max(len(name) for name in names)
    widths = [max(len(column), *(len(cell(results[column].get(name, "-"))) for name in names)) for column in columns]
    print("\n" + textwrap.fill(note, 118) + "\n")
    print("| " + "measure".ljust(width) + " | " + " | ".join(c.rjust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "-" * (width + 2) + "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for name in names:
        values = [cell(results[column].get(name, "-")).rjust(w) for column, w in zip(columns, widths)]
        print(f"| {name.ljust(width)} | " + " | ".join(values) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", default="100,500,1000,2000", help="reader counts, comma-separated")
    parser.add_argument("--editor-readers", type=int, default=1000, help="readers in while an editor runs a cell")
    parser.add_argument("--hostile", type=int, default=1500, help="the hostile reader's connections")
    parser.add_argument("--edits", type=int, default=3, help="saves timed per reader count")
    parser.add_argument("--rate", type=float, default=100, help="readers arriving per second")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 and 50 readers, 300 hostile "
                                                             "connections, 2 saves")
    parser.add_argument("--before", default=BEFORE_COMMIT, help="the commit measured as 'before' ('none': only "
                                                                "the 'after' side)")
    parser.add_argument("--package", help="the share_magic copy measured as 'after' (default: this checkout)")
    options = parser.parse_args()
    if options.quick:
        options.readers, options.editor_readers, options.hostile, options.edits = "20,50", 50, 300, 2
    options.readers = [int(n) for n in str(options.readers).split(",") if n.strip()]
    after = package_folder(options.package) if options.package else HERE.parent
    soft = raise_open_files_limit(max([*options.readers, options.editor_readers]) + options.hostile + 512)

    packages, load = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="share-hall-") as name:
        folder = Path(name)
        os.environ.update(sandbox_environment(folder))
        for key in ("JPY_PARENT_PID", "JUPYTER_TOKEN", "JPY_SESSION_NAME"):
            os.environ.pop(key, None)
        if options.before.lower() != "none":
            packages.append(("before", f"before ({options.before})", package_at(options.before, folder / "before")))
        packages.append(("after", f"after ({options.package or 'this checkout'})", after))
        sides: list[Side] = []
        try:
            for side_name, label, package in packages:
                sides.append(Side(side_name, label, folder, package, soft))
            size = sides[0].path.stat().st_size
            results = asyncio.run(measure(sides, options))
        finally:
            for side in sides:
                try:
                    side.close()
                except Exception:
                    traceback.print_exc()
            end_everything()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    note = (f"share_magic: how many a share holds, {time.strftime('%Y-%m-%d')}: {cpu}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}; load average "
            f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end. "
            f"Readers at the gateway's port, arriving {options.rate:g} a second, each: view link (key, redirect, "
            f"cookie), the page (gzip; a {size / 1e6:.2f} MB notebook with {FIGURES} figures), the update stream "
            f"held open. Served: page 200 and an open stream. Page load: key to whole page, readers who got it. "
            f"An edit: {options.edits} saves, each reader's delay after the first stream's copy. Helper: threads, "
            f"open files, RSS when all are in; CPU over arrivals and saves. Open files limit: the helper's soft "
            f"limit.")
    print_table([label for _, label, _ in packages], results, note)


if __name__ == "__main__":
    main()
