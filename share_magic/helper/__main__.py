"""The share's helper process: ``python -m share_magic.helper``, started by a kernel's ``%share``
(:mod:`share_magic.kernel.share`) in a session of its own, with its settings on standard input. It runs the share's
owner (:mod:`.owner`) until the share ends, then takes its process group (the ngrok agent) with it.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import traceback

from ..control import remove_record
from .owner import Events, Helper

LIFELINE = """
import os, signal, sys
sys.stdin.buffer.read()  # returns when the helper is gone: it held the only write end
os.killpg(os.getpgrp(), signal.SIGKILL)
"""


def start_lifeline() -> int:
    """A tiny process in the helper's group that ends the group (the agent) when the helper ends, even when the
    helper is killed outright and no kernel is left to notice. Being in the group, it keeps the group's id from
    being reused until it has done so. Returns the write end the helper keeps (and never writes to)."""
    read, write = os.pipe()
    subprocess.Popen([sys.executable, "-c", LIFELINE, "share_magic.lifeline"], stdin=read,
                     stdout=subprocess.DEVNULL, close_fds=True)
    os.close(read)
    os.set_inheritable(write, False)
    return write


def _end_process_group() -> None:
    """The helper's last act: whatever still runs in its own group (an agent pyngrok could not stop, or one that
    ignores SIGTERM) ends with it. The helper itself goes too; all it had to say is said."""
    if os.getpgrp() != os.getpid():  # not started as a session of its own: the group is not ours to end
        return
    os.killpg(os.getpgrp(), signal.SIGKILL)


async def amain() -> None:
    # The start's outcome goes out on a private copy of stdout; anything else that prints lands on stderr.
    events = Events(os.fdopen(os.dup(1), "w", encoding="utf-8"))
    os.dup2(2, 1)
    settings = json.loads(sys.stdin.readline() or "{}")
    if not settings:
        return
    if os.getpgrp() == os.getpid():
        start_lifeline()
    helper = Helper(settings, events)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: helper.request_stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=helper.watch_pipe, args=(sys.stdin,), daemon=True).start()
    try:
        await helper.run()
    except Exception:
        events.started("crashed", traceback=traceback.format_exc())
        events.emit("ended", status="lost", reason="the share's helper process failed (see the Jupyter server's log)")
        raise
    finally:
        helper.tunnel.remove_folder()
        remove_record(settings["record"], os.getpid())
        helper.control.close()


def main() -> None:
    code = 0
    try:
        asyncio.run(amain())
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        _end_process_group()
        os._exit(code)  # no lingering thread (a pyngrok call blocked on a silent agent) may keep the process alive


if __name__ == "__main__":
    main()
