"""The live view's own costs, in one process: the helper's path from a kernel's IOPub message (as the tap hands it
over) to each reader's event -- LiveRuns, the feed's thread (nbconvert rendering, cleaning, coalescing), the shared
LiveState on an asyncio loop, one event made once and written to every reader. Readers are in-memory sinks: the
gateway's and the edge's costs are bench_view's and bench_hall's.

    python benchmarks/bench_live.py          # well under 2 minutes
"""
from __future__ import annotations

import asyncio
import base64
import os
import statistics
import threading
import time

from share_magic.helper.live import LiveRuns
from share_magic.helper.live_feed import LiveFeed, LiveState
from share_magic.helper.render import view_exporter


EXPORTER = view_exporter()


def bench(readers: int, cell: str, send) -> tuple[list[float], int, float]:
    """Run ``send(message)``'s cell; latencies (s) from each message to the readers' next event, bytes per reader,
    CPU seconds of the process."""
    import nbformat

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    runs, state, got = LiveRuns(), LiveState(), threading.Event()
    sinks = [bytearray() for _ in range(readers)]
    sent_at: list[float] = []
    latencies: list[float] = []
    exporter = EXPORTER

    def render(cell_: dict) -> str:
        notebook = nbformat.from_dict({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell_]})
        return exporter.from_notebook_node(notebook)[0]

    def deliver(update: dict) -> None:
        event = state.apply(update)
        for sink in sinks:
            sink += event  # one event made once, written to each
        if sent_at:
            latencies.append(time.monotonic() - sent_at[-1])
        if not update.get("running") and update.get("kernel") == "idle":
            got.set()

    feed = LiveFeed(runs, render, frozenset, lambda: [], lambda u: loop.call_soon_threadsafe(deliver, u))
    parent = {"msg_id": cell, "msg_type": "execute_request"}

    def message(kind: str, content: dict) -> None:
        sent_at.append(time.monotonic())
        runs.message({"header": {"msg_type": kind}, "parent_header": parent, "content": content})

    cpu = time.process_time()
    message("status", {"execution_state": "busy"})
    message("execute_input", {"code": "work()", "execution_count": 1})
    runs.place(cell, cell)
    send(message)
    message("status", {"execution_state": "idle"})
    got.wait(60)
    cpu = time.process_time() - cpu
    feed.close()
    loop.call_soon_threadsafe(loop.stop)
    return latencies, len(sinks[0]), cpu


def lines(message) -> None:
    """20 lines, each after the last one's update went out: each update's latency on its own."""
    for line in range(20):
        message("stream", {"name": "stdout", "text": f"line {line}\n"})
        time.sleep(0.25)


def plain(message) -> None:
    message("stream", {"name": "stdout", "text": "hello\n"})


def progress(message) -> None:
    for step in range(10_000):
        message("stream", {"name": "stderr", "text": f"\r{step / 100:5.1f}% |{'#' * (step // 500):<20}|"})


def image(message) -> None:
    data = base64.b64encode(os.urandom(375_000)).decode()  # 500 kB of base64
    message("display_data", {"data": {"image/png": data, "text/plain": "<Figure>"}, "metadata": {}})
    for line in range(20):
        message("stream", {"name": "stdout", "text": f"line {line}\n"})
        time.sleep(0.05)


def main() -> None:
    rows = []
    bench(1, "warm-up", plain)  # nbconvert's first render imports its templates
    for readers in (1, 100, 1000):
        latencies, size, _ = bench(readers, f"lines{readers}", lines)
        rows.append((f"{readers} readers: kernel message -> every reader has it (ms), median / p95",
                     f"{statistics.median(latencies) * 1000:.0f} / "
                     f"{sorted(latencies)[int(len(latencies) * .95) - 1] * 1000:.0f}"))
    _, size, _ = bench(1, "plain", plain)
    rows.append(("bytes per reader, plain cell", f"{size:,}"))
    _, size, _ = bench(1, "progress", progress)
    rows.append(("bytes per reader, 10,000-line \\r progress cell", f"{size:,}"))
    _, size, _ = bench(1, "image", image)
    rows.append(("bytes per reader, 500 kB image + 20 lines", f"{size:,}"))
    start = time.monotonic()
    _, _, cpu = bench(1000, "progress1000", progress)
    wall = time.monotonic() - start
    rows.append(("helper CPU, 1,000 readers following the progress cell", f"{cpu:.2f} s CPU in {wall:.2f} s"))
    width = max(len(name) for name, _ in rows)
    print(f"| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
