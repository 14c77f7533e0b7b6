"""``%share``: the IPython face of share_magic, a thin layer over :mod:`share_magic.sharing`."""
from __future__ import annotations

import argparse
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from traitlets import Bool, Float, Unicode

from ..errors import ShareError, TunnelError

USAGE = ("%share [stop | status | links | log | invite NAME... | revoke NAME | admit NAME | deny NAME] [--view] "
         "[--saved-only] [--approve] [--for DURATION] [--sign-in PROVIDER] [--port N | --url URL [--token T]] "
         "[--no-token] [--insecure]")
NAMED = ("invite", "revoke", "admit", "deny")


SAVED_WITH_THE_NOTEBOOK = ("This output is saved with the notebook, keys included: clear it (Edit > Clear Cell "
                           "Output) before you save a notebook you share or send.")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number; use e.g. --port 8888") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535); use e.g. --port 8888")
    return port


@magics_class
class ShareMagics(Magics):
    """``%share``; defaults can be set with ``%config ShareMagics.<name> = ...`` or in an IPython config file."""

    include_token = Bool(True, help="Log visitors who come with the link in with the server's token (they never "
                                    "see it). --no-token overrides it for one share.").tag(config=True)
    economy = Bool(True, help="Spare the owner's ngrok plan: compress what visitors get and carry their pages' API "
                              "calls over one websocket. Off: plain HTTP, as Jupyter serves it.").tag(config=True)
    duration = Unicode("", help="How long a share lasts unless stopped, e.g. '2h' (also '90s', '30m', '1h30m', "
                                "'1d'); empty: until stopped or its kernel is shut down. --for overrides it.").tag(
                                    config=True)
    sign_in = Unicode("", help="Make every visitor sign in at ngrok's edge with this provider (google, github, "
                               "microsoft, gitlab, linkedin, twitch) before anything reaches this machine; empty: "
                               "no sign-in. --sign-in overrides it.").tag(config=True)
    approve = Bool(False, help="Make whoever opens the share's own edit link wait until you let them in (%share "
                               "admit NAME, or the widget's Admit). Personal and view links never wait. --approve "
                               "turns it on for one share.").tag(config=True)
    live_view = Bool(True, help="A view link shows every cell as it runs in this kernel (its code and outputs as they "
                                "stream), not only the notebook as last saved. --saved-only turns it off for one "
                                "share.").tag(config=True)
    startup_timeout = Float(20.0, help="Seconds to wait for the ngrok agent to start before giving up (a download "
                                       "of the agent comes before, with a bound of its own).").tag(config=True)
    download_stall = Float(30.0, help="Seconds without a byte before a download of the ngrok agent (on first use, "
                                      "or replacing pyngrok's own when too old) is given up.").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        if shell is not None:
            shell.configurables.append(self)  # so that %config reaches these settings

    @magic_arguments()
    @argument("action", nargs="?", default="start",
              choices=["start", "stop", "status", "links", "log", "invite", "revoke", "admit", "deny"],
              help="start (the default) shares this kernel's Jupyter server; stop ends the share; status prints it "
                   "and who is in; links prints every live link, for front-ends without widgets (that output is "
                   "saved with the notebook: clear it before you share the file); invite gives each named person a "
                   "link of their own (starting the share if needed); revoke cuts one person off at once; admit "
                   "and deny let someone waiting in the lobby in, or turn them away (--approve); log prints what "
                   "visitors did through this server's latest share, oldest first.")
    @argument("names", nargs="*", metavar="NAME",
              help="with invite, revoke, admit and deny: people's names (1-40 letters, digits, spaces and . - _ @; "
                   "quote names with spaces).")
    @argument("--view", action="store_true",
              help="A view-only link of this notebook: readers see it as last saved and every cell as you run "
                   "it, and reach nothing else (no code, no files, no other notebook).")
    @argument("--saved-only", dest="saved_only", action="store_true",
              help="With --view: readers see only the notebook as last saved, not each cell as it runs "
                   "(ShareMagics.live_view = False does so for every share).")
    @argument("--approve", action="store_true",
              help="Whoever opens the share's own edit link waits on a page of the share, giving a name, until you "
                   "let them in (admit NAME, or Admit in the widget) or turn them away (deny NAME). "
                   "Personal and view links never wait.")
    @argument("--for", dest="duration", metavar="DURATION",
              help="End the share by itself after this long: 90s, 30m, 2h, 1h30m, 1d (default: "
                   "ShareMagics.duration, or until stopped or its kernel is shut down).")
    @argument("--sign-in", dest="sign_in", metavar="PROVIDER",
              help="Visitors sign in with this provider at ngrok's edge first (google, github, microsoft, gitlab, "
                   "linkedin, twitch): a forwarded link is useless to anyone else, an invitation to an e-mail "
                   "address admits only that account, and every visitor is named in Jupyter. ngrok's free plan "
                   "allows 3 signed-in users a month.")
    @argument("--port", type=_port, help="Share the Jupyter server on this local port instead of this kernel's. "
                                         "A share of another server ends with this kernel process (a restart "
                                         "ends it).")
    @argument("--url", help="Share the Jupyter server at this URL (e.g. http://localhost:8888/) instead.")
    @argument("--token", help="That server's token (default: JUPYTER_TOKEN, or the server's runtime file).")
    @argument("--no-token", action="store_true",
              help="Do not log visitors in: besides the link, they need the server's token or password.")
    @argument("--authtoken", help="ngrok authtoken (default: NGROK_AUTHTOKEN, then ngrok's own config). "
                                  "It is never printed; prefer `ngrok config add-authtoken` so it stays out of "
                                  "the notebook.")
    @argument("--insecure", action="store_true",
              help="Share a server that has no authentication at all. Anyone with the link can run code here.")
    @line_magic
    def share(self, line: str = "") -> None:
        """Share this notebook's Jupyter server through an ngrok tunnel.

        The link gives whoever opens it full control of the server (files, terminals, kernels) until the share
        ends. The link carries a key for this share only: once the share ends it never opens anything again.

        A share survives interrupts and kernel restarts (Restart Kernel in the menu, or Jupyter restarting a crashed
        kernel), and any notebook of the same server runs it: ``%share`` there shows it, and invite, revoke, stop
        and status work from there. It ends, within seconds, at the first of:

        - ``%share stop`` or the Stop button, in any notebook that shows it;
        - ``--for`` running out;
        - its kernel shut down (or Jupyter giving up restarting it);
        - the Jupyter server stopping, or the ngrok agent dying.

        A ``--port``/``--url`` share of another server, or a share of a server without a token, ends instead with
        the kernel process that started it (a restart ends it): that server cannot say whether this kernel lives.
        """
        try:
            args = parse_argstring(self.share, line)
        except UsageError as e:
            raise UsageError(f"%share {line.strip()}: {e}. Usage: {USAGE}; %share? explains every option.") from None
        if args.names and args.action not in NAMED:
            raise UsageError(f"%share {line.strip()}: unrecognized arguments: {' '.join(args.names)} (names go with "
                             f"invite, revoke, admit and deny only). Usage: {USAGE}; %share? explains every option.")
        from . import share as lifecycle

        try:
            if args.action in (*NAMED, "log"):
                from . import commands

                commands.run(self, args, lifecycle)
            elif args.action == "stop":
                share = lifecycle.current()
                if share is None:
                    raise ShareError("Nothing is shared from this kernel, so there is nothing to stop. "
                                     "Start a share with %share.")
                share.stop()
                print(share.describe())
            elif args.action == "links":
                self._links(lifecycle)
            elif args.action == "status":
                share = lifecycle.latest()
                print(share.describe() if share else "Nothing is shared from this kernel. Start with %share.")
            else:
                from .widget import ShareView, StartProgress

                progress = StartProgress()
                ShareView(self._start(args, lifecycle, progress)).show(progress.handle)
        except ShareError as e:
            raise UsageError(str(e)) from None

    def _start(self, args: argparse.Namespace, lifecycle: Any, progress: Any = None) -> Any:
        """This kernel's share, started with the line's options unless one is live; ``progress`` (a
        :class:`~share_magic.kernel.widget.StartProgress`) shows how fetching the ngrok agent goes, if it must."""
        options = dict(port=args.port, url=args.url, token=args.token, authtoken=args.authtoken,
                       include_token=self.include_token and not args.no_token, insecure=args.insecure,
                       timeout=self.startup_timeout, duration=args.duration or self.duration, view=args.view,
                       economy=self.economy, sign_in=self._sign_in(args), approve=self.approve or args.approve,
                       download_stall=self.download_stall, starting=progress.follow if progress else None,
                       live_view=self.live_view and not args.saved_only)
        try:
            return lifecycle.share(**options)
        except ShareError as e:
            if progress is not None:
                progress.clear()
            if not isinstance(e, TunnelError) or e.code != "ERR_NGROK_4018":
                raise
            from .authtoken import AuthtokenForm

            options["starting"] = None
            AuthtokenForm(str(e), retry=lambda: lifecycle.share(**options)).show()
            raise ShareError(f"{e} Or paste it in the form above.") from None

    def _sign_in(self, args: argparse.Namespace) -> str | None:
        """The provider asked for (checked), if any: --sign-in, else ShareMagics.sign_in."""
        from ..contract import check_provider

        provider = args.sign_in or self.sign_in
        return check_provider(provider) if provider else None

    def _links(self, lifecycle: Any) -> None:
        """%share links: every live link in plain text, for front-ends that cannot show the widget."""
        share = lifecycle.current()
        if share is None:
            raise ShareError("Nothing is shared from this kernel, so there are no links. Start a share with %share.")
        from IPython.display import display

        from ..contract import own_output

        lines = [f"{label}: {link}" for label, link in share.links()]
        lines.append(SAVED_WITH_THE_NOTEBOOK)
        display({"text/plain": "\n".join(lines)}, raw=True, metadata=own_output())
