"""share_magic: hand a collaborator a working link to this notebook with ``%share``.

Nothing heavy is imported here or by ``%load_ext share_magic``: pyngrok and ipywidgets load on the first ``%share``
(and the gateway runs in a helper process of its own).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ServerNotFound, ShareError, TunnelError, UnsafeServer, UnsupportedPlatform

if TYPE_CHECKING:
    from .kernel.share import Share

__version__ = "0.1.0"
__all__ = ["ShareError", "ServerNotFound", "TunnelError", "UnsafeServer", "UnsupportedPlatform", "current", "share",
           "stop", "load_ipython_extension", "unload_ipython_extension"]


def share(**options: Any) -> Share:
    """Share this kernel's Jupyter server and return the live :class:`~share_magic.kernel.share.Share`.

    Options: ``duration``, ``port``, ``url``, ``token``, ``include_token``, ``authtoken``, ``insecure``,
    ``sign_in`` (see ``%share?``).
    """
    from .kernel import share as lifecycle

    _draw_shares_as_widgets()
    return lifecycle.share(**options)


def current() -> Share | None:
    """This kernel's share while it is starting or live, else None."""
    from .kernel import share as lifecycle

    _draw_shares_as_widgets()
    return lifecycle.current()


def stop() -> bool:
    """Stop this kernel's share; return whether there was one."""
    from .kernel import share as lifecycle

    return lifecycle.stop()


def load_ipython_extension(ipython: Any) -> None:
    from .kernel.magics import ShareMagics

    ipython.register_magics(ShareMagics)
    _draw_shares_as_widgets()


def unload_ipython_extension(ipython: Any) -> None:
    from .kernel import share as lifecycle
    from .kernel.magics import ShareMagics

    lifecycle.stop(owned_only=True)
    ipython.configurables[:] = [c for c in ipython.configurables if not isinstance(c, ShareMagics)]


def _draw_shares_as_widgets() -> None:
    """In IPython, a share (a cell's last value) shows as its widget. Registered by the class's name, so that
    nothing is imported until a share is shown."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.mimebundle_formatter.for_type_by_name("share_magic.kernel.share", "Share",
                                                                        _widget_bundle)


def _widget_bundle(share: Share) -> Any:
    from .kernel.widget import ShareView

    return ShareView(share)._repr_mimebundle_()
