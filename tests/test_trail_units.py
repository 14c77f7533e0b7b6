"""The lobby's list and the trail's reading, without a server: bounded list, one source cannot fill it, names as
labels; the websocket frames a browser sends (JSON, Jupyter's binary v1 protocol, permessage-deflate, a terminal's
keys) read back into code and lines; the relay's tap passes every byte whatever the observer does."""
from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest
from harness import wait_for
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol

from share_magic.contract import Identity
from share_magic.helper import lobby as lobby_module
from share_magic.helper.lobby import PER_SOURCE, WAITING_LIMIT, Full, Lobby, clean_name
from share_magic.helper.relay import pipe
from share_magic.helper.wiretap import V1, KernelReader, TerminalReader


def new_lobby() -> Lobby:
    return Lobby("/", lambda session_id: f"share_magic={session_id}", lambda label: label == "Ada")


def waiter_of(lobby: Lobby, identity: Identity | None = None):
    response = lobby.enter("/lab", identity)
    session_id = response.split(b"share_magic=", 1)[1].split(b";", 1)[0].split(b"\r", 1)[0].decode()
    return lobby.of(session_id)


def test_the_waiting_list_is_bounded_and_one_source_cannot_fill_it() -> None:
    lobby = new_lobby()
    ada = Identity("ada@example.com", "Ada")
    for _ in range(PER_SOURCE):
        lobby._take_a_place(waiter_of(lobby, ada), ada.email, chosen=False)
    with pytest.raises(Full, match="from where you are already wait"):
        lobby._take_a_place(waiter_of(lobby, ada), ada.email, chosen=False)
    for number in range(WAITING_LIMIT - PER_SOURCE):
        lobby._take_a_place(waiter_of(lobby), f"guest {number}", chosen=True)
    with pytest.raises(Full, match=f"{WAITING_LIMIT} people are already waiting"):
        lobby._take_a_place(waiter_of(lobby), "one too many", chosen=True)
    assert len(lobby.waiting()) == WAITING_LIMIT
    labels = [waiter.label for waiter in lobby.waiting()]
    assert labels[:3] == ["ada@example.com", "ada@example.com (2)", "ada@example.com (3)"]  # told apart


def test_names_are_labels_and_a_closed_page_leaves_the_list(monkeypatch) -> None:
    assert clean_name("  Grace \n Hopper\u202e ") == "Grace Hopper"
    for bad in ("", " \t ", "\u200b", "x" * 41):
        with pytest.raises(ValueError):
            clean_name(bad)
    lobby = new_lobby()
    ada = waiter_of(lobby)
    lobby._take_a_place(ada, "Ada", chosen=True)
    assert ada.label == "Ada (2)"  # a person of the share is called Ada already
    assert lobby.take("ada (2)") is ada and lobby.take("Ada (2)") is ada
    with pytest.raises(KeyError):
        lobby.take("Zed")
    monkeypatch.setattr(lobby_module, "GONE_AFTER", -1.0)
    assert lobby.sweep() and lobby.waiting() == []


def client(extension: str | None = None) -> FrameProtocol:
    extensions = []
    if extension:
        deflate = PerMessageDeflate()
        deflate.finalize(extension)
        extensions.append(deflate)
    return FrameProtocol(client=True, extensions=extensions)


EXECUTE = {"header": {"msg_type": "execute_request", "msg_id": "1"}, "parent_header": {}, "metadata": {},
           "content": {"code": "import os\nprint(os.getcwd())\n" + "\n".join(f"x{i} = {i}" for i in range(12))}}


def v1(message: dict, channel: str = "shell") -> bytes:
    """Jupyter's binary v1.kernel.websocket.jupyter.org layout, as jupyter_server defines it."""
    from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1

    return serialize_msg_to_ws_v1(message, channel, lambda part: json.dumps(part).encode())


