"""The view follows the presenter: every cell run in the share's kernel reaches view readers as it runs, from the
kernel's broadcast channel, without a save -- in its saved cell's place, cleaned as saved cells are."""
from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from types import SimpleNamespace

import pytest
from harness import (AUTHTOKEN, JupyterServer, Visitor, module_sandbox, open_notebook, restart_kernel, share_links,
                     wait_for)
from test_browser import CHROMIUM, VISITOR_ARGS, visit
from test_view import key_of, notebook, png, save

from share_magic.helper.live import MAX_RUNS, LiveRuns, rewritten


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """One server, the owner's kernel on shown.ipynb and a (live) view share of it, for the whole module: each test
    uses cells and markers of its own, and asserts places relative to the saved cells. The sandbox and the public
    names of conftest's fixtures, for a module."""
    folder = tmp_path_factory.mktemp("live")
    with module_sandbox(folder):
        server = JupyterServer(folder / "server")
        kernel = None
        try:
            kernel = open_notebook(server, "shown.ipynb")
            (server.root / "shown.ipynb").write_text(json.dumps(notebook()))
            result = kernel.execute("%load_ext share_magic\n%share --view")
            assert result["error"] is None and "Error" not in result["stderr"], result
            yield SimpleNamespace(server=server, kernel=kernel, link=share_links(kernel)["view"], folder=folder)
        finally:
            if kernel is not None:
                kernel.close()
            server.stop()


@pytest.fixture
def presenting(stage):
    return stage.server, stage.kernel, stage.link


