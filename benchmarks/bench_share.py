"""Benchmark the share path: what %load_ext costs, what %share adds to the agent's own start, and what the gateway
costs a visitor compared with talking to the Jupyter server directly. Each ratio is measured side by side, in one
run, alternating the two sides in blocks so that noise from this shared machine falls on both.

Run:  python benchmarks/bench_share.py [--quick]
Everything runs on loopback: a real jupyter server and kernel, the stand-in ngrok agent from tests/.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import JupyterServer, KernelClient, open_notebook, sandbox_environment  # noqa: E402

MiB = 1024 * 1024
# The cheapest possible relay processes: bytes in, bytes out, no HTTP parsing; one on asyncio (as the gateway),
# one with a blocking thread per direction. What they add is the floor for any gateway outside the kernel's process.
BARE_RELAYS = {"asyncio": """
import asyncio, sys
async def pipe(reader, writer):
    try:
        while data := await reader.read(1 << 20):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
async def handle(reader, writer):
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(sys.argv[1]))
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
""", "threads": """
import socket, sys, threading
def pipe(source, sink):
    try:
        while data := source.recv(1 << 20):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        sink.close()
def handle(visitor):
    upstream = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    for side in (visitor, upstream):
        side.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=pipe, args=(upstream, visitor), daemon=True).start()
    pipe(visitor, upstream)
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
while True:
    threading.Thread(target=handle, args=(listener.accept()[0],), daemon=True).start()
"""}
# The least an HTTP proxy does that frames each request with a library: tornado's (the gateway's), and httptools'
# on asyncio Protocols (uvicorn's shape; only where httptools is installed). What they add is the floor for a gateway
# that parses requests with that library.
FLOORS = Path(__file__).resolve().parent / "floors"
FRAMING_PROXIES = {"tornado": FLOORS / "tornado_proxy.py", "httptools": FLOORS / "httptools_proxy.py"}


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def alternate(blocks: int, *sides: Callable[[], list[float]]) -> list[list[float]]:
    """Run each side's block in turn, ``blocks`` times; return every side's samples."""
    results: list[list[float]] = [[] for _ in sides]
    for _ in range(blocks):
        for i, side in enumerate(sides):
            results[i] += side()
    return results


class Http:
    """A keep-alive HTTP/1.1 client (what a browser uses), timing small requests."""

    def __init__(self, port: int, host: str, token: str, cookie: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Host": host, "Authorization": f"token {token}"}
        if cookie:
            self.headers["Cookie"] = cookie

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body[:200])
        return body

    def timed_gets(self, path: str, n: int) -> list[float]:
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            self.get(path)
            samples.append(time.perf_counter() - start)
        return samples

    def download(self, path: str) -> tuple[float, int]:
        # A connection kept idle longer than the gateway keeps idle ones (30 s: the kernel round trips take longer)
        # is closed by then; a browser would open another, and so does this.
        self.conn.close()
        start = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        assert response.status == 200, response.status
        size = 0
        while chunk := response.read(MiB):
            size += len(chunk)
        return time.perf_counter() - start, size


def admitted_cookie(gateway_port: int, host: str, link: str) -> str:
    """Open the share's link at the gateway, as a visitor's browser does: the session cookie the gate sets."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway_port, timeout=30)
    try:
        conn.request("GET", "/" + link.split("://", 1)[1].split("/", 1)[1], headers={"Host": host})
        response = conn.getresponse()
        response.read()
        assert response.status == 302, response.status
        return response.headers["Set-Cookie"].split(";", 1)[0]
    finally:
        conn.close()


