"""A share belongs to its kernel id, not to one kernel process: it survives restarts (the REST API's, and Jupyter's
own after a crash), any notebook of the server runs it, and its helper's control channel is its user's alone."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import tempfile
from multiprocessing.connection import AuthenticationError
from pathlib import Path

import pytest
from harness import AUTHTOKEN, command_lines, processes_with, restart_kernel, share_links, share_processes, wait_for
from test_access import refused_by_the_gate
from test_people import invited

GONE_WITHIN = 10  # seconds: the bound for every share process to end
PID = "import os; print(os.getpid())"


def kernel_pids(kernel_id: str) -> list[int]:
    """The live processes of a kernel, found by its connection file (which a restart keeps)."""
    return processes_with(f"kernel-{kernel_id}.json")


def restarted_by_jupyter(server, kernel_id: str, old_pid: int) -> int:
    """Wait until Jupyter runs the kernel ``kernel_id`` in a new process, idle; return its pid."""
    pid = wait_for(lambda: [p for p in kernel_pids(kernel_id) if p != old_pid], 60, "a new kernel process")[0]
    wait_for(lambda: server.api("GET", f"api/kernels/{kernel_id}").json()["execution_state"] == "idle", 60,
             "the restarted kernel to be idle")
    return pid


def anyone_link(notebook) -> str:
    return share_links(notebook)["edit"]


def the_record(sandbox) -> dict:
    records = list(Path(os.environ["JUPYTER_RUNTIME_DIR"]).glob("share_magic-*.json"))
    assert len(records) == 1, records
    return json.loads(records[0].read_text())


def test_a_restart_keeps_the_link_the_people_and_a_visitors_session(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    links = invited(notebook, notebook.execute("%load_ext share_magic\n%share --for 1h\n%share invite Ada Grace"))
    notebook.run("%share revoke Grace")
    before = notebook.run("%share status")
    anyone, ends_at = anyone_link(notebook), before.split("ends at ", 1)[1][:8]
    old_pid = int(notebook.run(PID))
    ada = visitor(links["Ada"])
    assert ada.get(ada.link).status_code == 200
    channels = f"/api/kernels/{notebook.kernel_id}/channels"
    assert ada.kernel(channels).execute(PID)["stdout"] == f"{old_pid}\n"

    restart_kernel(server, notebook)
    new_pid = restarted_by_jupyter(server, notebook.kernel_id, old_pid)
    assert new_pid != old_pid

    # Ada's session (her cookies, not her link again) reaches the restarted kernel, as her page's reconnect does.
    assert ada.kernel(channels).execute(PID)["stdout"] == f"{new_pid}\n"
    assert ada.get("/api/contents").status_code == 200
    guest = visitor(anyone)
    assert guest.get(anyone).status_code == 200
    assert refused_by_the_gate(visitor(links["Grace"]).get(links["Grace"]))  # still revoked

    # The restarted kernel runs the same share: same link, same people, same end time, the cost so far.
    assert int(notebook.run(PID)) == new_pid
    shown = notebook.execute("%load_ext share_magic\n%share")
    assert shown["error"] is None, shown
    assert anyone_link(notebook) == anyone and "started from" not in shown["text"]
    status = notebook.run("%share status")
    assert f"ends at {ends_at}" in status and "Grace (revoked at" in status
    assert "Ada (connected since" in status  # her websocket to the restarted kernel is open
    assert share_links(notebook)["Ada"] == links["Ada"] and "Cost to your ngrok plan so far: 0 requests" not in status
    bob = invited(notebook, notebook.execute("%share invite Bob"))["Bob"]
    assert visitor(bob).get(bob).status_code == 200
    assert notebook.execute("%share revoke Ada")["stdout"].startswith("Ada is cut off")
    assert refused_by_the_gate(ada.get("/api/contents"))

    assert "stopped" in notebook.run("%share stop")
    wait_for(lambda: not share_processes(), GONE_WITHIN, "every share process to end")
    assert not guest.reaches_jupyter()


def test_a_second_notebook_runs_the_share_and_every_widget_stays_current(jupyter, owner, visitor) -> None:
    server = jupyter()
    first, second = owner(server, "first.ipynb"), owner(server, "second.ipynb")
    invited(first, first.execute("%load_ext share_magic\n%share invite Ada"))
    first.run("import share_magic\nfrom share_magic.kernel.widget import ShareView\n"
              "view = ShareView(share_magic.current())")
    rows = "print(sorted(row.children[0].value.split('>')[1].split('<')[0] for row in view.people.rows.children))"
    assert first.run(rows) == "['Ada']\n"

    # The second notebook invites without running %share first; both see the same people.
    bob = visitor(invited(second, second.execute("%load_ext share_magic\n%share invite Bob"))["Bob"])
    assert bob.get(bob.link).status_code == 200
    bob.websocket("/api/events/subscribe")  # an open page: connected
    status = second.run("%share status")
    assert "Ada (invited, not connected)" in status and "started from first.ipynb" in status
    wait_for(lambda: first.run(rows) == "['Ada', 'Bob']\n", 10, "the first notebook's widget to show Bob")
    assert "Bob (connected since" in wait_for(lambda: (out := first.run("%share status")) and "Bob (conn" in out
                                              and out, 10, "Bob to show as connected in the first notebook")

    assert second.execute("%share revoke Ada")["stdout"].startswith("Ada is cut off")
    wait_for(lambda: "Ada (revoked at" in first.run("%share status"), 10, "the revocation to reach the first")
    wait_for(lambda: "revoked at" in first.run("print(view.people.rows.children[0].children[1].value)"), 10,
             "the first notebook's widget to show Ada revoked")
    assert len(share_processes()) == 3  # one helper, its lifeline, one agent

    # A view link added from the second shows the share's notebook, and the first sees it too.
    assert second.execute("%share --view")["error"] is None
    assert "View-only link: first.ipynb, nothing else" in second.run("%share status")
    view_link = share_links(second)["view"]
    assert visitor(view_link).get(view_link).status_code == 200
    wait_for(lambda: share_links(first).get("view") == view_link, 10, "the first notebook to have the view link")

    # Stopped from the second, it ends in the first too, and its widget says so.
    assert "stopped" in second.run("%share stop")
    wait_for(lambda: not share_processes(), GONE_WITHIN, "every share process to end")
    assert "Share stopped" in first.run("%share status")
    wait_for(lambda: first.run("print(view.stop_button.disabled)") == "True\n", 10,
             "the first notebook's widget to show the share stopped")


def test_a_kernel_killed_and_restarted_by_jupyter_keeps_its_share(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    assert notebook.execute("%load_ext share_magic\n%share")["error"] is None
    guest = visitor(anyone_link(notebook))
    assert guest.get(guest.link).status_code == 200
    old_pid = int(notebook.run(PID))
    helpers = processes_with("share_magic.helper")
    os.kill(old_pid, signal.SIGKILL)  # what the OOM killer does; Jupyter's restarter brings the kernel back
    new_pid = restarted_by_jupyter(server, notebook.kernel_id, old_pid)
    assert processes_with("share_magic.helper") == helpers
    channels = f"/api/kernels/{notebook.kernel_id}/channels"
    assert guest.kernel(channels).execute(PID)["stdout"] == f"{new_pid}\n"
    assert "Sharing this Jupyter server" in notebook.run("%load_ext share_magic\n%share status")

    # Its id leaving the server (a shutdown) still ends it.
    assert server.api("DELETE", f"api/kernels/{notebook.kernel_id}").status_code == 204
    wait_for(lambda: not share_processes(), GONE_WITHIN, "every share process to end")
    assert not guest.reaches_jupyter()


def test_a_killed_helper_is_lost_in_every_notebook_and_leaves_nothing(jupyter, owner, visitor, sandbox) -> None:
    server = jupyter()
    first, second = owner(server, "first.ipynb"), owner(server, "second.ipynb")
    first.execute("%load_ext share_magic\n%share")
    link = anyone_link(first)
    old_pid = int(first.run(PID))
    restart_kernel(server, first)  # no kernel process is its parent now
    restarted_by_jupyter(server, first.kernel_id, old_pid)
    first.execute("%load_ext share_magic\n%share")
    assert anyone_link(first) == link
    second.execute("%load_ext share_magic\n%share")
    record = the_record(sandbox)
    guest = visitor(link)

    os.kill(record["helper_pid"], signal.SIGKILL)
    wait_for(lambda: not share_processes(), GONE_WITHIN, "the agent to go with its helper")
    assert not guest.reaches_jupyter()
    folder = os.path.dirname(record["address"])
    assert os.path.exists(folder) and the_record(sandbox) == record  # stale now
    for notebook in (first, second):
        status = wait_for(lambda nb=notebook: (out := nb.run("%share status")) and "lost" in out and out, 10,
                          "the share to say lost")
        assert "helper process ended unexpectedly" in status
    # Whoever looked for a live share recognised the stale record and control folder, and cleaned them up.
    assert not os.path.exists(folder) and not list(Path(os.environ["JUPYTER_RUNTIME_DIR"]).glob("share_magic-*"))
    result = second.execute("%share")
    assert result["error"] is None and "Error" not in result["stderr"], result["stderr"]
    fresh = anyone_link(second)
    assert visitor(fresh).get(fresh).status_code == 200
    assert the_record(sandbox)["helper_pid"] != record["helper_pid"]
    second.run("%share stop")


def test_only_its_user_reaches_the_control_channel(jupyter, owner, visitor, sandbox, monkeypatch) -> None:
    # A runtime folder every user may pass through (the sandbox's is under pytest's private folder): what keeps
    # others out must be the share's own permissions.
    runtime = tempfile.mkdtemp(prefix="share_magic-test-runtime-")
    os.chmod(runtime, 0o755)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", runtime)
    try:
        server = jupyter()
        notebook = owner(server)
        notebook.execute("%load_ext share_magic\n%share")
        link = anyone_link(notebook)
        record_file = next(Path(runtime).glob("share_magic-*.json"))
        record = json.loads(record_file.read_text())
        folder = os.path.dirname(record["address"])
        assert os.path.dirname(folder) == runtime  # beside the record
        assert stat.S_IMODE(record_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(record["address"]).st_mode) == 0o600 and stat.S_ISSOCK(
            os.stat(record["address"]).st_mode)

        # Another local user: cannot read the record, enter the folder, or connect to the socket.
        attempt = subprocess.run(
            ["/usr/bin/python3", "-c", NOBODY_TRIES, str(record_file), record["address"]],
            user="nobody", group="nogroup", capture_output=True, text=True, timeout=30, cwd="/")
        assert attempt.stdout.split() == ["runtime:ok", "record:PermissionError", "folder:PermissionError",
                                          "socket:PermissionError"], attempt

        # This user, without the key: refused, and the share carries on.
        from share_magic import control

        with pytest.raises(AuthenticationError):
            control.connect({**record, "authkey": "00" * 32})
        assert "Sharing this Jupyter server" in notebook.run("%share status")
        assert visitor(link).get(link).status_code == 200
        lines = command_lines([*share_processes(), int(notebook.run(PID))])
        assert "share_magic.lifeline" in lines and record["authkey"] not in lines and AUTHTOKEN not in lines

        notebook.run("%share stop")
        wait_for(lambda: not share_processes(), GONE_WITHIN, "every share process to end")
        assert not record_file.exists() and not os.path.exists(folder)
    finally:
        wait_for(lambda: not share_processes(), GONE_WITHIN, "share processes to end")  # before the folder goes
        subprocess.run(["rm", "-rf", runtime], check=True)


def test_a_runtime_and_a_temporary_folder_too_deep_for_a_socket_still_share(jupyter, owner, visitor, sandbox,
                                                                             tmp_path, monkeypatch) -> None:
    """A socket's path holds at most 104 to 108 bytes: the control socket goes where it fits, /tmp at the last."""
    deep = tmp_path / ("deep-" * 12) / ("deeper-" * 10)
    runtime, temporary = deep / "runtime", deep / "tmp"
    for folder in (runtime, temporary):
        folder.mkdir(parents=True)
    assert len(str(temporary)) > 120
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))  # the server, its kernels and their helpers see both
    monkeypatch.setenv("TMPDIR", str(temporary))
    try:
        notebook = owner(jupyter())
        result = notebook.execute("%load_ext share_magic\n%share")
        assert result["error"] is None and "Error" not in result["stderr"], result
        record = json.loads(next(runtime.glob("share_magic-*.json")).read_text())
        folder = os.path.dirname(record["address"])
        assert os.path.dirname(folder) == "/tmp" and stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert "Sharing this Jupyter server" in notebook.run("%share status")  # the kernel reaches the helper there
        assert visitor(anyone_link(notebook)).reaches_jupyter()
        notebook.run("%share stop")
        wait_for(lambda: not share_processes(), GONE_WITHIN, "every share process to end")
        assert not os.path.exists(folder)
    finally:
        wait_for(lambda: not share_processes(), GONE_WITHIN, "share processes to end")