def run_cell(kernel, code: str, cell_id: str | None = None) -> str:
    """Send code to run as JupyterLab does, naming its cell (``cellId`` in the request's metadata); the request id."""
    msg_id = uuid.uuid4().hex
    kernel.ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": kernel.session,
                   "date": "2026-01-01T00:00:00Z", "version": "5.3"},
        "parent_header": {}, "metadata": {"cellId": cell_id} if cell_id else {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    return msg_id


class Reader:
    """A view reader's update stream, applied as the page applies it: the saved cells, the live ones, the order."""

    def __init__(self, visitor, path: str = "/share_magic/view/events") -> None:
        self.answer = visitor.get(path, stream=True, headers={"Accept": "text/event-stream"}, timeout=30)
        self.saved: dict[str, str] = {}
        self.saved_order: list[str] = []
        self.live: dict[str, str] = {}
        self.images: dict[str, str] = {}
        self.order: list[str] | None = None
        self.state: dict = {}
        self.seen: list[tuple[str, dict]] = []  # every event, in order
        self.times: list[float] = []  # when each arrived (monotonic)
        self.raw = b""
        self._pending = b""

    def close(self) -> None:
        self.answer.close()

    def next(self) -> tuple[str, dict]:
        while b"\n\n" not in self._pending:
            data = self.answer.raw.read1(65536, decode_content=True)
            if not data:
                raise AssertionError(f"the stream ended; events so far: {[kind for kind, _ in self.seen]}")
            self.raw += data
            self._pending += data
        block, self._pending = self._pending.split(b"\n\n", 1)
        fields = dict(line.split(": ", 1) for line in block.decode().splitlines()
                      if ": " in line and not line.startswith(":"))
        if "data" not in fields:  # a keep-alive comment, or the retry line
            return "", {}
        kind, update = fields.get("event", "message"), json.loads(fields["data"])
        self.seen.append((kind, update))
        self.times.append(time.monotonic())
        if kind == "notebook":
            if update.get("reset"):
                self.saved = {}
            self.saved.update(update["cells"])
            self.saved_order = update.get("order") or self.saved_order
        elif kind == "live":
            if update.get("reset"):
                self.live, self.images, self.order = {}, {}, None
            self.images.update(update.get("images", {}))
            self.live.update(update.get("live", {}))
            if "order" in update:
                self.order = update["order"]
            self.state.update({name: update[name] for name in ("kernel", "running", "words", "dropped")
                               if name in update})
        return kind, update

    def until(self, predicate, what: str, timeout: float = 60) -> None:
        """Read events until ``predicate(self)`` holds, for ``timeout`` seconds at most (the stream's keep-alive
        comments, every 20 s, bound each read)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            try:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{timeout:g} s passed")
                self.next()
            except Exception as e:
                raise AssertionError(f"no event made it true: {what} ({e}); order {self.shown()}") from e

    def shown(self) -> list[str]:
        return list(self.order if self.order is not None else self.saved_order)

    def markup(self, key: str) -> str:
        return self.live.get(key) or self.saved.get(key, "")

    def text(self) -> str:
        return " ".join(self.markup(key) for key in self.shown())


@pytest.fixture
def readers():
    """Open view readers of a link: ``readers(link)``; each reader's stream and connections closed at teardown."""
    opened: list[tuple[Visitor, Reader]] = []

    def open_(link: str, path: str = "/share_magic/view/events") -> Reader:
        guest = Visitor(link)
        opened.append((guest, None))
        assert guest.get(link).status_code == 200
        opened[-1] = (guest, Reader(guest, path))
        return opened[-1][1]

    yield open_
    for guest, reader in opened:
        if reader is not None:
            reader.close()
        guest.close()


SAVED = ["m1", "c1", "c2", "c3"]


def test_a_run_replaces_its_saved_cell_in_place_and_a_new_one_follows_the_last_live_cell(presenting, readers):
    server, kernel, link = presenting
    reader = readers(link)
    reader.until(lambda r: r.shown() == SAVED, "the saved notebook")

    kernel.collect(run_cell(kernel, "print('LIVE-RUN' + '-OF-C2')", "c2"))
    reader.until(lambda r: "LIVE-RUN-OF-C2" in r.markup("live:c2"), "the run of c2")
    assert reader.shown() == ["m1", "c1", "live:c2", "c3"]
    assert "run live" in reader.markup("live:c2") and "html output cell" not in reader.markup("live:c2")

    fresh = run_cell(kernel, "print('A-NEW' + '-CELL')", "fresh")
    kernel.collect(fresh)
    reader.until(lambda r: "A-NEW-CELL" in r.markup("live:fresh"), "the new cell")
    assert reader.shown() == ["m1", "c1", "live:c2", "live:fresh", "c3"]

    console = run_cell(kernel, "print('FROM-A' + '-CONSOLE')")  # no cell: after the last run, by its request
    kernel.collect(console)
    reader.until(lambda r: f"live:{console}" in r.shown(), "the console's run")
    assert reader.shown() == ["m1", "c1", "live:c2", "live:fresh", f"live:{console}", "c3"]
    assert reader.state["kernel"] == "idle" and reader.state["running"] is None

    # Saved: the saved version is the view again, and nothing shows twice; the console's run is in no save.
    saved_c2 = {"cell_type": "code", "id": "c2", "metadata": {}, "execution_count": 9, "source": "print('x')",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": "LIVE-RUN-OF-C2\n"}]}
    new_cell = {"cell_type": "code", "id": "fresh", "metadata": {}, "execution_count": 10, "source": "",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": "A-NEW-CELL\n"}]}
    document = notebook(new_cell)
    document["cells"][2] = saved_c2
    server.api("PUT", "api/contents/shown.ipynb", json={"type": "notebook", "content": document}).raise_for_status()
    reader.until(lambda r: "live:c2" not in r.shown() and "fresh" in r.shown(), "the save to replace the runs")
    assert reader.shown() == ["m1", "c1", "c2", "c3", "fresh", f"live:{console}"]
    text = reader.text()
    assert text.count("LIVE-RUN-OF-C2") == 1 and text.count("A-NEW-CELL") == 1 and "FROM-A-CONSOLE" in text
    save(server)  # the notebook as the other tests expect it
    reader.until(lambda r: r.saved_order == SAVED, "the notebook saved again")


def test_output_streams_to_readers_before_the_cell_ends(presenting, readers, tmp_path):
    _, kernel, link = presenting
    reader = readers(link)
    release = tmp_path / "release"
    msg_id = run_cell(kernel, "import os, time\nprint('BEFORE' + '-THE-WAIT', flush=True)\n"
                              f"while not os.path.exists({str(release)!r}):\n    time.sleep(0.02)\n"
                              "print('AFTER' + '-THE-WAIT')", "c1")
    reader.until(lambda r: "BEFORE-THE-WAIT" in r.markup("live:c1"), "the first line, while the cell runs")
    assert "AFTER-THE-WAIT" not in reader.markup("live:c1")
    assert reader.state["kernel"] == "busy" and reader.state["running"] == "live:c1"
    release.write_text("go")
    reader.until(lambda r: "AFTER-THE-WAIT" in r.markup("live:c1") and r.state.get("kernel") == "idle",
                 "the rest, and idle")
    assert reader.state["running"] is None
    kernel.collect(msg_id)


def test_what_a_cell_prints_live_is_cleaned_as_a_saved_cell(presenting, readers):
    _, kernel, link = presenting
    secrets = [AUTHTOKEN, key_of(link)]
    reader = readers(link)
    code = ("import os\nfrom IPython.display import HTML, display\n"
            "print('PRI' + 'NTED', os.environ['NGROK_AUTHTOKEN'])\n"
            f"display(HTML('<b>SHO' + 'WN</b> ' + os.environ['NGROK_AUTHTOKEN'] + ' {' '.join(secrets[1:])}'))\n"
            "raise ValueError('RAI' + 'SED ' + os.environ['NGROK_AUTHTOKEN'])")
    result = kernel.collect(run_cell(kernel, code, "c1"))
    assert AUTHTOKEN in result["stdout"] and result["error"] is not None  # the kernel did print it
    reader.until(lambda r: "RAISED" in r.markup("live:c1") and "SHOWN" in r.markup("live:c1"), "the run's outputs")
    assert "PRINTED" in reader.markup("live:c1")
    assert [secret for secret in secrets if secret in reader.raw.decode()] == []


def test_a_late_reader_gets_the_saved_notebook_and_every_run_since(presenting, readers):
    _, kernel, link = presenting
    first = readers(link)
    kernel.collect(run_cell(kernel, "print('RUN' + '-ONE')", "c3"))
    kernel.collect(run_cell(kernel, "print('RUN' + '-TWO')", "later"))
    first.until(lambda r: "RUN-TWO" in r.markup("live:later"), "both runs for the first reader")

    late = readers(link)
    late.until(lambda r: r.order is not None and "RUN-TWO" in r.markup("live:later"), "the late reader's catch-up")
    shown = late.shown()
    assert shown == first.shown() and shown[3] == "live:c3"
    assert [key.removeprefix("live:") for key in shown[:4]] == SAVED  # earlier tests' runs of c1 show in place
    assert shown.index("live:later") > shown.index("live:c3")
    assert "RUN-ONE" in late.markup("live:c3")
    kinds = [kind for kind, _ in late.seen]
    assert kinds[:2] == ["notebook", "live"] and late.seen[1][1]["reset"]  # the whole, once


def test_save_only_shows_nothing_until_a_save(jupyter, owner, public_names, readers):
    server = jupyter()
    kernel = owner(server, "shown.ipynb")
    (server.root / "shown.ipynb").write_text(json.dumps(notebook()))
    result = kernel.execute("%load_ext share_magic\n%share --view --saved-only")
    assert result["error"] is None, result
    assert "as last saved (save-only" in kernel.run("%share status")
    link = share_links(kernel)["view"]
    reader = readers(link)
    reader.until(lambda r: r.shown() == SAVED, "the saved notebook")
    kernel.collect(run_cell(kernel, "print('RUN-NOT' + '-SAVED')", "c1"))
    save(server, {"cell_type": "markdown", "id": "m2", "metadata": {}, "source": "SAVED-AFTER"})
    reader.until(lambda r: "m2" in r.shown(), "the save")
    assert [kind for kind, _ in reader.seen] == ["notebook", "notebook"]
    assert "RUN-NOT-SAVED" not in reader.raw.decode()

    # The same for every share, by the option
    assert kernel.execute("%share stop")["error"] is None
    result = kernel.execute("%config ShareMagics.live_view = False\n%share --view")
    assert result["error"] is None, result
    assert "as last saved (save-only" in kernel.run("%share status")
    again = readers(share_links(kernel)["view"])
    again.until(lambda r: "m2" in r.shown(), "the saved notebook")
    kernel.collect(run_cell(kernel, "print('STILL-NOT' + '-SAVED')", "c1"))
    save(server, {"cell_type": "markdown", "id": "m3", "metadata": {}, "source": "SAVED-AGAIN"})
    again.until(lambda r: "m3" in r.shown(), "the save")
    assert {kind for kind, _ in again.seen} == {"notebook"} and "STILL-NOT-SAVED" not in again.raw.decode()


def test_the_page_follows_the_running_cell_and_a_reader_can_stop_following(presenting, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    _, kernel, link = presenting
    release = tmp_path / "release"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        try:
            page = visit(browser, link, viewport={"width": 1000, "height": 500})
            page.wait_for_selector('[data-cell$="c3"]')  # saved, or run live by an earlier test
            msg_id = run_cell(kernel, "import os, time\nprint('IN-THE' + '-BROWSER', flush=True)\n"
                                      f"while not os.path.exists({str(release)!r}):\n    time.sleep(0.02)\n", "c2")
            running = page.locator('[data-cell="live:c2"].share-magic-busy')
            running.wait_for()
            assert "IN-THE-BROWSER" in running.inner_text()
            assert page.locator('[data-cell="c2"]').count() == 0  # replaced in place, not shown twice
            order = page.eval_on_selector_all("#share-magic-notebook > div", "els => els.map(e => e.dataset.cell)")
            assert order[2] == "live:c2" and [key.removeprefix("live:") for key in order[:4]] == SAVED
            page.click("#share-magic-follow")
            expect(page.locator("#share-magic-state")).to_contain_text("the presenter is at cell 3")
            release.write_text("go")
            expect(page.locator("#share-magic-state")).to_contain_text("kernel idle")
            assert page.locator(".share-magic-busy").count() == 0
            kernel.collect(msg_id)
        finally:
            browser.close()


def test_a_progress_bar_of_thousands_of_writes_costs_a_reader_a_few_updates(presenting, readers):
    _, kernel, link = presenting
    reader = readers(link)
    reader.until(lambda r: r.saved_order, "the saved notebook")
    reader.until(lambda r: "live" in [kind for kind, _ in r.seen], "the live state")
    events, received = len(reader.seen), len(reader.raw)
    # Each write its own stream message, as a progress bar that flushes each step makes them (published here
    # directly: ipykernel's flush waits a round trip of its IO thread, which makes 10,000 of them minutes long).
    code = ("import time\nkernel = get_ipython().kernel\nstart = time.monotonic()\nfor step in range(3_000):\n"
            "    kernel.session.send(kernel.iopub_socket, 'stream', {'name': 'stdout', 'text': "
            "f'\\rPROGRESS {step:05d}'}, parent=kernel.get_parent())\n"
            "print('\\nDONE-' + 'PROGRESS', time.monotonic() - start)")
    began = time.monotonic()
    result = kernel.collect(run_cell(kernel, code, "progress"), timeout=240)
    published = sum('"msg_type": "stream"' in message for message in result["messages"])
    reader.until(lambda r: "DONE-PROGRESS" in r.markup("live:progress") and r.state.get("kernel") == "idle",
                 "the end of the progress bar, and idle")
    window = time.monotonic() - began  # every update of the run was sent within it
    updates = sum("live:progress" in update.get("live", {}) for _, update in reader.seen[events:])
    cost = len(reader.raw) - received
    print(f"progress cell: {published} stream messages; the reader got {updates} updates of it, {cost} bytes, "
          f"within {window:.1f} s")
    assert published > 1000, published  # the kernel did publish its writes one by one
    assert updates <= 10 * window + 1, (updates, window)  # at most ~10 a second, not one a write
    # each update one cell of ~3.5 kB of markup (decoded; less on the wire), not the bar's 3,000 lines (42 kB)
    assert cost < 6_000 * updates, (cost, updates)
    assert re.findall(r"PROGRESS \d{5}", reader.markup("live:progress")) == ["PROGRESS 02999"]  # one line, rewritten


def test_an_image_is_sent_once_displays_update_and_clear_output_waits(presenting, readers, tmp_path):
    _, kernel, link = presenting
    reader = readers(link)
    release = tmp_path / "more"
    image = png(40, 30, (10, 200, 90))
    figure = tmp_path / "figure.png"
    figure.write_bytes(base64.b64decode(image))
    code = ("import os, time\nfrom IPython.display import Image, display\n"
            f"handle = display(Image(filename={str(figure)!r}), display_id=True)\n"
            "print('WITH-AN' + '-IMAGE', flush=True)\n"
            f"while not os.path.exists({str(release)!r}):\n    time.sleep(0.02)\n"
            "for line in range(30):\n    print('MORE', line, flush=True)\n    time.sleep(0.01)\n"
            "print('LAST-' + 'LINE', flush=True)")
    msg_id = run_cell(kernel, code, "figure")
    reader.until(lambda r: "WITH-AN-IMAGE" in r.markup("live:figure"), "the image and a first line")
    release.write_text("go")
    kernel.collect(msg_id)
    reader.until(lambda r: "LAST-LINE" in r.markup("live:figure"), "the rest of the cell")
    updates = [update for kind, update in reader.seen if kind == "live" and "live:figure" in update.get("live", {})]
    assert len(updates) >= 2 and reader.raw.decode().count(image) == 1  # many updates of the cell, one image

    code = ("from IPython.display import clear_output, display\nhandle = display('SHOWN-' + 'FIRST', display_id=True)\n"
            "print('BEFORE-' + 'CLEAR')\nclear_output(wait=True)\nprint('AFTER-' + 'CLEAR')\n"
            "handle2 = display('OLD-' + 'DISPLAY', display_id=True)\nhandle2.update('NEW-' + 'DISPLAY')")
    kernel.collect(run_cell(kernel, code, "cleared"))
    reader.until(lambda r: "NEW-DISPLAY" in r.markup("live:cleared"), "the updated display")
    markup = reader.markup("live:cleared")
    assert "AFTER-CLEAR" in markup and "BEFORE-CLEAR" not in markup and "SHOWN-FIRST" not in markup
    assert "OLD-DISPLAY" not in markup


def test_the_shares_own_output_never_shows(presenting, readers):
    _, kernel, link = presenting
    reader = readers(link)
    result = kernel.collect(run_cell(kernel, "%share links\n%share status\n%share", "own"))
    assert "View only" in result["text"] + result["stdout"] and "Readers see" in result["stdout"]  # it did print
    reader.until(lambda r: "live:own" in r.live and r.state.get("kernel") == "idle", "the cell")
    markup = reader.markup("live:own")
    assert "View only" not in markup and "Readers see" not in markup and "ngrok" not in markup.lower(), markup
    assert "share-magic-widget" not in markup and key_of(link) not in reader.raw.decode()


def test_answers_typed_at_input_and_getpass_never_show_and_an_idle_kernel_costs_readers_nothing(presenting, readers):
    """What the presenter types at ``input()`` or ``getpass`` goes to the kernel on its stdin channel, which the view
    never hears: readers see the cell's prompts' effects, never the answers. Then, idle, the kernel sends readers
    nothing: the next thing on their stream is its keep-alive comment."""
    _, kernel, link = presenting
    reader = readers(link)
    reader.until(lambda r: r.state.get("kernel") == "idle", "the live state")
    msg_id = uuid.uuid4().hex
    kernel.ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": kernel.session,
                   "date": "2026-01-01T00:00:00Z", "version": "5.3"},
        "parent_header": {}, "metadata": {"cellId": "asked"}, "channel": "shell", "buffers": [],
        "content": {"code": "import getpass\nname = input('Your name: ')\nword = getpass.getpass('Password: ')\n"
                            "print('ANSWERED', len(name), len(word))",
                    "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": True,
                    "stop_on_error": True}}))
    answers = iter(["typed-name-ANSWER", "typed-pass-ANSWER"])
    kernel.ws.settimeout(60)
    asked = []
    while len(asked) < 2:  # each prompt, as JupyterLab answers it: an input_reply on the stdin channel
        message = json.loads(kernel.ws.recv())
        if message["msg_type"] == "input_request" and message["parent_header"].get("msg_id") == msg_id:
            asked.append(message["content"]["prompt"])
            kernel.ws.send(json.dumps({
                "header": {"msg_id": uuid.uuid4().hex, "msg_type": "input_reply", "username": "test",
                           "session": kernel.session, "date": "2026-01-01T00:00:00Z", "version": "5.3"},
                "parent_header": message["header"], "metadata": {}, "channel": "stdin", "buffers": [],
                "content": {"value": next(answers)}}))
    assert asked == ["Your name: ", "Password: "]
    assert kernel.collect(msg_id)["stdout"] == "ANSWERED 17 17\n"
    reader.until(lambda r: "ANSWERED 17 17" in r.markup("live:asked") and r.state.get("kernel") == "idle",
                 "the cell, run")
    assert "ANSWER" not in reader.raw.decode().replace("ANSWERED", "")

    kind, update = reader.next()  # the next block on the stream, whenever it comes (a keep-alive: every 20 s)
    assert kind == "" and reader.raw.rstrip().splitlines()[-1].startswith(b":"), (kind, update)


