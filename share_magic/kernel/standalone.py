"""A kernel with no Jupyter server of its own (VS Code's and PyCharm's notebooks, ``jupyter console``): only a view
can be shared from it (kernel side, imported only there).

The view shows the notebook the front-end names, as saved on disk (VS Code sets ``__vsc_ipynb_file__`` in the
kernel to its absolute path), and every cell as it runs, from the kernel's own broadcast channel; with no notebook
named, only the cells as they run. The helper reads that one file and nothing else, and relays nothing: there is no
Jupyter to relay to.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

from ..jupyter import JupyterServer
from .cells import connection_file

NOTEBOOK_VARIABLE = "__vsc_ipynb_file__"


def no_server() -> tuple[JupyterServer, dict[str, Any]]:
    """A stand-in for the server the share has not, and what the helper needs instead: the notebook file shown, if
    the front-end names one. The stand-in's address is this kernel's own name under ``.invalid`` (a name that never
    resolves: nothing may ever be asked of it), so that each such kernel's share has a record and a trail of its
    own, named after it, as each server's share has."""
    notebook = notebook_file()
    folder, name = os.path.split(notebook) if notebook else ("", None)
    own = hashlib.sha256((connection_file() or f"pid {os.getpid()}").encode()).hexdigest()[:16]
    server = JupyterServer(scheme="http", host=f"kernel-{own}.invalid", port=0, base_url="/", root_dir=folder)
    return server, {"notebook_file": notebook, "name": name}


def notebook_file() -> str | None:
    """The notebook file this kernel's front-end names, if it names one (an absolute ``.ipynb`` path): VS Code's
    variable, else what a Jupyter server told its kernel (the server itself could not be found)."""
    try:
        from IPython import get_ipython

        value = get_ipython().user_ns.get(NOTEBOOK_VARIABLE)
    except AttributeError:  # not in IPython
        value = None
    value = value or os.environ.get("JPY_SESSION_NAME")  # a Jupyter server's kernel, its server not found
    if not isinstance(value, str) or not value.endswith(".ipynb") or not os.path.isabs(value):
        return None
    return os.path.normpath(value)
