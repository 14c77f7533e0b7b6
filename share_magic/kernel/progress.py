"""How fetching the ngrok agent goes, while a share starts (a first download, an update): in words, and as an output
the share's widget then replaces. Loaded at the first report of a fetch: a start that fetches nothing needs none."""
from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from IPython.display import DisplayHandle, display

from ..contract import own_output

if TYPE_CHECKING:
    from .share import Share


def described(event: dict[str, Any]) -> tuple[str, float | None]:
    """A progress report of the helper's, in words, and the fraction done if the size is known."""
    what, done, total = event["what"], event["done"], event["total"]
    amount = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * done // total}%)" if total else f"{done / 1e6:.1f} MB"
    return f"{what}: {amount}" + (", done" if event.get("finished") else ""), done / total if total else None


def show(share: Share, handle: DisplayHandle | None) -> DisplayHandle | None:
    """The progress shown in ``handle``'s output, or in a new one (returned)."""
    bundle = {"text/plain": share.describe(), "text/html": progress_html(share)}
    if handle is None:
        return display(bundle, raw=True, display_id=True, metadata=own_output())
    handle.update(bundle, raw=True, metadata=own_output())
    return handle


def progress_html(share: Share) -> str:
    fraction = share.progress_fraction
    bar = (f'<progress class="share-magic-progress" max="1000" value="{int(fraction * 1000)}"></progress> '
           if fraction is not None else "")
    return (f'<div class="share-magic">{bar}<span class="share-magic-status">{html.escape(share.describe())}'
            "</span></div>")
