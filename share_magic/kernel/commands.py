"""The ``%share`` actions about people and the record -- invite, revoke, admit, deny, log -- and a live share asked
for again, loaded only when one is asked for (:class:`~share_magic.kernel.magics.ShareMagics` parses the line and starts shares)."""
from __future__ import annotations

import argparse
from typing import Any

from ..contract import PROVIDER_NAMES
from ..errors import ShareError

def _unquoted(word: str) -> str:
    return word[1:-1] if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"" else word


def run(magics: Any, args: argparse.Namespace, lifecycle: Any) -> None:
    action = {"invite": people, "revoke": people, "admit": lobby, "deny": lobby, "log": log}
    action[args.action](magics, args, lifecycle)


def people(magics: Any, args: argparse.Namespace, lifecycle: Any) -> None:
    """%share invite NAME... (starting the share if none is live) and %share revoke NAME."""
    if not args.names:
        raise ShareError(f"Name the people to {args.action}, e.g. %share {args.action} Ada "
                         "'Grace Hopper' (quote names with spaces).")
    from .people import check_email, check_invited, check_name

    # IPython splits magic lines without removing quotes; all names are checked before anything changes. A
    # person let in from the lobby goes by the name they gave, whatever it is.
    live = lifecycle.current()
    chosen = {person.name for person in live.people.values() if person.chosen} if live is not None else set()
    names = [_unquoted(name) if args.action == "revoke" and _unquoted(name) in chosen
             else check_name(_unquoted(name)) for name in args.names]
    live = lifecycle.current()
    if magics._sign_in(args) or (live is not None and live.sign_in):
        names = [check_email(name) for name in names]
    if args.action == "revoke":
        share = lifecycle.current()
        if share is None:
            raise ShareError("Nothing is shared from this kernel, so nobody can be revoked. Start a share with "
                             "%share.")
        for name in names:
            check_invited(share, name)
        before = (share.link, share.view_link)
        for name in names:
            share.revoke(name)
            print(f"{name} is cut off: their link no longer works and their connections are closed."
                  + (" Signed in as this address, they are refused on every link of this share."
                     if share.sign_in and "@" in name else ""))
        changed = [label for label, old, new in (("link", before[0], share.link),
                                                 ("view link", before[1], share.view_link)) if old != new]
        if changed:
            print(f"The share's own {' and '.join(changed)} changed too (an editor could have read them; people "
                  "already in stay in): the widget shows the new ones, and %share links prints them.")
        return
    started = lifecycle.current() is None
    share = magics._start(args, lifecycle)
    for name in names:
        share.invite(name)
        print(f"{name} is invited with a link of their own: copy it from their row in the share's widget "
              "(%share links prints it).")
    if started:
        from .widget import ShareView

        ShareView(share).show()


def lobby(magics: Any, args: argparse.Namespace, lifecycle: Any) -> None:
    """%share admit NAME... and %share deny NAME...: the owner's decision on people waiting in the lobby."""
    if not args.names:
        raise ShareError(f"Name who to {args.action}, e.g. %share {args.action} Grace ('%share status' lists who "
                         "waits; quote names with spaces).")
    share = lifecycle.current()
    if share is None:
        raise ShareError("Nothing is shared from this kernel, so nobody waits to be let in. Start a share with "
                         "%share --approve.")
    for name in map(_unquoted, args.names):
        if args.action == "admit":
            share.admit(name)
            print(f"{name} is let in: their waiting page goes on into Jupyter. %share revoke {name} cuts them "
                  "off again.")
        else:
            share.deny(name)
            print(f"{name} is turned away: the link reaches nothing from their browser any more.")


def log(magics: Any, args: argparse.Namespace, lifecycle: Any) -> None:
    """%share log: the trail of this server's latest share, live or ended, checked against the helper's copy
    while the share lives; shown as the share's own output, which a view leaves out."""
    from IPython.display import display

    from .. import trail
    from ..contract import own_output

    share = lifecycle.latest()
    if share is not None:
        server_url = share.server.url
    else:
        from .discovery import find_server, kernel_id

        server_url = find_server(kernel_id()).url
    try:
        in_file = trail.read_lines(server_url)
    except OSError as e:
        raise ShareError(f"The trail of this server cannot be read ({e.strerror or e}): its folder is "
                         "share_magic/trails in Jupyter's data folder (jupyter --data-dir).") from None
    kept = trail_kept(share) if share is not None and share.server.url == server_url else None
    entries, said = trail.checked(in_file, kept)
    if not entries:
        raise ShareError("No share of this Jupyter server has a trail yet: %share starts one, and %share log then "
                         "prints what visitors do through it.")
    text = trail.format_entries(entries)
    display({"text/plain": f"{said}\n{text}" if said else text}, raw=True, metadata=own_output())


def trail_kept(share: Any) -> list[str] | None:
    """The helper's copy of the trail, while the share lives (None once it has ended)."""
    if not share.live:
        return None
    try:
        return share._command("trail").get("lines")
    except ShareError:
        return None


def shown_again(share: Any, provider: str | None, view: bool, approve: bool) -> Any:
    """A live share asked for again: with the link asked for added, and the lobby if asked; never another sign-in."""
    if provider and share.sign_in != provider:
        raise ShareError(_sign_in_mismatch(share, provider))
    share.enable("view" if view else "edit")
    if approve:
        share.require_approval()
    return share


def _sign_in_mismatch(share: Any, provider: str) -> str:
    now = (f"with sign-in through {PROVIDER_NAMES.get(share.sign_in, share.sign_in)}" if share.sign_in
           else "without sign-in")
    return (f"This server is already shared {now}, and a live share's sign-in cannot change (ngrok fixes an "
            f"endpoint's policy when it starts). Fix: %share stop, then %share --sign-in {provider} (links made so far "
            "stop working).")
