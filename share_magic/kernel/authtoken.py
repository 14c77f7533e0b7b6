"""The ngrok authtoken, when ngrok has none: a form to paste it once, and saving it in ngrok's own config
(kernel side)."""
from __future__ import annotations

import html
import os
import uuid
from typing import TYPE_CHECKING, Any, Callable

import ipywidgets as widgets

from ..contract import DASHBOARD, TOKEN_SHAPE, ngrok_config_path, own_output
from ..errors import ShareError, TunnelError
from .widget import ShareView, _OwnOutput

if TYPE_CHECKING:
    from .share import Share


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


class AuthtokenForm(_OwnOutput, widgets.VBox):
    """Shown when ngrok has no authtoken: paste it once, it is saved to ngrok's own config, and the share starts.

    The token goes from the password field straight into ngrok's config file (written by share_magic, mode 0600,
    where ``ngrok config add-authtoken`` would put it, but never on a command line); the field is emptied at once,
    so it is neither echoed nor kept in the notebook's saved widget state.
    """

    def __init__(self, message: str, retry: Callable[[], Share], **kwargs: Any) -> None:
        self.message = message
        self.retry = retry
        self.password = widgets.Password(placeholder="paste your ngrok authtoken",
                                         layout=widgets.Layout(width="28em"))
        self.save = widgets.Button(description="Save and share", button_style="primary", icon="share")
        self.save.on_click(lambda _: self.submit())
        self.feedback = widgets.HTML()
        intro = widgets.HTML(
            "<b>ngrok needs your authtoken once.</b> Copy it from "
            '<a href="https://dashboard.ngrok.com/get-started/your-authtoken" target="_blank" rel="noopener">'
            "your ngrok dashboard</a> (a free account is enough) and paste it here. It is saved in ngrok's own "
            "config file, not in this notebook.")
        super().__init__([intro, widgets.HBox([self.password, self.save]), self.feedback], **kwargs)
        self.add_class("share-magic")

    def submit(self) -> None:
        token, self.password.value = self.password.value.strip(), ""
        if not token:
            self.feedback.value = "Paste the authtoken first."
            return
        self.save.disabled = True
        self.feedback.value = "Saving and sharing..."
        try:
            save_authtoken(token)
            share = self.retry()
        except ShareError as e:
            self.feedback.value = f'<span style="color: var(--jp-error-color1)">{html.escape(str(e))}</span>'
            self.save.disabled = False
            return
        view = ShareView(share)
        view._handle = self._hand_over(view)
        if view._handle is None:
            self.children = [view]

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = self.message
        return bundle, own_output()
