"""share_magic: hand a collaborator a working link to this notebook with ``%share``.

Nothing heavy is imported here or by ``%load_ext share_magic``: pyngrok and ipywidgets load on the first ``%share``
(and the gateway runs in a helper process of its own).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ServerNotFound, ShareError, TunnelError, UnsafeServer, UnsupportedPlatform

if TYPE_CHECKING:
    from .sharing import Share

__version__ = "0.1.0"
__all__ = ["ShareError", "ServerNotFound", "TunnelError", "UnsafeServer", "UnsupportedPlatform", "current", "share",
           "stop", "load_ipython_extension", "unload_ipython_extension"]


def share(**options: Any) -> Share:
    """Share this kernel's Jupyter server and return the live :class:`~share_magic.sharing.Share`.

    Options: ``duration``, ``port``, ``url``, ``token``, ``include_token``, ``authtoken``, ``insecure``,
    ``sign_in`` (see ``%share?``).
    """
    from . import sharing as lifecycle

    return lifecycle.share(**options)


def current() -> Share | None:
    """This kernel's share while it is starting or live, else None."""
    from . import sharing as lifecycle

    return lifecycle.current()


def stop() -> bool:
    """Stop this kernel's share; return whether there was one."""
    from . import sharing as lifecycle

    return lifecycle.stop()


def load_ipython_extension(ipython: Any) -> None:
    from .magics import ShareMagics

    ipython.register_magics(ShareMagics)


def unload_ipython_extension(ipython: Any) -> None:
    from . import sharing as lifecycle
    from .magics import ShareMagics

    lifecycle.stop(owned_only=True)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, ShareMagics)]
