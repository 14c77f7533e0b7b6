"""Names each cell this kernel runs to the share's helper, which follows the runs on IOPub: IOPub does not carry
the request's metadata, where JupyterLab and Notebook name the cell (``cellId``). Only the two ids, from a thread of
their own, so that no cell waits; the code and outputs the helper reads itself."""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

from .. import control


def name_cells(share: Any) -> Callable[[], None]:
    """Start naming the cells run here to ``share``'s helper (while it has a live view link); returns the undo."""
    from IPython import get_ipython

    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)

    def named(info: Any) -> None:
        parent = kernel.get_parent() or {}
        msg_id, cell_id = parent.get("header", {}).get("msg_id"), getattr(info, "cell_id", None)
        where = share._control
        if msg_id and cell_id and where is not None and share.live and share.live_view and share.view_link:
            command = {"cmd": "cell", "msg_id": str(msg_id), "cell_id": str(cell_id)}
            threading.Thread(target=_tell, args=(where, command), daemon=True).start()

    if kernel is None:
        return lambda: None
    shell.events.register("pre_run_cell", named)
    return lambda: shell.events.unregister("pre_run_cell", named)


def _tell(where: dict[str, Any], command: dict[str, Any]) -> None:
    try:
        control.request(where, command, 5.0)
    except Exception:  # the helper went away: its watcher says so
        pass


def connection_file() -> str | None:
    """This kernel's connection file (its channels' ports and key), if it is an ipykernel."""
    try:
        from ipykernel.connect import get_connection_file

        return os.path.abspath(get_connection_file())
    except Exception:  # not an ipykernel
        return None
