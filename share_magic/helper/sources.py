"""Where the view's saved notebook comes from: the Jupyter server's (its file, or its contents API), a file on disk
that a front-end with no Jupyter server names (VS Code's ``__vsc_ipynb_file__``), or nothing (a console: readers see
only the cells as they run).

Each source reads one notebook, named when the share starts: no path a reader gives is ever opened. A source says
its ``name`` (the banner's), its ``folder`` (where nbconvert resolves relative links), its ``version()`` (None: it
cannot be read now) and ``read()`` (the version and the notebook).
"""
from __future__ import annotations

import datetime
import json
import os
import stat
from typing import Any
from urllib.parse import quote

from ..jupyter import JupyterServer


class NotebookSource:
    """The saved notebook, as the server has it: from its file, where the server keeps it on this disk, else
    through its contents API (with its token).

    The file is read directly where it exists, not through the contents API: a read that lands while Jupyter is
    writing a save finds a half-written file, which Jupyter then takes for a corrupt one and swaps for its backup --
    and the save under way fails ("No such file or directory", seen in the view benchmark). Read from the disk, a
    half-written file is only invalid JSON: the next look reads the whole one.
    """

    def __init__(self, server: JupyterServer, path: str) -> None:
        self.server = server
        self.path = path

    @property
    def name(self) -> str:
        return self.path

    @property
    def folder(self) -> str:
        return os.path.dirname(self._file())

    def version(self) -> str | None:
        """The notebook's version: its file's modification time, or the API's ``last_modified`` (None if it cannot
        be read now)."""
        if self._through_api():
            status, body = self.server.request("GET", f"api/contents/{quote(self.path)}?content=0&type=notebook")
            return json.loads(body)["last_modified"] if status == 200 else None
        return file_version(self._file())

    def read(self) -> tuple[str, dict[str, Any]]:
        """The notebook's version and content."""
        if self._through_api():
            status, body = self.server.request("GET", f"api/contents/{quote(self.path)}?content=1&type=notebook",
                                               timeout=30)
            if status != 200:
                raise OSError(f"the server answered {status} for {self.path}")
            model = json.loads(body)
            return model["last_modified"], model["content"]
        return read_file(self._file())

    def _through_api(self) -> bool:
        """A server whose notebooks are not files under its root folder here (another contents manager)."""
        return bool(self.server.token) and not (self.server.root_dir and os.path.isfile(self._file()))

    def _file(self) -> str:
        return os.path.join(self.server.root_dir, *self.path.split("/"))


class FileSource:
    """A notebook file on this disk with no Jupyter server around it, read as the front-end last saved it.

    The file is the one named when the share starts, its links followed then: what is read later is a regular file
    at that place, never a link put there since (to a file of the owner's a reader should not see) nor a pipe or
    a device."""

    def __init__(self, path: str) -> None:
        self._name = os.path.basename(path)
        self.file = os.path.realpath(path)

    @property
    def name(self) -> str:
        return self._name

    @property
    def folder(self) -> str:
        return os.path.dirname(self.file)

    def version(self) -> str | None:
        return file_version(self.file) if os.path.exists(self.file) else ""

    def read(self) -> tuple[str, dict[str, Any]]:
        """Not there (an untitled notebook, never saved; moved away): no saved cells until it is."""
        try:
            return read_file(self.file, follow=False)
        except FileNotFoundError:
            return NoNotebook().read()


class NoNotebook:
    """No notebook known (a console, a front-end that names none): the view shows only the cells as they run."""

    name = "this kernel"
    folder = ""

    def version(self) -> str:
        return ""

    def read(self) -> tuple[str, dict[str, Any]]:
        return "", {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}


def saved_source(server: JupyterServer, settings: dict[str, Any]) -> NotebookSource | FileSource | NoNotebook:
    """Where the share's view reads its saved notebook: the server's, or with no server (``alone``), the file the
    kernel's front-end named, if it named one."""
    alone = settings.get("alone")
    if not alone:
        return NotebookSource(server, settings["notebook_path"])
    return FileSource(alone["notebook_file"]) if alone.get("notebook_file") else NoNotebook()


def file_version(path: str) -> str | None:
    try:
        return str(os.stat(path).st_mtime_ns)
    except OSError:
        return None


def read_file(path: str, follow: bool = True) -> tuple[str, dict[str, Any]]:
    """A notebook file's version and content, as the contents API gives it: multi-line strings joined (a
    half-written file: NotJSONError, a ValueError). Not ``follow``: a link there, or anything but a regular file,
    is an OSError."""
    import nbformat

    if follow:
        opened = open(path, encoding="utf-8")
    else:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise OSError(f"{path} is not a regular file")
        opened = os.fdopen(descriptor, encoding="utf-8")
    with opened as f:
        version = str(os.fstat(f.fileno()).st_mtime_ns)
        return version, nbformat.reads(f.read(), as_version=4)


def saved_words(version: str) -> str:
    """What the banner says of a version: when it was saved (an ISO time from the API, or a file's mtime in ns)."""
    if not version:
        return "no saved notebook: cells as they run"
    try:
        moment = datetime.datetime.fromisoformat(version.replace("Z", "+00:00")).astimezone()
    except ValueError:
        moment = datetime.datetime.fromtimestamp(int(version) / 1e9)
    return f"saved at {moment:%H:%M:%S}"
