"""A room: one notebook's live document, the clients connected to it, and their presence.

Every accepted update is handed to the group-commit writer and broadcast only after it is
in PostgreSQL, so an update anyone has seen survives a crash. Updates are never echoed to
the client that sent them. A client whose send queue fills up is disconnected instead of
being buffered without limit.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import y_py as Y

from collab import protocol
from collab.errors import ProtocolError
from collab.protocol import AwarenessEntry

log = logging.getLogger(__name__)

# WebSocket close codes a room decides on (websocket.py owns the rest).
CLOSE_TOO_SLOW = 1008
CLOSE_GONE = 4410

# Presence ids a connection may bring into a room (removed when it leaves); tabs sharing
# one connection are rare, so a large number is abuse, but not worth a disconnect.
MAX_AWARENESS_IDS_PER_CLIENT = 64
_EMPTY_UPDATE = b"\x00\x00"
# Awareness id the server speaks under to one connection (its role, see collab.websocket);
# never accepted from clients, which re-send every state they have heard.
SERVER_AWARENESS_ID = 0


class Client:
    """One connection's place in a room: a bounded queue of frames waiting to be sent.

    The connection's sender task awaits ``wait()`` and drains ``take()``; the room only
    ever calls ``send``, which never blocks.
    """

    def __init__(self, conn_id: str, queue_limit: int, user_id: str | None = None) -> None:
        self.conn_id = conn_id
        self.user_id = user_id
        self._queue: deque[bytes] = deque()
        self._limit = queue_limit
        self._ready = anyio.Event()
        self._signalled = False
        self.closed = anyio.Event()
        self.awareness_ids: set[int] = set()
        self.close_code: int | None = None
        self.close_reason = ""
        # Set by the connection: stops its tasks at once when waiting for the socket is futile.
        self.abort: Callable[[], None] = lambda: None
        # Called when a frame is queued and none was waiting (the queue was taken since):
        # by default it wakes the sender task; a connection that writes to its socket
        # directly schedules one write for the event-loop turn instead.
        self.on_queued: Callable[[], None] = self._wake

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def send(self, frame: bytes) -> None:
        if self.close_code is not None:
            return
        if len(self._queue) >= self._limit:
            self._queue.clear()
            self.close(CLOSE_TOO_SLOW, "send queue full: client too slow to keep up")
            # Its socket is not draining, so the sender may be stuck in a send: cut it off.
            self.abort()
            return
        self._queue.append(frame)
        if not self._signalled:
            self._signalled = True
            self.on_queued()

    def _wake(self) -> None:
        self._ready.set()

    def close(self, code: int, reason: str) -> None:
        """Ask the connection to close once the frames queued before this are sent."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self._ready.set()
            self.closed.set()

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    async def wait(self) -> None:
        await self._ready.wait()

    def take(self) -> list[bytes]:
        frames = list(self._queue)
        self._queue.clear()
        self._signalled = False
        # Only a set event needs replacing (the sender task's wake-up); a connection that
        # writes directly never sets it for frames, and takes once per turn.
        if self._ready.is_set() and self.close_code is None:
            self._ready = anyio.Event()
        return frames


class UpdateSink(Protocol):
    """Where a room sends its updates to be made durable (the group-commit writer)."""

    def schedule(self, room: Room) -> None: ...


@dataclass(slots=True)
class _Deferred:
    """A frame to send once everything accepted before it is durable."""

    after: int
    client: Client
    frame: bytes


