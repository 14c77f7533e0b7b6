"""A share holds a lecture hall, and no one visitor can deny it to others (issue 23), through the real helper and
the stand-in agent; plus the parser's strictness where tornado frames requests, and a head that trickles in
(issue 27). No timing asserts: bounds on counts, outcomes forced by events. Readers are asyncio connections, each
from an address of its own on loopback (127.0.x.y), as the edge sees visitors from many places."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import urllib.parse
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from harness import processes_with, share_links, wait_for
from test_hardening import gateway_port, gateway_with
from test_units import LetEveryoneIn, read_head
from test_view import notebook, save

from share_magic.helper.capacity import Limits
from share_magic.kernel.discovery import server_at

READERS = 400  # beyond the old gateway's 256 connections for everyone
HELPER_THREADS = 32  # whatever the number of visitors


def tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


class Hall:
    """Raw connections to the share's public address (or its gateway); every one of them is closed by the fixture
    that owns the hall, whatever the test did."""

    def __init__(self, link: str) -> None:
        parts = urllib.parse.urlsplit(link)
        self.host, self.port = parts.hostname, parts.port or 443
        self.netloc = parts.netloc
        self.writers: list[asyncio.StreamWriter] = []
        self.context = tls()

    async def connect(self, number: int, gateway: int | None = None
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection from visitor ``number``'s own address: to the edge, or straight to a gateway port."""
        source = (f"127.0.{1 + number // 250}.{1 + number % 250}", 0)
        if gateway is not None:
            reader, writer = await asyncio.open_connection("127.0.0.1", gateway, local_addr=source)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=self.context,
                                                           server_hostname=self.host, local_addr=source)
        self.writers.append(writer)
        return reader, writer

    async def ask(self, number: int, target: str, cookie: str = "") -> tuple[int, dict[str, str], bytes]:
        """One whole request on a connection of its own: status, headers, body."""
        reader, writer = await self.connect(number)
        writer.write(self.head(target, cookie, close=True))
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split(" ")[1]), headers, body

    def head(self, target: str, cookie: str = "", close: bool = False) -> bytes:
        return (f"GET {target} HTTP/1.1\r\nHost: {self.netloc}\r\nAccept: text/html\r\n"
                + (f"Cookie: {cookie}\r\n" if cookie else "") + ("Connection: close\r\n" if close else "")
                + "\r\n").encode()

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass


@asynccontextmanager
async def hall(link: str):
    room = Hall(link)
    try:
        yield room
    finally:
        await room.close()


class Reader:
    """One view reader: in with the link's key, the page, then its update stream, held open."""

    def __init__(self, room: Hall, number: int, link: str) -> None:
        self.room, self.number, self.link = room, number, link
        self.cookie = ""
        self.page = b""
        self.stream: asyncio.StreamReader | None = None
        self.seen = b""

    async def enter(self) -> None:
        parts = urllib.parse.urlsplit(self.link)
        status, headers, _ = await self.room.ask(self.number, f"{parts.path}?{parts.query}")
        assert status == 302, status
        self.cookie = headers["set-cookie"].split(";")[0]
        status, _, self.page = await self.room.ask(self.number, parts.path, self.cookie)
        assert status == 200 and b"share-magic-notebook" in self.page, status
        version = re.search(rb'data-version="([^"]+)"', self.page).group(1).decode()
        self.stream, writer = await self.room.connect(self.number)
        writer.write(self.room.head(f"{parts.path}/events?since={version}", self.cookie))
        self.seen = await self.stream.readuntil(b"retry: 3000\n\n")
        assert self.seen.startswith(b"HTTP/1.1 200 OK\r\n"), self.seen[:100]

    async def until(self, marker: bytes) -> None:
        assert self.stream is not None
        while marker not in self.seen:
            data = await self.stream.read(65536)
            assert data, "the stream ended"
            self.seen += data


def helper_threads() -> int:
    (pid,) = processes_with("share_magic.helper")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status["Threads"])


