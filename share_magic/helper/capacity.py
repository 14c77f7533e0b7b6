"""How many connections the gateway holds, and for whom, so that no one visitor can deny the share to others.

Every connection from the agent counts against :attr:`Limits.max_connections` (sized by the helper from its
open-file limit). The agent keeps its connections alive and sends any visitor's next request on any of them, so a
connection is not a visitor: what a visitor holds is what is in flight for them. A connection is nobody's until a
request head has arrived whole; then, until that request is answered (for a websocket, a stream or a view: until it
ends), it is its *holder's*: an admitted session's (an editor's, or a view reader's), or, for a request the gate
answers itself, its source's (the client address the share's edge vouched for, see :mod:`.identity`; one shared
source for whatever no edge vouched for). Between requests it is nobody's again.

- Each holder may hold a bounded number of requests in flight (websockets and streams included); past that, that
  holder alone gets a ``429``, answered from the head at once.
- View readers may fill the gateway only up to :meth:`Capacity.readers_cap`: the rest is editors' (the share's edit
  link and personal links), who never compete with the hall for room. Past it, a new reader's request gets a ``503``
  and the share reports that it is full.
- Connections whose head has not arrived whole are few and short-lived (:attr:`Limits.head_timeout` for the whole
  head); past :attr:`Limits.max_pending_heads` of them, the oldest is cut to make room, which only ever hits a head
  that trickles (a real one arrives in one read).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Limits:
    """How long a visitor may take, and how many connections the gateway holds."""

    head_timeout: float = 30.0  # for a whole request head, across reads (and for a kept-alive connection to idle)
    body_timeout: float = 60.0  # a request body must move at least min_body_rate bytes in every such window
    min_body_rate: float = 64.0  # bytes a second, averaged over body_timeout
    linger: float = 2.0  # after the gateway's own last answer, for the visitor to stop sending
    max_connections: int = 8192  # beyond this, a new connection gets a 503 at once
    max_pending_heads: int = 512  # connections whose first head is still arriving; past it, the oldest is cut
    per_reader: int = 16  # requests in flight one view session holds at most (one page needs 1 to 3)
    per_editor: int = 64  # requests in flight one editing session holds at most (JupyterLab needs about 11)
    per_source: int = 256  # requests answered by the gate itself, per source, at once
    backlog: int = 4096  # the listening socket's queue, for a burst of arrivals


class Capacity:
    """The gateway's count of connections, by holder. Used on the event loop only."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self.readers = 0  # connections held by view sessions and by the gate's own answers
        self.pending: OrderedDict[Any, None] = OrderedDict()  # connections with no head yet, oldest first
        self.held: dict[Hashable, int] = {}
        self.full: str | None = None  # why new readers are turned away, while they are

    def readers_cap(self) -> int:
        reserve = max(self.limits.max_pending_heads + 64, self.limits.max_connections // 8)
        return max(self.limits.max_connections - reserve, self.limits.max_connections // 2)

    def admit_connection(self, connection: Any) -> tuple[bool, Any]:
        """A new connection: whether it may be held, and a pending one to cut for it (or None)."""
        if self.total >= self.limits.max_connections:
            return False, None
        self.total += 1
        victim = None
        if len(self.pending) >= self.limits.max_pending_heads:
            victim, _ = self.pending.popitem(last=False)
        self.pending[connection] = None
        return True, victim

    def claim(self, connection: Any, holder: Hashable, reader: bool, limit: int) -> int | None:
        """Give ``connection`` to ``holder`` for the request it carries; None if it may be, else the status to refuse
        it with."""
        self.pending.pop(connection, None)
        current = getattr(connection, "holder", None)
        if current == holder:
            return None
        if self.held.get(holder, 0) >= limit:
            return 429
        if reader and (current is None or not connection.reader) and self.readers >= self.readers_cap():
            self.full = "as many view readers as it holds are in"
            return 503
        self.release_holder(connection)
        self.held[holder] = self.held.get(holder, 0) + 1
        connection.holder, connection.reader = holder, reader
        self.readers += reader
        return None

    def release_holder(self, connection: Any) -> None:
        """The connection's request is answered (or it ended): its holder holds one less."""
        holder = getattr(connection, "holder", None)
        if holder is None:
            return
        left = self.held.get(holder, 1) - 1
        if left:
            self.held[holder] = left
        else:
            self.held.pop(holder, None)
        self.readers -= connection.reader
        connection.holder, connection.reader = None, False
        if self.full and self.readers < self.readers_cap() * 0.9:
            self.full = None

    def release(self, connection: Any) -> None:
        """A connection ended."""
        self.pending.pop(connection, None)
        self.release_holder(connection)
        self.total -= 1


def limits_for(settings: dict[str, Any]) -> Limits:
    """The gateway's limits: the settings' (tests make time limits short), and as many connections as the open files
    the process may have allow -- its soft limit raised to the hard one first (macOS starts at 256). A visitor
    connection takes up to two (the visitor's, and one to the server), and some are kept for everything else."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                soft = wanted
            except (OSError, ValueError):
                pass
        files = soft if soft != resource.RLIM_INFINITY else 65536
    except ImportError:  # Windows: no such limit to raise
        files = 8192
    fitting = max(64, (files - 256) // 2)
    return Limits(**{"max_connections": min(Limits.max_connections * 2, fitting), **settings})
