"""Fixtures over the real parts in ``harness.py``; every process a test starts is ended at teardown."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    JupyterServer,
    KernelClient,
    PlainKernel,
    Visitor,
    end_shares,
    open_notebook,
    resolve_public_names,
    sandbox_environment,
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each module runs whole on one worker (pytest-xdist's loadgroup), in its order: module fixtures are shared,
    and some tests come last on purpose. The modules with a test in Chromium run one after another on the same
    worker: two JupyterLab pages rendering at once on a 2-core machine, beside their servers, kernels and helpers,
    slowed each other past their waits. (Even so, a browser test beside another test has missed its waits: the
    default is one file at a time.)"""
    modules = {item.module for item in items}  # type: ignore[attr-defined]
    browsing = {module.__name__ for module in modules if "playwright" in Path(module.__file__).read_text()}
    browsing |= {item.module.__name__ for item in items if "browsers" in item.fixturenames}  # type: ignore[attr-defined]
    for item in items:
        module = item.module.__name__  # type: ignore[attr-defined]
        item.add_marker(pytest.mark.xdist_group("browsers" if module in browsing else module))


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The isolated environment every test with real parts runs in. It is torn down last: by then servers and
    kernels are gone, so shares end by themselves; whatever does not is killed, and reported. A socket the test
    left open is reported here too (as a ResourceWarning), not in whichever later test the collector runs in."""
    env = sandbox_environment(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("JPY_PARENT_PID", "JUPYTER_TOKEN", "JPY_SESSION_NAME"):
        monkeypatch.delenv(key, raising=False)
    yield env
    end_shares()


@pytest.fixture
def public_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in's public host names resolve to loopback here (harness.resolve_public_names)."""
    resolve_public_names(monkeypatch)


@pytest.fixture
def jupyter(sandbox: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start real Jupyter servers: ``jupyter(base_url="/")``; every one is killed at teardown."""
    started: list[JupyterServer] = []

    def start(base_url: str = "/", name: str = "server", **kwargs: Any) -> JupyterServer:
        server = JupyterServer(tmp_path / name, base_url, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def owner(jupyter: Any) -> Iterator[Any]:
    """Open a notebook on a server and run code in its kernel: ``owner(server, "nb.ipynb").execute(code)``."""
    clients: list[KernelClient] = []

    def open_and_keep(server: JupyterServer, name: str = "shared.ipynb") -> KernelClient:
        clients.append(open_notebook(server, name))
        return clients[-1]

    yield open_and_keep
    for client in clients:
        client.close()


@pytest.fixture
def plain_kernel(sandbox: dict[str, str]) -> Iterator[PlainKernel]:
    kernel = PlainKernel()
    yield kernel
    kernel.stop()


@pytest.fixture
def visitor(public_names: None) -> Iterator[Any]:
    """Make visitors from a link: ``visitor(link)``; every connection they opened is closed at teardown."""
    visitors: list[Visitor] = []

    def make(link: str) -> Visitor:
        visitors.append(Visitor(link))
        return visitors[-1]

    yield make
    for guest in visitors:
        guest.close()
