"""The share's service worker: an editor's visit costs a handful of ngrok requests, not one per script chunk.

A cold JupyterLab load asks for ~100 static files (the main bundle, then the chunks and extension entries it names,
then theirs, in waves), each one request at the edge. Jupyter serves them content-hashed and ``immutable``. The
gateway gives editors' pages (through :meth:`Worker.rewrite`) a small loader that registers ``share_worker.js``
(served at ``<base_url>share_magic/worker.js``, scoped to the app's pages below the base URL: ``lab``, ``tree``,
``notebooks``...) and starts the page's own scripts once the worker controls the page, or at once where there is no
worker (a private window, a browser that refuses service workers, a certificate the browser does not trust).

The worker answers only versioned static files (below ``static/`` or ``lab/extensions/``, named by a hash or
versioned by ``?v=<hash>``, no other query), from Cache Storage. What it lacks it asks for in one request per wave
(``share_magic/batch``): the helper fetches the files from Jupyter over loopback, which costs no ngrok request, and
sends them back as one gzipped pack. The helper remembers which files loads of each JupyterLab build (named by its
main bundle and extension entries) asked for while loading (not what a page fetched later: a terminal, a dialog),
across shares, in a private file (0600 in a 0700 folder); a new
worker fetches all of them at install in one request (``share_magic/pack``). A new build or extension set has new
file names and a new build id: a worker of its own, with a cache of its own; the old cache is dropped.

Nothing else goes through the worker: navigations, API calls, websockets, notebooks, files, and anything carrying a
token go to the network, where the gate decides as without it. So a share that has ended is never served from the
cache: the next share of a free plan has the same origin, and the old link's page comes from the network -- the
gateway's refusal -- while static files alone show nothing. The worker script, batches and packs are answered only
to admitted editing sessions (a view session's requests all go to the view; anyone else gets the gate's refusal),
and the view page lies outside every scope the worker is registered for.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import struct
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs

from ..folders import private_dir
from ..jupyter import JupyterServer
from .answers import accepts_gzip, gzip_bytes, response
from .grants import Local

SCRIPT_PATH = "share_magic/worker.js"
BATCH_PATH = "share_magic/batch"
PACK_PATH = "share_magic/pack"
SCOPES = ("lab", "tree", "notebooks", "edit", "consoles", "terminals")  # the app pages a worker may control
MAX_FILES = 400  # per batch or pack
MAX_FILE = 16 * 1024 * 1024
FILES_KEPT = 96 * 1024 * 1024  # static files kept in memory, in all
PACKS_KEPT = 16
BUILDS_REMEMBERED = 8
FETCHERS = 8  # files fetched from Jupyter at once, over loopback
STATIC = re.compile(r"(static|lab/extensions)/[A-Za-z0-9@._~%+/-]+(\?v=[0-9a-f]{6,64})?")
VERSIONED = re.compile(r"[._-][0-9a-f]{8,}\.(js|css|wasm|woff2?|ttf|svg|png|json)$")
CONFIG = re.compile(rb'<script id="jupyter-config-data" type="application/json">(.*?)</script>', re.S)
ICON_TAG = re.compile(rb'(<link\b[^>]*\shref=")([^"?]*/static/favicons/[A-Za-z0-9._-]+)(")', re.I)
SCRIPT_TAG = re.compile(rb'<script\b([^>]*?)\ssrc="([^"]+)"([^>]*)>\s*</script>', re.I)
WORKER_SCRIPT = (Path(__file__).parent / "share_worker.js").read_bytes()
WORKER_VERSION = hashlib.sha256(WORKER_SCRIPT).hexdigest()[:12]  # in its URL: a new script is a new worker

LOADER = """(function () {
  "use strict";
  var base = %(base)s, build = %(build)s, sources = %(sources)s;
  var segment = location.pathname.indexOf(base) === 0 ? location.pathname.slice(base.length).split("/")[0] : "";
  var sw = navigator.serviceWorker, scopes = %(scopes)s;
  function tags() {
    return sources.map(function (src) { return '<script defer src="' + src + '"></' + 'script>'; }).join("");
  }
  if (!sw || scopes.indexOf(segment) < 0) { document.write(tags()); return; }  // the page as Jupyter made it
  var started = false;
  function start() {
    // The page's own scripts, in order, now that the worker answers their chunks (or it never will). JupyterLab
    // starts on the window's load event: one that has passed by then is passed on at once.
    if (started) { return; }
    started = true;
    var listen = window.addEventListener;
    window.addEventListener = function (type, listener, options) {
      if (type === "load" && document.readyState === "complete") { setTimeout(listener, 0, new Event("load")); }
      else { listen.call(window, type, listener, options); }
    };
    sources.forEach(function (src) {
      var element = document.createElement("script");
      element.src = src;
      element.async = false;
      document.head.appendChild(element);
    });
  }
  if (sw.controller) { start(); }
  else { sw.addEventListener("controllerchange", start); setTimeout(start, 10000); }
  sw.register(base + %(script)s + "?b=" + build + "&w=" + %(version)s, {scope: base + segment, updateViaCache: "all"})
    .catch(start);
})();"""


def _static(path: str) -> bool:
    """A path below Jupyter's static folders, as a worker may ask for it (no way out of them)."""
    return STATIC.fullmatch(path) is not None and ".." not in path and "//" not in path


