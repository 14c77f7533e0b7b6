"""The errors share_magic expects: each one says what failed, why, and the exact fix.

The magic turns a :class:`ShareError` into a plain IPython ``UsageError`` (one calm line, no traceback). Anything
else that escapes is a bug and keeps its traceback.
"""
from __future__ import annotations


class ShareError(Exception):
    """An expected failure, written for the person who ran ``%share``."""


class ServerNotFound(ShareError):
    """No Jupyter server could be found (or confirmed) behind this kernel."""


class UnsupportedPlatform(ShareError):
    """This kernel runs somewhere a tunnel cannot work or is not allowed (Colab, Kaggle, JupyterHub, ...)."""


class UnsafeServer(ShareError):
    """The server has no authentication, so a public link would give anyone full control of it."""


class TunnelError(ShareError):
    """ngrok could not open the tunnel.

    ``code`` is ngrok's error code (``ERR_NGROK_4018`` ...) when ngrok gave one.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
