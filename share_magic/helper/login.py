"""Logging an admitted visitor's browser in to Jupyter (helper side): a login cookie of a new Jupyter user, got
with the server's token, which the visitor never sees. With a name, the user is named in Jupyter (the collaborators
panel, cursors) -- where the server can name users.
"""
from __future__ import annotations

import json
import re

from ..jupyter import JupyterServer


def login_cookie_name(server: JupyterServer) -> str:
    """The name of Jupyter's login cookie for requests with the gateway's Host (jupyter_server's default,
    ``username-<host>-<port>`` with every other character a dash; a server configured with another name is learned
    from the cookies it sets)."""
    return re.sub(r"[^A-Za-z0-9]", "-", f"username-{server.host_header}")


def login_cookie(server: JupyterServer) -> str | None:
    """A login cookie (``name=value``) for a new Jupyter user, got with the server's token; None without a
    token. Jupyter sets it on any token-authenticated response."""
    if not server.token:
        return None
    status, _, headers = server.exchange("GET", "api/status")
    cookies = [value.split(";", 1)[0].strip() for value in headers.get_all("Set-Cookie") or []]
    return next((cookie for cookie in cookies if not cookie.startswith("_xsrf=")), None) if status == 200 \
        else None

def named_login_cookie(server: JupyterServer, name: str) -> str | None:
    """A login cookie (``name=value``) for a new Jupyter user called ``name``; None where the server cannot name
    users (jupyter_server < 2.17 has no ``PATCH api/me``) or has no token. A token-authenticated PATCH without
    a cookie mints a new user, already named, in one step."""
    if not server.token:
        return None
    initials = "".join(word[0] for word in name.replace("@", " ").split()[:2]).upper() or None
    body = json.dumps({"name": name, "display_name": name, "initials": initials})
    try:
        status, _, headers = server.exchange("PATCH", "api/me", body=body)
    except OSError:
        return None
    cookies = [value.split(";", 1)[0].strip() for value in headers.get_all("Set-Cookie") or []]
    return next((cookie for cookie in cookies if not cookie.startswith("_xsrf=")), None) if status == 200 \
        else None