@pytest.fixture
def lecture(jupyter, owner):
    """A server with shown.ipynb, a share of it with an edit link and a view link."""
    server = jupyter()
    kernel = owner(server, "shown.ipynb")
    (server.root / "shown.ipynb").write_text(json.dumps(notebook()))
    kernel.run("%load_ext share_magic\n%share\n%share --view")
    links = share_links(kernel)
    return server, kernel, links["edit"], links["view"]


def test_a_hall_of_readers_gets_the_page_each_cell_run_live_and_every_save_while_an_editor_works(lecture, visitor) -> None:
    server, kernel, edit, view = lecture
    threads_before = helper_threads()

    async def scenario() -> None:
        async with hall(view) as room:
            readers = [Reader(room, number, view) for number in range(READERS)]
            arriving = asyncio.Semaphore(64)  # arrivals in waves, as a hall fills; all of them then stay

            async def arrive(reader: Reader) -> None:
                async with arriving:
                    await reader.enter()

            await asyncio.wait_for(asyncio.gather(*(arrive(reader) for reader in readers)), 240)
            assert helper_threads() <= max(HELPER_THREADS, threads_before)

            editor = visitor(edit)
            assert editor.get(edit).status_code == 200
            live = uuid.uuid4().hex  # a cell the editor runs reaches every reader live, before any save
            cell = await asyncio.to_thread(lambda: editor.kernel(f"/api/kernels/{kernel.kernel_id}/channels").execute(
                f"print(6 * 7, 'LIVE-' + {live!r})"))
            assert cell["stdout"] == f"42 LIVE-{live}\n"
            await asyncio.wait_for(asyncio.gather(*(reader.until(f"LIVE-{live}".encode()) for reader in readers)),
                                   120)

            marker = uuid.uuid4().hex
            await asyncio.to_thread(save, server, {"cell_type": "markdown", "id": "new", "metadata": {},
                                                   "source": f"EDIT {marker}"})
            await asyncio.wait_for(asyncio.gather(*(reader.until(marker.encode()) for reader in readers)), 120)
            assert helper_threads() <= max(HELPER_THREADS, threads_before)

    asyncio.run(scenario())


