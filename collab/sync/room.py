"""A room: one notebook's live document, the clients connected to it, and their presence.

Every accepted update is handed to the group-commit writer and broadcast only after it is
in PostgreSQL, so an update anyone has seen survives a crash. Updates are never echoed to
the client that sent them. A client whose send queue fills up is disconnected instead of
being buffered without limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from pycrdt import Array, ArrayEvent, Doc, Map, Subscription, TransactionEvent

from collab.close_codes import CloseCode
from collab.document.cell_list import CellList
from collab.errors import ProtocolError, is_binding_panic
from collab.sync import protocol
from collab.sync.ordering import Logged, RoomOrder
from collab.sync.protocol import AwarenessEntry
from collab.sync.update_check import (
    UpdateFacts,
    UpdateRefused,
    check_update,
    decode_state_vector,
)

log = logging.getLogger(__name__)

_UNCLAIMED = object()


class DocumentFull(ProtocolError):
    """An edit would take the notebook past one of its size limits."""


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """What edits from clients may grow a notebook to (settings: WEFT_MAX_DOCUMENT_BYTES,
    WEFT_MAX_CELLS). Server-side writers (runs, the assistant) have caps of their own."""

    max_bytes: int = 64 * 1024 * 1024
    max_cells: int = 2000


# Presence ids a connection may speak for (removed when it leaves): a y-websocket client has
# one; a few allow for reloads of a tab that kept its connection.
MAX_AWARENESS_IDS_PER_CLIENT = 4
# Bytes of one presence state, and presence entries in one room: beyond them an entry is
# dropped (a viewer once left 27 MiB of junk presence for every later joiner).
MAX_AWARENESS_STATE_BYTES = 4096
MAX_AWARENESS_PER_ROOM = 256
# Yjs client ids one connection may write changes as (one per tab's document).
MAX_WRITER_IDS_PER_CLIENT = 8
# Colours a presence is drawn in; the server picks one per person, never shared in a room.
PALETTE = (
    "#2563eb",
    "#dc2626",
    "#16a34a",
    "#d97706",
    "#7c3aed",
    "#db2777",
    "#0891b2",
    "#65a30d",
    "#ea580c",
    "#4f46e5",
    "#be123c",
    "#0d9488",
    "#a16207",
    "#9333ea",
    "#c026d3",
    "#0284c7",
)
_EMPTY_UPDATE = b"\x00\x00"
# Awareness id the server speaks under to one connection (its role, see collab.sync.websocket);
# never accepted from clients, which re-send every state they have heard.
SERVER_AWARENESS_ID = 0


class OutboxHooks(Protocol):
    """What the connection draining an outbox is told (collab.sync.websocket.Connection)."""

    def frames_queued(self) -> None:
        """A frame was queued, the first since the last ``take()``."""

    def overflowed(self) -> None:
        """The queue overflowed and the outbox closed: stop waiting for the socket now."""


class Outbox:
    """One connection's place in a room: a bounded queue of frames waiting to be sent.

    The connection's sender task awaits ``wait()`` and drains ``take()``; the room only
    ever calls ``send``, which never blocks. The connection ``attach``es itself as the
    outbox's ``OutboxHooks``; until then (and for an outbox no socket drains), a queued
    frame wakes ``wait()``.
    """

    def __init__(
        self,
        conn_id: str,
        queue_limit: int,
        user_id: str | None = None,
        user_name: str = "",
    ) -> None:
        self.conn_id = conn_id
        self.user_id = user_id
        # Who the server says this connection's presence belongs to (stamped on every state).
        self.user_name = user_name
        # Yjs client ids this connection has written changes as.
        self.writer_ids: set[int] = set()
        self._queue: deque[bytes] = deque()
        self._limit = queue_limit
        self._ready = anyio.Event()
        self._woken = False  # whether ``_ready`` is set (asked without a call: see take)
        self._signalled = False
        self.closed = anyio.Event()
        self.awareness_ids: set[int] = set()
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self._hooks: OutboxHooks | None = None

    def attach(self, hooks: OutboxHooks) -> None:
        self._hooks = hooks

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def send(self, frame: bytes) -> None:
        # Called for every client of a room for every update: kept to a few attribute reads.
        if self.close_code is not None:
            return
        queue = self._queue
        if len(queue) >= self._limit:
            queue.clear()
            self.close(CloseCode.TOO_SLOW, "send queue full: client too slow to keep up")
            # Its socket is not draining, so the sender may be stuck in a send: cut it off.
            if self._hooks is not None:
                self._hooks.overflowed()
            return
        queue.append(frame)
        if not self._signalled:
            self._signalled = True
            if self._hooks is None:
                self.wake()
            else:
                self._hooks.frames_queued()

    def wake(self) -> None:
        """Wake the sender task waiting in ``wait()``."""
        self._woken = True
        self._ready.set()

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the connection to close once the frames queued before this are sent."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self.wake()
            self.closed.set()

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    async def wait(self) -> None:
        await self._ready.wait()

    def take(self) -> deque[bytes]:
        """The queued frames, oldest first; the queue starts again empty."""
        frames, self._queue = self._queue, deque()
        self._signalled = False
        # Only a set event needs replacing (the sender task's wake-up); a connection that
        # writes directly never sets it for frames, and takes once per turn.
        if self._woken and self.close_code is None:
            self._woken = False
            self._ready = anyio.Event()
        return frames


class UpdateSink(Protocol):
    """Where a room sends its updates to be made durable (the group-commit writer)."""

    def schedule(self, room: Room) -> None: ...


class RoomEvents(Protocol):
    """What a room tells whoever keeps it (collab.sync.room_manager.RoomManager)."""

    def room_broken(self, room: Room) -> None:
        """The binding failed on an update (``break_down``): rebuild the room from the log
        once what it accepted is durable."""

    def presence_changed(self, room: Room, payload: bytes) -> None:
        """Presence was accepted here (an awareness payload): for the other servers."""


class _Unkept:
    """The events of a room nobody keeps (a room built on its own)."""

    def room_broken(self, room: Room) -> None:
        pass

    def presence_changed(self, room: Room, payload: bytes) -> None:
        pass


@dataclass(slots=True)
class _Deferred:
    """A frame to send once everything accepted before it is durable."""

    after: int
    client: Outbox
    frame: bytes


@dataclass(slots=True)
class Batch:
    """Updates taken for one append: (sender or None for a server-side edit, update, seq)."""

    notebook_id: uuid.UUID
    entries: list[tuple[Outbox | None, bytes, int]] = field(default_factory=list)


class Room:
    """The live document of one notebook.

    >>> room = Room(notebook_id, stored.updates, stored.last_seq, writer)
    >>> room.join(client)
    >>> room.receive(client, frame)
    """

    def __init__(
        self,
        notebook_id: uuid.UUID,
        updates: list[bytes],
        last_seq: int,
        sink: UpdateSink,
        tail_length: int = 0,
        limits: DocumentLimits | None = None,
        events: RoomEvents | None = None,
    ) -> None:
        self.notebook_id = notebook_id
        self.limits = limits or DocumentLimits()
        self.doc: Doc[Any] = Doc()
        # Made first, so the first update's event lists every cell (collab.document.cell_list).
        self.cells = CellList(self.doc)
        for update in updates:
            self.doc.apply_update(update)
        # The stored size (snapshot and tail), grown by every update accepted since: what the
        # size limit counts, and what someone joining downloads at most.
        self.size = sum(len(update) for update in updates)
        # Set when the binding failed in the middle of applying an update: the document can
        # no longer be trusted, and is rebuilt from the log (which never got that update).
        self.broken = False
        self._events: RoomEvents = events or _Unkept()
        self._state: dict[int, int] | None = None  # see state()
        # Yjs client id -> the user who first wrote new changes under it in this room.
        self._writers: dict[int, str | None] = {}
        # user id -> presence colour, while the user is here (see _stamp).
        self._colours: dict[str, str] = {}
        self.clients: dict[str, Outbox] = {}
        # The seqs and counts of what this room accepted, appended and holds of the log:
        # changed only by this class's methods (collab.sync.ordering).
        self._order = RoomOrder(last_seq, tail_length)
        self._sink = sink
        self._pending: list[tuple[Outbox | None, bytes]] = []
        self._deferred: list[_Deferred] = []
        self._origin: Outbox | None = None
        self._applying = False
        self._awareness: dict[int, tuple[int, str]] = {}  # client id -> (clock, state json)
        self.users = 0  # holders of the room: connections and in-process peers
        # Counts every change of ``doc`` (an update applied): what was read from it holds
        # while this stays the same (a state vector does not move on deletions).
        self.changes = 0
        # Until retire(): the binding holds a document's observers, and so this room and its
        # document, which Python's collector cannot free while they are observed.
        self._subscription: Subscription | None = self.doc.observe(self._after_transaction)
        self._cells_array: Array[Any] = self.doc.get("cells", type=Array)  # unobserved on it
        self._cells_subscription = self._cells_array.observe(self._cells_changed)
        # Set while a client's update is applied, and when it put a non-map into ``cells``.
        self._watching_cells = False
        self._foreign_cell = False

    def retire(self) -> None:
        """The room manager has forgotten this room and nobody uses it: stop observing its
        document, so that the room and the document can be freed (a reader still holding
        the room, as the search indexer may, can still read it). Every unloaded room stayed
        in memory with its document before: a notebook of 10,000 cells, ~90 MB at every
        load."""
        if self._subscription is None:
            return
        self.doc.unobserve(self._subscription)
        self._cells_array.unobserve(self._cells_subscription)
        self._subscription = None
        self.cells.close()

    # -- durability -------------------------------------------------------------------

    def _after_transaction(self, event: TransactionEvent) -> None:
        # Client updates are recorded as received (see receive); this catches edits made
        # on the server itself (executor, assistant), which travel like any other update.
        if self._applying:
            return
        self._state = None  # a server-side edit moved the state vector
        update = bytes(event.update)
        if update != _EMPTY_UPDATE:
            self._record(None, update)

    def _cells_changed(self, event: ArrayEvent) -> None:
        # Entries of ``cells`` are maps (collab.notebook). The check refuses any other entry
        # an update itself shows to be in ``cells``; one placed beside a cell that only the
        # document has is seen here, as it is applied.
        if self._watching_cells:
            delta: list[dict[str, Any]] = event.delta  # type: ignore[attr-defined]  # slots
            for change in delta:
                for value in change.get("insert", ()):
                    if not isinstance(value, Map):
                        self._foreign_cell = True

    def _record(self, origin: Outbox | None, update: bytes) -> None:
        self.changes += 1
        self.size += len(update)
        self._pending.append((origin, update))
        self._order.accept()
        self._sink.schedule(self)

    @property
    def is_durable(self) -> bool:
        """Every update this room accepted is in PostgreSQL."""
        return self._order.all_durable

    @property
    def synced_seq(self) -> int:
        """Every logged update with a seq up to this one is in ``doc`` (maybe newer ones
        too): where catching up with other servers' appends starts."""
        return self._order.synced

    @property
    def durable_seq(self) -> int:
        """The highest seq known to be in PostgreSQL."""
        return self._order.durable

    @property
    def tail_length(self) -> int:
        """Rows in the log after the stored snapshot: compaction is due when it is long."""
        return self._order.tail_length

    def compacted(self, snapshot_seq: int) -> None:
        """The stored snapshot now holds the log up to ``snapshot_seq``."""
        self._order.compacted(snapshot_seq)

    def forget_tail(self) -> None:
        """Compaction cannot fold this log (the notebook is gone, or its document cannot be
        read): do not try again at every append."""
        self._order.forget_tail()

    def take_batch(self) -> Batch:
        """Hand the pending updates to the writer, numbering them with the next seqs."""
        batch = Batch(self.notebook_id)
        batch.entries = [
            (origin, update, self._order.assign(update)) for origin, update in self._pending
        ]
        self._pending = []
        return batch

    def renumber(self, batch: Batch, after: int) -> None:
        """Give the batch's updates the seqs after ``after`` (another writer took ours)."""
        seqs = self._order.reassign([(seq, update) for _, update, seq in batch.entries], after)
        batch.entries = [
            (origin, update, seq)
            for (origin, update, _), seq in zip(batch.entries, seqs, strict=True)
        ]

    def persisted(self, batch: Batch) -> None:
        """The batch is in PostgreSQL: answer waiting syncs, then broadcast it."""
        if not batch.entries:
            return
        self._order.persisted([seq for _, _, seq in batch.entries])
        if self._deferred:
            still = []
            for item in self._deferred:
                if self._order.durable_through(item.after):
                    item.client.send(item.frame)
                else:
                    still.append(item)
            self._deferred = still
        clients = list(self.clients.values())
        for origin, update, _seq in batch.entries:
            frame = protocol.create_update_message(update)
            for client in clients:
                if client is not origin:
                    client.send(frame)

    def apply_logged(self, rows: list[tuple[int, bytes]]) -> bool:
        """Apply updates other servers appended (seq order); False while one is missing.

        Our own rows are skipped (already applied and broadcast); the others are applied
        without being logged again and sent to every local client.
        """
        clients = list(self.clients.values())
        for seq, update in rows:
            kind = self._order.classify(seq, update)
            if kind is Logged.HAVE:
                continue
            if kind is Logged.GAP:
                return False  # an append still in flight, or a row not fetched yet
            if kind is Logged.THEIRS:
                self.changes += 1
                self._applying = True
                try:
                    self.doc.apply_update(update)
                finally:
                    self._applying = False
                    self._state = None
                frame = protocol.create_update_message(update)
                for client in clients:
                    client.send(frame)
            self._order.adopt(seq, kind)
        return True

    def apply_snapshot(self, seq: int, snapshot: bytes) -> None:
        """Another server compacted past what we have: merge its snapshot (idempotent).

        The snapshot holds exactly the logged updates up to ``seq`` (store.py), so our rows
        at or below it are in it, and our appends still in flight with such seqs will be
        refused and renumbered above it. Clients get only what it adds to this document,
        not the whole document again.
        """
        if not self._order.takes_snapshot(seq):
            return
        known = self.doc.get_state()
        self.changes += 1
        self._applying = True
        try:
            self.doc.apply_update(snapshot)
        finally:
            self._applying = False
            self._state = None
        # Encoded from the snapshot alone: our document also holds updates not yet durable,
        # whose deletions must not reach other clients before they are.
        whole: Doc[Any] = Doc()
        whole.apply_update(snapshot)
        missing = whole.get_update(known)
        frame = protocol.create_update_message(missing)
        for client in list(self.clients.values()):
            client.send(frame)
        self._order.adopt_snapshot(seq)

    def send_when_durable(self, client: Outbox, frame: bytes) -> None:
        """Send ``frame`` once every update accepted so far is durable."""
        if self._order.all_durable:
            client.send(frame)
        else:
            self._deferred.append(_Deferred(self._order.accepted, client, frame))

    def drop_unpersisted(self, reason: str) -> None:
        """The notebook is gone: pending updates can never be stored; close everyone."""
        self._pending = []
        self._deferred = []
        self._order.abandon()
        for client in list(self.clients.values()):
            client.close(CloseCode.GONE, reason)

    # -- clients ----------------------------------------------------------------------

    def join(self, client: Outbox) -> None:
        """Register the client and start the sync: our state vector, then everyone's presence."""
        self.clients[client.conn_id] = client
        client.send(protocol.create_sync_step1_message(self.doc.get_state()))
        present = [
            AwarenessEntry(cid, clock, state)
            for cid, (clock, state) in self._awareness.items()
            if state != "null"
        ]
        if present:
            client.send(protocol.encode_awareness_message(present))

    def leave(self, client: Outbox) -> None:
        """Drop the client and tell the others its presence is gone."""
        self.clients.pop(client.conn_id, None)
        self._deferred = [d for d in self._deferred if d.client is not client]
        gone = []
        for cid in client.awareness_ids:
            clock, state = self._awareness.get(cid, (0, "null"))
            if state != "null":
                self._awareness[cid] = (clock + 1, "null")
                gone.append(AwarenessEntry(cid, clock + 1, "null"))
        if gone:
            frame = protocol.encode_awareness_message(gone)
            for other in self.clients.values():
                other.send(frame)
            self._events.presence_changed(self, protocol.encode_awareness(gone))
        if client.user_id is not None and not any(
            other.user_id == client.user_id for other in self.clients.values()
        ):
            self._colours.pop(client.user_id, None)

    def receive(self, client: Outbox, frame: bytes) -> None:
        """Handle one frame from a client. Raises ProtocolError for anything malformed."""
        self.receive_message(client, protocol.parse_message(frame))

    def receive_message(self, client: Outbox, message: protocol.Message) -> None:
        """Handle one parsed message from a client (see ``receive``)."""
        if message.kind is protocol.MessageType.SYNC:
            if message.sync_type is protocol.SyncType.STEP1:
                self._answer_step1(client, message.payload)
            else:
                self.apply_client_update(client, message.payload)
        elif message.kind is protocol.MessageType.AWARENESS:
            self._apply_awareness(client, message.payload)
        elif message.kind is protocol.MessageType.QUERY_AWARENESS:
            present = [
                AwarenessEntry(cid, clock, state)
                for cid, (clock, state) in self._awareness.items()
                if state != "null"
            ]
            client.send(protocol.encode_awareness_message(present))
        else:
            raise ProtocolError(f"message type {message.kind.name} is not accepted from clients")

    def _answer_step1(self, client: Outbox, state_vector: bytes) -> None:
        # Decoded strictly first: the binding has aborted processes on state vectors that
        # claim billions of entries.
        decode_state_vector(state_vector)
        try:
            update = self.doc.get_update(state_vector)
        except ValueError as exc:
            raise ProtocolError(f"malformed state vector: {exc}") from None
        self.send_when_durable(client, protocol.create_sync_step2_message(update))

    def state(self) -> dict[int, int]:
        """The document's state vector: client id -> the next clock it will use. Kept as the
        room's own copy between transactions (decoding it for every update cost more than
        applying the update)."""
        if self._state is None:
            self._state = decode_state_vector(self.doc.get_state())
        return self._state

    def apply_client_update(
        self, client: Outbox, update: bytes, facts: UpdateFacts | None = None
    ) -> None:
        """Check, apply and record one update from a client (see collab.sync.update_check).

        ``facts`` are the check's answer when it was made elsewhere (collab.sync.document_worker)
        against an earlier state of this document: an update complete against a state is
        complete against every later one, as a state only grows.

        Raises ProtocolError (UpdateRefused) when the update is refused; the document is
        then untouched (or, for a non-map put into ``cells`` beside a cell of the document,
        rebuilt from the log, which never got the update).
        """
        if update == _EMPTY_UPDATE:
            return
        if self.broken:
            raise ProtocolError("the notebook is reloading")
        state = self.state()
        if facts is None:
            facts = check_update(update, state)
        if facts.empty:
            return
        self._check_limits(len(update), facts.new_list_maps)
        claimed = self._check_writers(client, facts.ends, state)
        self._applying = self._watching_cells = True
        try:
            self.doc.apply_update(update)
        except ValueError as exc:
            self._state = None
            raise ProtocolError(f"malformed update: {exc}") from None
        except BaseException as exc:
            self._state = None
            if not is_binding_panic(exc):
                raise
            self.break_down(f"the CRDT binding failed on an update: {exc}")
            raise ProtocolError("update rejected by the CRDT decoder") from None
        finally:
            self._applying = self._watching_cells = False
        if self._foreign_cell:
            self._foreign_cell = False
            self._state = None
            self.break_down("an update put something other than a cell into 'cells'")
            raise UpdateRefused("update puts something other than a cell in 'cells'")
        # Nothing is ever left pending (check_update), so the state is exactly this.
        for client_id, end in facts.ends.items():
            if end > state.get(client_id, 0):
                state[client_id] = end
        for writer_id in claimed:
            self._writers[writer_id] = client.user_id
            client.writer_ids.add(writer_id)
        self._record(client, update)

    def _check_writers(
        self, client: Outbox, ends: dict[int, int], state: dict[int, int]
    ) -> list[int]:
        """Changes under a Yjs client id belong to the person who first wrote under it here:
        anyone else writing new changes as that id (to make that person's next edits look
        like duplicates, silently dropped) is refused. Returns the ids this update claims."""
        claimed: list[int] = []
        for writer_id, end in ends.items():
            if end <= state.get(writer_id, 0):
                continue  # nothing new under this id (a re-sent change)
            owner = self._writers.get(writer_id, _UNCLAIMED)
            if owner is _UNCLAIMED:
                if writer_id == self.doc.client_id:
                    raise ProtocolError("update writes as the server")
                if len(client.writer_ids) + len(claimed) >= MAX_WRITER_IDS_PER_CLIENT:
                    raise ProtocolError("update writes as too many Yjs clients")
                claimed.append(writer_id)
            elif owner != client.user_id:
                raise ProtocolError("update writes as another collaborator's Yjs client id")
        return claimed

    def _check_limits(self, update_bytes: int, new_cells: int) -> None:
        limits = self.limits
        if self.size + update_bytes > limits.max_bytes:
            raise DocumentFull(
                f"notebook is full: edits may not take it past {limits.max_bytes // 2**20} MiB"
                " (remove outputs or cells, or split it)"
            )
        if new_cells and len(self.doc.get("cells", type=Array)) + new_cells > limits.max_cells:
            raise DocumentFull(
                f"notebook is full: at most {limits.max_cells} cells (split it into several)"
            )

    def break_down(self, reason: str) -> None:
        """The live document can no longer be trusted: close everyone (their clients reconnect
        and sync again) and have it rebuilt from the durable log."""
        if self.broken:
            return
        self.broken = True
        log.error(
            "room broken: rebuilding from the log",
            extra={"notebook_id": str(self.notebook_id), "error": reason},
        )
        for other in list(self.clients.values()):
            other.close(CloseCode.UNAVAILABLE, "the notebook is reloading: reconnecting")
        self._events.room_broken(self)

    def _merge_awareness(self, entries: list[AwarenessEntry]) -> list[AwarenessEntry]:
        """Apply y-protocols' rule (a newer clock wins; a removal at the same clock applies
        too) and return the entries that changed something."""
        accepted = []
        for entry in entries:
            clock, state = self._awareness.get(entry.client_id, (-1, "null"))
            if clock < entry.clock or (clock == entry.clock and entry.removed and state != "null"):
                self._awareness[entry.client_id] = (entry.clock, entry.state)
                accepted.append(entry)
        return accepted

    def _present(self, client_id: int) -> bool:
        return self._awareness.get(client_id, (-1, "null"))[1] != "null"

    def _apply_awareness(self, client: Outbox, payload: bytes) -> None:
        """Presence from a connection: only its own, bounded, and stamped with who it is.

        y-websocket clients re-send the presence of others they have heard of, so an id a
        connection sends is not always its own. As the reference server does, a connection
        owns (and loses when it leaves) the ids it brought into the room; entries for ids
        another connection speaks for are dropped (the server has them first-hand), so no
        one can overwrite or remove someone else's presence.
        """
        own = []
        present = None
        claiming = 0
        for entry in protocol.decode_awareness(payload):
            cid = entry.client_id
            if cid == SERVER_AWARENESS_ID:
                continue
            if cid not in client.awareness_ids:
                if entry.removed or self._present(cid) or self._spoken_for(cid):
                    continue  # someone else's, relayed
                if present is None:
                    present = sum(1 for _, state in self._awareness.values() if state != "null")
                if (
                    len(client.awareness_ids) + claiming >= MAX_AWARENESS_IDS_PER_CLIENT
                    or present + claiming >= MAX_AWARENESS_PER_ROOM
                ):
                    continue
                claiming += 1
            stamped = self._stamp(client, entry)
            if stamped is not None:
                own.append(stamped)
        accepted = self._merge_awareness(own)
        for entry in accepted:
            if entry.removed:
                client.awareness_ids.discard(entry.client_id)
            else:
                client.awareness_ids.add(entry.client_id)
        self._forget_tombstones()
        if accepted:
            frame = protocol.encode_awareness_message(accepted)
            # To everyone, the sender too, as the reference server does: y-websocket drops a
            # connection that hears nothing for 30 s, and a lone client hears only this.
            for other in self.clients.values():
                other.send(frame)
            self._events.presence_changed(self, protocol.encode_awareness(accepted))

    def _spoken_for(self, client_id: int) -> bool:
        return any(client_id in other.awareness_ids for other in self.clients.values())

    def _stamp(self, client: Outbox, entry: AwarenessEntry) -> AwarenessEntry | None:
        """The entry with ``user`` set by the server (id, name, colour from the palette);
        None for a state that is not an object or is too large."""
        if entry.removed:
            return entry
        if len(entry.state) > MAX_AWARENESS_STATE_BYTES:
            return None
        state = json.loads(entry.state)
        if not isinstance(state, dict):
            return None
        colour = self._colour(client.user_id)
        state["user"] = {
            "id": client.user_id,
            "name": client.user_name,
            "color": colour,
            "colorLight": colour + "33",
        }
        return AwarenessEntry(entry.client_id, entry.clock, json.dumps(state))

    def _colour(self, user_id: str | None) -> str:
        """One colour per person in this room, never one another person here has; the same
        person gets the same one (in any browser) unless it is taken."""
        key = user_id or ""
        colour = self._colours.get(key)
        if colour is None:
            taken = set(self._colours.values())
            start = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(PALETTE)
            order = PALETTE[start:] + PALETTE[:start]
            colour = next((c for c in order if c not in taken), order[0])
            self._colours[key] = colour
        return colour

    def _forget_tombstones(self) -> None:
        # Removed ids keep their last clock, so a stale copy relayed late cannot bring them
        # back; the oldest go once there are many.
        if len(self._awareness) > 4 * MAX_AWARENESS_PER_ROOM:
            for cid in [c for c, (_, st) in self._awareness.items() if st == "null"][
                : len(self._awareness) - 2 * MAX_AWARENESS_PER_ROOM
            ]:
                del self._awareness[cid]

    def rename_user(self, user_id: str, name: str) -> None:
        """A person changed their display name: re-stamp what their connections show."""
        changed = []
        for client in self.clients.values():
            if client.user_id != user_id:
                continue
            client.user_name = name
            for cid in client.awareness_ids:
                clock, state = self._awareness.get(cid, (0, "null"))
                if state != "null":
                    entry = self._stamp(client, AwarenessEntry(cid, clock + 1, state))
                    if entry is not None:
                        changed.append(entry)
        accepted = self._merge_awareness(changed)
        if accepted:
            frame = protocol.encode_awareness_message(accepted)
            for other in self.clients.values():
                other.send(frame)
            self._events.presence_changed(self, protocol.encode_awareness(accepted))

    def announce_presence(self, payload: bytes) -> None:
        """Presence of a server-side peer (collab.sync.peers): relayed to the clients here
        and sent to other servers, as a client's would be."""
        self.apply_remote_awareness(payload)
        self._events.presence_changed(self, payload)

    def apply_remote_awareness(self, payload: bytes) -> None:
        """Presence from clients on other servers: same rule, relayed to ours."""
        accepted = self._merge_awareness(protocol.decode_awareness(payload))
        if accepted:
            frame = protocol.encode_awareness_message(accepted)
            for client in self.clients.values():
                client.send(frame)

    def awareness_states(self) -> dict[int, str]:
        return {cid: state for cid, (_, state) in self._awareness.items() if state != "null"}
