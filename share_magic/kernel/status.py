"""How a share reads in words: ``%share status``, the widget's lines and the fallbacks of front-ends without
widgets (kernel side). Never a link itself: what a notebook shows ends up in its saved file."""
from __future__ import annotations

import datetime
from urllib.parse import urlsplit

from ..contract import FREE_BYTES, FREE_PLAN_USERS, FREE_REQUESTS, PROVIDER_NAMES

LINKS_KEPT_OUT = ("The links show only in the live widget, never in the saved notebook; %share links prints "
                  "them.")


class Described:
    """The words of :class:`~share_magic.kernel.share.Share`, on the state it keeps."""

    def sign_in_summary(self) -> str | None:
        """That visitors sign in, with whom, and what it costs on ngrok's free plan; None without sign-in."""
        if not self.sign_in:
            return None
        return (f"Visitors sign in with {PROVIDER_NAMES.get(self.sign_in, self.sign_in)} before anything reaches "
                f"this machine; ngrok's free plan allows {FREE_PLAN_USERS} signed-in users a month.")

    def cost_summary(self) -> str:
        """What visitors have cost the owner's ngrok plan, in ngrok's units, with the free plan's month for scale."""
        requests, sent = self.cost
        return (f"Cost to your ngrok plan so far: {requests:,} requests, {size(sent)} sent (a free plan has "
                f"{FREE_REQUESTS:,} requests and {FREE_BYTES / 1e9:g} GB a month).")

    def live_summary(self) -> tuple[str, str]:
        """Since (and until) when it is live, and who: how many visitors are connected (and the notebook that
        started it, when another one did)."""
        who = f"{self.visitors} visitor{'' if self.visitors == 1 else 's'} connected"
        if self.attached:
            who += f", started from {self.owner_notebook}"
        if self.full:
            who += f"; FULL, new readers are turned away: {self.full}"
        when = f"live since {clock(self.started_at)}"
        if self.expires_at is not None:
            when += f", ends at {clock(self.expires_at)}"
        return when, who

    def describe(self) -> str:
        """The state in plain text, as ``%share status`` prints it."""
        if self.live:
            lines = [f"Sharing this Jupyter server ({', '.join(self.live_summary())}):",
                     *(f"  {line}" for line in self.link_summary())]
            if self.sign_in_summary():
                lines.append(f"  {self.sign_in_summary()}")
            for visitor in self.signed_in:
                lines.append(f"  Connected: {visitor.describe()}")
            if self.approve or self.actions:
                from .people import lobby_summary

                lines += lobby_summary(self)
            if self.refused:
                lines.append(f"  Refused on every link (revoked): {', '.join(self.refused)}")
            if self.naming is False:
                lines.append("  This Jupyter server cannot name visitors (that needs jupyter_server 2.17 or later, "
                             "with name among IdentityProvider.updatable_fields): they show as Anonymous.")
            lines.append(LINKS_KEPT_OUT)
            if not self.link and not self.people:
                return "\n".join([*lines, self.view_summary() + ", and reach nothing else.",
                                  self.cost_summary(), "Stop sharing with: %share stop"])
            if not self.authenticated:
                lines.append("WARNING: this server has no authentication: anyone who finds this link can run "
                             "code on this machine.")
            elif not (self.include_token and self.server.token):
                lines.append("The link does not log visitors in: they also need this server's token or password.")
            lines += ["Anyone with this link has full control of this server (files, terminals, kernels) until the "
                      "share ends; then the link stops working for good.",
                      self.cost_summary(), "Stop sharing with: %share stop"]
            return "\n".join(lines)
        if self.status == "starting":
            return "Starting a share of this Jupyter server" + (f": {self.progress}" if self.progress else "...")
        if self.status == "expired":
            return (f"Share expired at {clock(self.ended_at)}: the link no longer works. Run %share for a new "
                    "one.")
        if self.status == "lost":
            return (f"Share lost at {clock(self.ended_at)}: {self.reason}. The link no longer works; "
                    "run %share for a new one.")
        if self.status == "stopped":  # the host only: a dead link must not look clickable
            host = urlsplit(self.public_url or "").netloc or "the link"
            return f"Share stopped at {clock(self.ended_at)}: {host} no longer reaches this server."
        return f"Share failed: {self.reason}"

    def link_summary(self) -> list[str]:
        """Which links the share has and who is invited, in words: never a link (a key) itself, since what a
        notebook shows ends up in its saved file."""
        lines = ["Edit link: this notebook in Jupyter, for anyone who has it"] if self.link else []
        if self.view_link:
            lines.append(f"View-only link: {self._view_shows()}, nothing else; {self.view_summary().lower()}")
        return lines + [f"{person.label} ({person.state})" + (f"; last: {person.last_action}" if person.last_action
                                                             else "") for person in self.people.values()]

    def view_summary(self) -> str:
        return "Readers see the notebook as last saved" + (
            " and each cell as you run it" if self.live_view else " (save-only: not each cell as it runs)")

    def links(self) -> list[tuple[str, str]]:
        """Every live link of the share, labelled: what ``%share links`` prints."""
        labelled = [("Anyone with this link", self.link), (f"View only ({self._view_shows()}, nothing else)",
                                                           self.view_link),
                    *((f"{person.name} (personal link)", person.link) for person in self.people.values())]
        return [(label, link) for label, link in labelled if link]

    def _view_shows(self) -> str:
        return "this notebook" if self.share_notebook == self.notebook_path else str(self.share_notebook)


def size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def clock(moment: datetime.datetime | None) -> str:
    return moment.strftime("%H:%M:%S") if moment else "?"
