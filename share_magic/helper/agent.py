"""The ngrok agent's binary: is it there, is it recent enough, and fetching it safely when it is not (helper side).

pyngrok 9 starts endpoints through the agent's ``/api/endpoints``, which only agents from :data:`MINIMUM` on have; an
older agent never looks healthy to pyngrok, which then waits forever. pyngrok downloads an agent where there is
none, but inside whatever start timeout its caller has, without a bound of its own, to a fixed name in the shared
temporary folder, and it extracts it straight over the binary's path, so an interrupted download leaves a broken
agent there. So the helper does it itself before the start timeout begins: the archive goes into the share's private
folder, the binary into a new file beside its final path, which is run (``ngrok --version``) before it is renamed
into place. pyngrok still chooses the URL and the path (:mod:`.tunnel` passes them): this module imports no pyngrok.

Only an agent at pyngrok's own path is replaced when it is too old (pyngrok put it there); one the user installed
(``PYNGROK_NGROK_PATH``, a package) is the user's to update, so they are told the command instead.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
import zipfile
from dataclasses import dataclass

from ..errors import TunnelError

MINIMUM = (3, 30, 0)  # /api/endpoints, ngrok's agent changelog of 2025-09-23
VERSION_LINE = re.compile(r"ngrok version (\d+)\.(\d+)\.(\d+)")
VERSION_TIMEOUT = 10.0  # for `ngrok --version`: a working agent answers in milliseconds
DOWNLOAD_STALL = 30.0  # seconds without a byte before a download is given up
DOWNLOAD_LIMIT = 600.0  # a download that trickles on for longer is given up too
CHUNK = 64 * 1024
GET_AGENT = "https://ngrok.com/download"


class Cancelled(Exception):
    """The share was stopped while its agent was being fetched."""


@dataclass
class Progress:
    """What the helper tells the kernel while it fetches the agent."""

    what: str  # "Downloading the ngrok agent (first use)", "Updating the ngrok agent from 3.24.0"
    done: int = 0
    total: int | None = None


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def version_of(path: str) -> tuple[int, int, int] | None:
    """The agent's version, from ``ngrok --version``; None if it did not say one (not an agent, broken, hung)."""
    try:
        answer = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    match = VERSION_LINE.search(answer.stdout)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def current(version: tuple[int, int, int] | None) -> bool:
    """Whether an agent of ``version`` has what pyngrok 9 needs: v3, at :data:`MINIMUM` or later."""
    return version is not None and version[0] == MINIMUM[0] and version >= MINIMUM


def too_old(path: str, version: tuple[int, int, int] | None) -> str:
    found = f"is version {dotted(version)}" if version else "did not say its version (`ngrok --version`)"
    return (f"The ngrok agent at {path} {found}, and share_magic needs ngrok {dotted(MINIMUM)} or later (pyngrok "
            f"starts tunnels through the agent API that arrived in {dotted(MINIMUM)}). Fix: run `{path} update` in a "
            f"terminal (or install a current agent from {GET_AGENT}), then run %share again.")


def not_fetched(situation: str, path: str, url: str, why: str) -> str:
    return (f"{situation}, and share_magic could not download it from {url} ({why}). Fix: download it from "
            f"{GET_AGENT} (or install it with your package manager), then set PYNGROK_NGROK_PATH=/path/to/ngrok in the "
            f"environment that starts Jupyter, or put it at {path}; then run %share again.")