@pytest.mark.parametrize("deflate", [None, "permessage-deflate; client_max_window_bits=12"])
@pytest.mark.parametrize("protocol", ["json", V1])
def test_code_run_on_a_kernel_websocket_is_read_whatever_the_framing(deflate, protocol) -> None:
    headers = [("Sec-WebSocket-Extensions", deflate)] if deflate else []
    if protocol == V1:
        headers.append(("Sec-WebSocket-Protocol", V1))
    seen: list[str] = []
    reader = KernelReader(headers, seen.append)
    browser = client(deflate)
    kernel_info = {**EXECUTE, "header": {"msg_type": "kernel_info_request"}}
    stream = b""
    for message in (kernel_info, EXECUTE, EXECUTE):
        stream += bytes(browser.send_data(v1(message) if protocol == V1 else json.dumps(message)))
    stream += bytes(browser.ping(b"x"))
    for at in range(0, len(stream), 7):  # as the relay's reads split it
        reader.read(stream[at:at + 7])
    assert len(seen) == 2 and seen[0].startswith("import os\nprint(os.getcwd())\nx0 = 0")
    assert seen[0].endswith(f"... (6 more lines, {len(EXECUTE['content']['code'])} bytes in all)")


def test_a_terminal_is_read_line_by_line_as_it_shows_and_only_once_echoed() -> None:
    """A line is kept once the terminal echoed it: erasures applied; with editing keys, the keys themselves; a line
    typed at a prompt that does not echo (a password) only counted."""
    lines: list[str] = []
    reader = TerminalReader([], lines.append)
    browser, terminal = client(), FrameProtocol(client=False, extensions=[])

    def typed(text: str, echo: str | None = None) -> None:
        reader.read(bytes(browser.send_data(json.dumps(["stdin", text]))))
        if echo is not None:
            reader.show(bytes(terminal.send_data(json.dumps(["stdout", echo]))))

    typed("ls -l", "ls -l")
    typed("a\x7f", "a\b\x1b[K")
    typed("\r", "\r\nfile\r\n$ ")
    typed("echo \x1b[A\x1b[Dhi\r", "echo hi\r\nhi\r\n$ ")
    typed("sudo rm\x03", "sudo rm^C\r\n$ ")
    typed("sudo -k true\r", "sudo -k true\r\n[sudo] password for ada: ")
    typed("hunter2\r", "\r\n")  # no echo
    typed("touch X\x01" + "\x7f" * 7 + "\r", "touch X\x1b[7D\r\n$ ")  # bash ran touch X
    typed("ls -l nothere" + "\x7f" * 7 + "here\r",  # readline redraws across the right margin
          "ls -l nothere\b\x1b[K\b\x1b[K\r\x1b[K\x1b[A" + "\x1b[C" * 70 + "here\r\n$ ")
    reader.read(bytes(browser.send_data(json.dumps(["set_size", 24, 80]))))
    typed("cat secrets", "cat secrets")
    reader.close()
    assert lines == ["ls -l", "echo ^[[A^[[Dhi  (the keys sent, editing keys included: what ran may differ)",
                     "sudo -k true",
                     "typed 7 characters without an echo the trail saw (not kept: what a password prompt reads)",
                     "touch X^A^?^?^?^?^?^?^?  (the keys sent, editing keys included: what ran may differ)",
                     "ls -l here", "cat secrets  (not entered)"]
    assert not any("hunter2" in line for line in lines)


def test_every_recorded_string_is_one_clean_line_of_bounded_length() -> None:
    from share_magic.trail import LINE_LIMIT, clean, clean_entry

    assert clean("evil\u202etxt.exe") == "evil<U+202E>txt.exe" and clean("a\nb\u2028c") == "a^Jb<U+2028>c"
    assert clean(clean("\x1b[2J\u200b")) == clean("\x1b[2J\u200b") == "^[[2J<U+200B>"
    long = clean("x" * 60_000)
    assert len(long) < LINE_LIMIT + 40 and long.endswith("(59,700 more characters)")
    who, what = clean_entry("Eve\n2026-01-01 owner", "ran code:\n" + "\n".join(["y"] * 50))
    assert "\n" not in who and len(what.split("\n")) == 12 and what.endswith("(40 more lines)")


def test_the_tap_passes_every_byte_even_when_its_observer_fails() -> None:
    from tornado.iostream import IOStream

    class Broken:
        fed = 0

        def feed(self, data: bytes) -> None:
            Broken.fed += len(data)
            raise RuntimeError("an observer's bug")

    visitor, visitor_end = socket.socketpair()
    upstream, upstream_end = socket.socketpair()
    payload = bytes(range(256)) * 4096
    received = bytearray()

    def drain() -> None:
        while chunk := upstream_end.recv(65536):
            received.extend(chunk)

    def send() -> None:
        visitor.sendall(payload)
        visitor.shutdown(socket.SHUT_WR)

    async def relay() -> None:  # the visitor's side of a websocket, as the gateway relays it
        await pipe(IOStream(visitor_end), IOStream(upstream), Broken())

    helpers = [threading.Thread(target=drain), threading.Thread(target=send)]
    try:
        for helper in helpers:
            helper.start()
        asyncio.run(asyncio.wait_for(relay(), 30))
        for helper in helpers:
            helper.join(10)
        assert received == payload and Broken.fed == len(payload)
    finally:
        for sock in (visitor, visitor_end, upstream, upstream_end):
            sock.close()