def test_one_readers_many_connections_shut_out_no_one(lecture, visitor) -> None:
    """600 connections of one reader: half of them whole page requests whose answers are never read (through the
    edge, with the reader's cookie), half heads that never end (straight at the gateway, as any local account can).
    An editor still runs a cell, and a new reader still gets the page."""
    server, kernel, edit, view = lecture
    port = gateway_port(kernel)
    parts = urllib.parse.urlsplit(view)

    async def scenario() -> None:
        async with hall(view) as room:
            hostile = Reader(room, 0, view)
            await hostile.enter()
            for _ in range(300):
                _, writer = await room.connect(0)
                writer.write(room.head(parts.path, hostile.cookie))
            for _ in range(300):
                _, writer = await room.connect(0, gateway=port)
                writer.write(b"GET " + parts.path.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            await asyncio.sleep(0)
            guest = Reader(room, 7, view)
            await asyncio.wait_for(guest.enter(), 60)
            editor = visitor(edit)
            assert editor.get(edit).status_code == 200
            cell = await asyncio.to_thread(
                lambda: editor.kernel(f"/api/kernels/{kernel.kernel_id}/channels").execute("print('still here')"))
            assert cell["stdout"] == "still here\n"
            status, _, body = await room.ask(0, parts.path, hostile.cookie)
            assert status in (200, 429)  # past the reader's share of connections: theirs alone are refused

    asyncio.run(scenario())


def test_a_reader_who_leaves_frees_their_place_at_once(lecture) -> None:
    """A session holds at most Limits.per_reader connections; one that closes its stream gives its place back as
    soon as it closes (not at the stream's next write, up to 20 s later)."""
    _, _, _, view = lecture
    parts = urllib.parse.urlsplit(view)
    per_reader = Limits().per_reader

    async def scenario() -> None:
        async with hall(view) as room:
            reader = Reader(room, 3, view)
            await reader.enter()  # holds one stream
            streams = []
            for _ in range(per_reader - 1):
                stream, writer = await room.connect(3)
                writer.write(room.head(f"{parts.path}/events", reader.cookie))
                await stream.readuntil(b"\r\n\r\n")
                streams.append(writer)
            status, _, _ = await room.ask(3, parts.path, reader.cookie)
            assert status == 429
            streams[0].close()

            async def again() -> int:
                while True:
                    status, _, _ = await room.ask(3, parts.path, reader.cookie)
                    if status == 200:
                        return status
                    await asyncio.sleep(0.1)

            assert await asyncio.wait_for(again(), 5) == 200

    asyncio.run(scenario())


def test_a_helper_out_of_open_files_turns_newcomers_away_says_so_and_keeps_its_editors(lecture, visitor) -> None:
    """The helper's open files run out (its soft limit lowered to what it holds, from outside, as a tight
    `ulimit -n` would): a newcomer gets a 503 that says the share is full, the owner's `%share status` says so and
    why, and an editor already in keeps running cells. Once files are free again, a new reader gets in and the
    status no longer says full."""
    import resource

    server, kernel, edit, view = lecture
    parts = urllib.parse.urlsplit(view)
    (pid,) = processes_with("share_magic.helper")
    editor = visitor(edit)
    assert editor.get(edit).status_code == 200
    cells = editor.kernel(f"/api/kernels/{kernel.kernel_id}/channels")
    assert cells.execute("print('before')")["stdout"] == "before\n"
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)

    async def scenario() -> None:
        async with hall(view) as room:
            reader = Reader(room, 1, view)
            await reader.enter()
            held = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
            # A new file takes the lowest free number; from there on, none is free. (Should a file the helper had
            # open for a moment close meanwhile, one newcomer still gets in: the next one cannot.)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (min(set(range(len(held) + 1)) - held), hard))
            try:
                for newcomer in range(2, 5):
                    status, _, body = await room.ask(newcomer, f"{parts.path}?{parts.query}")
                    if status == 503:
                        break
                assert status == 503 and b"The share is full" in body, (status, body[:200])
                said = await asyncio.to_thread(wait_for, lambda: "FULL" in kernel.run("%share status"), 30,
                                               "the status to say the share is full")
                assert said
                assert "ran out of open files" in kernel.run("%share status")
                answer = await asyncio.to_thread(cells.execute, "print('still working')")
                assert answer["stdout"] == "still working\n"
            finally:
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
            guest = Reader(room, 5, view)
            await asyncio.wait_for(guest.enter(), 60)
            await asyncio.to_thread(wait_for, lambda: "FULL" not in kernel.run("%share status"), 30,
                                    "the status to stop saying full")

    asyncio.run(scenario())


# -- issue 27: a head that trickles in ------------------------------------------------------------------------------


