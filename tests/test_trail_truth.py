"""The trail tells the truth, or says where it cannot, against an invited editor who attacks it through the share:
a rewritten trail file is noticed and the helper's copy printed; frames Jupyter accepts (unmasked, with a longer
length field than needed) and code past 4 MiB are read; one visitor's flood neither fills the trail nor hides
anyone's later actions; a password typed where the terminal does not echo is never kept; a line edited with
Ctrl-A is kept as its keys; a path's bidi override or line break cannot fake a line. Real server, kernel, helper and
stand-in edge; the editor reaches the server only through their link."""
from __future__ import annotations

import json
import os
import re
import struct
import time
import urllib.parse
import uuid
from pathlib import Path

from harness import KernelClient, receive, share_links, wait_for

from share_magic.contract import own_output


def invite(notebook, *names: str) -> dict[str, str]:
    result = notebook.execute("%load_ext share_magic\n%share invite " + " ".join(names))
    assert result["error"] is None and "Error" not in result["stderr"], result
    return share_links(notebook)


def log_of(notebook) -> dict:
    """%share log's one output: its text, and the metadata that marks it as the share's own."""
    result = notebook.execute("%share log")
    assert result["error"] is None and result["stdout"] == "", result
    (output,) = result["outputs"]
    assert output["metadata"] == own_output(), output  # a view (and what renders saved notebooks) leaves it out
    return output["data"]["text/plain"]


def logged(notebook, *wanted: str, timeout: float = 30) -> str:
    return wait_for(lambda: (text := log_of(notebook)) and all(w in text for w in wanted) and text, timeout,
                    f"the trail to show {wanted}")


def editor(visitor, link: str):
    guest = visitor(link)
    assert guest.get(guest.link).status_code == 200
    return guest


def execute_request(code: str) -> tuple[str, bytes]:
    msg_id = uuid.uuid4().hex
    return msg_id, json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "ada", "session": "s",
                   "date": "2026-01-01T00:00:00Z", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}).encode()


def test_frames_jupyter_accepts_and_code_past_4_mib_are_in_the_trail(jupyter, owner, visitor) -> None:
    """Jupyter's tornado runs code sent in an unmasked frame, or in one whose length field is longer than needed;
    the trail reads them as Jupyter does, and every websocket message after them. Code of 4.5 MiB (Jupyter takes up
    to 10) is recorded by its first lines and its size."""
    notebook = owner(jupyter())
    ada = editor(visitor, invite(notebook, "Ada")["Ada"])
    kernel = ada.kernel(f"/api/kernels/{notebook.kernel_id}/channels")
    raw = kernel.ws.sock

    unmasked_id, payload = execute_request("print('sent unmasked')")
    raw.sendall(bytes([0x81, 126]) + struct.pack("!H", len(payload)) + payload)
    assert kernel.collect(unmasked_id)["stdout"] == "sent unmasked\n"  # Jupyter ran it

    long_id, payload = execute_request("print('a 64-bit length')")
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[at % 4] for at, byte in enumerate(payload))
    raw.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", len(payload)) + mask + masked)
    assert kernel.collect(long_id)["stdout"] == "a 64-bit length\n"

    padded = "PAD = '" + "p" * (4 * 1024 * 1024 + 512 * 1024) + "'\nprint('padded', len(PAD))"
    assert kernel.execute(padded, timeout=120)["stdout"] == f"padded {4 * 1024 * 1024 + 512 * 1024}\n"
    assert kernel.execute("print('and after')")["stdout"] == "and after\n"

    text = logged(notebook, "print('and after')")
    for code in ("print('sent unmasked')", "print('a 64-bit length')", "print('and after')"):
        assert re.search(r"Ada\s+ran code in shared.ipynb:\n\s+" + re.escape(code), text), (code, text)
    size = len(padded.encode())
    assert "PAD = 'pppp" in text and f"({size:,} bytes in all)" in text
    assert "not in the trail" not in text


PROMPT = "ada-at-the-terminal> "
RAN = "a-line-ran"  # what bash prints (PROMPT_COMMAND) when a line has run, before its next prompt


def shown_until(shell, wanted: str, seen: list[str]) -> None:
    """Read the terminal's output until ``wanted`` appears in what came since the last call (``seen`` holds it)."""
    give_up = time.monotonic() + 60  # a bound on failing, not a timing
    while wanted not in seen[0]:
        message = json.loads(receive(shell, give_up, f"{wanted!r} after {seen[0][-500:]!r}"))
        if message[0] == "stdout":
            seen[0] = seen[0][-len(wanted):] + message[1]
    seen[0] = seen[0].split(wanted, 1)[1]  # what came after it may hold what the next call waits for