def test_a_flood_of_link_openings_neither_evicts_who_waits_nor_forgets_who_was_turned_away(monkeypatch) -> None:
    monkeypatch.setattr(lobby_module, "PENDING_LIMIT", 8)
    monkeypatch.setattr(lobby_module, "UNUSED_FOR", 0.0)  # openings whose page never came may go at once
    monkeypatch.setattr(lobby_module, "IDLE_FOR", 0.0)
    lobby = new_lobby()
    grace, mallory = waiter_of(lobby), waiter_of(lobby)
    lobby._take_a_place(grace, "Grace", chosen=True)
    lobby._take_a_place(mallory, "Mallory", chosen=True)
    mallory_cookie = next(key for key, value in lobby._waiters.items() if value is mallory)
    lobby.settle(lobby.take("Mallory"), admitted=False)
    for _ in range(50):
        waiter_of(lobby)
    assert len(lobby._waiters) <= 8 and [waiter.label for waiter in lobby.waiting()] == ["Grace"]
    assert mallory_cookie not in lobby._waiters and mallory_cookie in lobby._denied


def test_a_flood_of_link_openings_cannot_push_out_someone_typing_their_name(monkeypatch) -> None:
    """Openings of the link that never load the waiting page push out only each other; a visitor whose page came
    (and who may be typing their name) keeps their place. When every place is in use, the newcomer gets a 503."""
    monkeypatch.setattr(lobby_module, "PENDING_LIMIT", 8)
    monkeypatch.setattr(lobby_module, "UNUSED_FOR", 0.0)
    lobby = new_lobby()
    response = lobby.enter("/lab", None)
    olivia = response.split(b"share_magic=", 1)[1].split(b";", 1)[0].split(b"\r", 1)[0].decode()
    assert lobby.answer("GET", "/share_magic/lobby", [], olivia, None).startswith(b"HTTP/1.1 200")  # her page
    for _ in range(50):
        assert waiter_of(lobby) is not None
    assert lobby.of(olivia) is not None and lobby.of(olivia).state == "naming"

    pages = []
    while len(pages) < 8:  # now each newcomer loads their page: every place is in use
        answer = lobby.enter("/lab", None)
        if answer.startswith(b"HTTP/1.1 503"):
            break
        cookie = answer.split(b"share_magic=", 1)[1].split(b";", 1)[0].split(b"\r", 1)[0].decode()
        assert lobby.answer("GET", "/share_magic/lobby", [], cookie, None).startswith(b"HTTP/1.1 200")
        pages.append(cookie)
    refused = lobby.enter("/lab", None)
    assert refused.startswith(b"HTTP/1.1 503") and b"open the link again" in refused
    assert lobby.of(olivia) is not None and len(lobby._waiters) == 8

    monkeypatch.setattr(lobby_module, "IDLE_FOR", 0.0)  # a minute later, pages that stopped asking make room
    assert waiter_of(lobby) is not None


def test_the_log_prints_no_escape_a_visitor_ran() -> None:
    from share_magic.trail import format_entries

    printed = format_entries([{"t": 0, "who": "Eve\x1b[8m", "what": "ran code:\nprint(1)\x1b[30;40m hidden\x9b2J"}])
    assert "\x1b" not in printed and "\x9b" not in printed and "print(1)^[[30;40m hidden<U+009B>2J" in printed