class AgentBinary:
    """The agent at ``path`` (``own``: pyngrok's default path, where pyngrok would download it), made ready to run:
    there, and at :data:`MINIMUM` or later. ``progress`` is what the helper reports while it fetches one."""

    def __init__(self, path: str, url: str, own: bool, work: str, stall: float = DOWNLOAD_STALL) -> None:
        self.path, self.url, self.own, self.work, self.stall = path, url, own, work, stall
        self.progress: Progress | None = None
        self.situation = "The ngrok agent is not installed"  # why it is being fetched, for the error if it cannot be
        self.cancelled = threading.Event()

    def ready(self) -> None:
        """Check the agent and fetch it if it is missing (or too old and pyngrok's own); raise :class:`TunnelError`
        with the one line to show if it cannot be made ready. Blocking; bounded (see the module's constants)."""
        if not os.path.exists(self.path):
            self.situation = f"The ngrok agent is not installed ({self.path} does not exist)"
            self.fetch(Progress("Downloading the ngrok agent (first use)"))
            return
        version = version_of(self.path)
        if current(version):
            return
        if not self.own:
            raise TunnelError(too_old(self.path, version), "too-old-agent")
        self.situation = (f"The ngrok agent pyngrok installed at {self.path} is too old "
                          f"({dotted(version) if version else 'it does not run'}; share_magic needs "
                          f"{dotted(MINIMUM)} or later)")
        self.fetch(Progress(f"Updating the ngrok agent from {dotted(version)}" if version else
                            "Downloading the ngrok agent again (the one there did not run)"))

    def _failed(self, why: str) -> TunnelError:
        return TunnelError(not_fetched(self.situation, self.path, self.url, why), "no-agent")

    def cancel(self) -> None:
        self.cancelled.set()

    def fetch(self, progress: Progress) -> None:
        self.progress = progress
        folder = tempfile.mkdtemp(prefix="download-", dir=self.work)  # private: inside the share's own folder
        try:
            archive = os.path.join(folder, self.url.rsplit("/", 1)[-1] or "ngrok.tgz")
            self._download(archive, progress)
            self._install(archive)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _download(self, archive: str, progress: Progress) -> None:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=self.stall) as answer, open(archive, "wb") as f:
                length = answer.headers.get("Content-Length")
                progress.total = int(length) if length and length.isdigit() else None
                while True:
                    if self.cancelled.is_set():
                        raise Cancelled
                    if time.monotonic() - started > DOWNLOAD_LIMIT:
                        raise self._failed(f"still not done after {DOWNLOAD_LIMIT:g} s")
                    chunk = answer.read1(CHUNK)  # what has arrived: progress as it comes
                    if not chunk:
                        break
                    f.write(chunk)
                    progress.done += len(chunk)
        except socket.timeout:
            raise self._failed(f"it stalled: nothing arrived for {self.stall:g} s after {progress.done:,} "
                               "bytes") from None
        except (OSError, ValueError) as e:  # urllib's URLError and HTTPError are OSErrors; a bad URL a ValueError
            raise self._failed(str(getattr(e, "reason", None) or e)) from None
        if progress.total is not None and progress.done != progress.total:
            raise self._failed(f"it ended after {progress.done:,} of {progress.total:,} bytes")

    def _install(self, archive: str) -> None:
        """The binary out of the archive, into a new file beside its final path; run; then renamed into place (a
        rename within one folder: whoever runs the path gets the old agent or the new one, never half of one)."""
        try:
            binary = binary_from(archive, "ngrok.exe" if self.path.endswith(".exe") else "ngrok")
        except (OSError, tarfile.TarError, zipfile.BadZipFile, KeyError) as e:
            raise self._failed(f"what arrived is not ngrok's archive: {e}") from None
        folder = os.path.dirname(self.path)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        descriptor, part = tempfile.mkstemp(prefix=".ngrok-", suffix=".part", dir=folder)
        try:
            with os.fdopen(descriptor, "wb") as f:
                f.write(binary)
            os.chmod(part, 0o700)  # as pyngrok installs it
            version = version_of(part)
            if not current(version):
                said = dotted(version) if version else "nothing"
                raise self._failed(f"what arrived does not run as ngrok {dotted(MINIMUM)} or later: `ngrok "
                                   f"--version` said {said}")
            os.replace(part, self.path)
        finally:
            if os.path.exists(part):
                os.unlink(part)


def binary_from(archive: str, name: str) -> bytes:
    """The one file called ``name`` in ngrok's archive (a .tgz, or a .zip on macOS and Windows), never extracted to
    disk by name: nothing in the archive chooses where anything is written."""
    if archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as bundle:
            return bundle.read(name)
    with tarfile.open(archive, "r:gz") as bundle:
        member = bundle.getmember(name)
        if not member.isfile():
            raise KeyError(f"{name} in the archive is not a file")
        extracted = bundle.extractfile(member)
        assert extracted is not None
        with extracted:
            return extracted.read()


def describe(progress: Progress) -> dict[str, object]:
    """The progress as the helper sends it to the kernel."""
    return {"what": progress.what, "done": progress.done, "total": progress.total}