def kernel_round_trips(ws_url: str, host: str, token: str, n: int, cookie: str | None = None) -> list[float]:
    import websocket

    ws = websocket.create_connection(ws_url, host=host, header=[f"Authorization: token {token}"], timeout=30,
                                     cookie=cookie, sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
    session, samples = uuid.uuid4().hex, []
    try:
        for _ in range(n):
            msg_id = uuid.uuid4().hex
            message = {"header": {"msg_id": msg_id, "msg_type": "kernel_info_request", "username": "bench",
                                  "session": session, "date": "2026-01-01T00:00:00Z", "version": "5.3"},
                       "parent_header": {}, "metadata": {}, "content": {}, "channel": "shell", "buffers": []}
            start = time.perf_counter()
            ws.send(json.dumps(message))
            while True:
                reply = json.loads(ws.recv())
                if reply["msg_type"] == "kernel_info_reply" and reply["parent_header"].get("msg_id") == msg_id:
                    break
            samples.append(time.perf_counter() - start)
    finally:
        ws.close()
    return samples


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """Samples a process's resident memory every 10 ms while in use."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def __enter__(self) -> PeakRss:
        self.before = rss_mib(self.pid)
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.01)

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def growth(self) -> float:
        return max(0.0, self.peak - self.before)


def in_kernel(kernel: KernelClient, code: str) -> Any:
    """Run code in the kernel; its last line prints JSON, returned decoded."""
    result = kernel.execute(code, timeout=300)
    assert result["error"] is None, result["error"]
    return json.loads(result["stdout"].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, a 64 MiB download")
    options = parser.parse_args()
    rounds = 3 if options.quick else 7
    small_n = 40 if options.quick else 100
    download_mib = 64 if options.quick else 256

    with tempfile.TemporaryDirectory(prefix="share-bench-") as folder:
        os.environ.update(sandbox_environment(Path(folder)))
        server = JupyterServer(Path(folder) / "server")
        try:
            rows = run(server, rounds, small_n, download_mib)
        finally:
            server.stop()
        viewed = JupyterServer(Path(folder) / "viewed")
        try:
            rows += run_view(viewed, readers=30)
        finally:
            viewed.stop()
    print_table(rows)


def run(server: JupyterServer, rounds: int, small_n: int, download_mib: int) -> list[tuple]:
    rows = []
    direct_host = f"127.0.0.1:{server.port}"

    # 1. %load_ext in a live kernel, a fresh kernel each time (against IPython's own autoreload, for scale).
    load, reference = [], []
    for i in range(rounds):
        kernel = open_notebook(server, f"load-{i}.ipynb")
        timing = ("import time as _t, json as _j\n_s = _t.perf_counter()\n"
                  "get_ipython().run_line_magic('load_ext', '{}')\nprint(_j.dumps(_t.perf_counter() - _s))")
        reference.append(in_kernel(kernel, timing.format("autoreload")))
        load.append(in_kernel(kernel, timing.format("share_magic")))
        kernel.close()
        server.api("DELETE", f"api/kernels/{kernel.kernel_id}")
    rows.append(("%load_ext (ms), vs %load_ext autoreload", median_ms(reference), median_ms(load), None,
                 "< 20 ms", median_ms(load) < 20))

    # 2. %share to a live link, against pyngrok.ngrok.connect alone on the same stand-in agent.
    owner = open_notebook(server, "owner.ipynb")
    in_kernel(owner, "%load_ext share_magic\nimport time, json, share_magic\n"
                     "from pyngrok import ngrok, conf\nprint(1)")
    share_code = ("s = time.perf_counter(); share = share_magic.share(); e = time.perf_counter() - s\n"
                  "share_magic.stop(); print(json.dumps(e))")
    pyngrok_code = ("c = conf.PyngrokConfig(); s = time.perf_counter(); ngrok.connect('8888', pyngrok_config=c)\n"
                    "e = time.perf_counter() - s; ngrok.kill(c); print(json.dumps(e))")
    in_kernel(owner, share_code), in_kernel(owner, pyngrok_code)  # warm both (imports, caches)
    share_times, pyngrok_times = alternate(rounds, lambda: [in_kernel(owner, share_code)],
                                           lambda: [in_kernel(owner, pyngrok_code)])
    share_ms, pyngrok_ms = median_ms(share_times), median_ms(pyngrok_times)
    rows.append(("%share to live link (ms), vs ngrok.connect alone", pyngrok_ms, share_ms, share_ms / pyngrok_ms,
                 f"+{share_ms - pyngrok_ms:.0f} ms; < +300 ms", share_ms - pyngrok_ms < 300))

    # The share the visitor-side measurements go through.
    live = in_kernel(owner, "share = share_magic.share()\nprint(json.dumps([share.link, share.gateway_port, "
                            "share._helper_pid]))")
    public_host, gateway_port, helper_pid = live[0].split("://", 1)[1].split("/", 1)[0], live[1], live[2]
    cookie = admitted_cookie(gateway_port, public_host, live[0])
    direct = Http(server.port, direct_host, server.token)
    gateway = Http(gateway_port, public_host, server.token, cookie)

    # 3. Small API requests; and through bare byte relays, the floor for any relay process.
    proxies = {name: path for name, path in FRAMING_PROXIES.items() if name != "httptools" or _installed("httptools")}
    relay_processes = [subprocess.Popen([sys.executable, "-c", code, str(server.port)], stdout=subprocess.PIPE,
                                        text=True) for code in BARE_RELAYS.values()]
    relay_processes += [subprocess.Popen([sys.executable, str(path), str(server.port)], stdout=subprocess.PIPE,
                                         text=True) for path in proxies.values()]
    try:
        relays = [Http(int(process.stdout.readline()), direct_host, server.token) for process in relay_processes]
        d, g, *r = alternate(rounds, lambda: direct.timed_gets("/api/status", small_n),
                             lambda: gateway.timed_gets("/api/status", small_n),
                             *[lambda relay=relay: relay.timed_gets("/api/status", small_n) for relay in relays])
    finally:
        for process in relay_processes:
            process.kill()
            process.wait()
    rows.append(("GET /api/status, median (ms)", median_ms(d), median_ms(g), median_ms(g) / median_ms(d),
                 "<= 1.3x", median_ms(g) / median_ms(d) <= 1.3))
    names = [f"a bare {name} byte relay" for name in BARE_RELAYS] + [f"a minimal {name} proxy" for name in proxies]
    for name, samples in zip(names, r):
        rows.append((f"  same through {name} (a floor)", median_ms(d), median_ms(samples),
                     median_ms(samples) / median_ms(d), "(reference)", True))

    # 4. Kernel round trips over a websocket (kernel_info request -> reply).
    kernel_path = f"api/kernels/{owner.kernel_id}/channels"
    d, g = alternate(rounds,
                     lambda: kernel_round_trips(f"ws://{direct_host}/{kernel_path}", direct_host, server.token,
                                                small_n // 2),
                     lambda: kernel_round_trips(f"ws://127.0.0.1:{gateway_port}/{kernel_path}", public_host,
                                                server.token, small_n // 2, cookie))
    rows.append(("kernel websocket round trip, median (ms)", median_ms(d), median_ms(g),
                 median_ms(g) / median_ms(d), f"<= 1.2x ({median_ms(g) - median_ms(d):+.2f} ms)",
                 median_ms(g) / median_ms(d) <= 1.2))

    # 5. A large /files/ download, and the gateway process's memory while it streams.
    with open(server.root / "big.bin", "wb") as f:
        block = os.urandom(MiB)
        for _ in range(download_mib):
            f.write(block)
    path = "/files/big.bin"
    direct_speed, gateway_speed, growth = [], [], []
    for _ in range(rounds):
        with PeakRss(helper_pid):  # sampled on both sides, so the sampler's own cost falls on both
            seconds, size = direct.download(path)
        direct_speed.append(size / MiB / seconds)
        with PeakRss(helper_pid) as memory:
            seconds, size = gateway.download(path)
        gateway_speed.append(size / MiB / seconds)
        growth.append(memory.growth)
    ds, gs = statistics.median(direct_speed), statistics.median(gateway_speed)
    rows.append((f"{download_mib} MiB /files/ download (MiB/s)", ds, gs, gs / ds, ">= 0.7x", gs / ds >= 0.7))
    rows.append((f"gateway memory growth during it (MiB), max of {len(growth)}", None, max(growth), None,
                 "< 64 MiB", max(growth) < 64))

    # 6. Small requests through the gateway while the owner's kernel runs a CPU-bound pure-Python loop.
    busy_code = "import time\nend = time.time() + {}\nn = 0\nwhile time.time() < end:\n    n += 1"
    idle, busy = [], []
    for _ in range(rounds):
        idle += gateway.timed_gets("/api/status", small_n)
        pending = owner.submit(busy_code.format(3 if small_n < 100 else 4))
        time.sleep(0.3)
        busy += gateway.timed_gets("/api/status", small_n)
        owner.collect(pending, timeout=60)
    rows.append(("GET through gateway, kernel busy vs idle (ms)", median_ms(idle), median_ms(busy),
                 median_ms(busy) / median_ms(idle), "<= 1.5x", median_ms(busy) / median_ms(idle) <= 1.5))
    in_kernel(owner, "share_magic.stop(); print(1)")
    owner.close()
    return rows


def figure_notebook(figures: int) -> dict:
    """A notebook of ``figures`` plots, 640x480 PNGs of about the size matplotlib saves."""
    import base64
    import struct
    import zlib

    def png(width: int = 640, height: int = 480) -> str:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        # Each row a short random run repeated: some detail, compressing about as well as a real plot does.
        rows = b"".join(b"\x00" + os.urandom(width * 3 // 32) * 32 for _ in range(height))
        raw = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
               + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))
        return base64.b64encode(raw).decode()

    cells = []
    for i in range(figures):
        cells.append({"cell_type": "markdown", "id": f"m{i}", "metadata": {}, "source": f"## Figure {i}"})
        cells.append({"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": i + 1,
                      "source": f"plot({i})", "outputs": [{"output_type": "display_data", "metadata": {},
                                                           "data": {"image/png": png(), "text/plain": "<Figure>"}}]})
    return {"nbformat": 4, "nbformat_minor": 5, "cells": cells,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}


def run_view(server: JupyterServer, readers: int) -> list[tuple]:
    """%share --view of a 40-figure notebook: the first reader (who waits for the render) against the readers
    after them (served the cached render), all through the gateway; and how many renders that took."""
    from concurrent.futures import ThreadPoolExecutor

    owner = open_notebook(server, "figures.ipynb")
    (server.root / "figures.ipynb").write_text(json.dumps(figure_notebook(40)))
    in_kernel(owner, "%load_ext share_magic\nimport json, share_magic\nprint(1)")
    live = in_kernel(owner, "share = share_magic.share(view=True)\n"
                            "print(json.dumps([share.view_link, share.gateway_port]))")
    host, port = live[0].split("://", 1)[1].split("/", 1)[0], live[1]
    page = "/" + live[0].split("://", 1)[1].split("/", 1)[1].split("?")[0]

    def read_page() -> tuple[float, bytes]:
        client = Http(port, host, server.token, admitted_cookie(port, host, live[0]))
        start = time.perf_counter()
        body = client.get(page)
        return time.perf_counter() - start, body

    first, body = read_page()
    with ThreadPoolExecutor(max_workers=10) as pool:
        pages = list(pool.map(lambda _: read_page(), range(readers)))
    later, size = [seconds for seconds, _ in pages], len(body)
    # Each rendering of a saved version is numbered (data-version="<view>-<n>"): readers who all got "-1" were
    # all served the one render the helper made of the notebook as saved.
    versions = {re.search(rb'data-version="([^"]+)"', page).group(1) for page in [body] + [b for _, b in pages]}
    renders = max(int(version.rsplit(b"-", 1)[1]) for version in versions)
    in_kernel(owner, "share_magic.stop(); print(1)")
    owner.close()
    return [
        (f"view, 40 figures ({size / MiB:.1f} MiB): 1st / next {readers} (s)", first,
         statistics.median(later), statistics.median(later) / first, "1st < 3 s", first < 3),
        (f"  renders for those {readers + 1} readers", None, renders, None, "1 per saved version",
         renders == 1 and len(versions) == 1),
    ]


def print_table(rows: list[tuple]) -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"\nshare_magic benchmark, {time.strftime('%Y-%m-%d')}: {cpu}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}\n")
    print(f"| {'measure':<50} | {'baseline':>9} | {'share':>9} | {'ratio':>6} | {'target':<22} | ok  |")
    print(f"|{'-' * 52}|{'-' * 11}|{'-' * 11}|{'-' * 8}|{'-' * 24}|-----|")
    for name, base, value, ratio, target, ok in rows:
        cells = [f"{base:9.2f}" if base is not None else " " * 9, f"{value:9.2f}",
                 f"{ratio:5.2f}x" if ratio is not None else " " * 6]
        print(f"| {name:<50} | {cells[0]} | {cells[1]} | {cells[2]} | {target:<22} | {'yes' if ok else 'NO ':<3} |")


if __name__ == "__main__":
    main()
