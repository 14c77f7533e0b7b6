#!/usr/bin/env python3
"""A stand-in for the ngrok agent (v3), for tests: no machine here reaches ngrok.

It honours the contract pyngrok relies on -- the command lines, the logfmt start-up lines, the local API under
/api/endpoints with ngrok's error shapes, and an HTTPS edge on loopback that forwards to the endpoint's upstream
with the *public* Host -- and nothing more. The edge and the agent's proxy are as the real ones (``standin_edge.py``):
a visitor's connection is kept alive for many requests and the policy runs on each; the agent keeps its upstream
connections alive and reuses them for whichever visitor's request comes next (most recently idle first);
X-Forwarded-For is appended to (a visitor's own value stays in front), X-Forwarded-Proto set, a visitor's
X-Forwarded-Host passed on. The ngrok service's side (which tokens are
valid, how many agents an account may run, one domain per free account) is modelled with a small state folder
shared by every stand-in started with the same STANDIN_NGROK_STATE.

Like ngrok's free plan, every endpoint of an account gets the same public URL (the account's domain, and here a
port kept in the state folder: a new endpoint waits for the last one's port rather than take another), and the edge
keeps one certificate per account (``edge.crt`` in the account's state folder, with subjectAltName), which a test
can make a browser trust. Like the real agent, it keeps every request it forwards (headers and all) in an
inspection store served without authentication at ``GET /api/requests/http`` on its web address, unless the
agent's config sets ``agent.inspect_db_size: -1`` (a v3 endpoint has no field for it). It reads its
authtoken from ``--authtoken`` or the config files only (``--config a.yml,b.yml`` merges them, later ones winning).

For tests to look at, the state folder also gets ``agents/<pid>.json`` (each agent's web address and the config it
read) and ``endpoints.jsonl`` (the fields of every endpoint created).

Knobs a test may set (all optional):
  STANDIN_NGROK_STATE        folder for the "service" state (default: a folder in the temp dir)
  STANDIN_NGROK_MODE         hang (silent, ignores SIGTERM) | crash-after=SECONDS | revoked | too-old | no-credit
  STANDIN_NGROK_MAX_AGENTS   agents one account may run at once (default 3, the free plan's)
  STANDIN_NGROK_INTERSTITIAL 0 to skip the free plan's warning page for browsers (as a paid plan does)
  STANDIN_NGROK_DOMAIN       the account's domain suffix (default ngrok-free.app)
  STANDIN_NGROK_VERSION      the version `ngrok --version` reports (default: a current one). Before 3.30.0 the agent
                             has no /api/endpoints, only /api/tunnels, as real agents before it (so pyngrok 9 never
                             sees it healthy)
  STANDIN_NGROK_UPSTREAM_FORM normalized: report an endpoint's upstream URL as the agent may hold it (a trailing
                             slash added) rather than byte for byte as it was sent
  STANDIN_NGROK_PLAN         free (default) | paid: on the free plan, a policy with remove-headers is refused with
                             ERR_NGROK_4026 (it costs credit there), as ngrok's free plan does
  STANDIN_NGROK_IDLE_CONNS   idle upstream connections the agent keeps (default 2, Go's DefaultMaxIdleConnsPerHost)
  STANDIN_NGROK_SKIP_ACTIONS comma-separated Traffic Policy action types to leave out when running a policy (to test
                             what a gateway does if, say, the edge did not remove a header)

Traffic Policy (the endpoint's ``traffic_policy`` field, an object or a YAML/JSON string): ``on_http_request`` rules,
each with optional ``expressions`` (only ``[!](actions.ngrok.oauth.identity.email in [...])``) and actions run in
order: ``oauth`` (a managed provider), ``remove-headers``, ``add-headers`` (appending, except ``host``; values
interpolate ``${actions.ngrok.oauth.identity.email|name|id|provider_user_id}`` and ``${conn.client_ip}``, the
visitor's address as the edge's socket sees it -- a test gives visitors distinct addresses by connecting from
127.0.0.x) and ``deny``. Anything else makes
the endpoint fail to start with a 400, as an invalid policy does. The oauth action keeps the edge's own session
cookie on the endpoint's host; without one it sends the visitor to a sign-in page of the stand-in's own
(``/ngrok/standin/sign-in``, where a test or a browser chooses the e-mail and name to sign in as; with github the
e-mail may be left empty, as GitHub gives none for an account that keeps it private) and back to the
address first asked for (setting a nonce cookie on the way). ``/ngrok/login`` starts a sign-in, ``/ngrok/logout``
clears the edge's cookie only. The edge's cookies (session and nonce) reach the upstream with every request, as the
browser sends them; nothing else about the visitor's identity does unless the policy adds it.

The edge counts what ngrok bills -- HTTP requests (a websocket is one) and bytes sent to visitors -- and the agent
serves the counts at GET /api/standin/meter (the stand-in's own route, for tests and benchmarks).
"""
from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import re
import signal
import ssl
import sys
import tempfile
import time
import uuid
from typing import Any

