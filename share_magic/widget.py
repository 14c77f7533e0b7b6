"""The ipywidgets view of a share: the link, a Stop button, and a status line that stays current."""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from .sharing import Share


class ShareView(widgets.VBox):
    """Shows one :class:`Share`. Front-ends without widgets get the same facts as text/plain and text/html."""

    def __init__(self, share: Share, **kwargs: Any) -> None:
        self.share = share
        self.link = widgets.HTML()
        self.status = widgets.HTML()
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop",
                                          tooltip="Stop sharing: the link stops working at once")
        self.stop_button.on_click(lambda _: share.stop())
        super().__init__([self.link, widgets.HBox([self.stop_button, self.status])], **kwargs)
        share.observe(lambda _: self.refresh())
        self.refresh()

    def refresh(self) -> None:
        share = self.share
        link = html.escape(share.link or "")
        self.link.value = f'<a href="{link}" target="_blank" rel="noopener">{link}</a>' if share.live else (
            f"<s>{link}</s>" if link else "")
        self.status.value = html.escape(share.describe().splitlines()[0])
        self.stop_button.disabled = not share.live

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        text = self.share.describe()
        bundle["text/plain"] = text
        bundle["text/html"] = "<pre>" + html.escape(text) + "</pre>"
        return bundle
