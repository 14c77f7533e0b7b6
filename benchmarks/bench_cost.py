"""What one visitor in JupyterLab costs the owner's ngrok plan, counted at the stand-in's edge the way ngrok bills
(HTTP requests, a websocket being one; bytes sent to the visitor), with the gateway's economy off (plain relay: what
shares cost before) and on (compression, immutable assets kept compressed, API calls over the bridge), side by side
in one run. Real JupyterLab, real Chromium (Debian's), the stand-in agent from tests/.

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
)

from share_magic.contract import FREE_REQUESTS  # noqa: E402

GOALS = {  # measure: (must, aim), from the issue
    "cold first load, bytes to the visitor (MB)": (2.0, 1.6),
    "cold first load, requests": (120, 20),
    "idle visitor, requests per minute": (3, 1),
    "warm reload, requests": (20, 5),
    "visitor-hours on a free plan (idle)": (100, 300),
}


def measure(browser: Any, kernel: Any, state: Path, economy: bool, idle_seconds: float) -> dict[str, float]:
    link = in_kernel(kernel, f"share = share_magic.share(economy={economy})\nprint(json.dumps(share.link))")
    try:
        page = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 860}).new_page()
        page.goto(link)
        page.get_by_role("button", name="Visit Site").click()
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        page.wait_for_load_state("networkidle")
        cold = edge_meter(state)
        time.sleep(idle_seconds)
        idle = edge_meter(state)
        page.reload()
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        page.wait_for_load_state("networkidle")
        warm = edge_meter(state)
        page.context.close()
    finally:
        in_kernel(kernel, "share_magic.stop(); print(1)")
    per_minute = (idle["requests"] - cold["requests"]) * 60 / idle_seconds
    return {
        "cold first load, bytes to the visitor (MB)": cold["bytes_out"] / 1e6,
        "cold first load, requests": cold["requests"],
        "idle visitor, requests per minute": per_minute,
        "warm reload, requests": warm["requests"] - idle["requests"],
        "visitor-hours on a free plan (idle)": FREE_REQUESTS / per_minute / 60 if per_minute else float("inf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="idle for 30 s instead of 60")
    idle_seconds = 30.0 if parser.parse_args().quick else 60.0
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="share-cost-") as folder:
        os.environ.update(sandbox_environment(Path(folder)))
        state = Path(os.environ["STANDIN_NGROK_STATE"])
        server = JupyterServer(Path(folder) / "server", app="jupyterlab")
        try:
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
    print(f"\nshare_magic cost benchmark, {time.strftime('%Y-%m-%d')}: one visitor in JupyterLab, counted at the "
          f"stand-in edge; idle measured over {idle_seconds:.0f} s; Python {platform.python_version()}\n")
    print(f"| {'measure':<44} | {'economy off':>11} | {'economy on':>10} | {'must':>6} | {'aim':>6} | ok  |")
    print(f"|{'-' * 46}|{'-' * 13}|{'-' * 12}|{'-' * 8}|{'-' * 8}|-----|")
    for name, (must, aim) in GOALS.items():
        higher_is_better = name.startswith("visitor-hours")
        ok = after[name] >= must if higher_is_better else after[name] <= must
        cells = [f"{value:.1f}" if value != float("inf") else "no limit" for value in (before[name], after[name])]
        verdict = "yes" if ok else "NO "
        print(f"| {name:<44} | {cells[0]:>11} | {cells[1]:>10} | {must:>6g} | {aim:>6g} | {verdict} |")


if __name__ == "__main__":
    main()
