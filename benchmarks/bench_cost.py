"""What editors in JupyterLab cost the owner's ngrok plan, counted at the stand-in's edge the way ngrok bills (HTTP
requests, a websocket being one; bytes sent to visitors), with the gateway's economy off (plain relay: what shares
cost before) and on (compression, the bridge, and the service worker), side by side in one run: the share's first
editor (cold browser, and for the worker, nothing remembered yet), a later editor in a fresh browser, a warm reload,
the next share at the same address in the first editor's browser, and an idle editor. Real JupyterLab (with
jupyter-collaboration when installed), real Chromium (Debian's) trusting the stand-in edge's certificate (service
workers need it), the stand-in agent from tests/.

Run:  python benchmarks/bench_cost.py [--quick]     (about 4 minutes; --quick measures idle for 30 s, not 60)
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bench_share import in_kernel  # noqa: E402
from harness import (  # noqa: E402
    CHROMIUM,
    VISITOR_ARGS,
    JupyterServer,
    edge_meter,
    open_notebook,
    sandbox_environment,
    trust_edge,
)

from share_magic.contract import FREE_REQUESTS  # noqa: E402

GOALS = {  # measure: (must, aim), from issue 24 (requests) and the issues before it
    "first editor, cold: requests": (30, 20),
    "first editor, cold: bytes (MB)": (2.0, 1.6),
    "later editor, fresh browser: requests": (15, 10),
    "later editor, fresh browser: bytes (MB)": (2.0, 1.6),
    "warm reload: requests": (8, 5),
    "next share, same address, same browser: requests": (15, 10),
    "next share, same address, same browser: bytes (MB)": (2.0, 0.5),
    "idle editor, requests per minute": (3, 1),
    "editor-hours on a free plan (idle)": (100, 300),
}
VIEWPORT = {"width": 1280, "height": 860}


def settle(page: Any) -> None:
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    page.wait_for_load_state("networkidle")


def spent(state: Path, action: Any) -> tuple[int, float]:
    """Requests and MB ``action`` cost at the edge of the running share."""
    before = edge_meter(state)
    action()
    after = edge_meter(state)
    return after["requests"] - before["requests"], (after["bytes_out"] - before["bytes_out"]) / 1e6


def open_editor(context: Any, link: str, interstitial: bool = True) -> Any:
    page = context.new_page()
    page.goto(link)
    if interstitial:
        page.get_by_role("button", name="Visit Site").click()
    settle(page)
    return page


def measure(browser: Any, kernel: Any, state: Path, economy: bool, idle_seconds: float) -> dict[str, float]:
    result: dict[str, float] = {}
    share = f"share = share_magic.share(economy={economy})\nprint(json.dumps(share.link))"
    link = in_kernel(kernel, share)
    first = browser.new_context(viewport=VIEWPORT)
    try:
        pages: dict[str, Any] = {}
        result["first editor, cold: requests"], result["first editor, cold: bytes (MB)"] = spent(
            state, lambda: pages.update(first=open_editor(first, link)))
        page = pages["first"]
        before = edge_meter(state)
        time.sleep(idle_seconds)
        idle = edge_meter(state)
        per_minute = (idle["requests"] - before["requests"]) * 60 / idle_seconds
        result["idle editor, requests per minute"] = per_minute
        result["editor-hours on a free plan (idle)"] = FREE_REQUESTS / per_minute / 60 if per_minute else float("inf")
        result["warm reload: requests"], _ = spent(state, lambda: (page.reload(), settle(page)))
        second = browser.new_context(viewport=VIEWPORT)
        try:
            result["later editor, fresh browser: requests"], result["later editor, fresh browser: bytes (MB)"] = \
                spent(state, lambda: open_editor(second, link))
        finally:
            second.close()
        page.close()  # the first editor's browser keeps its caches (and its worker)
        in_kernel(kernel, "share_magic.stop(); print(1)")
        again = in_kernel(kernel, share)
        assert again.split("/")[2] == link.split("/")[2], "the stand-in changed the share's address"
        (result["next share, same address, same browser: requests"],
         result["next share, same address, same browser: bytes (MB)"]) = spent(
            state, lambda: open_editor(first, again, interstitial=False))
    finally:
        first.close()
        in_kernel(kernel, "share_magic.stop(); print(1)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="idle for 30 s instead of 60")
    idle_seconds = 30.0 if parser.parse_args().quick else 60.0
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="share-cost-") as folder:
        environment = sandbox_environment(Path(folder))
        os.environ.update(environment)
        trust_edge(environment)
        state = Path(os.environ["STANDIN_NGROK_STATE"])
        server = JupyterServer(Path(folder) / "server", app="jupyterlab")
        try:
            collaboration = server.api("GET", "api/collaboration/session/probe").status_code == 405
            kernel = open_notebook(server, "shared.ipynb")
            in_kernel(kernel, "%load_ext share_magic\nimport json, share_magic\nprint(1)")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
                try:
                    before = measure(browser, kernel, state, economy=False, idle_seconds=idle_seconds)
                    after = measure(browser, kernel, state, economy=True, idle_seconds=idle_seconds)
                finally:
                    browser.close()
            kernel.close()
        finally:
            server.stop()
    print(f"\nshare_magic cost benchmark, {time.strftime('%Y-%m-%d')}: editors in JupyterLab "
          f"({'with' if collaboration else 'without'} jupyter-collaboration), Chromium, counted at the stand-in "
          f"edge; idle measured over {idle_seconds:.0f} s; Python {platform.python_version()}\n")
    width = max(len(name) for name in GOALS)
    print(f"| {'measure':<{width}} | {'economy off':>11} | {'worker (on)':>11} | {'must':>6} | {'aim':>6} | ok  |")
    print(f"|{'-' * (width + 2)}|{'-' * 13}|{'-' * 13}|{'-' * 8}|{'-' * 8}|-----|")
    for name, (must, aim) in GOALS.items():
        higher_is_better = name.startswith("editor-hours")
        ok = after[name] >= must if higher_is_better else after[name] <= must
        cells = [("no limit" if value == float("inf") else f"{value:.2f}" if "MB" in name else f"{value:.1f}")
                 for value in (before[name], after[name])]
        verdict = "yes" if ok else "NO "
        print(f"| {name:<{width}} | {cells[0]:>11} | {cells[1]:>11} | {must:>6g} | {aim:>6g} | {verdict} |")


if __name__ == "__main__":
    main()
