"""The ngrok tunnel, through pyngrok. The only module that imports pyngrok.

It runs inside the share's helper process, never in the kernel: pyngrok starts the agent as a
child of whoever calls it, and a child of the kernel would die on every interrupt and outlive a killed kernel.

Nothing about the tunnel is readable by other local users. The agent gets its settings from a private config file
(mode 0600 in a 0700 folder; the user's own ngrok config copied in, the authtoken added) instead of the
``--authtoken`` flag pyngrok would put on its command line; the file is deleted once the agent has read it. The
agent's request inspection, which keeps every forwarded request (keys, cookies, bodies) at its unauthenticated local
web address, is off for the whole agent and for the endpoint.

The private folder holds an owner file naming its helper, so that the next share can tell the folder of a helper
that was killed (and could not clean up) from a live share's, and remove only the former.
"""
from __future__ import annotations

import json
import logging
import os
import re
import uuid
from typing import Any

from ..contract import DASHBOARD, ngrok_config_path
from ..errors import TunnelError
from ..folders import private_folder, remove_folder, remove_stale_folders
from .agent import AgentBinary

FOLDER_PREFIX = "ngrok-"
UPSTREAM_HOST = "127.0.0.1"  # where the gateway listens (gateway.py)

# What each ngrok error means for the person running %share, and what they should do.
EXPLANATIONS = {
    "ERR_NGROK_4018": (
        "ngrok refused to start: no ngrok authtoken is set, and ngrok needs one (a free account is enough). "
        f"Fix: copy your authtoken from {DASHBOARD}, then run `ngrok config add-authtoken <TOKEN>` in a terminal "
        "(or set NGROK_AUTHTOKEN in the environment that starts Jupyter), and run %share again."
    ),
    "ERR_NGROK_105": (
        "ngrok rejected the authtoken: it does not look like an ngrok authtoken (ERR_NGROK_105). "
        f"Fix: copy it again, whole, from {DASHBOARD} and save it with `ngrok config add-authtoken <TOKEN>`."
    ),
    "ERR_NGROK_107": (
        "ngrok rejected the authtoken: it was reset or revoked (ERR_NGROK_107). "
        f"Fix: copy your current authtoken from {DASHBOARD} and save it with `ngrok config add-authtoken <TOKEN>`."
    ),
    "ERR_NGROK_108": (
        "ngrok refused to start another agent: your account already runs as many ngrok agents as its plan allows "
        "(ERR_NGROK_108). Fix: stop ngrok elsewhere (another notebook's %share, `ngrok` in a terminal; see "
        "https://dashboard.ngrok.com/agents), then run %share again."
    ),
    "ERR_NGROK_121": (
        "ngrok refused this ngrok agent because it is too old (ERR_NGROK_121). Fix: run `ngrok update` (or delete "
        "the agent binary so that pyngrok downloads a current one), then run %share again."
    ),
    "ERR_NGROK_334": (
        "ngrok says this account's URL is already online elsewhere (ERR_NGROK_334): a free account has one URL for "
        "all its tunnels. Fix: stop the other tunnel (another %share or `ngrok` in a terminal; see "
        "https://dashboard.ngrok.com/endpoints), then run %share again."
    ),
    "ERR_NGROK_4026": (
        "ngrok refused an action your plan has no credit for (ERR_NGROK_4026). Fix: remove paid features (traffic "
        "policies, custom domains) from your ngrok config, or add credit at https://dashboard.ngrok.com/billing."
    ),
}
NOT_INSTALLED = (
    "The ngrok agent is not installed here, and pyngrok could not download it ({reason}). Fix: install ngrok "
    "(https://ngrok.com/download or your package manager), then set PYNGROK_NGROK_PATH=/path/to/ngrok in the "
    "environment that starts Jupyter, and run %share again."
)


def agent_url() -> str:
    """Where pyngrok would download the agent for this system (its installer's choice)."""
    from pyngrok import installer
    from pyngrok.exception import PyngrokError

    try:
        return installer.get_ngrok_cdn_url("3")
    except PyngrokError as e:  # a system ngrok publishes no agent for
        return f"(none for this system: {e})"


