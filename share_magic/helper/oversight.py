"""The helper's part in the lobby and the trail (a part of :class:`~share_magic.helper.owner.Helper`): the owner's
commands about people waiting, what kernels are told of them and of each person's last action, and the trail's
start."""
from __future__ import annotations

from typing import Any

from .access import Access, Session
from .lobby import CHOSEN
from .recorder import OWNER, Recorder


class LobbyAndTrail:
    """Uses the Helper's ``access``, ``gateway``, ``server``, ``people()`` and ``report_people()``."""

    access: Access
    recorder: Recorder | None
    actions_version: int

    def note(self, who: str, what: str) -> None:
        """A line of the trail, when there is one."""
        if self.recorder is not None:
            self.recorder.note(who, what)

    def start_trail(self) -> None:
        """The trail of this share, written as it goes (none where the trail's folder cannot be had): the gate tells
        it of every request it admits, the relay taps every admitted websocket for it."""
        try:
            self.recorder = Recorder(self.server)  # type: ignore[attr-defined]
        except OSError:
            return
        self.access.observer = self.recorder.request
        self.gateway.tap = self.recorder.tap  # type: ignore[attr-defined]
        self.note(OWNER, "started the share" + (
            " (visitors with the share's link wait in the lobby)" if self.access.lobby else ""))

    def trail_record(self) -> dict[str, Any]:
        """The helper's copy of the trail (what it wrote, whatever became of the file): ``%share log`` checks the
        file against it."""
        return {"lines": self.recorder.written() if self.recorder is not None else None}

    def follow_up(self) -> None:
        """What the watch does every turn: names whose page closed leave the lobby's list; each person's last
        action reaches the kernels."""
        if self.access.lobby is not None:
            self.access.lobby.sweep()  # reports the people itself when the list changes
        if self.recorder is not None and self.recorder.version != self.actions_version:
            self.actions_version = self.recorder.version
            self.report_people()  # type: ignore[attr-defined]

    def lobby_command(self, cmd: str, name: str | None) -> dict[str, Any]:
        """``approve`` (the lobby from now on), ``admit`` / ``deny`` someone waiting; answered with the people."""
        if cmd == "approve":
            self.access.approve(self.report_people)  # type: ignore[attr-defined]
            self.note(OWNER, "made visitors with the share's link wait in the lobby")
            return self.report_people()  # type: ignore[attr-defined]
        lobby = self.access.lobby
        try:
            if lobby is None or not name:
                raise KeyError(name)
            waiter = lobby.take(name)
            session = self.access.decide(name, admit=cmd == "admit")
        except KeyError:
            return {"found": False, **self.people()}  # type: ignore[attr-defined]
        who = f"{waiter.label} ({CHOSEN})" if waiter.chosen else str(waiter.label)
        self.note(OWNER, f"let {who} in from the lobby" if session else f"turned {who} away")
        return {"found": True, **self.report_people()}  # type: ignore[attr-defined]

    def lobby_and_trail(self, connected: dict[Session, float]) -> dict[str, Any]:
        """What the people's report says of the lobby and the trail (and what the trail learns from it: who left,
        who came back, who asked to join)."""
        lobby = self.access.lobby
        waiting = lobby.waiting() if lobby is not None else []
        if self.recorder is not None:
            self.recorder.connected(set(connected))
            self.recorder.waiting([f"{waiter.label} ({CHOSEN})" if waiter.chosen else str(waiter.label)
                                   for waiter in waiting])
        return {"approve": lobby is not None, "waiting": [waiter.describe() for waiter in waiting],
                "actions": self.recorder.last_actions() if self.recorder else {}}
