"""Saving the ngrok authtoken the owner pastes into the widget's form (kernel side)."""
from __future__ import annotations

import os
import uuid
from typing import Any

from ..contract import DASHBOARD, TOKEN_SHAPE, ngrok_config_path
from ..errors import TunnelError


def save_authtoken(authtoken: str) -> str:
    """Save the authtoken in ngrok's own config file, as ``ngrok config add-authtoken`` would, but without running
    it: that command takes the token on its command line, which every local user can read in /proc. The file is
    written whole (mode 0600, its folder 0700 if new) and then renamed over the old one, keeping every other
    setting in it. Return the file's path."""
    import yaml

    path = ngrok_config_path()
    if not TOKEN_SHAPE.match(authtoken):
        raise TunnelError("That does not look like an ngrok authtoken (letters, digits and _ only, no spaces). Fix: "
                          f"copy it again, whole, from {DASHBOARD} and paste it here.")
    try:
        with open(path, encoding="utf-8") as f:
            config: Any = yaml.safe_load(f) or {}
    except FileNotFoundError:
        config = {}
    except (OSError, yaml.YAMLError) as e:
        raise TunnelError(f"ngrok's config file {path} cannot be read ({type(e).__name__}), so the authtoken was not "
                          "saved. Fix: repair or remove that file, then paste the authtoken again.") from None
    if not isinstance(config, dict):
        raise TunnelError(f"ngrok's config file {path} is not a YAML mapping, so the authtoken was not saved. Fix: "
                          "repair or remove that file, then paste the authtoken again.")
    if str(config.get("version")) == "2":  # a version 2 file keeps the agent's settings at the top
        config["authtoken"] = authtoken
    else:
        config["version"] = "3"
        agent = config.get("agent")
        config["agent"] = {**(agent if isinstance(agent, dict) else {}), "authtoken": authtoken}
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        temporary = os.path.join(folder, f".ngrok.yml.{uuid.uuid4().hex}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as f:
                yaml.safe_dump(config, f, default_flow_style=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as e:
        raise TunnelError(f"ngrok's config file {path} could not be written ({e.strerror}), so the authtoken was not "
                          "saved. Fix: make that folder writable by you, then paste the authtoken again.") from None
    return path
