"""The folders only this user may enter: made private, marked with the helper that made them, and cleaned up when
that helper was killed before it could (see :func:`~share_magic.processes.helper_alive`)."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time

from .processes import helper_alive, me

PREFIX = "share_magic-"  # every private folder of share_magic's starts so
OWNER_FILE = "helper.pid"  # in each private folder: "<pid> <start time>" of the helper that made it
UNOWNED_GRACE = 600.0  # seconds: a folder without an owner file younger than this may be a helper starting up


def private_folder(prefix: str, parent: str | None = None) -> str:
    """A new folder only this user may enter (0700, a name nobody could prepare), marked as this process's."""
    folder = tempfile.mkdtemp(prefix=PREFIX + prefix, dir=parent)
    descriptor = os.open(os.path.join(folder, OWNER_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as f:
        f.write(me() + "\n")
    return folder


def private_dir(path: str) -> str:
    """``path``, a folder that outlives any share (the trail's, the worker's memory), made only this user's: created
    0700 if new; one of this user's with wider rights is narrowed to 0700; a PermissionError if it is not a folder
    of this user's (a link, or someone else's)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{path} is not a folder of this user's: share_magic keeps nothing there")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def remove_folder(path: str) -> None:
    """Remove ``path`` if it is a private folder of this user's (not a link, not anyone else's)."""
    try:
        info = os.lstat(path)
    except OSError:
        return
    if os.path.basename(path).startswith(PREFIX) and stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_folders(root: str | None = None) -> list[str]:
    """Remove the private folders that helpers killed before they could clean up left in ``root`` (the temporary
    folder); return them. Only folders of this user, not links, whose owner file names a process that is gone --
    or, with no owner file (an older share_magic, or a helper between making it and writing the file), that are
    older than :data:`UNOWNED_GRACE`. A live share's folder is never touched."""
    root = root or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = [entry for entry in os.scandir(root) if entry.name.startswith(PREFIX)]
    except OSError:
        return removed
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            descriptor = os.open(os.path.join(entry.path, OWNER_FILE), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(descriptor, encoding="utf-8") as f:
                stale = not helper_alive(f.read(100))
        except FileNotFoundError:
            stale = time.time() - info.st_mtime > UNOWNED_GRACE
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed
