"""What the kernel side and the helper side agree on: the names in a link, who signed in, and ngrok's facts.

Both sides import this; it imports nothing of share_magic's but its errors, so a kernel that shows a share loads
none of the code that serves visitors.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from .errors import ShareError

KEY_PARAM = "share_key"  # a link's key: ?share_key=...
VIEW_PAGE = "share_magic/view"  # the view-only page, below the server's base URL

OUTPUT_KEY = "share_magic"  # the metadata key of every output the share's own display makes


def own_output() -> dict[str, Any]:
    """The metadata of every output share_magic displays: a view of the notebook drops these outputs."""
    return {OUTPUT_KEY: {"output": "share"}}


# ngrok's free plan (mid-2026): what a month allows.
FREE_REQUESTS = 20_000
FREE_BYTES = 1_000_000_000
FREE_PLAN_USERS = 3  # signed-in users (the oauth action)

DASHBOARD = "https://dashboard.ngrok.com/get-started/your-authtoken"
TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_]{20,}$")  # what ngrok's authtokens look like

PROVIDERS = ("google", "github", "microsoft", "gitlab", "linkedin", "twitch")
PROVIDER_NAMES = {"google": "Google", "github": "GitHub", "microsoft": "Microsoft", "gitlab": "GitLab",
                  "linkedin": "LinkedIn", "twitch": "Twitch"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def is_email(text: str | None) -> bool:
    return bool(text) and EMAIL.match(text or "") is not None


def check_provider(provider: str) -> str:
    """``provider`` lower-cased, if it is one of ngrok's managed sign-in providers."""
    name = (provider or "").strip().lower()
    if name not in PROVIDERS:
        raise ShareError(f"{provider!r} is not a sign-in provider ngrok manages. Use one of: {', '.join(PROVIDERS)}; "
                         "e.g. %share --sign-in github.")
    return name


@dataclass(frozen=True)
class Identity:
    """A visitor as the edge verified them."""

    email: str
    name: str = ""
    provider: str = ""

    @property
    def key(self) -> str:
        return self.email.lower()

    def describe(self) -> str:
        """"Ada Lovelace <ada@example.com>, signed in with GitHub"."""
        who = f"{self.name} <{self.email}>" if self.name else self.email
        return f"{who}, signed in with {PROVIDER_NAMES.get(self.provider, self.provider)}"


def ngrok_config_path() -> str:
    """ngrok's own config file, where ``ngrok config add-authtoken`` saves the token (pyngrok's default path,
    worked out now rather than when pyngrok was imported)."""
    from pyngrok import installer

    return os.path.join(installer.get_default_ngrok_dir(), "ngrok.yml")