def test_one_visitor_cannot_fill_the_trail_nor_make_it_keep_a_password_or_a_false_line(jupyter, owner, visitor) -> None:
    server = jupyter(shell="/bin/bash")  # what Jupyter's terminals run is $SHELL, else sh: a CI machine sets none
    notebook = owner(server)
    links = invite(notebook, "Ada", "Bob")
    ada, bob = editor(visitor, links["Ada"]), editor(visitor, links["Bob"])
    terminal = ada.send("POST", "/api/terminals").json()["name"]
    shell = ada.websocket(f"/terminals/websocket/{terminal}")
    seen = [""]

    def typed(keys: str, then: str | None = None) -> None:
        """Type ``keys`` and read until ``then`` shows, or the line has run and the next prompt shows. A prompt is
        printed only once the terminal is set for what reads next (readline's raw keys, ``read -s``'s no echo):
        keys sent before would be read otherwise. (readline redraws its prompt when the cursor goes home, so the
        prompt alone does not say a line ran.)"""
        shell.send(json.dumps(["stdin", keys]))
        if then is not None:
            shown_until(shell, then, seen)
        else:
            line_ran()

    def line_ran() -> None:
        shown_until(shell, RAN, seen)
        shown_until(shell, PROMPT, seen)

    # Each is spelled in two parts, so that the echo of the line typed does not contain it.
    typed(f"stty cols 200; PROMPT_COMMAND='echo {RAN[:3]}''{RAN[3:]}'; PS1='{PROMPT[:3]}''{PROMPT[3:]}'\r")
    # A password at a prompt that does not echo.
    typed("read -s -p 'Pass''word: ' secret; echo; echo got ${#secret}\r", "Password: ")  # read -s's
    typed("hunter2-is-secret\r", "got 17")
    line_ran()
    # touch X, Ctrl-A, seven backspaces (nothing to erase before the cursor), Enter: bash runs touch X.
    target = server.root / "made-by-ada"
    typed(f"touch {target}\x01" + "\x7f" * 7 + "\r")
    assert target.exists()
    # 100 kB of keystrokes: 33,000 lines.
    flood = "#a\r" * 33_000
    for at in range(0, len(flood), 3000):
        shell.send(json.dumps(["stdin", flood[at:at + 3000]]))
    typed("echo flood-$((6*7))\r", "flood-42")

    # Paths that would fake lines: a bidi override, a line break, 10,000 characters (the edge, as h11 does, takes
    # request heads up to 16 KiB).
    fake = "notes\u202etxt.exe"
    forged = "x\n                               Bob  deleted everything"
    for name in (fake, forged, "p" * 10_000):
        ada.get("/api/contents/" + urllib.parse.quote(name))

    # Everyone's later actions still land: Ada's, Bob's, the owner's.
    kernels = {name: guest.kernel(f"/api/kernels/{notebook.kernel_id}/channels") for name, guest in
               (("Ada", ada), ("Bob", bob))}
    for name, kernel in kernels.items():
        assert kernel.execute(f"print('{name} after the flood')")["stdout"] == f"{name} after the flood\n"
    notebook.run("%share invite Carol")
    text = logged(notebook, "print('Ada after the flood')", "print('Bob after the flood')", "invited Carol")

    assert "hunter2" not in text and "is-secret" not in text
    assert re.search(rf"Ada\s+typed in terminal {terminal}: typed 17 characters without an echo the trail saw "
                     r"\(not kept", text), text
    assert f"typed in terminal {terminal}: read -s -p 'Pass''word: ' secret" in text
    assert (f"typed in terminal {terminal}: touch {target}^A^?^?^?^?^?^?^?  (the keys sent, editing keys included"
            in text)
    assert f"typed in terminal {terminal}: #a" in text and "typed 2 characters without" not in text  # echoed
    counted = re.search(r"Ada\s+since [0-9:]+, typed ([0-9,]+) more lines in a terminal", text)
    assert counted and int(counted.group(1).replace(",", "")) > 25_000, text[-3000:]
    assert re.search(r"Ada\s+their share of the trail for typing in terminals is used up", text)
    lines = text.split("\n")
    summary = next(n for n, line in enumerate(lines) if "more lines in a terminal" in line)
    ran = next(n for n, line in enumerate(lines) if re.match(r".{19}  Ada\s+ran code in", line))
    assert summary < ran  # summed up before her next line kept, in the order it happened

    assert "opened notes<U+202E>txt.exe" in text and "\u202e" not in text
    assert "opened x^J" in text and not any(line.strip().startswith("Bob") for line in lines)
    assert "more characters)" in text and max(len(line) for line in lines) < 400
    trails = Path(notebook.run("from share_magic import trail; print(trail.folder())").strip())
    (path,) = [path for path in trails.iterdir() if path.suffix == ".jsonl"]
    assert "hunter2" not in path.read_text()
    assert path.stat().st_size < 2 * 1024 * 1024  # one visitor took their share, not the trail


def test_a_rewritten_trail_file_is_noticed_and_the_helpers_copy_printed(jupyter, owner, visitor) -> None:
    notebook = owner(jupyter())
    ada = editor(visitor, invite(notebook, "Ada")["Ada"])
    kernel = KernelClient(ada.websocket(f"/api/kernels/{notebook.kernel_id}/channels"))
    assert kernel.execute("print('first')")["stdout"] == "first\n"
    logged(notebook, "print('first')")

    rewrite = ("import glob, json, os, time\n"
               "from jupyter_core.paths import jupyter_data_dir\n"
               "(path,) = glob.glob(os.path.join(jupyter_data_dir(), 'share_magic', 'trails', 'trail-*.jsonl'))\n"
               "kept = open(path).readlines()[:1]\n"  # the owner's first line stays; the rest is made up
               "with open(path, 'w') as f:\n"
               "    f.writelines(kept)\n"
               "    f.write(json.dumps({'t': time.time(), 'who': 'Bob', 'what': 'ran code:\\nos.remove(1)'}) + '\\n')\n"
               "print('rewritten')")
    assert kernel.execute(rewrite)["stdout"] == "rewritten\n"
    text = logged(notebook, "print('rewritten')")
    said, *lines = text.split("\n")
    assert re.fullmatch(r"The trail file was changed after [0-9:]{8} \(its first line agrees\): someone who runs "
                        r"code as you \(an editor, or you\) rewrote it. The helper's copy follows.", said), said
    assert not any(re.match(r"\S+ \S+\s+Bob\s", line) for line in lines) and "print('first')" in text
    assert re.search(r"Ada\s+ran code in shared.ipynb:\n\s+import glob", text)  # the rewrite itself, in the copy
    assert log_of(notebook) == text  # said every time, not once

    notebook.run("%share stop")
    after = log_of(notebook)
    assert after.startswith("This share has ended, so its trail file cannot be checked")