def same_file(path: str, other: str) -> bool:
    return os.path.realpath(os.path.expanduser(path)) == os.path.realpath(os.path.expanduser(other))


def _quiet_pyngrok() -> None:
    # pyngrok logs every agent line; the helper reports what matters itself.
    logger = logging.getLogger("pyngrok")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False


def read_user_config(path: str) -> Any:
    """The user's ngrok config as YAML gives it; None if there is no such file. Raises ``yaml.YAMLError`` and
    ``OSError`` (other than a missing file)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except FileNotFoundError:
        return None


def agent_section(user: Any) -> dict[str, Any]:
    """The agent's settings of a parsed ngrok config: v3's ``agent`` section, or a version 2 config's top level."""
    if not isinstance(user, dict):
        return {}
    if str(user.get("version")) == "3":
        agent = user.get("agent")
        return dict(agent) if isinstance(agent, dict) else {}
    return {key: value for key, value in user.items() if key not in ("version", "tunnels")}


def user_agent_settings(path: str | None = None) -> dict[str, Any]:
    """The agent's settings in the user's own ngrok config (where `ngrok config add-authtoken` and the widget's form
    save the authtoken); empty if it cannot be read."""
    import yaml

    try:
        return agent_section(read_user_config(path or ngrok_config_path()))
    except (OSError, ValueError, yaml.YAMLError):
        return {}


# What a share takes from the user's agent settings: the authtoken, and how this machine reaches ngrok's service
# (ngrok's v3 agent config reference). Nothing else: logging, the web address (the agent's local API must stay on
# loopback, where pyngrok finds it; pyngrok refuses `log_format: json`, `web_addr: false` and log levels other than
# info and debug), the console, remote management, update checks, the API key and the user's own endpoints are no
# share's business. A version 2 config's names are renamed to version 3's.
COPIED = {"authtoken": str, "connect_url": str, "connect_cas": str, "connect_interface": str, "connect_timeout": str,
          "proxy_url": str, "dns_resolver_ips": list, "heartbeat_interval": str, "heartbeat_tolerance": str,
          "crl_noverify": bool, "crl_url": str}
RENAMED = {"server_addr": "connect_url", "root_cas": "connect_cas"}
PROXY_SCHEMES = ("http", "https", "socks5")
CONFIG_FIX = "Fix: correct or remove it (`ngrok config check` checks the file), then run %share again."


def share_settings(path: str | None = None) -> dict[str, Any]:
    """The agent settings a share copies from the user's ngrok config (see :data:`COPIED`), checked: a file that is
    not YAML, or a copied setting the agent would refuse, is a :class:`TunnelError` naming it."""
    import yaml

    path = path or ngrok_config_path()
    try:
        user = read_user_config(path)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise TunnelError(f"Your ngrok config ({path}) is not valid YAML{line}: {getattr(e, 'problem', None) or e}. "
                          + CONFIG_FIX) from None
    except (OSError, ValueError) as e:
        raise TunnelError(f"Your ngrok config ({path}) could not be read: {e}. Fix: make it readable (or remove "
                          "it), then run %share again.") from None
    if user is not None and not isinstance(user, dict):
        raise TunnelError(f"Your ngrok config ({path}) is not a mapping of settings. " + CONFIG_FIX)
    section = "agent." if isinstance(user, dict) and str(user.get("version")) == "3" else ""
    copied: dict[str, Any] = {}
    for written, value in agent_section(user).items():
        name = RENAMED.get(written, written) if not section else written
        if name not in COPIED or value is None:
            continue
        why = refused(name, value)
        if why:
            shown = "****" if name == "authtoken" else repr(value)
            raise TunnelError(f"Your ngrok config ({path}) sets {section}{written}: {shown}, which {why}. "
                              + CONFIG_FIX, "config")
        copied[name] = value
    return copied