@dataclass(slots=True)
class Batch:
    """Updates taken for one append: (sender or None for a server-side edit, update, seq)."""

    notebook_id: uuid.UUID
    entries: list[tuple[Client | None, bytes, int]] = field(default_factory=list)


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
    ) -> None:
        self.notebook_id = notebook_id
        self.doc = Y.YDoc()
        for update in updates:
            Y.apply_update(self.doc, update)
        self.clients: dict[str, Client] = {}
        self.last_seq = last_seq  # highest seq assigned (appended or about to be)
        self.durable_seq = last_seq  # highest seq known to be in PostgreSQL
        # Every logged update with seq <= synced_seq is in this doc. Other servers append to
        # the same log (see feed.py); the seqs this one appended above synced_seq wait here.
        self.synced_seq = last_seq
        self._own_seqs: set[int] = set()  # appended by us, persisted, above synced_seq
        # Appended by us, maybe not yet persisted: seq -> update, to tell our rows from
        # another server's row that took the same seq first.
        self._in_flight: dict[int, bytes] = {}
        self.tail_length = tail_length
        self._sink = sink
        self._pending: list[tuple[Client | None, bytes]] = []
        self._accepted = 0
        self._durable = 0
        self._deferred: list[_Deferred] = []
        self._origin: Client | None = None
        self._applying = False
        self._awareness: dict[int, tuple[int, str]] = {}  # client id -> (clock, state json)
        # Where accepted presence goes to reach other servers (the document feed sets it).
        self.publish_awareness: Callable[[bytes], None] = lambda payload: None
        self.users = 0  # holders of the room: connections and in-process peers
        # y-py has no unobserve: the subscription lives exactly as long as the doc.
        self._subscription = self.doc.observe_after_transaction(self._after_transaction)

    # -- durability -------------------------------------------------------------------

    def _after_transaction(self, event: Y.AfterTransactionEvent) -> None:
        # Client updates are recorded as received (see receive); this catches edits made
        # on the server itself (executor, assistant), which travel like any other update.
        if self._applying:
            return
        update = bytes(event.get_update())
        if update != _EMPTY_UPDATE:
            self._record(None, update)

    def _record(self, origin: Client | None, update: bytes) -> None:
        self._pending.append((origin, update))
        self._accepted += 1
        self._sink.schedule(self)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    @property
    def is_durable(self) -> bool:
        return self._durable == self._accepted

    def take_batch(self) -> Batch:
        """Hand the pending updates to the writer, numbering them with the next seqs."""
        batch = Batch(self.notebook_id)
        for origin, update in self._pending:
            self.last_seq += 1
            batch.entries.append((origin, update, self.last_seq))
            # The notice of our own append can reach the feed before the writer reports it
            # persisted: it must not be applied and broadcast again.
            self._in_flight[self.last_seq] = update
        self._pending = []
        return batch

    def renumber(self, batch: Batch, after: int) -> None:
        """Give the batch's updates the seqs after ``after`` (another writer took ours)."""
        for _, _, seq in batch.entries:
            self._in_flight.pop(seq, None)
        batch.entries = [
            (origin, update, after + n) for n, (origin, update, _) in enumerate(batch.entries, 1)
        ]
        self._in_flight.update((seq, update) for _, update, seq in batch.entries)
        if batch.entries:
            self.last_seq = max(self.last_seq, batch.entries[-1][2])

    def persisted(self, batch: Batch) -> None:
        """The batch is in PostgreSQL: answer waiting syncs, then broadcast it."""
        if not batch.entries:
            return
        self._durable += len(batch.entries)
        self.durable_seq = max(self.durable_seq, batch.entries[-1][2])
        self.tail_length += len(batch.entries)
        for _, _, seq in batch.entries:
            self._in_flight.pop(seq, None)
            if seq > self.synced_seq:
                self._own_seqs.add(seq)
        self._advance()
        if self._deferred:
            still = []
            for item in self._deferred:
                if item.after <= self._durable:
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

    def _advance(self) -> None:
        while self.synced_seq + 1 in self._own_seqs:
            self.synced_seq += 1
            self._own_seqs.discard(self.synced_seq)

    def apply_logged(self, rows: list[tuple[int, bytes]]) -> bool:
        """Apply updates other servers appended (seq order); False while one is missing.

        Our own rows are skipped (already applied and broadcast); the others are applied
        without being logged again and sent to every local client.
        """
        clients = list(self.clients.values())
        for seq, update in rows:
            self._advance()
            if seq <= self.synced_seq:
                continue
            if seq != self.synced_seq + 1:
                return False  # a gap: an append still in flight, or a row not fetched yet
            if seq in self._own_seqs or self._in_flight.get(seq) == update:
                self._own_seqs.discard(seq)
            else:
                self._applying = True
                try:
                    Y.apply_update(self.doc, update)
                finally:
                    self._applying = False
                frame = protocol.create_update_message(update)
                for client in clients:
                    client.send(frame)
                self.tail_length += 1
            self.synced_seq = seq
            self.last_seq = max(self.last_seq, seq)
            self.durable_seq = max(self.durable_seq, seq)
        self._advance()
        return True

    def apply_snapshot(self, seq: int, snapshot: bytes) -> None:
        """Another server compacted past what we have: merge its snapshot (idempotent).

        The snapshot holds exactly the logged updates up to ``seq`` (store.py), so our rows
        at or below it are in it, and our appends still in flight with such seqs will be
        refused and renumbered above it. Clients get only what it adds to this document,
        not the whole document again.
        """
        if seq <= self.synced_seq:
            return
        known = Y.encode_state_vector(self.doc)
        self._applying = True
        try:
            Y.apply_update(self.doc, snapshot)
        finally:
            self._applying = False
        # Encoded from the snapshot alone: our document also holds updates not yet durable,
        # whose deletions must not reach other clients before they are.
        whole = Y.YDoc()
        Y.apply_update(whole, snapshot)
        missing = bytes(Y.encode_state_as_update(whole, known))
        frame = protocol.create_update_message(missing)
        for client in list(self.clients.values()):
            client.send(frame)
        self.synced_seq = seq
        self.last_seq = max(self.last_seq, seq)
        self.durable_seq = max(self.durable_seq, seq)
        self.tail_length = max(self.durable_seq - seq, 0)
        self._own_seqs = {s for s in self._own_seqs if s > seq}
        self._advance()

    def send_when_durable(self, client: Client, frame: bytes) -> None:
        """Send ``frame`` once every update accepted so far is durable."""
        if self._durable >= self._accepted:
            client.send(frame)
        else:
            self._deferred.append(_Deferred(self._accepted, client, frame))

    def drop_unpersisted(self, reason: str) -> None:
        """The notebook is gone: pending updates can never be stored; close everyone."""
        self._pending = []
        self._deferred = []
        self._durable = self._accepted
        for client in list(self.clients.values()):
            client.close(CLOSE_GONE, reason)

    # -- clients ----------------------------------------------------------------------

    def join(self, client: Client) -> None:
        """Register the client and start the sync: our state vector, then everyone's presence."""
        self.clients[client.conn_id] = client
        client.send(protocol.create_sync_step1_message(Y.encode_state_vector(self.doc)))
        present = [
            AwarenessEntry(cid, clock, state)
            for cid, (clock, state) in self._awareness.items()
            if state != "null"
        ]
        if present:
            client.send(protocol.encode_awareness_message(present))

    def leave(self, client: Client) -> None:
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
            self.publish_awareness(protocol.encode_awareness(gone))

    def receive(self, client: Client, frame: bytes) -> None:
        """Handle one frame from a client. Raises ProtocolError for anything malformed."""
        message = protocol.parse_message(frame)
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

    def _answer_step1(self, client: Client, state_vector: bytes) -> None:
        try:
            update = Y.encode_state_as_update(self.doc, state_vector)
        except Exception as exc:  # y-py's EncodingException and friends
            raise ProtocolError(f"malformed state vector: {exc}") from None
        self.send_when_durable(client, protocol.create_sync_step2_message(bytes(update)))

    def apply_client_update(self, client: Client, update: bytes) -> None:
        if update == _EMPTY_UPDATE:
            return
        self._applying = True
        try:
            Y.apply_update(self.doc, update)
        except Exception as exc:
            raise ProtocolError(f"malformed update: {exc}") from None
        finally:
            self._applying = False
        self._record(client, update)

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

    def _apply_awareness(self, client: Client, payload: bytes) -> None:
        entries = [
            e for e in protocol.decode_awareness(payload) if e.client_id != SERVER_AWARENESS_ID
        ]
        # y-websocket clients re-send the presence of others they have heard of, so an id a
        # connection sends is not always its own. As the reference server does, a connection
        # owns (and loses when it leaves) the ids it brought into the room, not ones relayed.
        absent = {e.client_id for e in entries if not self._present(e.client_id)}
        accepted = self._merge_awareness(entries)
        for entry in accepted:
            if entry.removed:
                client.awareness_ids.discard(entry.client_id)
            elif entry.client_id in absent:
                if len(client.awareness_ids) < MAX_AWARENESS_IDS_PER_CLIENT:
                    client.awareness_ids.add(entry.client_id)
        if accepted:
            frame = protocol.encode_awareness_message(accepted)
            # To everyone, the sender too, as the reference server does: y-websocket drops a
            # connection that hears nothing for 30 s, and a lone client hears only this.
            for other in self.clients.values():
                other.send(frame)
            self.publish_awareness(protocol.encode_awareness(accepted))

    def apply_remote_awareness(self, payload: bytes) -> None:
        """Presence from clients on other servers: same rule, relayed to ours."""
        accepted = self._merge_awareness(protocol.decode_awareness(payload))
        if accepted:
            frame = protocol.encode_awareness_message(accepted)
            for client in self.clients.values():
                client.send(frame)

    def awareness_states(self) -> dict[int, str]:
        return {cid: state for cid, (_, state) in self._awareness.items() if state != "null"}
