"""Whether any other Weft server shares this database: the ones that would need a notice.

Every append and every presence change is announced to the other servers with NOTIFY
(collab.sync.replication). On a single server nobody else hears it, yet each notice still
cost PostgreSQL a wake-up of the listening connection and this server a message to read
and drop, once per group-commit round, and a statement of its own per batch of cursor
moves. So each server says "here" on a channel of its own when its LISTEN connection is up
and every ``interval`` seconds after, and "bye" when it stops; a server announces appends
and presence only while it may not be alone:

- until it has listened for ``3 * interval`` (long enough to hear everyone's "here"),
- while its LISTEN connection is down (it cannot know),
- while another server was heard from in the last ``3 * interval`` and has not said "bye".

A server that starts while another one is writing a notebook it then loads may miss the
appends of the rounds that were already in flight when its "here" arrived (those were sent
without a notice): its poll of the log's heads (``WEFT_FEED_POLL_SECONDS``, the same
interval) fills them in, as it fills any missed notice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

NODES_CHANNEL = "weft_nodes"


class OtherNodes:
    """What this server has heard of the others (driven by the document feed).

    >>> nodes = OtherNodes(interval_s=2.0)
    >>> nodes.may_exist  # not listening yet: it cannot know
    True
    """

    __slots__ = ("_clock", "_expiry", "_heard", "_listening_since")

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._expiry = 3 * interval_s
        self._clock = clock
        self._heard: dict[str, float] = {}  # node -> when last heard
        self._listening_since: float | None = None

    def listening(self) -> None:
        """Our LISTEN connection is up (and our "here" sent): the others answer within
        an interval."""
        self._listening_since = self._clock()

    def deaf(self) -> None:
        """Our LISTEN connection is down: we hear no one, so anyone may be there."""
        self._listening_since = None

    def heard(self, node: str) -> None:
        now = self._clock()
        # Forget the ones that went quiet (crashed: no "bye"), so the map stays small.
        for other, when in list(self._heard.items()):
            if now - when >= self._expiry:
                del self._heard[other]
        self._heard[node] = now

    def left(self, node: str) -> None:
        self._heard.pop(node, None)

    @property
    def heard_from(self) -> int:
        """How many other servers were heard from within 3 intervals (for /metrics)."""
        now = self._clock()
        return sum(1 for when in self._heard.values() if now - when < self._expiry)

    @property
    def may_exist(self) -> bool:
        """Whether another server may have a notebook of ours loaded (send notices)."""
        since = self._listening_since
        if since is None or self._clock() - since < self._expiry:
            return True
        return self.heard_from > 0
