"""A room's ordering state: which updates it accepted, which seqs they got in the log, and
how much of the log its document holds.

One ``RoomOrder`` per room (``collab.sync.room.Room``), changed only by the room through
the methods below; everyone else reads it through the room's read-only properties
(``synced_seq``, ``durable_seq``, ``tail_length``, ``is_durable``).

Two counts and three seqs, with these invariants:

- ``accepted >= durable_count``: updates the room accepted (a client's or a server-side
  edit), and how many of them are in PostgreSQL. ``all_durable`` when they are equal; a
  frame deferred at ``accepted == n`` may go once ``durable_count >= n``.
- ``synced <= durable <= last``: ``last`` is the highest seq given to an append (made or
  about to be), ``durable`` the highest known to be in the log, ``synced`` the highest
  such that **every logged update with seq <= synced is in the document**. Other servers
  append to the same log, so the seqs this room appended above ``synced`` wait in
  ``own`` until the gap below them is filled (by ``adopt``); each of them is above
  ``synced``.
- ``in_flight``: seqs given to appends not yet known to be persisted, with their update,
  to tell this room's row from another server's row that took the same seq first.
- ``tail_length``: rows in the log after the snapshot (what compaction folds).
"""

from __future__ import annotations

import enum


class Logged(enum.Enum):
    """What a logged row (``RoomOrder.classify``) is to the room's document."""

    HAVE = "have"  # at or below synced: already in the document
    GAP = "gap"  # a row before it is missing (an append in flight, a row not fetched)
    OURS = "ours"  # this room's own append: in the document, and broadcast already
    THEIRS = "theirs"  # another server's: to be applied and broadcast


class RoomOrder:
    """The ordering state of one room (see the module's docstring for the invariants).

    >>> order = RoomOrder(last_seq=4)
    >>> order.accept()
    1
    >>> order.assign(b"u")
    5
    >>> order.persisted([5])
    >>> order.all_durable, order.synced
    (True, 5)
    """

    __slots__ = (
        "_accepted",
        "_durable",
        "_durable_count",
        "_in_flight",
        "_last",
        "_own",
        "_synced",
        "_tail",
    )

    def __init__(self, last_seq: int, tail_length: int = 0) -> None:
        self._last = last_seq
        self._durable = last_seq
        self._synced = last_seq
        self._own: set[int] = set()
        self._in_flight: dict[int, bytes] = {}
        self._accepted = 0
        self._durable_count = 0
        self._tail = tail_length

    # -- reading ------------------------------------------------------------------------

    @property
    def last(self) -> int:
        """The highest seq given to an append (made or about to be)."""
        return self._last

    @property
    def durable(self) -> int:
        """The highest seq known to be in PostgreSQL."""
        return self._durable

    @property
    def synced(self) -> int:
        """Every logged update with a seq up to this one is in the document."""
        return self._synced

    @property
    def waiting(self) -> frozenset[int]:
        """This room's appends, persisted, above ``synced``: waiting for the rows below
        them (another server's) to be adopted."""
        return frozenset(self._own)

    @property
    def tail_length(self) -> int:
        """Rows in the log after the snapshot, as far as this room knows."""
        return self._tail

    @property
    def accepted(self) -> int:
        """How many updates the room has accepted (the ticket of the latest)."""
        return self._accepted

    @property
    def all_durable(self) -> bool:
        """Every update accepted so far is in PostgreSQL."""
        return self._durable_count == self._accepted

    def durable_through(self, ticket: int) -> bool:
        """The first ``ticket`` accepted updates are all in PostgreSQL."""
        return ticket <= self._durable_count

    # -- this room's updates ------------------------------------------------------------

    def accept(self) -> int:
        """An update was accepted (applied to the document, waiting for the writer);
        returns its ticket (see ``durable_through``)."""
        self._accepted += 1
        return self._accepted

    def assign(self, update: bytes) -> int:
        """The next seq, for an accepted update the writer is about to append."""
        self._last += 1
        # The notice of our own append can reach replication before the writer reports it
        # persisted: it must not be applied and broadcast again.
        self._in_flight[self._last] = update
        return self._last

    def reassign(self, entries: list[tuple[int, bytes]], after: int) -> list[int]:
        """Another writer took the seqs of ``entries`` (seq, update): the seqs after
        ``after`` instead, in the same order."""
        for seq, _ in entries:
            self._in_flight.pop(seq, None)
        seqs = list(range(after + 1, after + 1 + len(entries)))
        self._in_flight.update(zip(seqs, (update for _, update in entries), strict=True))
        if seqs:
            self._last = max(self._last, seqs[-1])
        return seqs

    def persisted(self, seqs: list[int]) -> None:
        """The appends with these seqs (in order) are in PostgreSQL."""
        if not seqs:
            return
        self._durable_count += len(seqs)
        self._durable = max(self._durable, seqs[-1])
        self._tail += len(seqs)
        for seq in seqs:
            self._in_flight.pop(seq, None)
            if seq > self._synced:
                self._own.add(seq)
        self._advance()

    def abandon(self) -> None:
        """The notebook is gone: what was accepted and not persisted never will be, and
        nobody waits for it any more."""
        self._durable_count = self._accepted

    # -- the log as other servers wrote it ----------------------------------------------

    def classify(self, seq: int, update: bytes) -> Logged:
        """What the logged row ``seq`` is to the document (rows come in seq order). A row
        that is ``OURS`` or ``THEIRS`` must then be ``adopt``ed (``THEIRS`` once it is
        applied)."""
        self._advance()
        if seq <= self._synced:
            return Logged.HAVE
        if seq != self._synced + 1:
            return Logged.GAP
        if seq in self._own or self._in_flight.get(seq) == update:
            return Logged.OURS
        return Logged.THEIRS

    def adopt(self, seq: int, kind: Logged) -> None:
        """The row ``seq`` (the one after ``synced``, as ``classify`` said) is in the
        document now."""
        assert seq == self._synced + 1, (seq, self._synced)
        assert kind in (Logged.OURS, Logged.THEIRS), kind
        if kind is Logged.OURS:
            self._own.discard(seq)
        else:
            self._tail += 1
        self._synced = seq
        self._last = max(self._last, seq)
        self._durable = max(self._durable, seq)
        self._advance()

    def takes_snapshot(self, seq: int) -> bool:
        """A snapshot of the log up to ``seq`` adds to the document."""
        return seq > self._synced

    def adopt_snapshot(self, seq: int) -> None:
        """A snapshot of the log up to ``seq`` (above ``synced``) is in the document."""
        self._synced = seq
        self._last = max(self._last, seq)
        self._durable = max(self._durable, seq)
        self._tail = max(self._durable - seq, 0)
        self._own = {s for s in self._own if s > seq}
        self._advance()

    # -- compaction ---------------------------------------------------------------------

    def compacted(self, snapshot_seq: int) -> None:
        """The stored snapshot now holds the log up to ``snapshot_seq``."""
        self._tail = max(self._durable - snapshot_seq, 0)

    def forget_tail(self) -> None:
        """Do not compact again at every append (nothing to fold into, or unreadable)."""
        self._tail = 0

    def _advance(self) -> None:
        while self._synced + 1 in self._own:
            self._synced += 1
            self._own.discard(self._synced)
