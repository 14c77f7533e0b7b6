"""Processes, as both sides see them: is the helper that wrote a record still the one running.

A helper names itself by its pid and its start time (``/proc/<pid>/stat``), so that a pid the system has since
handed to another process is not taken for it. Where there is no /proc (macOS), a live pid is all that can be told.
"""
from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, though not ours
        return True
    return True


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); [] where there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="latin-1") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def started(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot, from /proc); "" where there is no /proc to tell."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def me() -> str:
    """This process as :func:`helper_alive` recognises it: ``"<pid> <start time>"``."""
    return f"{os.getpid()} {started(os.getpid())}"


def helper_alive(owner: str | int | None) -> bool:
    """Whether the process ``owner`` names (``"<pid> <start time>"`` as :func:`me` wrote it, or a bare pid) is still
    that process: running as this user, not a zombie nobody reaped, and not a recycled pid where its start time
    can tell."""
    pid_text, _, since = str(owner or "").strip().partition(" ")
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process now: ours is gone
        return False
    fields = _stat(pid)
    if not fields:
        return True  # no /proc (macOS): a live pid is all that can be told
    return fields[0] not in ("Z", "X") and (not since or fields[19] == since)