def refused(name: str, value: Any) -> str | None:
    """Why the agent would refuse ``value`` for the setting ``name``; None if it would not (as far as can be told
    here: the agent checks the rest when it starts)."""
    from urllib.parse import urlsplit

    kind = COPIED[name]
    if not isinstance(value, kind) or (kind is list and not all(isinstance(item, str) for item in value)):
        return {str: "is not text", bool: "is not true or false", list: "is not a list of addresses"}[kind]
    if name == "proxy_url" and urlsplit(value).scheme not in PROXY_SCHEMES:
        return f"is not a proxy URL ({', '.join(s + '://' for s in PROXY_SCHEMES)})"
    if name == "connect_cas" and value not in ("trusted", "host") and not os.path.isfile(os.path.expanduser(value)):
        return "is neither trusted, host nor a certificate file that exists"
    return None


def private_config(path: str, authtoken: str | None) -> None:
    """Write the agent's config to ``path`` (created 0600): what a share needs of the user's own ngrok config
    (where `ngrok config add-authtoken` saved their token), with ``authtoken`` (if given) and inspection turned off."""
    import yaml

    agent = share_settings()
    if authtoken:
        agent["authtoken"] = authtoken
    agent["inspect_db_size"] = -1
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as f:
        yaml.safe_dump({"version": "3", "agent": agent}, f)


def same_address(reported: Any, sent: str) -> bool:
    """Whether the agent's report of an upstream URL names the address it was given: the agent reports the URL as it
    holds it (a trailing slash added, say), so the parsed parts are compared, never the text."""
    from urllib.parse import urlsplit

    def parts(url: str) -> tuple[Any, ...]:
        split = urlsplit(url)
        return split.scheme.lower(), split.hostname, split.port, split.path.strip("/"), split.query, split.username, \
            split.password

    try:
        return isinstance(reported, str) and parts(reported) == parts(sent)
    except ValueError:  # a port that is no number
        return False