import h11
from standin_edge import ERRORS, Pool, Side, pipe, round_trip, text_headers, canonical, without_hop_by_hop

ERR_4018 = (
    "authentication failed: Usage of ngrok requires a verified account and authtoken.\\n\\n"
    "Sign up for an account: https://dashboard.ngrok.com/signup\\n"
    "Install your authtoken: https://dashboard.ngrok.com/get-started/your-authtoken\\r\\n\\r\\nERR_NGROK_4018\\r\\n"
)
ERR_105 = (
    "authentication failed: The authtoken you specified does not look like a proper ngrok tunnel authtoken.\\n"
    "Your authtoken: {masked}\\nInstructions to install your authtoken are on your ngrok dashboard:\\n"
    "https://dashboard.ngrok.com/get-started/your-authtoken\\r\\n\\r\\nERR_NGROK_105\\r\\n"
)
ERR_107 = (
    "authentication failed: The authtoken you specified is properly formed, but it is invalid.\\n"
    "Your authtoken: {masked}\\nThis usually happens when:\\n    - You reset your authtoken\\n"
    "    - Your authtoken was for a team account that you were removed from\\r\\n\\r\\nERR_NGROK_107\\r\\n"
)
ERR_108 = (
    "authentication failed: Your account is limited to {limit} simultaneous ngrok agent sessions.\\n"
    "You can run multiple simultaneous tunnels from a single agent session by defining the tunnels in your agent "
    "configuration file and starting them with the command `ngrok start --all`.\\r\\n\\r\\nERR_NGROK_108\\r\\n"
)
ERR_121 = (
    "authentication failed: Your ngrok-agent version \\\"3.0.0\\\" is too old. The minimum supported agent version "
    "for your account is \\\"3.2.0\\\". Please update to a newer version with `ngrok update`.\\r\\n\\r\\n"
    "ERR_NGROK_121\\r\\n"
)
VERSION = "3.37.2"  # STANDIN_NGROK_VERSION overrides it
ENDPOINTS_API = (3, 30, 0)  # agents before it have /api/tunnels only


def version() -> str:
    return os.environ.get("STANDIN_NGROK_VERSION") or VERSION


def has_endpoints_api() -> bool:
    return tuple(int(part) for part in version().split(".")) >= ENDPOINTS_API


# The agent section's fields (ngrok's v3 agent config reference); the agent refuses any other.
AGENT_FIELDS = {"api_key", "authtoken", "connect_cas", "connect_interface", "connect_timeout", "connect_url",
                "console_ui", "console_ui_color", "crl_noverify", "crl_url", "dns_resolver_ips", "heartbeat_interval",
                "heartbeat_tolerance", "inspect_db_size", "local_storage", "log", "log_format", "log_level",
                "metadata", "proxy_url", "remote_management", "update_channel", "update_check", "web_addr",
                "web_allow_hosts"}
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_]{20,}$")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000")


def log(lvl: str, msg: str, **fields: str) -> None:
    parts = [f"t={now()}", f"lvl={lvl}", f'msg="{msg}"']
    for key, value in fields.items():
        key = key.rstrip("_")
        if key.startswith("obj"):
            key = "obj"
        parts.append(f'{key}="{value}"' if (" " in value or "\\" in value) else f"{key}={value}")
    sys.stdout.write(" ".join(parts) + "\n")
    sys.stdout.flush()


def fail_session(err: str) -> None:
    """What the real agent prints when the service refuses the session, then it exits."""
    log("eror", "session closing", obj="tunnels.session", err=err)
    log("eror", "terminating with error", obj_="app", err=err)
    log("crit", "command failed", err=err)
    sys.exit(1)


def default_config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "ngrok", "ngrok.yml")


def read_config(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}
    except FileNotFoundError:
        return {}


def read_configs(paths: str) -> dict:
    """``--config a.yml,b.yml``: the files merged, later ones winning (section by section)."""
    merged: dict = {}
    for path in paths.split(","):
        for key, value in read_config(path).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def parse_flags(args: list[str]) -> dict[str, str]:
    flags: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name = arg[2:]
            if "=" in name:
                name, value = name.split("=", 1)
                flags[name] = value
            elif name == "none" or name == "all":
                flags[name] = "true"
            else:
                flags[name] = args[i + 1] if i + 1 < len(args) else ""
                i += 1
        else:
            flags.setdefault("_positional", "")
            flags["_positional"] += arg + " "
        i += 1
    return flags


def add_authtoken(args: list[str]) -> None:
    token = args[0]
    flags = parse_flags(args[1:])
    path = flags.get("config") or default_config_path()
    import yaml

    config = read_config(path)
    config.setdefault("version", "3")
    config.setdefault("agent", {})["authtoken"] = token
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    os.chmod(path, 0o600)
    print(f"Authtoken saved to configuration file: {path}")


# --- the "service": accounts, agent sessions, one domain per account ------------------------------------------


def state_root() -> str:
    return os.environ.get("STANDIN_NGROK_STATE") or os.path.join(tempfile.gettempdir(), "standin-ngrok-state")