class HelperProcess:
    """The share's helper, started as a kernel starts it, with gateway limits of the test's own."""

    def __init__(self, server, limits: dict, record: Path) -> None:
        settings = {"server": dataclasses.asdict(server_at(port=server.port, token=server.token)),
                    "startup_timeout": 20, "edit": True, "economy": True, "limits": limits,
                    "authtoken": os.environ["NGROK_AUTHTOKEN"], "record": str(record)}
        self.process = subprocess.Popen([sys.executable, "-m", "share_magic.helper"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps(settings) + "\n")
            self.process.stdin.flush()
            event = json.loads(self.process.stdout.readline())
            assert event["event"] == "ready", event
        except BaseException:
            self.stop()  # a helper that did not start is ended too, with its agent
            raise
        self.port = event["gateway_port"]

    def stop(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.close()  # its lifeline: the helper takes the tunnel down and exits
        except BrokenPipeError:
            pass  # it is gone already
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:  # deaf to its lifeline: its whole group (the agent too) goes
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        finally:
            self.process.stdout.close()


@pytest.fixture
def helper_with(jupyter, tmp_path):
    started: list[HelperProcess] = []

    def start(limits: dict) -> HelperProcess:
        started.append(HelperProcess(jupyter(), limits, tmp_path / f"record-{len(started)}.json"))
        return started[-1]

    try:
        yield start
    finally:
        for helper in started:
            helper.stop()


def test_a_head_that_trickles_in_is_cut_within_the_head_timeout(helper_with) -> None:
    """One byte every 5 s: each read is quick, the whole head never comes. Cut within head_timeout (8 s here), so
    before the trickle's second byte."""
    helper = helper_with({"head_timeout": 8.0})
    with socket.create_connection(("127.0.0.1", helper.port), timeout=30) as trickle:
        trickle.sendall(b"GET /api HTTP/1.1\r\nX-a: ")
        sent = 0
        while sent < 6:
            if select.select([trickle], [], [], 5)[0]:  # the gateway closed it (or answered 408 and closed)
                break
            trickle.sendall(b"a")
            sent += 1
        answer = b""
        try:
            while chunk := trickle.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert sent <= 1, f"the trickle went on for {sent} bytes"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:100]


# -- the parser's strictness where the library frames the request ---------------------------------------------------


@pytest.mark.parametrize("size", [b"0x10", b"1_0", b"+10", b" 10", b"10 ", b"-0"])
def test_a_chunk_size_only_hex_digits_may_spell_is_refused(size: bytes) -> None:
    """Python's int(..., 16) takes these; Jupyter's parser (tornado's) does not: the gateway refuses them too."""
    body = b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\n" + b"a" * 16 + \
        b"\r\n0\r\n\r\n"
    with gateway_with(Limits(), gate=LetEveryoneIn()) as (gw, connect, upstream):
        client = connect(body)
        with client.makefile("rb") as reader:
            status, _ = read_head(reader)
        assert status.startswith("HTTP/1.1 400 "), status
    assert upstream.log == []


def test_a_content_length_of_other_digits_gets_the_gateways_own_400() -> None:
    """``str.isdigit()`` takes "²": the gateway answered nothing and dropped the connection."""
    with gateway_with(Limits(), gate=LetEveryoneIn()) as (gw, connect, upstream):
        client = connect("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: ²\r\n\r\nab".encode())
        with client.makefile("rb") as reader:
            status, headers = read_head(reader)
            assert status == "HTTP/1.1 400 Bad Request"
            assert b"The gateway refused this request" in reader.read(int(headers["content-length"]))
    assert upstream.log == []


def test_a_bridge_message_in_fragments_has_a_total_size_limit(jupyter, owner, visitor) -> None:
    """Each fragment small, together over the limit: the bridge closes (1009), holding nothing more."""
    import websocket
    from test_access import share

    from share_magic.helper.bridge import MAX_MESSAGE

    link = share(owner(jupyter()))
    guest = visitor(link)
    assert guest.get(link).status_code == 200
    bridge = guest.websocket("/share_magic/bridge")
    fragment = b"x" * (256 * 1024)
    bridge.send_frame(websocket.ABNF.create_frame(fragment, websocket.ABNF.OPCODE_TEXT, fin=0))
    for _ in range(MAX_MESSAGE // len(fragment) + 1):
        try:
            bridge.send_frame(websocket.ABNF.create_frame(fragment, websocket.ABNF.OPCODE_CONT, fin=0))
        except (OSError, websocket.WebSocketException):
            break
    try:
        frame = bridge.recv_frame()
        assert frame.opcode == websocket.ABNF.OPCODE_CLOSE and frame.data[:2] == (1009).to_bytes(2, "big")
    except (OSError, websocket.WebSocketException):
        pass  # closed outright: as good
    with pytest.raises((OSError, websocket.WebSocketException)):
        bridge.send("{}")
        bridge.recv()


def test_editors_never_compete_with_readers_for_room() -> None:
    """The count on its own: readers fill the hall up to their cap and are then turned away (and the share says it
    is full), while an editor still gets in; one holder past its share gets a 429, others do not notice."""
    from share_magic.helper.capacity import Capacity

    class Conn:
        holder, reader = None, False

    limits = Limits(max_connections=100, max_pending_heads=10, per_reader=2, per_editor=8)
    capacity = Capacity(limits)
    readers = [Conn() for _ in range(capacity.readers_cap() + 1)]
    for number, conn in enumerate(readers[:-1]):
        assert capacity.admit_connection(conn)[0]
        assert capacity.claim(conn, ("session", number), True, limits.per_reader) is None
    assert capacity.admit_connection(readers[-1])[0]
    assert capacity.claim(readers[-1], ("session", "late"), True, limits.per_reader) == 503
    assert capacity.full
    editor = Conn()
    assert capacity.admit_connection(editor)[0]
    assert capacity.claim(editor, ("session", "editor"), False, limits.per_editor) is None
    capacity.release(readers[-1])
    for conn in readers[:-1]:
        capacity.release(conn)
    assert not capacity.full
    greedy = [Conn() for _ in range(3)]
    for conn in greedy:
        capacity.admit_connection(conn)
    assert [capacity.claim(conn, ("session", "greedy"), True, limits.per_reader) for conn in greedy] == [
        None, None, 429]
    other = Conn()
    capacity.admit_connection(other)
    assert capacity.claim(other, ("session", "other"), True, limits.per_reader) is None


def test_opening_the_view_link_again_and_again_keeps_a_bounded_number_of_sessions() -> None:
    """Each opening of the view link without a cookie makes a session: one person with the link could grow the
    helper's memory without end. Past the bound only a session gone unused makes room (one never used soonest);
    a reader in the hall, or between two connections of their page, keeps theirs, and an editor is never touched.
    When every session is in use, the newcomer gets a 503 instead of taking anyone's place."""
    from share_magic.helper.access import Access, Local, Reply
    from test_identity import admit

    logins: list[str | None] = []
    access = Access("/", login=lambda name=None: logins.append(name) or "username-x=1")
    access.max_view_sessions, access.view_unused, access.view_idle = 20, 0.0, 3600.0
    view, edit = access.link_key("view"), access.link_key("edit")
    editor = admit(access, edit, [])
    streaming, between = admit(access, view, []), admit(access, view, [])
    live = access.check("GET", "/", [("Cookie", streaming)])
    assert isinstance(live, Local) and isinstance(access.check("GET", "/", [("Cookie", between)]), Local)
    access.connected = lambda: {live.session}  # one reader's page is streaming; the other's is reconnecting
    minted = [admit(access, view, []) for _ in range(200)]  # never used: these make room for each other
    assert len(access._sessions) == 20 + 1  # the bound, and the editor
    assert len(logins) == 1  # the editor's: a view session never reaches Jupyter, so none is logged in there
    gone = access.check("GET", "/", [("Cookie", minted[0])])
    assert isinstance(gone, Reply) and b"needs the link" in gone.response
    for cookie in (streaming, between, minted[-1]):
        assert isinstance(access.check("GET", "/", [("Cookie", cookie)]), Local)
    assert not isinstance(access.check("GET", "/lab", [("Cookie", editor)]), Reply)

    for _ in range(40):  # now every place is taken by someone who uses it
        cookie_or_refusal = access.check("GET", f"/?share_key={view}", [])
        assert isinstance(cookie_or_refusal, Reply)
        if cookie_or_refusal.response.startswith(b"HTTP/1.1 503"):
            break
        admit_cookie = next(line for line in cookie_or_refusal.response.decode().split("\r\n")
                            if line.startswith("Set-Cookie: ")).split(": ", 1)[1].split(";")[0]
        assert isinstance(access.check("GET", "/", [("Cookie", admit_cookie)]), Local)
    assert cookie_or_refusal.response.startswith(b"HTTP/1.1 503") and b"open the link again" in \
        cookie_or_refusal.response
    for cookie in (streaming, between, editor):
        assert not isinstance(access.check("GET", "/lab" if cookie == editor else "/", [("Cookie", cookie)]), Reply)
    assert len(access._sessions) == 20 + 1

    access.view_idle = 0.0  # time passes: every place not streaming has gone unused long enough
    for _ in range(2 * access.max_view_sessions):  # newcomers go through every other place, twice over
        assert admit(access, view, [])
    assert isinstance(access.check("GET", "/", [("Cookie", streaming)]), Local)  # still streaming, still in
    assert len(access._sessions) == 20 + 1
