"""What view readers cost the owner's ngrok plan and CPU: the view before the incremental stream (commit c379795,
"old") and now ("new"), side by side in one run, on the issue's notebook (40 incompressible figures, ~1.6 MB),
counted at the stand-in's edge the way ngrok bills (bytes sent to visitors), with real Chromium readers.

The old side runs the whole share_magic package as it was at c379795 (``git archive``), on its own Jupyter server
whose kernels and helper import it; the new side runs this checkout. "Typing" is one one-character save a second,
as jupyter-collaboration's autosave makes while the owner types. The old side's typing rows are measured over
--old-seconds of saves and scaled to 60 s (each of its saves costs the same: the whole render, to every reader).

Run:  python benchmarks/bench_view.py [--seconds 60] [--old-seconds 5] [--readers 1,10,30]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from harness import (  # noqa: E402
    CHROMIUM,
    JupyterServer,
    edge_meter,
    open_notebook,
    processes_with,
    sandbox_environment,
    wait_for,
)
from test_view import figures_notebook, trusting_the_edge  # noqa: E402

OLD_COMMIT = "c379795"
MB = 1e6


def old_package(folder: Path) -> Path:
    """share_magic as it was at OLD_COMMIT, extracted into ``folder``."""
    archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", OLD_COMMIT, "share_magic"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder)
    return folder


def helper_cpu() -> float:
    """CPU seconds used so far by the share's helper process (the gateway, the view's renders)."""
    total = 0.0
    for pid in processes_with("share_magic.helper"):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Side:
    """One server, one owner's kernel, one view share, running ``package`` (a folder on PYTHONPATH)."""

    def __init__(self, name: str, folder: Path, package: Path) -> None:
        self.name = name
        os.environ["PYTHONPATH"] = str(package)
        self.server = JupyterServer(folder / f"{name}-server")
        self.kernel = open_notebook(self.server, "shown.ipynb")  # (writes an empty notebook there)
        self.content = figures_notebook()
        self.path = self.server.root / "shown.ipynb"
        self.path.write_text(json.dumps(self.content))
        result = self.kernel.execute("%load_ext share_magic\n%share --view")
        # The old package prints its link; this one prints links only when asked (%share links).
        shown = result["text"] if "share_key=" in result["text"] else self.kernel.execute("%share links")["text"]
        found = re.search(r"https://[^\s<>\"']+", shown)
        assert found, f"no link in the output:\n{shown}"
        self.link = found.group(0)
        self.edits = 0

    def edit(self, marker: str) -> None:
        """A one-line edit, saved as JupyterLab saves."""
        self.edits += 1
        self.content["cells"][41]["source"] = f"Figure 20 shows run 20. {marker}"
        answer = self.server.api("PUT", "api/contents/shown.ipynb", json={"type": "notebook", "content": self.content})
        if not answer.ok:  # say what Jupyter said: a save refused mid-run has been seen, not yet explained
            raise RuntimeError(f"saving edit {self.edits} on the {self.name} side: {answer.status_code} {answer.text}")

    def close(self) -> None:
        try:
            self.kernel.execute("%share stop")
        except Exception:  # a kernel websocket left idle for minutes may be gone: stopping the server ends the share
            pass
        finally:
            self.kernel.close()
            self.server.stop()


def billed(state: Path) -> int:
    return edge_meter(state)["bytes_out"]


def open_reader(browser: Any, link: str) -> Any:
    page = browser.new_context().new_page()  # no route(): Playwright turns the HTTP cache off for routed contexts
    page.goto(link)
    with page.expect_response(lambda r: "/share_magic/view/events" in r.url, timeout=120_000):
        page.get_by_role("button", name="Visit Site").click()
    page.get_by_role("heading", name="Forty figures").wait_for(timeout=120_000)
    page.wait_for_load_state("load")
    return page