def test_a_kernel_restart_keeps_the_view_live(presenting, readers):
    server, kernel, link = presenting
    reader = readers(link)
    reader.until(lambda r: r.state.get("kernel") == "idle", "the live state")
    restart_kernel(server, kernel)
    reader.until(lambda r: r.state.get("kernel") == "restarted", "the restart")
    assert reader.state["words"] == "kernel restarted"
    console = run_cell(kernel, "print('AFTER-THE' + '-RESTART')")  # the new process names no cells: a new one
    kernel.collect(console)
    reader.until(lambda r: "AFTER-THE-RESTART" in r.markup(f"live:{console}"), "a run after the restart")


def test_a_kernel_shut_down_is_said_and_the_page_stays_readable(presenting):  # the module's last: its kernel ends
    from playwright.sync_api import expect, sync_playwright

    server, kernel, link = presenting
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        try:
            page = visit(browser, link)
            expect(page.locator("#share-magic-state")).to_contain_text("kernel")
            server.api("DELETE", f"api/kernels/{kernel.kernel_id}").raise_for_status()
            expect(page.locator("#share-magic-state")).to_contain_text("kernel shut down")
            assert "Quarterly results" in page.inner_text("#share-magic-notebook")
        finally:
            browser.close()


def test_runs_are_kept_bounded_oldest_first() -> None:
    runs = LiveRuns()
    for number in range(MAX_RUNS + 5):
        parent = {"msg_id": f"run-{number}", "msg_type": "execute_request"}
        runs.message({"header": {"msg_type": "execute_input"}, "parent_header": parent,
                      "content": {"code": f"{number}", "execution_count": number}})
    assert len(runs.runs) == MAX_RUNS and runs.dropped == 5 and next(iter(runs.runs)) == "run-5"


