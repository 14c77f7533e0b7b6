"""A share survives interrupts and restarts, ends with its kernel (its id leaving the server; or, for a share of
another server, the kernel process), and notices when its agent or server goes. Restarts: ``test_restart.py``."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from harness import processes_with, share_links, share_processes, wait_for

GONE_WITHIN = 10  # seconds: the bound for the link to stop working and every share process to end


def start_share(notebook) -> str:
    result = notebook.execute("%load_ext share_magic\n%share")
    assert result["error"] is None, result["error"]
    return share_links(notebook)["edit"]


def assert_share_gone(guest) -> None:
    wait_for(lambda: not share_processes(), GONE_WITHIN, "every share process to end")
    assert not guest.reaches_jupyter()


def test_interrupting_the_kernel_does_not_end_the_share(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    guest = visitor(start_share(notebook))
    before = sorted(share_processes())
    assert len(before) == 3  # the helper, its lifeline and the agent
    busy = notebook.submit("import time; time.sleep(30)")
    wait_for(lambda: server.api("GET", f"api/kernels/{notebook.kernel_id}").json()["execution_state"] == "busy",
             10, "the kernel to be busy")
    assert server.api("POST", f"api/kernels/{notebook.kernel_id}/interrupt").status_code == 204
    assert notebook.collect(busy)["error"]["ename"] == "KeyboardInterrupt"
    time.sleep(1)
    assert sorted(share_processes()) == before
    assert guest.reaches_jupyter()
    assert "Sharing this Jupyter server" in notebook.run("%share status")


@pytest.mark.parametrize("how", ["shutdown", "unload_ext", "reload_ext"])
def test_the_share_dies_with_its_kernel(jupyter, owner, visitor, how: str) -> None:
    server = jupyter()
    notebook = owner(server)
    guest = visitor(start_share(notebook))
    assert guest.reaches_jupyter()
    if how == "shutdown":  # the kernel id leaves the server
        assert server.api("DELETE", f"api/kernels/{notebook.kernel_id}").status_code == 204
    else:
        notebook.run(f"%{how} share_magic")
    assert_share_gone(guest)


@pytest.mark.parametrize("how", ["SIGKILL", "restart"])
def test_a_share_of_another_server_dies_with_the_kernel_process(jupyter, owner, visitor, how: str) -> None:
    """That server cannot say whether this kernel lives: its share keeps the old rule, the kernel process."""
    here, there = jupyter(), jupyter(name="other")
    notebook = owner(here)
    result = notebook.execute(f"%load_ext share_magic\n%share --port {there.port}")
    assert result["error"] is None, result
    guest = visitor(share_links(notebook)["edit"])
    assert guest.reaches_jupyter()
    if how == "SIGKILL":  # also what the OOM killer does; Jupyter restarts the kernel, the share stays ended
        os.kill(int(notebook.run("import os; print(os.getpid())")), signal.SIGKILL)
    else:
        assert here.api("POST", f"api/kernels/{notebook.kernel_id}/restart").ok
    assert_share_gone(guest)


def test_the_share_ends_when_the_server_stops(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    guest = visitor(start_share(notebook))
    os.kill(server.process.pid, signal.SIGKILL)  # the server alone: its kernel is left to notice
    assert_share_gone(guest)


def test_a_crashed_agent_is_reported_and_share_starts_afresh(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    notebook.run("import os; os.environ['STANDIN_NGROK_MODE'] = 'crash-after=3'")
    guest = visitor(start_share(notebook))
    wait_for(lambda: "lost" in notebook.run("%share status"), GONE_WITHIN, "the share to report itself lost")
    status = notebook.run("%share status")
    assert "ngrok agent exited" in status and "run %share for a new one" in status
    assert_share_gone(guest)
    notebook.run("os.environ.pop('STANDIN_NGROK_MODE')")
    notebook.run("%share")
    fresh = visitor(share_links(notebook)["edit"])
    assert fresh.reaches_jupyter()


def test_two_notebooks_of_one_server_share_one_tunnel(jupyter, owner, visitor) -> None:
    server = jupyter()
    first = owner(server, "first.ipynb")
    second = owner(server, "second.ipynb")
    link = start_share(first)
    shown = second.execute("%load_ext share_magic\n%share")
    assert shown["error"] is None and "Error" not in shown["stderr"], shown
    second_link = share_links(second)["edit"]
    assert second_link.split("/lab/")[0] == link.split("/lab/")[0]  # the same public URL...
    assert "/lab/tree/second.ipynb" in second_link  # ...opening the notebook it was asked from
    assert "started from first.ipynb" in shown["text"]
    assert len(share_processes()) == 3  # still one helper (and its lifeline) and one agent

    # Stopping from the other notebook stops it for both.
    assert "stopped" in second.run("%share stop")
    assert_share_gone(visitor(link))
    assert "stopped" in first.run("%share status")

    # A share still ends with the kernel that started it (shut down), whoever else shows it.
    guest = visitor(start_share(first))
    assert "started from first.ipynb" in second.execute("%share")["text"]
    assert server.api("DELETE", f"api/kernels/{first.kernel_id}").status_code == 204
    assert_share_gone(guest)
    assert "lost" in second.run("%share status")


def test_a_kernel_killed_while_the_agent_hangs_leaves_nothing(jupyter, owner) -> None:
    server = jupyter()
    notebook = owner(server)
    pid = int(notebook.run("import os; os.environ['STANDIN_NGROK_MODE'] = 'hang'; print(os.getpid())"))
    notebook.submit("%load_ext share_magic\n%share")
    # the agent itself, not the `ngrok --version` the helper runs first
    agent = wait_for(lambda: processes_with("standin_ngrok.py start"), 10, "the silent agent")[0]
    wait_for(lambda: ignores_sigterm(agent), 10, "the agent to be stuck (ignoring SIGTERM)")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not share_processes(), GONE_WITHIN, "the helper and the stuck agent to be gone")


def ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(status.split("SigIgn:")[1].split()[0], 16)
    return bool(ignored & (1 << (signal.SIGTERM - 1)))


# Run in the kernel before the share starts: every ResourceWarning it raises from then on is kept in `leaks`.
RECORD_LEAKS = """
import warnings
leaks = []
warnings.simplefilter("always", ResourceWarning)
_show = warnings.showwarning
def _keep(message, category, *args, **kwargs):
    leaks.append(str(message)) if issubclass(category, ResourceWarning) else _show(message, category, *args, **kwargs)
warnings.showwarning = _keep
"""


def test_a_killed_helper_takes_its_agent_along_and_the_share_says_lost(jupyter, owner, visitor) -> None:
    notebook = owner(jupyter())
    notebook.run(RECORD_LEAKS)
    guest = visitor(start_share(notebook))
    guest.get(guest.link)  # admitted; then a kernel websocket through the share, open when the helper goes
    assert guest.kernel(f"/api/kernels/{notebook.kernel_id}/channels").run("print(6 * 7)").strip() == "42"
    os.kill(processes_with("share_magic.helper")[0], signal.SIGKILL)  # the OOM killer's pick, say
    assert_share_gone(guest)
    assert "helper process ended unexpectedly" in notebook.run("%share status")
    # The kernel let go of everything that tied it to the helper (its pipes, the process) without the collector.
    assert notebook.run("import gc; gc.collect(); print(leaks)").strip() == "[]"