def test_requests_the_edge_did_not_vouch_for_share_one_source_in_the_lobby() -> None:
    """A visitor who sends a client-address header of their own makes two (the edge appends), so the gate trusts
    neither: all such requests are one source, which can hold only its few places in the lobby."""
    from share_magic.helper.access import Access
    from share_magic.helper.identity import CLIENT_HEADER, SECRET_HEADER, EdgeTrust

    gate = Access("/", edge=EdgeTrust(vouch="the-shares-secret"))
    vouched = [(CLIENT_HEADER, "203.0.113.7"), (SECRET_HEADER, "the-shares-secret")]
    forged = [(CLIENT_HEADER, f"198.51.100.{n}") for n in range(3)]
    assert gate.edge.source(vouched) == "203.0.113.7"
    assert gate.edge.source([(CLIENT_HEADER, "10.0.0.1"), *vouched]) == "unvouched"  # theirs beside the edge's
    assert gate.edge.source(forged) == "unvouched"
    lobby = new_lobby()
    waiting = 0
    for n in range(PER_SOURCE + 2):
        response = lobby.enter("/lab", None, client=gate.edge.source([(CLIENT_HEADER, f"10.0.0.{n}"), *vouched]))
        session_id = response.split(b"share_magic=", 1)[1].split(b";", 1)[0].split(b"\r", 1)[0].decode()
        try:
            lobby._take_a_place(lobby.of(session_id), f"Name {n}", chosen=True)
            waiting += 1
        except Full:
            pass
    assert waiting == PER_SOURCE


def test_a_websocket_the_trail_cannot_keep_up_with_goes_unread_and_the_backlog_comes_back_to_zero(
        monkeypatch, tmp_path) -> None:
    """Past BACKLOG_LIMIT bytes queued and not yet read, the trail stops reading that websocket (and says so) rather
    than hold memory; once read, the backlog is back at zero, so the next websocket is read in full."""
    import uuid
    from types import SimpleNamespace

    from share_magic import trail
    from share_magic.helper import recorder as recorder_module
    from share_magic.helper.access import Grant, Session
    from share_magic.helper.recorder import Recorder, Tapped

    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(recorder_module, "BACKLOG_LIMIT", 1000)
    server = SimpleNamespace(url=f"http://127.0.0.1:1/{uuid.uuid4().hex}/", base_url="/")
    recorder = Recorder(server)
    session = Session(Grant("key", "Grace"))
    entered, held, read = threading.Event(), threading.Event(), []

    class Slow:
        def read(self, data: bytes) -> None:
            entered.set()
            held.wait(30)  # the recorder's thread is busy: what the relay feeds meanwhile queues up
            read.append(data)

    try:
        busy = Tapped(recorder, session, lambda emit: Slow(), lambda text: ("ran", "k", text))
        busy.feed(b"x" * 100)
        assert entered.wait(10)  # the recorder took the first 100 bytes, and reads them until released
        for _ in range(11):
            busy.feed(b"x" * 100)
        assert busy.unread and recorder._queued_bytes - recorder._read_bytes == 1000  # 10 more, then no more
        held.set()
        wait_for(lambda: recorder._read_bytes == recorder._queued_bytes, 10, "the backlog read")
        calm = Tapped(recorder, session, lambda emit: Slow(), lambda text: ("ran", "k", text))
        for _ in range(30):  # 3,000 bytes, each taken before the next comes
            before = len(read)
            calm.feed(b"y" * 100)
            wait_for(lambda: len(read) > before, 10, "the recorder to read what came")
        assert not calm.unread and recorder._queued_bytes == recorder._read_bytes
    finally:
        held.set()
        recorder.close()
    said = [entry["what"] for entry in trail.read(server.url)]
    assert any("more on a websocket than the trail could read" in what for what in said)



def test_the_question_page_leads_into_the_lobby_as_the_link_does() -> None:
    """A view reader who presses the question page's button for the anyone-link (lobby on) enters the lobby as the
    link itself would take them: from their vouched source (so its few places hold), and not if they were turned
    away (signed in)."""
    import html as html_module
    import re

    from share_magic.helper.access import Access, Reply
    from share_magic.helper.identity import CLIENT_HEADER, EMAIL_HEADER, NAME_HEADER, SECRET_HEADER, EdgeTrust

    secret = "the-shares-secret"
    gate = Access("/", edge=EdgeTrust("github", secret))
    gate.approve()
    view, edit = gate.link_key("view"), gate.link_key("edit")

    def edge(email: str) -> list:
        return [(CLIENT_HEADER, "203.0.113.7"), (EMAIL_HEADER, email), (NAME_HEADER, email), (SECRET_HEADER, secret)]

    def switch_into_lobby(email: str) -> bytes:
        entered = gate.check("GET", f"/lab?share_key={view}", edge(email))
        cookie = entered.response.split(b"Set-Cookie: ", 1)[1].split(b";", 1)[0].decode()
        asked = gate.check("GET", f"/lab?share_key={edit}", [("Cookie", cookie), *edge(email)])
        action = html_module.unescape(re.search(rb'action="([^"]+)"', asked.response).group(1).decode())
        pressed = gate.check("POST", action, [("Cookie", cookie), ("Sec-Fetch-Site", "same-origin"), *edge(email)])
        assert isinstance(pressed, Reply)
        return pressed.response

    assert switch_into_lobby("eve@example.com").startswith(b"HTTP/1.1 303")
    (waiter,) = [w for w in gate.lobby._waiters.values()]
    assert waiter.source is not None  # counted against their source (without: None, a source of its own)
    gate.lobby._take_a_place(waiter, "eve@example.com", chosen=False)
    gate.lobby.settle(gate.lobby.take("eve@example.com"), admitted=False)
    again = switch_into_lobby("eve@example.com")
    assert again.startswith(b"HTTP/1.1 403") and b"did not let you in" in again