def build_of(page: bytes, base_url: str) -> str | None:
    """The JupyterLab (or Notebook 7) build a page loads, as a short id: its own scripts and its extensions' entry
    points, which are all named by their content. None for a page that is not a Jupyter app's."""
    config = CONFIG.search(page)
    if config is None:
        return None
    try:
        settings = json.loads(config.group(1))
    except ValueError:
        return None
    sources = [src.decode("latin-1") for _, src, _ in SCRIPT_TAG.findall(page)]
    named = json.dumps([sources, settings.get("federated_extensions"), settings.get("appVersion"), base_url],
                       sort_keys=True)
    return hashlib.sha256(named.encode()).hexdigest()[:20]


class Memory:
    """What loads of each build asked for, kept across shares in a private file (0600 in a 0700 folder)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._builds: OrderedDict[str, list[str]] = OrderedDict()
        if path is not None:
            try:
                with open(path, encoding="utf-8") as f:
                    if os.fstat(f.fileno()).st_uid == os.getuid():
                        found = json.load(f)
                        self._builds.update((str(build), [str(p) for p in paths if _static(str(p))])
                                            for build, paths in found.items() if isinstance(paths, list))
            except (OSError, ValueError, AttributeError):
                pass

    def paths(self, build: str) -> list[str]:
        with self._lock:
            return list(self._builds.get(build, []))

    def learn(self, build: str, paths: list[str]) -> None:
        with self._lock:
            known = self._builds.setdefault(build, [])
            new = [path for path in paths if path not in known and _static(path)]
            self._builds.move_to_end(build)
            if not new:
                return
            known.extend(new[:max(0, MAX_FILES - len(known))])
            while len(self._builds) > BUILDS_REMEMBERED:
                self._builds.popitem(last=False)
            data = json.dumps(self._builds)
        self._save(data)

    def _save(self, data: str) -> None:
        if self.path is None:
            return
        try:
            private_dir(os.path.dirname(self.path))  # not a folder of ours: remember nothing there (OSError)
            temporary = f"{self.path}.{os.getpid()}.{threading.get_ident()}"
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as f:
                f.write(data)
            os.replace(temporary, self.path)
        except OSError:
            pass


def memory_file() -> str:
    """Where the owner's helpers remember what loads need: a private folder in the user's cache."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "share_magic", "worker-loads.json")