NOBODY_TRIES = """
import os, socket, sys
record, address = sys.argv[1:]
def attempt(name, action):
    try:
        action()
        print(name + ":ok")
    except OSError as e:
        print(name + ":" + type(e).__name__)
attempt("runtime", lambda: os.listdir(os.path.dirname(record)))
attempt("record", lambda: open(record).read())
attempt("folder", lambda: os.listdir(os.path.dirname(address)))
def connect():
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(address)
attempt("socket", connect)
"""


def test_jupyter_giving_up_on_a_crashing_kernel_ends_the_share(jupyter, owner, visitor) -> None:
    server = jupyter()
    notebook = owner(server)
    notebook.execute("%load_ext share_magic\n%share")
    guest = visitor(anyone_link(notebook))
    assert guest.reaches_jupyter()
    pid = int(notebook.run(PID))
    # A kernel that keeps dying: Jupyter restarts it a few times (restart_limit), then removes its id.
    while server.api("GET", f"api/kernels/{notebook.kernel_id}").status_code == 200:
        os.kill(pid, signal.SIGKILL)
        pid = wait_for(lambda old=pid: [p for p in kernel_pids(notebook.kernel_id) if p != old]
                       or server.api("GET", f"api/kernels/{notebook.kernel_id}").status_code == 404,
                       60, "Jupyter to restart the kernel or give up")
        if pid is True:
            break
        pid = pid[0]
        assert processes_with("share_magic.helper") and guest.reaches_jupyter()  # each restart keeps the share
    wait_for(lambda: not share_processes(), GONE_WITHIN, "every share process to end")
    assert not guest.reaches_jupyter()