def test_a_page_holding_its_stream_is_there_however_long_it_waits(monkeypatch) -> None:
    """With a stream, "asked lately" becomes "holds a stream, or held one lately": a waiter whose page holds its
    stream never leaves the list, and a record whose page holds one never makes room; once the stream closes, the
    clocks start from then."""
    monkeypatch.setattr(lobby_module, "GONE_AFTER", -1.0)  # as if every page had gone quiet long ago
    lobby = new_lobby()
    grace = waiter_of(lobby)
    lobby._take_a_place(grace, "Grace", chosen=True)
    lobby._streaming(grace, 1)
    assert not lobby.sweep() and lobby.waiting() == [grace]
    lobby._streaming(grace, -1)
    assert lobby.sweep() and lobby.waiting() == []

    monkeypatch.setattr(lobby_module, "PENDING_LIMIT", 2)
    monkeypatch.setattr(lobby_module, "UNUSED_FOR", 0.0)
    monkeypatch.setattr(lobby_module, "IDLE_FOR", 0.0)
    lobby = new_lobby()
    ada, bob = waiter_of(lobby), waiter_of(lobby)
    for waiter, name in ((ada, "Ada"), (bob, "Bob")):
        lobby._take_a_place(waiter, name, chosen=True)
        lobby.settle(waiter, admitted=True)  # decided, the last word still on its way down the stream
        lobby._streaming(waiter, 1)
    assert lobby.enter("/lab", None).startswith(b"HTTP/1.1 503")
    lobby._streaming(bob, -1)
    assert waiter_of(lobby) is not None
    assert ada in lobby._waiters.values() and bob not in lobby._waiters.values()


def test_a_waiting_stream_is_kept_alive_told_the_decision_once_and_let_go(monkeypatch) -> None:
    """On the loop: the stream's head and its state; a comment when it is quiet; the owner's decision (pushed from
    another thread) once however often pushed, then the connection closes and the lobby hears the stream end."""
    from share_magic.helper import lobby_page

    monkeypatch.setattr(lobby_page, "KEEPALIVE", 0.0)  # quiet from the start
    counted: list[int] = []

    class Answer:
        def __init__(self) -> None:
            self.sent: list[bytes] = []
            self.closed = asyncio.Event()
            self.wrote = asyncio.Event()

        def send(self, data: bytes):
            self.sent.append(data)
            self.wrote.set()
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        async def until_gone(self) -> None:
            await self.closed.wait()

        def close(self) -> None:
            self.closed.set()

    states = {"grace": ({"state": "waiting", "name": "Grace"}, False)}
    streams = lobby_page.Streams(lambda record: states[record], lambda record, delta: counted.append(delta))

    async def scenario() -> None:
        answer = Answer()
        held = asyncio.ensure_future(streams.hold("grace", answer))
        while lobby_page.QUIET not in answer.sent:
            answer.wrote.clear()
            await asyncio.wait_for(answer.wrote.wait(), 5)
        assert answer.sent[:2] == [lobby_page.HEAD, lobby_page.event(states["grace"][0])] and counted == [1]
        states["grace"] = ({"state": "admitted", "go": "/lab"}, True)
        await asyncio.get_running_loop().run_in_executor(None, lambda: (streams.push("grace"), streams.push("grace")))
        await asyncio.wait_for(held, 5)
        assert answer.closed.is_set() and counted == [1, -1]
        told = [data for data in answer.sent if data.startswith(b"event:")]
        assert told == [lobby_page.event({"state": "waiting", "name": "Grace"}),
                        lobby_page.event({"state": "admitted", "go": "/lab"})]

    asyncio.run(scenario())