def measure(side: Side, browser: Any, state: Path, reader_counts: list[int], seconds: float) -> dict[str, float]:
    results: dict[str, float] = {}
    before = billed(state)
    first = open_reader(browser, side.link)
    results["one reader's first load (MB)"] = (billed(state) - before) / MB
    before = billed(state)
    with first.expect_response(lambda r: "/share_magic/view/events" in r.url, timeout=120_000):
        first.reload()
    first.wait_for_load_state("load")
    results["reload of an unchanged view (kB)"] = (billed(state) - before) / 1e3
    readers = [first]
    for count in reader_counts:
        while len(readers) < count:
            readers.append(open_reader(browser, side.link))
        marker = f"EDIT-{side.name}-{count}"
        cpu, before = helper_cpu(), billed(state)
        side.edit(marker)
        for page in readers:
            page.locator(f"text={marker}").wait_for(timeout=300_000)
        results[f"a one-line edit, per open reader, {count} open (kB)"] = (billed(state) - before) / count / 1e3
        if count == reader_counts[0]:
            results["owner's helper CPU per one-line edit (s)"] = helper_cpu() - cpu
        before, start = billed(state), time.monotonic()
        for second in range(int(seconds)):  # typing: one autosave a second, one more character each
            side.edit(f"TYPING-{count}-{'x' * (second + 1)}")
            time.sleep(max(0.0, start + second + 1 - time.monotonic()))
        last = f"TYPING-{count}-{'x' * int(seconds)}"
        for page in readers:
            page.locator(f"text={last}").wait_for(timeout=600_000)
        results[f"{count} readers following 60 s of typing (MB)"] = (billed(state) - before) * 60 / seconds / MB
        print(side.name, json.dumps(results), file=sys.stderr, flush=True)  # progress, and what a failure keeps
    for page in readers:
        page.context.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="seconds of typing measured on the new side")
    parser.add_argument("--old-seconds", type=float, default=5, help="seconds of typing measured on the old side")
    parser.add_argument("--readers", default="1,10,30")
    options = parser.parse_args()
    counts = [int(n) for n in options.readers.split(",")]
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="share-view-") as name:
        folder = Path(name)
        os.environ.update(sandbox_environment(folder))
        state = Path(os.environ["STANDIN_NGROK_STATE"])
        old = old_package(folder / "old")
        size = 0
        results = {}
        with sync_playwright() as playwright:
            for label, package, seconds in (("old", old, options.old_seconds), ("new", HERE.parent, options.seconds)):
                side = Side(label, folder, package)
                try:
                    size = side.path.stat().st_size
                    # A browser that trusts this share's edge certificate, as readers' browsers trust ngrok's
                    # (Chromium caches nothing from a site whose certificate it merely ignores).
                    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=trusting_the_edge(side.link))
                    try:
                        results[label] = measure(side, browser, state, counts, seconds)
                    finally:
                        browser.close()
                finally:
                    side.close()
                    wait_for(lambda: not processes_with("share_magic.helper"), 30, "the share to end")
    print(f"\nshare_magic view cost, {time.strftime('%Y-%m-%d')}: a {size / MB:.2f} MB notebook with 40 figures, "
          f"Chromium readers, bytes at the stand-in edge; typing: {options.seconds:g} s measured (new), "
          f"{options.old_seconds:g} s measured and scaled to 60 s (old); Python {platform.python_version()}\n")
    must = {"one reader's first load (MB)": 1.1 * size / MB, "reload of an unchanged view (kB)": 50}
    for count in counts:
        must[f"a one-line edit, per open reader, {count} open (kB)"] = 20
    must["30 readers following 60 s of typing (MB)"] = 20
    print(f"| {'measure':<52} | {'old':>9} | {'new':>9} | {'must':>7} | ok  |")
    print(f"|{'-' * 54}|{'-' * 11}|{'-' * 11}|{'-' * 9}|-----|")
    for measure_name in results["new"]:
        limit = must.get(measure_name)
        ok = "" if limit is None else ("yes" if results["new"][measure_name] <= limit else "NO")
        print(f"| {measure_name:<52} | {results['old'][measure_name]:>9.2f} | {results['new'][measure_name]:>9.2f} "
              f"| {'' if limit is None else f'{limit:.2f}':>7} | {ok:<3} |")


if __name__ == "__main__":
    main()
