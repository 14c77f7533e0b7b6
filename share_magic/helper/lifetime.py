"""A share's life in its helper: the ngrok agent made ready and the tunnel opened, each within its bound, and what
ends a share by itself (its time, the agent, the server or its kernel going away, its endpoints changed by
another program). :class:`~share_magic.helper.owner.Helper` runs these; they report through its events."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable
from urllib.parse import quote

from ..errors import ShareError
from ..jupyter import JupyterServer
from ..processes import pid_alive
from .agent import describe
from .identity import new_secret, traffic_policy

WATCH_INTERVAL = 0.5
PROGRESS_INTERVAL = 0.5
STOP_GRACE = 2.0  # for a download thread to notice a stop and clean up
KERNEL_CHECK_INTERVAL = 1.0


async def prepare_agent(helper: Any) -> bool:
    """Make the agent ready (fetch it if needed) before its start timeout begins, telling the kernel how it goes
    at least every :data:`PROGRESS_INTERVAL` (so that a long download is not taken for a silent helper); whether
    the start may go on."""
    preparing = in_thread(helper.tunnel.prepare, helper.settings.get("download_stall"))
    stopped = asyncio.ensure_future(helper.stopping.wait())
    try:
        while True:
            done, _ = await asyncio.wait({preparing, stopped}, timeout=PROGRESS_INTERVAL,
                                         return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:  # a download in flight stops at its next chunk, and cleans up
                helper.tunnel.agent.cancel()
                await asyncio.wait({preparing}, timeout=STOP_GRACE)
                return False
            progress = helper.tunnel.agent.progress
            if progress is not None:
                helper.events.progress(**describe(progress), finished=preparing in done)
            if preparing in done:
                break
    finally:
        stopped.cancel()
    try:
        preparing.result()
    except ShareError as e:
        helper.events.started("failed", code=getattr(e, "code", None), message=str(e))
        return False
    return True


async def open_tunnel(helper: Any, port: int) -> str | None:
    """The tunnel to the gateway's ``port`` opened, within the start timeout; its public URL, or None (the start
    failed, and the starting kernel was told why, or the share was stopped meanwhile)."""
    policy = traffic_policy(helper.edge.provider if helper.edge.on else None, helper.edge.vouch or new_secret())
    opening = in_thread(helper.tunnel.open, port, policy)
    stopped = asyncio.ensure_future(helper.stopping.wait())
    timeout = float(helper.settings.get("startup_timeout", 25))
    done, _ = await asyncio.wait({opening, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if not done:  # pyngrok waits forever on an agent that prints nothing
        helper.events.started("failed", code=None, message=(
            f"The ngrok agent did not start within {timeout:g} s: it printed nothing. Fix: run "
            f"`{helper.tunnel.config.ngrok_path} start --none --log stdout` in a terminal to see what it is "
            "waiting for (a proxy? a firewall?), then run %share again."))
        return None
    if opening not in done:  # the kernel went away while the agent was starting
        return None
    try:
        return opening.result()
    except ShareError as e:
        code = getattr(e, "code", None)
        message = str(e)
        if code == "ERR_NGROK_4026" and helper.edge.on:
            message = ("ngrok refused the sign-in policy: your plan has no credit for part of it (ERR_NGROK_4026; "
                       "the oauth action is free on every plan, so your account's own settings may ask for more). "
                       "Fix: add credit at https://dashboard.ngrok.com/billing, or share without --sign-in.")
        helper.events.started("failed", code=code, message=message)
        return None


async def watch(helper: Any) -> str | None:
    """Wait for a stop; return why the share ended by itself ("expired", or what went away), if it did."""
    server_pid = helper.server.pid
    kernel_checked = time.monotonic()
    while not helper.stopping.is_set():
        helper.follow_up()
        meter = helper.gateway.meter
        if (meter.requests, meter.bytes_out) != helper.cost:
            helper.cost = (meter.requests, meter.bytes_out)
            helper.events.emit("cost", requests=helper.cost[0], bytes=helper.cost[1])
        interval = WATCH_INTERVAL
        if helper.expires_at is not None:
            interval = min(interval, helper.expires_at - time.time())
            if interval <= 0:
                return "expired"
        try:
            await asyncio.wait_for(helper.stopping.wait(), interval)
        except asyncio.TimeoutError:
            pass
        if not helper.tunnel.agent_alive():
            return "the ngrok agent exited (crash or lost network); run %share again for a new link"
        if await in_thread(helper.tunnel.tampered):
            return ("another program changed the ngrok agent's endpoints (its local API takes changes from any "
                    "program on this machine), so the share was ended before it could lead visitors elsewhere")
        if server_pid and not pid_alive(server_pid):
            return "the Jupyter server stopped"
        if helper.kernel_id and time.monotonic() - kernel_checked >= KERNEL_CHECK_INTERVAL:
            gone = await in_thread(kernel_gone, helper.server, helper.kernel_id)
            if gone:
                return gone
            kernel_checked = time.monotonic()
    return helper.ending


def kernel_gone(server: JupyterServer, kernel_id: str) -> str | None:
    """Why the share's kernel is gone, if it is: its id left the server (shut down, or Jupyter gave up
    restarting it), or the server no longer listens. A restarting kernel keeps its id, and a server slow to
    answer is not proof of anything."""
    try:
        status, _ = server.request("GET", f"api/kernels/{quote(kernel_id or '')}", timeout=3)
    except (ConnectionRefusedError, FileNotFoundError):  # a server that runs never stops listening
        return "the Jupyter server stopped"
    except OSError:
        return None
    return "its kernel was shut down" if status == 404 else None


def in_thread(function: Callable[..., Any], *args: Any) -> asyncio.Future:
    """Run a blocking call in a daemon thread: unlike an executor's, it cannot keep the process alive when pyngrok
    blocks forever on a silent agent."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(result: Any = None, error: BaseException | None = None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def target() -> None:
        try:
            result = function(*args)
        except BaseException as error:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, None, error)
        else:
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=target, daemon=True).start()
    return future