def note(name: str, line: dict) -> None:
    """Append what a test may look at later to a file of the state folder."""
    os.makedirs(state_root(), exist_ok=True)
    with open(os.path.join(state_root(), name), "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def _zombie(pid: int) -> bool:
    """A dead process nobody has reaped yet (an orphan, where init does not reap)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class Service:
    def __init__(self, token: str) -> None:
        self.token = token
        self.account = hashlib.sha256(token.encode()).hexdigest()[:12]
        self.folder = os.path.join(state_root(), self.account)
        os.makedirs(self.folder, exist_ok=True)
        suffix = os.environ.get("STANDIN_NGROK_DOMAIN", "ngrok-free.app")
        self.domain = f"{self.account}.{suffix}"

    def _live(self, prefix: str) -> list[str]:
        live = []
        for name in os.listdir(self.folder):
            if not name.startswith(prefix):
                continue
            pid = int(name.split("-")[1].split(".")[0])
            try:
                os.kill(pid, 0)
                if _zombie(pid):  # killed, not yet reaped (nobody reaps orphans here): its session is over
                    raise ProcessLookupError
                live.append(name)
            except ProcessLookupError:
                try:
                    os.unlink(os.path.join(self.folder, name))
                except FileNotFoundError:
                    pass
        return live

    def open_session(self) -> None:
        limit = int(os.environ.get("STANDIN_NGROK_MAX_AGENTS", "3"))
        if len(self._live("agent-")) >= limit:
            err = ERR_108.format(limit=limit)
            log("eror", "failed to reconnect session", obj="tunnels.session", err=err)
            fail_session(err)
        open(os.path.join(self.folder, f"agent-{os.getpid()}"), "w").close()

    def claim_domain(self) -> bool:
        """A free account has one domain: only one endpoint may be online on it at a time."""
        if self._live("endpoint-"):
            return False
        open(os.path.join(self.folder, f"endpoint-{os.getpid()}"), "w").close()
        return True

    def release_domain(self) -> None:
        try:
            os.unlink(os.path.join(self.folder, f"endpoint-{os.getpid()}"))
        except FileNotFoundError:
            pass

    def edge_port(self) -> int:
        """The port of the account's public URL: the same for every endpoint, as the free plan's one domain is."""
        path = os.path.join(self.folder, "edge-port")
        try:
            with open(path, encoding="utf-8") as f:
                return int(f.read())
        except FileNotFoundError:
            return 0

    def keep_edge_port(self, port: int) -> None:
        with open(os.path.join(self.folder, "edge-port"), "w", encoding="utf-8") as f:
            f.write(str(port))


# --- the edge: public HTTPS on loopback, forwarding to the upstream ---------------------------------------------


def edge_certificate(service: Service) -> tuple[str, str]:
    """The edge's certificate for the account's domain, made once per account and kept, as ngrok's is: a browser
    that trusts it (a test's NSS store) trusts every share of the account, as browsers trust ngrok's."""
    cert_path, key_path = os.path.join(service.folder, "edge.crt"), os.path.join(service.folder, "edge.key")
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        made = make_certificate(f"*.{service.domain.split('.', 1)[1]}", service.folder, also=[service.domain])
        assert made == (cert_path, key_path)
    return cert_path, key_path


def make_certificate(domain: str, folder: str, also: list[str] = ()) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in [domain, *also]]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(folder, "edge.crt"), os.path.join(folder, "edge.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


INTERSTITIAL = """<!DOCTYPE html><html><head><title>ngrok</title></head><body>
<h1>You are about to visit: {host}</h1>
<p>This website is served for free through ngrok.com. You should only visit this website if you trust whoever
sent the link to you.</p>
<button id="visit" onclick="document.cookie='abuse_interstitial={host}; path=/'; location.reload()">Visit Site
</button></body></html>"""


OAUTH_PROVIDERS = ("google", "github", "microsoft", "gitlab", "linkedin", "twitch")
PRIVATE_EMAIL_PROVIDERS = ("github",)  # may sign a visitor in without an e-mail (one the account keeps private)
OAUTH_COOKIE = "ngrok_oauth_session"  # ngrok's real cookie names are not documented
NONCE_COOKIE = "ngrok_oauth_nonce"  # set on the way to the provider, and sent back with every request after
IDENTITY_VARIABLES = ("email", "name", "id", "provider_user_id")
CONNECTION_VARIABLES = ("conn.client_ip",)  # the edge's own view of the connection: no visitor can set it
INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
EMAIL_EXPRESSION = re.compile(r"^(!?)\(?\s*actions\.ngrok\.oauth\.identity\.email\s+in\s+\[(.*)\]\s*\)?$")
SIGN_IN_PATH = "/ngrok/standin/sign-in"
SIGN_IN_PAGE = """<!DOCTYPE html><html><head><title>Sign in with {provider}</title></head><body>
<h1>Sign in with {provider}</h1><p>(the stand-in's own page: choose who you are)</p>
<form method="post" action="{path}"><input type="hidden" name="next" value="{next}">
<label>E-mail <input id="email" name="email" type="email"{required}></label>
<label>Name <input id="name" name="name"></label>
<button id="sign-in" type="submit">Sign in</button></form></body></html>"""


class PolicyError(ValueError):
    """A traffic policy the edge would not accept."""


def parse_policy(policy) -> list[dict]:
    """The ``on_http_request`` rules of a policy, checked; a PolicyError for anything the stand-in cannot run."""
    if isinstance(policy, str):
        import yaml

        policy = yaml.safe_load(policy) or {}
    if not isinstance(policy, dict) or set(policy) - {"on_http_request", "on_http_response", "on_tcp_connect"}:
        raise PolicyError("the policy must be an object with on_http_request rules")
    rules = policy.get("on_http_request") or []
    for rule in rules:
        for expression in rule.get("expressions") or []:
            if not EMAIL_EXPRESSION.match(expression.strip()):
                raise PolicyError(f"the stand-in cannot evaluate the expression {expression!r}")
        for action in rule.get("actions") or []:
            kind, config = action.get("type"), action.get("config") or {}
            if kind == "oauth":
                if config.get("provider") not in OAUTH_PROVIDERS:
                    raise PolicyError(f"unknown oauth provider {config.get('provider')!r}")
            elif kind == "add-headers":
                headers = config.get("headers") or {}
                if not 1 <= len(headers) <= 10:
                    raise PolicyError("add-headers takes 1 to 10 headers")
                for value in headers.values():
                    for variable in INTERPOLATION.findall(str(value)):
                        if variable in CONNECTION_VARIABLES:
                            continue
                        if variable.rsplit(".", 1)[-1] not in IDENTITY_VARIABLES or \
                                not variable.startswith("actions.ngrok.oauth.identity."):
                            raise PolicyError(f"unknown variable ${{{variable}}}")
            elif kind == "remove-headers":
                if not config.get("headers"):
                    raise PolicyError("remove-headers needs headers")
            elif kind != "deny":
                raise PolicyError(f"the stand-in does not run {kind!r} actions")
    return rules


def policy_actions(policy) -> set[str]:
    """The action types a policy (text or object) uses; empty for one that does not parse (refused later)."""
    try:
        rules = parse_policy(policy) if policy else []
    except (PolicyError, ValueError, TypeError, AttributeError):
        return set()
    return {action.get("type") for rule in rules for action in rule.get("actions") or []}


def email_expression_holds(expression: str, identity: dict | None) -> bool:
    negated, listed = EMAIL_EXPRESSION.match(expression.strip()).groups()
    emails = [item.strip().strip("'\"") for item in listed.split(",") if item.strip()]
    found = identity is not None and identity.get("email") in emails
    return found != bool(negated)


class Endpoint:
    def __init__(self, agent: Agent, name: str, upstream: str, fields: dict) -> None:
        self.agent = agent
        self.name = name
        self.upstream_url = upstream
        self.fields = fields
        self.online = True
        self.conns = 0
        self.gauge = 0
        self.http = 0
        self.bytes_out = 0  # to visitors: what ngrok bills as data transfer out
        self.recent: list[str] = []  # the last request lines billed, for a test to say what cost what
        self.server: asyncio.AbstractServer | None = None
        self.public_url = ""
        self.open_writers: set[asyncio.StreamWriter] = set()
        self.pool = Pool(self.upstream_address(), self.open_writers)  # the agent's kept-alive upstream connections
        self.rules = parse_policy(fields["traffic_policy"]) if fields.get("traffic_policy") else []
        self.oauth = next((action["config"]["provider"] for rule in self.rules for action in rule.get("actions") or []
                           if action.get("type") == "oauth"), None)

    def as_json(self, metrics: bool = False) -> dict:
        upstream = self.upstream_url
        if os.environ.get("STANDIN_NGROK_UPSTREAM_FORM") == "normalized" and upstream.count("/") == 2:
            upstream += "/"
        data = {
            "name": self.name,
            "uri": f"/api/endpoints/{self.name}",
            "url": self.public_url,
            "upstream": {"url": upstream, "protocol": "http1"},
        }
        if metrics:
            data["metrics"] = {"conns": {"count": self.conns, "gauge": self.gauge}, "http": {"count": self.http}}
        return data

    async def start(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.agent.certificate)
        service = self.agent.service
        kept, deadline = service.edge_port(), time.monotonic() + 10
        while True:  # the account's one origin: the last endpoint's agent may still be letting go of its port
            try:
                self.server = await asyncio.start_server(self.handle, "127.0.0.1", kept, ssl=context,
                                                         reuse_address=True)
                break
            except OSError:
                if time.monotonic() > deadline:  # someone else holds it: the URL changes, which tests see
                    log("warn", "the account's edge port is taken; the public URL changes", obj="standin")
                    self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=context)
                    break
                await asyncio.sleep(0.1)
        port = self.server.sockets[0].getsockname()[1]
        service.keep_edge_port(port)
        self.public_url = f"https://{service.domain}:{port}"

    @property
    def inspecting(self) -> bool:
        return self.agent.inspect_db_size != -1

    async def stop(self) -> None:
        self.online = False
        if self.server is not None:
            self.server.close()  # the public port is free for the account's next endpoint
        for writer in list(self.open_writers):
            writer.close()

    def upstream_address(self) -> tuple[str, int]:
        rest = self.upstream_url.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = rest.rpartition(":")
        return (host.strip("[]") or "localhost"), int(port or 80)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        self.gauge += 1
        self.open_writers.add(writer)
        visitor = Side(h11.SERVER, reader, writer, self.sent)
        try:
            await self.serve(visitor, writer.get_extra_info("peername")[0])
        except h11.RemoteProtocolError:  # what Go's server says to a request it cannot read, then it closes
            if visitor.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                try:
                    await visitor.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except ERRORS:
                    pass
        except ERRORS:
            pass
        finally:
            self.gauge -= 1
            self.open_writers.discard(writer)
            writer.close()

    async def serve(self, visitor: Side, peer: str) -> None:
        """A visitor's connection: one request after another, each through the policy on its own."""
        while True:
            event = await visitor.next_event()
            if not isinstance(event, h11.Request):
                return  # the visitor closed the connection
            if await self.forward(visitor, event, peer) is False or not visitor.reusable():
                return
            visitor.h11.start_next_cycle()

    async def forward(self, visitor: Side, request: h11.Request, peer: str) -> bool | None:
        """One request: the edge's own answer, or the upstream's; False when the connection is the upstream's now
        (a websocket) or must end."""
        method, target = request.method.decode(), request.target.decode("latin-1")
        headers = text_headers(request.headers)
        lower = {k.lower(): v for k, v in headers}
        has_body = "transfer-encoding" in lower or int(lower.get("content-length") or 0) > 0
        self.http += 1
        # Method and path only: the query may carry a share's key, and this route has no authentication.
        self.recent = [*self.recent[-199:], f"{method} {target}".split("?", 1)[0][:120]]
        if not self.online:
            return await self.own_answer(visitor, has_body, 404, b"The endpoint is offline.\nERR_NGROK_3200\n",
                                         {"ngrok-error-code": "ERR_NGROK_3200"})
        if self.agent.interstitial and self.wants_interstitial(lower):
            return await self.own_answer(visitor, has_body, 200,
                                         INTERSTITIAL.format(host=lower.get("host", "")).encode(),
                                         {"Content-Type": "text/html", "ngrok-error-code": "ERR_NGROK_6024"})
        if self.rules:
            answer, headers = await self.apply_policy(method, target, headers, visitor, peer)
            if answer is not None:
                status, body, fields = answer
                return await self.own_answer(visitor, has_body, status, body, fields)
        upgrade = "upgrade" in lower and "upgrade" in lower.get("connection", "").lower()
        kept = without_hop_by_hop(headers, keep_upgrade=upgrade)
        prior = [v for k, v in kept if k.lower() == "x-forwarded-for"]  # a visitor's own stays in front
        kept = [(k, v) for k, v in kept if k.lower() not in ("x-forwarded-for", "x-forwarded-proto")]
        kept += [("X-Forwarded-For", ", ".join([*prior, peer])), ("X-Forwarded-Proto", "https")]
        if "transfer-encoding" in lower:
            kept.append(("Transfer-Encoding", "chunked"))
        kept = [(canonical(k), v) for k, v in kept]
        if self.inspecting:
            recorded: dict[str, list[str]] = {}
            for k, v in kept:
                recorded.setdefault(k, []).append(v)
            raw = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in kept) + "\r\n"
            self.agent.inspected.append({"uri": f"/api/requests/http/{uuid.uuid4().hex}", "tunnel_name": self.name,
                                         "request": {"method": method, "uri": target, "headers": recorded,
                                                     "raw": raw}})
        switched: list = []

        async def on_switch(upstream: Any, response: Any) -> None:
            switched.append(upstream)
            await self.relay_websocket(visitor, upstream)

        outgoing = h11.Request(method=method, target=target, headers=kept)
        await round_trip(self.pool, visitor, outgoing, has_body, on_switch)
        return False if switched else None

    async def own_answer(self, visitor: Side, has_body: bool, status: int, body: bytes,
                         headers: dict[str, str] | None = None) -> None:
        """The edge answers itself (the request's body, if it has one left, is read and dropped first)."""
        if visitor.h11.their_state is h11.SEND_BODY:
            await visitor.body(1 << 40)
        await visitor.answer(status, body, headers)

    async def relay_websocket(self, visitor: Side, upstream: Any) -> None:
        """A 101: the visitor's connection and the upstream one carry the websocket's bytes, and nothing else."""
        up_data, _ = upstream.h11.trailing_data
        visitor_data, _ = visitor.h11.trailing_data
        self.pool.opened.add(upstream.writer)
        await asyncio.gather(pipe(visitor.reader, upstream.writer, bytes(visitor_data)),
                             pipe(upstream.reader, visitor.writer, bytes(up_data), self.sent))
        self.pool.close(upstream)

    # -- the endpoint's traffic policy ------------------------------------------------------------------------------

    async def apply_policy(self, method: str, target: str, headers: list, visitor: Side,
                           peer: str = "") -> tuple:
        """Run the policy on a request: (the edge's own answer ``(status, body, headers)``, or None to forward; the
        headers to forward). The edge's own cookies stay in the request: a browser sends them with every one."""
        path = target.split("?", 1)[0]
        cookies = {}
        for name, value in headers:
            if name.lower() == "cookie":
                for pair in value.split(";"):
                    key, _, val = pair.strip().partition("=")
                    cookies[key] = val
        session_id = cookies.get(OAUTH_COOKIE, "")
        identity = self.agent.oauth_sessions.get(session_id) if self.oauth else None
        if identity is not None and identity.get("provider") != self.oauth:
            identity = None
        if self.oauth and path.startswith("/ngrok/"):
            return await self.special_path(method, target, path, visitor, session_id), headers
        skipped = set(filter(None, os.environ.get("STANDIN_NGROK_SKIP_ACTIONS", "").split(",")))
        for rule in self.rules:
            if not all(email_expression_holds(e, identity) for e in rule.get("expressions") or []):
                continue
            for action in rule.get("actions") or []:
                kind, config = action["type"], action.get("config") or {}
                if kind in skipped:
                    continue
                if kind == "oauth" and identity is None:
                    return self.to_sign_in(target), headers
                if kind == "remove-headers":
                    doomed = {name.lower() for name in config["headers"]}
                    headers = [(k, v) for k, v in headers if k.lower() not in doomed]
                elif kind == "add-headers":
                    for name, value in config["headers"].items():
                        value = INTERPOLATION.sub(lambda m: peer if m.group(1) == "conn.client_ip" else str(
                            (identity or {}).get(m.group(1).rsplit(".", 1)[-1], "")), str(value))
                        if name.lower() == "host":
                            headers = [(k, v) for k, v in headers if k.lower() != "host"]
                        headers.append((name.lower(), value))
                elif kind == "deny":
                    return (int(config.get("status_code", 403)), b"", {}), headers
        return None, headers

    def to_sign_in(self, target: str) -> tuple:
        """To the provider, with a nonce cookie of the edge's own (a browser keeps sending it to the endpoint)."""
        from urllib.parse import quote

        return 302, b"", {"Location": f"{SIGN_IN_PATH}?next={quote(target, safe='')}", "Cache-Control": "no-store",
                          "Set-Cookie": f"{NONCE_COOKIE}={uuid.uuid4().hex}; Path=/; Max-Age=600; Secure; HttpOnly"}

    async def special_path(self, method: str, target: str, path: str, visitor: Side, session_id: str) -> tuple:
        from urllib.parse import parse_qs, urlsplit

        query = parse_qs(urlsplit(target).query)
        expire = f"{OAUTH_COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly"
        if path == "/ngrok/logout":
            self.agent.oauth_sessions.pop(session_id, None)
            return 200, b"<!DOCTYPE html><title>Signed out</title><h1>You are signed out</h1>", {
                "Content-Type": "text/html", "Set-Cookie": expire}
        if path == "/ngrok/login":
            return self.to_sign_in((query.get("next") or ["/"])[0])
        if path == SIGN_IN_PATH and method == "GET":
            from html import escape

            page = SIGN_IN_PAGE.format(provider=self.oauth, path=SIGN_IN_PATH,
                                       next=escape((query.get("next") or ["/"])[0]),
                                       required="" if self.oauth in PRIVATE_EMAIL_PROVIDERS else " required")
            return 200, page.encode(), {"Content-Type": "text/html; charset=utf-8"}
        if path == SIGN_IN_PATH and method == "POST":
            form = parse_qs((await visitor.body()).decode())
            email = (form.get("email") or [""])[0].strip()
            if "@" not in email and not (email == "" and self.oauth in PRIVATE_EMAIL_PROVIDERS):
                return 400, b"An e-mail address, please.\n", {}
            new_id = uuid.uuid4().hex + uuid.uuid4().hex
            user_id = hashlib.sha256((email.lower() or new_id).encode()).hexdigest()[:16]
            self.agent.oauth_sessions[new_id] = {"email": email, "name": (form.get("name") or [""])[0].strip(),
                                                 "id": user_id, "provider_user_id": user_id,
                                                 "provider": self.oauth}
            back = (form.get("next") or ["/"])[0]
            if not back.startswith("/") or back.startswith("//"):
                back = "/"
            return 302, b"", {"Location": back, "Cache-Control": "no-store",
                              "Set-Cookie": f"{OAUTH_COOKIE}={new_id}; Path=/; Secure; HttpOnly; SameSite=Lax"}
        return 404, b"Not found\n", {}

    def sent(self, size: int) -> None:
        self.bytes_out += size

    def wants_interstitial(self, headers: dict[str, str]) -> bool:
        if "ngrok-skip-browser-warning" in headers:
            return False
        if f"abuse_interstitial={headers.get('host', '')}" in headers.get("cookie", ""):
            return False
        return headers.get("user-agent", "").startswith("Mozilla") and "text/html" in headers.get("accept", "")


# --- the agent: local API and lifetime ---------------------------------------------------------------------------

# The agent's v3 endpoint definition, field by field, with the JSON type each decodes into (ngrok's v3 config
# reference); the agent refuses anything else, as Go's strict decoding does.
ENDPOINT_FIELDS = {"name": str, "description": str, "metadata": str, "url": str, "bindings": list, "upstream": dict,
                   "traffic_policy": str, "pooling_enabled": bool, "agent_tls_termination": dict}
UPSTREAM_FIELDS = {"url": str, "protocol": str, "proxy_protocol": str}
FREE_PLAN_CHARGED = {"remove-headers"}  # Traffic Policy actions the free plan charges credit for


def refused_field(request: dict) -> str | None:
    """Why the agent would refuse this endpoint definition, in its own words; None if it decodes."""
    for fields, kind, given in ((ENDPOINT_FIELDS, "Endpoint", request),
                                (UPSTREAM_FIELDS, "Upstream", request.get("upstream"))):
        if not isinstance(given, dict):
            continue
        for name, value in given.items():
            if name not in fields:
                return f"field {name} not found in type config.{kind}"
            if not isinstance(value, fields[name]):
                return (f"json: cannot unmarshal {type(value).__name__} into Go struct field {kind}.{name} of type "
                        f"{fields[name].__name__}")
    return None


class Agent:
    def __init__(self, service: Service, folder: str, config: dict) -> None:
        self.service = service
        self.inspect_db_size = (config.get("agent") or {}).get("inspect_db_size")
        self.inspected: list[dict] = []
        self.endpoints: dict[str, Endpoint] = {}
        self.certificate = edge_certificate(service)
        self.interstitial = os.environ.get("STANDIN_NGROK_INTERSTITIAL", "1") != "0"
        self.oauth_sessions: dict[str, dict] = {}  # the edge's sign-in sessions, by the id in its cookie
        self.listings = 0

    async def api(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
                method, path, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines if ":" in h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload = await self.route(method, path, body)
                data = b"" if payload is None else json.dumps(payload).encode()
                reply = [f"HTTP/1.1 {status}", f"Content-Length: {len(data)}"]
                if payload is not None:
                    reply.append("Content-Type: application/json")
                writer.write(("\r\n".join(reply) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes) -> tuple[str, dict | None]:
        path = path.split("?", 1)[0].rstrip("/")
        if path == "/api/standin/meter" and method == "GET":  # the stand-in's own: what the edge billed
            return "200 OK", {"requests": sum(e.http for e in self.endpoints.values()),
                              "bytes_out": sum(e.bytes_out for e in self.endpoints.values()),
                              "listings": self.listings,  # GET /api/endpoints served: how often it was looked at
                              "upstream_connections": sum(e.pool.dialed for e in self.endpoints.values()),
                              "upstream_connections_lost": sum(e.pool.lost for e in self.endpoints.values()),
                              "recent": [line for e in self.endpoints.values() for line in e.recent]}
        if path == "/api/requests/http" and method == "GET":
            return "200 OK", {"uri": "/api/requests/http", "requests": self.inspected[-50:]}
        if not has_endpoints_api():  # an agent before 3.30.0: the v2-era tunnels API only
            if path == "/api/tunnels" and method == "GET":
                return "200 OK", {"tunnels": [], "uri": "/api/tunnels"}
            return "404 Not Found", error(100, 404, "Not found")
        if path == "/api/endpoints" and method == "GET":
            self.listings += 1
            return "200 OK", {"endpoints": [e.as_json() for e in self.endpoints.values()], "uri": "/api/endpoints"}
        if path == "/api/endpoints" and method == "POST":
            return await self.create(json.loads(body or b"{}"))
        if path.startswith("/api/endpoints/"):
            endpoint = self.endpoints.get(path.rsplit("/", 1)[1])
            if endpoint is None:
                return "404 Not Found", error(100, 404, "Endpoint not found")
            if method == "GET":
                return "200 OK", endpoint.as_json(metrics=True)
            if method == "DELETE":
                await endpoint.stop()
                del self.endpoints[endpoint.name]
                self.service.release_domain()
                log("info", "ended tunnel", obj="tunnels", name=endpoint.name)
                return "204 No Content", None
        return "404 Not Found", error(100, 404, "Not found")

    async def create(self, request: dict) -> tuple[str, dict]:
        refused = refused_field(request)
        if refused or "url" not in (request.get("upstream") or {}):
            return "400 Bad Request", error(102, 400, "invalid tunnel configuration",
                                            refused or "upstream.url is required")
        name = request.get("name") or str(uuid.uuid4())
        if name in self.endpoints:
            return "400 Bad Request", error(102, 400, "invalid tunnel configuration",
                                            f"a tunnel with the name '{name}' already exists")
        charged = FREE_PLAN_CHARGED & policy_actions(request.get("traffic_policy"))
        if os.environ.get("STANDIN_NGROK_MODE") == "no-credit" or (
                charged and os.environ.get("STANDIN_NGROK_PLAN", "free") == "free"):
            err = ("failed to start tunnel: Your account does not have enough credit to use the requested "
                   "feature. Add a payment method at https://dashboard.ngrok.com/billing.\r\n\r\nERR_NGROK_4026\r\n")
            return "402 Payment Required", error(103, 402, "failed to start tunnel", err)
        if not self.service.claim_domain():
            err = (f"failed to start tunnel: The endpoint 'https://{self.service.domain}' is already online. "
                   "Either\\n1. stop your existing endpoint first, or\\n2. start both endpoints with "
                   "`--pooling-enabled` to load balance between them.\\r\\n\\r\\nERR_NGROK_334\\r\\n")
            return "502 Bad Gateway", error(103, 502, "failed to start tunnel", err)
        try:
            endpoint = Endpoint(self, name, request["upstream"]["url"], request)
        except (PolicyError, ValueError, TypeError, KeyError, AttributeError) as e:
            self.service.release_domain()
            return "400 Bad Request", error(102, 400, "invalid tunnel configuration",
                                            f"invalid traffic policy: {e}")
        note("endpoints.jsonl", request)
        await endpoint.start()
        self.endpoints[name] = endpoint
        log("info", "started tunnel", obj="tunnels", name=name, addr=endpoint.upstream_url, url=endpoint.public_url)
        return "201 Created", endpoint.as_json()


def error(code: int, status: int, msg: str, err: str = "") -> dict:
    return {"error_code": code, "status_code": status, "msg": msg, "details": {"err": err or msg}}


async def bind_web_service(agent: Agent) -> tuple[asyncio.AbstractServer, str]:
    for port in range(4040, 4140):
        try:
            server = await asyncio.start_server(agent.api, "127.0.0.1", port)
        except OSError:
            if port == 4040:
                log("warn", "can't bind default web address, trying alternatives", obj="web", addr="127.0.0.1:4040")
            continue
        log("info", "starting web service", obj="web", addr=f"127.0.0.1:{port}", allow_hosts="[]")
        return server, f"127.0.0.1:{port}"
    raise SystemExit("no free port for the web service")


async def run_agent(service: Service, mode: str, config: dict) -> None:
    with tempfile.TemporaryDirectory(prefix="standin-ngrok-") as folder:
        agent = Agent(service, folder, config)
        server, address = await bind_web_service(agent)
        os.makedirs(os.path.join(state_root(), "agents"), exist_ok=True)
        with open(os.path.join(state_root(), "agents", f"{os.getpid()}.json"), "w", encoding="utf-8") as f:
            json.dump({"web_addr": address, "config": config}, f)
        service.open_session()
        log("info", "client session established", obj="tunnels.session", obj_="csess", id=uuid.uuid4().hex[:12])
        log("info", "tunnel session started", obj="tunnels.session")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if mode.startswith("crash-after="):
            loop.call_later(float(mode.split("=", 1)[1]), lambda: os._exit(1))
        await stop.wait()
        server.close()
        service.release_domain()


def start(args: list[str]) -> None:
    flags = parse_flags(args)
    mode = os.environ.get("STANDIN_NGROK_MODE", "")
    if mode == "hang":  # stuck: prints nothing, and does not even answer SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    config = read_configs(flags.get("config") or default_config_path())
    unknown = sorted(set(config.get("agent") or {}) - AGENT_FIELDS) if str(config.get("version")) == "3" else []
    if unknown:  # as the real agent does, on its standard error, before it logs anything
        sys.stderr.write(f"ERROR:  Error reading configuration file '{flags.get('config')}': yaml: unmarshal errors:"
                         f"\n  field {unknown[0]} not found in type config.v3yamlAgent\n")
        sys.exit(1)
    # The agent is not documented to read NGROK_AUTHTOKEN itself, so the stand-in does not either.
    token = flags.get("authtoken") or (config.get("agent") or {}).get("authtoken") or config.get("authtoken")
    log("info", "open config file", obj="config", path=flags.get("config") or default_config_path(), err="nil")
    if not token:
        fail_session(ERR_4018)
    masked = token[:4] + "*" * max(0, len(token) - 4)
    if not TOKEN_SHAPE.match(token):
        fail_session(ERR_105.format(masked=masked))
    if mode == "revoked":
        fail_session(ERR_107.format(masked=masked))
    if mode == "too-old":
        fail_session(ERR_121)
    asyncio.run(run_agent(Service(token), mode, config))


def main() -> None:
    args = sys.argv[1:]
    if args[:1] in (["--version"], ["version"]):
        print(f"ngrok version {version()}")
    elif args[:2] == ["config", "add-authtoken"]:
        add_authtoken(args[2:])
    elif args[:1] == ["start"]:
        start(args[1:])
    else:
        sys.stderr.write(f"stand-in ngrok: unsupported command {args!r}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