class Tunnel:
    """One ngrok agent with one endpoint forwarding to a local port."""

    def __init__(self, authtoken: str | None = None) -> None:
        from pyngrok import conf

        _quiet_pyngrok()
        self._authtoken = authtoken
        self._configured: str | None = None  # the authtoken in the user's ngrok config, as last read
        self._config_seen: tuple[int, int] | None = None  # that file's modification time and size then
        remove_stale_folders()
        self._folder = private_folder(FOLDER_PREFIX)
        self._config_path = os.path.join(self._folder, "ngrok.yml")
        # Reads PYNGROK_NGROK_PATH from the environment.
        self.config = conf.PyngrokConfig(config_path=self._config_path)
        self.config.auth_token = None  # never on a command line: the private config carries it
        self.agent = AgentBinary(self.config.ngrok_path, agent_url(), own=same_file(self.config.ngrok_path,
                                                                                   conf.DEFAULT_NGROK_PATH),
                                 work=self._folder)
        self.public_url: str | None = None
        self._process = None
        self._endpoint: tuple[str, str] | None = None  # the endpoint's name and upstream, as this share made it

    def prepare(self, stall: float | None = None) -> None:
        """Before the agent's start timeout begins: check the user's ngrok config, and make the agent ready (fetch
        it if it is missing, or too old and pyngrok's own; see :mod:`.agent`). Blocking, with bounds of its own;
        ``self.agent.progress`` says how a download goes."""
        share_settings()
        if stall is not None:
            self.agent.stall = stall
        self.agent.ready()

    def open(self, port: int, traffic_policy: dict[str, Any] | None = None) -> str:
        """Start the agent and an HTTP endpoint to ``127.0.0.1:port`` (the address the gateway holds, never a name
        that may resolve elsewhere), with ``traffic_policy`` if given (an endpoint field pyngrok passes through to
        the agent's local API); return the public URL (blocking)."""
        from pyngrok import ngrok
        from pyngrok.exception import PyngrokError, PyngrokNgrokHTTPError, PyngrokNgrokInstallError

        try:
            private_config(self._config_path, self._authtoken)
            # Only fields of the agent's v3 endpoint definition: it may refuse one it does not know (`inspect` is a
            # v2 tunnel's; the private config's inspect_db_size turns inspection off). The policy goes as text,
            # the form ngrok's APIs document.
            options: dict[str, Any] = {"traffic_policy": json.dumps(traffic_policy)} if traffic_policy else {}
            self._endpoint = (f"share_magic-{port}-{uuid.uuid4()}", f"http://{UPSTREAM_HOST}:{port}")
            tunnel = ngrok.connect(self._endpoint[1], "http", name=self._endpoint[0], pyngrok_config=self.config,
                                   **options)
            self._process = ngrok.get_ngrok_process(self.config)
        except PyngrokNgrokInstallError as e:
            raise TunnelError(NOT_INSTALLED.format(reason=self._mask(str(e)).split("\n")[0])) from None
        except PyngrokNgrokHTTPError as e:
            raise self._explain(f"{e}\n{e.body}") from None
        except PyngrokError as e:
            raise self._explain(str(e), getattr(e, "ngrok_error_code", None)) from None
        finally:
            self._forget_config()
        self.public_url = tunnel.public_url
        assert self.public_url is not None
        return self.public_url

    def authtokens(self) -> list[str]:
        """Every ngrok authtoken this share knows of, for what must never be shown: the one it was given, and the
        one in the user's ngrok config (read again whenever that file changes; the widget's form saves there)."""
        path = ngrok_config_path()
        try:
            stat = os.stat(path)
            seen: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            seen = None
        if seen != self._config_seen:
            token = user_agent_settings(path).get("authtoken") if seen is not None else None
            self._config_seen, self._configured = seen, token if isinstance(token, str) else None
        return [token for token in (self._authtoken, self._configured) if token]

    def agent_alive(self) -> bool:
        return self._process is not None and self._process.proc.poll() is None

    def tampered(self) -> bool:
        """Whether the agent serves anything but this share's one endpoint, to the gateway, as it was made. The
        agent's local API takes changes from every program on this machine, another account's too: one could
        point the public URL at a listener of its own and catch the next visitor's key."""
        import urllib.request

        if self._process is None or self._endpoint is None:
            return False
        try:
            with urllib.request.urlopen(f"{self._process.api_url}/api/endpoints", timeout=5) as answer:
                endpoints = json.load(answer).get("endpoints") or []
        except (OSError, ValueError):
            return False  # a busy or dying agent: its death is noticed on its own
        name, upstream = self._endpoint
        reported = [(e.get("name"), same_address((e.get("upstream") or {}).get("url"), upstream)) for e in endpoints]
        return reported != [(name, True)]

    def close(self) -> None:
        """Take the endpoint offline, then end the agent."""
        from pyngrok import ngrok
        from pyngrok.exception import PyngrokError

        if self.public_url and self.agent_alive():
            try:
                ngrok.disconnect(self.public_url, pyngrok_config=self.config)
            except PyngrokError:
                pass  # the agent is killed next either way
        ngrok.kill(pyngrok_config=self.config)
        self.remove_folder()

    def _forget_config(self) -> None:
        """The agent has read its config (or never will): the authtoken leaves the disk."""
        try:
            os.unlink(self._config_path)
        except FileNotFoundError:
            pass

    def remove_folder(self) -> None:
        remove_folder(self._folder)

    def _mask(self, text: str) -> str:
        for token in self.authtokens():  # the config file's too: what the agent says may quote it
            text = text.replace(token, "****")
        return text

    def _explain(self, detail: str, code: str | None = None) -> TunnelError:
        if code is None:
            match = re.search(r"ERR_NGROK_\d+", detail)
            code = match.group(0) if match else None
        if code in EXPLANATIONS:
            return TunnelError(EXPLANATIONS[code], code)
        first_line = self._mask(detail).strip().splitlines()[0] if detail.strip() else "no details"
        return TunnelError(
            f"ngrok could not open the tunnel ({code or 'no error code'}): {first_line[:300]}. Fix: run "
            f"`ngrok http 8888` in a terminal to see ngrok's own explanation, then run %share again.", code)