def test_a_progress_bar_stays_one_line() -> None:
    text = ""
    for step in range(10_000):
        text = rewritten(text + f"\r{step / 100:.0f}% |{'#' * (step // 500)}")
    assert text == "100% |" + "#" * 19
    assert rewritten("done\nhalf\rfull\n") == "done\nfull\n"


def test_a_connection_file_written_again_as_it_was_keeps_the_taps_socket(tmp_path) -> None:
    """Jupyter writes a restarted kernel's connection file again, with the same ports and key: the tap keeps its
    socket (zmq reconnects by itself), where a new one would lose what the kernel publishes before it joins."""
    import zmq
    from jupyter_client.session import Session

    from share_magic.helper.kernel_tap import KernelTap

    context = zmq.Context()
    publisher = context.socket(zmq.PUB)
    publisher.setsockopt(zmq.LINGER, 0)
    port = publisher.bind_to_random_port("tcp://127.0.0.1")
    key = uuid.uuid4().hex
    connection = tmp_path / "kernel.json"
    connection.write_text(json.dumps({"transport": "tcp", "ip": "127.0.0.1", "iopub_port": port, "key": key,
                                      "signature_scheme": "hmac-sha256"}))
    session = Session(key=key.encode(), signature_scheme="hmac-sha256")
    got: list[str] = []
    tap = KernelTap(str(connection), lambda message: got.append(message["content"]["text"])).start()
    try:
        def until_heard(text: str) -> None:  # a SUB socket joins when it joins: publish until it hears
            deadline = time.monotonic() + 30
            while text not in got:
                assert time.monotonic() < deadline, got
                session.send(publisher, "stream", {"name": "stdout", "text": text})
                time.sleep(0.05)

        until_heard("before")
        looks = tap.looks
        connection.write_text(connection.read_text())  # as Jupyter does on a restart
        os.utime(connection, ns=(time.time_ns(), time.time_ns() + 10**9))
        wait_for(lambda: tap.looks > looks, 10, "the tap to read the file again")
        until_heard("after")
        assert tap.subscriptions == 1
    finally:
        tap.close()
        publisher.close()
        context.term()