class Worker:
    """The service worker's server side for one share: its script, the pages' loader, batches and packs."""

    def __init__(self, server: JupyterServer, memory: Memory | None = None) -> None:
        self.server = server
        self.base_url = server.base_url
        self.memory = memory if memory is not None else Memory(memory_file())
        self.script_path = self.base_url + SCRIPT_PATH
        self.batch_path = self.base_url + BATCH_PATH
        self.pack_path = self.base_url + PACK_PATH
        self.paths = {self.script_path, self.batch_path, self.pack_path}
        self._files: OrderedDict[str, tuple[int, str, str, bytes]] = OrderedDict()  # path -> status, type, cc, body
        self._files_size = 0
        self._digests: dict[str, str] = {}  # favicon path -> a digest of its content, to version it by
        self._packs: OrderedDict[tuple[str, ...], bytes] = OrderedDict()  # gzipped packs, by the files they hold
        self._lock = threading.Lock()
        self._fetching = ThreadPoolExecutor(max_workers=FETCHERS, thread_name_prefix="share_magic worker")

    def close(self) -> None:
        self._fetching.shutdown(wait=False, cancel_futures=True)

    # -- the page ----------------------------------------------------------------------------------------------------

    def rewrite(self, page: bytes) -> bytes:
        """A Jupyter app's page with its own scripts started by the worker's loader; any other page as it is."""
        build = build_of(page, self.base_url)
        if build is None:
            return page
        sources = [src.decode("latin-1") for _, src, _ in SCRIPT_TAG.findall(page)]
        if not sources or not all(src.startswith(self.base_url) and re.fullmatch(r"[^\s\"'<>]+", src)
                                  for src in sources):  # the server's own scripts, written back as they were
            return page
        loader = LOADER % {"base": json.dumps(self.base_url), "build": json.dumps(build),
                           "sources": json.dumps(sources).replace("</", "<\\/"), "scopes": json.dumps(SCOPES),
                           "script": json.dumps(SCRIPT_PATH), "version": json.dumps(WORKER_VERSION)}
        page = SCRIPT_TAG.sub(b"", page)
        page = ICON_TAG.sub(self._versioned_icon, page)
        at = page.find(b"</head>")
        tag = b"<script>" + loader.encode() + b"</script>"
        return page[:at] + tag + page[at:] if at >= 0 else tag + page

    def _versioned_icon(self, match: re.Match[bytes]) -> bytes:
        """A favicon link named by its content (``?v=<digest>``), as Jupyter names its bundles: JupyterLab swaps
        the idle and busy icons at every kernel status change, and each swap of an unversioned icon is a request
        at the edge. Jupyter serves a versioned static file to be kept for years."""
        href = match.group(2).decode("latin-1")
        if not href.startswith(self.base_url):
            return match.group(0)
        path = href[len(self.base_url):]
        digest = self._digests.get(path)
        if digest is None:
            try:
                status, body, _ = self.server.exchange("GET", path, authenticated=False, timeout=5)
            except OSError:
                return match.group(0)
            if status != 200:
                return match.group(0)
            digest = self._digests[path] = hashlib.sha256(body).hexdigest()[:16]
        return match.group(1) + f"{href}?v={digest}".encode() + match.group(3)

    # -- what the gate hands over ------------------------------------------------------------------------------------

    def answer(self, request: Local) -> bytes:
        """The whole answer to an editor's request for the worker's script or a pack (blocking: run it off the
        loop)."""
        path, _, query = request.target.partition("?")
        if request.method not in ("GET", "HEAD"):
            return response(405, "Method Not Allowed", [("Allow", "GET"), ("Content-Type", "text/plain")])
        fields = {name.lower(): value for name, value in request.headers}
        if path != self.script_path and (fields.get("sec-fetch-site", "same-origin") != "same-origin"
                                         or fields.get("sec-fetch-mode") == "navigate"):
            # A page elsewhere could send an editor's browser here (the cookie goes with a top-level GET) to have
            # the helper build huge packs: packs and batches are for the share's own worker's fetches only.
            return response(403, "Forbidden", [("Content-Type", "text/plain")])
        if path == self.script_path:
            # Only the share's own pages may register it: a service worker script is fetched same-origin.
            return response(200, "OK", [("Content-Type", "text/javascript; charset=utf-8"),
                                        ("Cache-Control", "private, max-age=86400"),
                                        ("Service-Worker-Allowed", self.base_url),
                                        ("X-Content-Type-Options", "nosniff")],
                            b"" if request.method == "HEAD" else WORKER_SCRIPT)
        asked = parse_qs(query)
        build = (asked.get("b") or [""])[0]
        if path == self.batch_path:
            wanted = asked.get("p", [])[:MAX_FILES]
        else:
            wanted = self.memory.paths(build)
        wanted = [p for p in dict.fromkeys(wanted) if _static(p)]
        body = self.pack(wanted)
        if path == self.batch_path and asked.get("l") == ["1"] and re.fullmatch(r"[0-9a-f]{20}", build):
            self.memory.learn(build, [p for p in wanted if self._kept(p)])
        headers = [("Content-Type", "application/octet-stream"), ("Cache-Control", "no-store"),
                   ("X-Content-Type-Options", "nosniff")]
        if accepts_gzip(fields.get("accept-encoding", "")):
            headers.append(("Content-Encoding", "gzip"))
        else:
            body = gzip.decompress(body)
        return response(200, "OK", headers, b"" if request.method == "HEAD" else body)

    def _kept(self, path: str) -> bool:
        with self._lock:
            found = self._files.get(path)
        return found is not None and found[0] == 200 and _immutable(path, found[2])

    # -- packs -------------------------------------------------------------------------------------------------------

    def pack(self, paths: list[str]) -> bytes:
        """These static files as one gzipped pack: [4-byte length][JSON index][bodies]."""
        key = tuple(paths)
        with self._lock:
            if key in self._packs:
                self._packs.move_to_end(key)
                return self._packs[key]
        files = list(self._fetching.map(self._file, paths)) if paths else []
        index, bodies = [], []
        for path, (status, kind, cache, body) in zip(paths, files):
            index.append({"path": path, "status": status, "type": kind, "cache": cache, "size": len(body),
                          "immutable": status == 200 and _immutable(path, cache)})
            bodies.append(body)
        head = json.dumps(index).encode()
        packed = gzip_bytes(struct.pack(">I", len(head)) + head + b"".join(bodies))
        with self._lock:
            self._packs[key] = packed
            while len(self._packs) > PACKS_KEPT:
                self._packs.popitem(last=False)
        return packed

    def _file(self, path: str) -> tuple[int, str, str, bytes]:
        with self._lock:
            found = self._files.get(path)
            if found is not None:
                self._files.move_to_end(path)
                return found
        try:
            status, body, headers = self.server.exchange("GET", path, authenticated=False, timeout=30)
        except OSError:
            return 502, "text/plain", "no-store", b""
        if status != 200 or len(body) > MAX_FILE:
            return status, "text/plain", "no-store", b""
        found = (200, headers.get("Content-Type", "application/octet-stream"), headers.get("Cache-Control", ""), body)
        if _immutable(path, found[2]):
            with self._lock:
                if path not in self._files:
                    self._files[path] = found
                    self._files_size += len(body)
                while self._files_size > FILES_KEPT:
                    _, dropped = self._files.popitem(last=False)
                    self._files_size -= len(dropped[3])
        return found


def _immutable(path: str, cache_control: str) -> bool:
    """A file that can never change under this name: Jupyter says so, or its name is its content's hash."""
    if "immutable" in cache_control.lower() or VERSIONED.search(path.split("?", 1)[0]) is not None:
        return True
    age = re.search(r"max-age=(\d+)", cache_control)
    return "?v=" in path and age is not None and int(age.group(1)) >= 31536000  # versioned: Jupyter keeps it a year
