"""The notebook API for peers: how the executor and the assistant read cells and write
outputs, run states, symbols and code.

Peers never touch the CRDT binding: every write here is an ordinary transaction on the
room's document, so it is made durable and broadcast exactly like a person's edit
(see ``Room._after_transaction``).

Durability and catch-up are the peer's too: ``await notebook.durable()`` returns once
every write so far is in the log, ``await notebook.catch_up()`` applies what other servers
appended (a write that must follow theirs goes after it). Keys and value shapes are
``collab.document.schema``'s.

>>> notebooks = NotebookPeers(services.rooms, services.replication)
>>> async with notebooks.open(notebook_id) as notebook:
...     await notebook.catch_up()
...     with notebook.batch():
...         notebook.clear_outputs(cell_id)
...         notebook.add_output(cell_id, {"output_type": "display_data", ...})
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Map, Text

from collab.document import schema
from collab.document.notebook import plain_json as to_json
from collab.document.schema import KernelStatus, RunRecord, Symbol, run_record
from collab.sync import protocol
from collab.sync.protocol import AwarenessEntry
from collab.sync.replication import Replication
from collab.sync.room import Room
from collab.sync.room_manager import RoomManager

log = logging.getLogger(__name__)

# A change to a Y.Text or Y.Array as Yjs describes it: a list of {"retain": n},
# {"insert": str | list} and {"delete": n}, in document order. Text offsets count UTF-8
# bytes, as the binding (yrs) does.
Delta = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class CellSnapshot:
    """A cell as it is now (a copy: later edits do not change it)."""

    id: str
    index: int
    cell_type: str
    language: str
    source: str
    metadata: dict[str, Any]


def _snapshot(index: int, cell: Map[Any]) -> CellSnapshot:
    """A cell as it is now (fields of the wrong kind read as absent)."""
    metadata = to_json(cell[schema.METADATA]) if schema.METADATA in cell else {}
    metadata = metadata if isinstance(metadata, dict) else {}
    cell_id = cell.get(schema.CELL_ID)
    source = cell.get(schema.SOURCE)
    return CellSnapshot(
        id=cell_id if isinstance(cell_id, str) else "",  # no string: it names no cell
        index=index,
        cell_type=str(cell[schema.CELL_TYPE]) if schema.CELL_TYPE in cell else "code",
        language=str(metadata.get(schema.LANGUAGE) or schema.DEFAULT_LANGUAGE),
        source="" if source is None else str(source),
        metadata=metadata,
    )


def _id_of(cell: Any) -> str | None:
    """A cell's id, if it is a cell with a string id."""
    if not isinstance(cell, Map):
        return None
    value = cell.get(schema.CELL_ID)
    return value if isinstance(value, str) else None


class NotebookPeer:
    def __init__(
        self, room: Room, rooms: RoomManager, replication: Replication | None = None
    ) -> None:
        self._room = room
        self._rooms = rooms
        self._replication = replication
        self._doc = room.doc
        self._batching = False
        # cell_index's cell id -> index, and the room's ``changes`` when it was read.
        self._cell_indexes: dict[str, int] = {}
        self._cell_indexes_read = -1

    @property
    def notebook_id(self) -> uuid.UUID:
        return self._room.notebook_id

    # -- durability -------------------------------------------------------------------

    async def durable(self) -> None:
        """Return once everything written so far (by this peer and everyone) is in the log."""
        await self._rooms.writer.flushed()

    async def catch_up(self) -> None:
        """Apply what other servers appended to this notebook's log and this server lacks.
        A write that must follow theirs (a run's "running" after the "queued" another
        server wrote) goes after this: two writes to one key of a Y.Map that do not see
        each other are settled by client id, and the older one could win for good."""
        if self._replication is None:
            raise RuntimeError("this peer was opened without replication: use NotebookPeers")
        await self._replication.catch_up(self.notebook_id)

    # -- reading ----------------------------------------------------------------------

    def _cells(self) -> Array[Any]:
        cells: Array[Any] = self._doc.get(schema.CELLS, type=Array)
        return cells

    def _map(self, name: str) -> Map[Any]:
        table: Map[Any] = self._doc.get(name, type=Map)
        return table

    def cells(self) -> list[CellSnapshot]:
        # From the room's CellList (collab.document.cell_list): reading ``cells`` by index
        # walks it from its start every time (quadratic: ~110 ms of the event loop for the
        # 2,000 cells a notebook may have), and its outputs are never read here.
        snapshots = []
        with self._doc.transaction():
            for index, cell in enumerate(self._room.cells.entries()):
                if isinstance(cell, Map):  # anything else an editor put in `cells` is no cell
                    snapshots.append(_snapshot(index, cell))
        return snapshots

    def cell(self, cell_id: str) -> CellSnapshot | None:
        return next((c for c in self.cells() if c.id == cell_id), None)

    def _ycell(self, cell_id: str) -> Map[Any] | None:
        index = self.cell_index(cell_id)
        if index is None:
            return None
        cell: Map[Any] = self._room.cells.entry(index)
        return cell

    def metadata(self) -> dict[str, Any]:
        meta = self._map(schema.META)
        value = to_json(meta[schema.METADATA]) if schema.METADATA in meta else {}
        return value if isinstance(value, dict) else {}

    def run(self, cell_id: str) -> RunRecord | None:
        """The cell's last run (None: none, or something that is no run record)."""
        runs = self._map(schema.RUNS)
        return run_record(to_json(runs[cell_id])) if cell_id in runs else None

    def runs(self) -> dict[str, RunRecord]:
        value = to_json(self._map(schema.RUNS))
        if not isinstance(value, dict):
            return {}
        return {cell: record for cell, raw in value.items() if (record := run_record(raw))}

    def symbols(self) -> dict[str, list[dict[str, Any]]]:
        value = to_json(self._map(schema.SYMBOLS))
        return value if isinstance(value, dict) else {}

    def outputs(self, cell_id: str) -> list[dict[str, Any]]:
        cell = self._ycell(cell_id)
        if cell is None or schema.OUTPUTS not in cell:
            return []
        value = to_json(cell[schema.OUTPUTS])
        return value if isinstance(value, list) else []

    # -- writing ----------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group several writes into one transaction: one update, seen by everyone at once."""
        if self._batching:
            yield
            return
        with self._doc.transaction():
            self._batching = True
            try:
                yield
            finally:
                self._batching = False

    @property
    def in_batch(self) -> bool:
        return self._batching

    def _write(self, action: Callable[[], None]) -> None:
        # One transaction per write, or the batch's (the binding reuses an open one).
        with self._doc.transaction():
            action()

    def set_run(self, cell_id: str, state: RunRecord) -> None:
        """Replace the cell's run record (the executor's run_states module is its one writer,
        which checks the state machine)."""
        runs = self._map(schema.RUNS)
        self._write(lambda: runs.__setitem__(cell_id, dict(state)))

    def set_kernel(self, state: KernelStatus) -> None:
        """The notebook's kernel status (starting, idle, busy, dead), for the status light."""
        kernel = self._map(schema.KERNEL)
        values: dict[str, Any] = dict(state)

        def action() -> None:
            for key in list(kernel.keys()):
                if key not in values:
                    del kernel[key]
            for key in sorted(values):
                kernel[key] = values[key]

        self._write(action)

    def _metadata_map(self) -> Map[Any]:
        """``meta.metadata``, made a Y.Map if it is not one (inside a write)."""
        meta = self._map(schema.META)
        metadata = meta.get("metadata")
        if not isinstance(metadata, Map):
            metadata = Map()
            meta["metadata"] = metadata
        return metadata

    def set_metadata(self, key: str, value: Any) -> None:
        """One entry of the notebook's metadata (``meta.metadata``: dependencies, the
        resolved environment), as an edit everyone sees."""
        self._write(lambda: self._metadata_map().__setitem__(key, value))

    def set_metadata_list(self, key: str, values: list[str]) -> None:
        """A list in the notebook's metadata (``dependencies``) made ``values``: a Y.Array is
        edited in place (only the entries that changed), so a person's concurrent add or
        remove merges with it; a plain list (older documents) becomes a Y.Array."""

        def action() -> None:
            metadata = self._metadata_map()
            current = metadata.get(key)
            if not isinstance(current, Array):
                metadata[key] = Array(list(values))
                return
            # Anything but a string (a hostile map, say) differs from every new entry.
            before = [v if isinstance(v := to_json(item), str) else object() for item in current]
            matcher = difflib.SequenceMatcher(a=before, b=values, autojunk=False)
            for tag, i1, i2, j1, j2 in reversed(matcher.get_opcodes()):
                if tag == "equal":
                    continue
                for index in range(i2 - 1, i1 - 1, -1):
                    del current[index]
                for offset, value in enumerate(values[j1:j2]):
                    current.insert(i1 + offset, value)

        self._write(action)

    def set_symbols(self, cell_id: str, symbols: list[Symbol]) -> None:
        table = self._map(schema.SYMBOLS)
        self._write(lambda: table.__setitem__(cell_id, symbols))

    def forget(self, cell_id: str) -> None:
        """Drop a deleted cell's run state and symbols."""
        runs, table = self._map(schema.RUNS), self._map(schema.SYMBOLS)

        def action() -> None:
            if cell_id in runs:
                del runs[cell_id]
            if cell_id in table:
                del table[cell_id]

        self._write(action)

    def set_execution_count(self, cell_id: str, count: int | None) -> None:
        cell = self._ycell(cell_id)
        if cell is not None:
            self._write(lambda: cell.__setitem__(schema.EXECUTION_COUNT, count))

    @staticmethod
    def _outputs(cell: Map[Any]) -> Array[Any]:
        outputs = cell.get(schema.OUTPUTS)
        if not isinstance(outputs, Array):
            outputs = Array()
            cell[schema.OUTPUTS] = outputs
        return outputs

    def clear_outputs(self, cell_id: str) -> None:
        cell = self._ycell(cell_id)
        if cell is None:
            return

        def action() -> None:
            outputs = self._outputs(cell)
            if len(outputs):
                del outputs[:]

        self._write(action)

    def append_stream(self, cell_id: str, name: str, text: str) -> None:
        """Print into a cell: appends to its last output when that is the same stream."""
        cell = self._ycell(cell_id)
        if cell is None or not text:
            return

        def action() -> None:
            outputs = self._outputs(cell)
            if len(outputs):
                last = outputs[len(outputs) - 1]
                stream = last.get("text") if isinstance(last, Map) else None
                if (
                    isinstance(stream, Text)
                    and last.get(schema.OUTPUT_TYPE) == "stream"
                    and last.get("name") == name
                ):
                    stream += text
                    return
            added: Map[Any] = Map()
            outputs.append(added)
            added[schema.OUTPUT_TYPE] = "stream"
            added["name"] = name
            added["text"] = Text(text)

        self._write(action)

    def add_output(self, cell_id: str, output: dict[str, Any]) -> None:
        """Add a display_data, execute_result or error output (plain JSON values)."""
        cell = self._ycell(cell_id)
        if cell is None:
            return

        def action() -> None:
            added: Map[Any] = Map()
            self._outputs(cell).append(added)
            for key in sorted(output):
                added[key] = output[key]

        self._write(action)

    def set_output_field(self, cell_id: str, index: int, key: str, value: Any) -> None:
        """Set one field of an output in place (a data grid's shared view, next to the
        output it belongs to); outputs' own fields are not for this."""
        if key in ("output_type", "data", "metadata", "text", "name", "execution_count"):
            raise ValueError(f"{key!r} is an output's own field")
        cell = self._ycell(cell_id)
        if cell is None:
            return
        outputs = self._outputs(cell)
        if not 0 <= index < len(outputs) or not isinstance(outputs[index], Map):
            return
        target: Map[Any] = outputs[index]
        self._write(lambda: target.__setitem__(key, value))

    # -- text, in place (the assistant) ----------------------------------------------------

    def cell_text(self, cell_id: str) -> CellText | None:
        """A handle on one cell's source as it is now: writes through it are ordinary
        transactions, and it keeps pointing at the same text if the cell moves index."""
        cell = self._ycell(cell_id)
        source = cell.get(schema.SOURCE) if cell is not None else None
        if not isinstance(source, Text):
            return None
        return CellText(self, cell_id, source)

    def observe_cells(self, callback: Callable[[Delta], None]) -> Callable[[], None]:
        """Call ``callback`` with the delta of every insertion or deletion of cells (not of
        changes inside them); returns the function that stops it."""
        return _observe(self._cells(), callback)

    def cell_index(self, cell_id: str) -> int | None:
        """The index of the first cell with this id (every output written looks one up).

        The ids of all cells are read once from the room's CellList and kept: while the
        document has not changed (``Room.changes``) they hold; after a change the one asked
        for is checked, and a cell inserted, moved or deleted above it fails the check and
        has the ids read again."""
        cells = self._room.cells
        changes = self._room.changes
        index = self._cell_indexes.get(cell_id)
        if changes == self._cell_indexes_read:
            return index
        if index is not None and index < len(cells) and _id_of(cells.entry(index)) == cell_id:
            return index
        self._cell_indexes = {}
        with self._doc.transaction():
            for i, cell in enumerate(cells.entries()):
                found = _id_of(cell)
                if found is not None:
                    self._cell_indexes.setdefault(found, i)
        self._cell_indexes_read = changes
        return self._cell_indexes.get(cell_id)

    # -- the assistant's marks and presence --------------------------------------------

    def assist(self) -> dict[str, dict[str, Any]]:
        """The top-level ``assist`` map: cell id -> the assistant's work in that cell (a
        generation streaming, or a suggestion pending), for every collaborator to see."""
        value = to_json(self._map(schema.ASSIST))
        return value if isinstance(value, dict) else {}

    def set_assist(self, cell_id: str, value: dict[str, Any] | None) -> None:
        table = self._map(schema.ASSIST)

        def action() -> None:
            if value is None:
                if cell_id in table:
                    del table[cell_id]
            else:
                table[cell_id] = value

        self._write(action)

    def set_presence(self, client_id: int, clock: int, state: dict[str, Any] | None) -> None:
        """Presence of a server-side peer (awareness ``client_id``), as a person's client
        would send it: relayed to every client here and on other servers; ``None`` removes
        it. ``clock`` must grow with every change of the same ``client_id``."""
        entry = AwarenessEntry(client_id, clock, "null" if state is None else json.dumps(state))
        payload = protocol.encode_awareness([entry])
        self._room.announce_presence(payload)


class CellText:
    """One cell's ``source`` (a Y.Text). Offsets count UTF-8 bytes (the binding's unit);
    every write is one transaction (or part of the peer's ``batch()``)."""

    def __init__(self, peer: NotebookPeer, cell_id: str, text: Text) -> None:
        self._peer = peer
        self.cell_id = cell_id
        self._text = text

    def __str__(self) -> str:
        return str(self._text)

    def __len__(self) -> int:
        return len(self._text)

    def insert(self, index: int, text: str) -> None:
        if text:
            self._peer._write(lambda: self._text.insert(index, text))

    def delete(self, index: int, length: int) -> None:
        if length > 0:
            self._peer._write(lambda: self._text.__delitem__(slice(index, index + length)))

    def observe(self, callback: Callable[[Delta], None]) -> Callable[[], None]:
        """Call ``callback`` with the delta of every change to this text, local or remote,
        right after its transaction; returns the function that stops it."""
        return _observe(self._text, callback)

    def next_id(self) -> tuple[int, int]:
        """The Yjs ID ``(client, clock)`` that the next text this peer inserts starts at:
        its characters then take one clock per UTF-16 code unit (Yjs's unit for item
        clocks, which yrs keeps), so the caller knows the ID of each character it writes,
        which is what a Yjs relative position names (``{"item": {"client", "clock"},
        "assoc"}``). Call it right before the insertion, with nothing written between.

        (pycrdt 0.14's ``Text.sticky_index`` cannot be used for this: under byte offsets it
        skips whole blocks by their UTF-8 length but counts inside the last one in UTF-16
        units, so after any non-ASCII text in a text of several blocks it names the wrong
        character, or none.)"""
        doc = self._peer._doc
        client = doc.client_id
        state = doc.get_state()  # a v1 state vector: count, then (client, clock) pairs
        at = 0

        def varuint() -> int:
            nonlocal at
            value = shift = 0
            while True:
                byte = state[at]
                at += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    return value

        for _ in range(varuint()):
            other, clock = varuint(), varuint()
            if other == client:
                return client, clock
        return client, 0


def _observe(target: Any, callback: Callable[[Delta], None]) -> Callable[[], None]:
    def handler(event: Any) -> None:
        # Raising into the binding's observer machinery can panic the document: never do it.
        try:
            callback(list(event.delta))
        except Exception:
            log.exception("a peer's observer failed")

    subscription = target.observe(handler)
    done = False

    def stop() -> None:
        nonlocal done
        if not done:
            done = True
            target.unobserve(subscription)

    return stop


@contextlib.asynccontextmanager
async def open_notebook(rooms: RoomManager, notebook_id: uuid.UUID) -> AsyncIterator[NotebookPeer]:
    """Hold the notebook's room (loading it if needed) for as long as the block runs
    (a peer that never needs ``catch_up``; NotebookPeers opens those that do)."""
    async with rooms.use(notebook_id) as room:
        yield NotebookPeer(room, rooms)


class NotebookPeers:
    """Opens notebooks for a server-side writer that follows other servers' writes."""

    def __init__(self, rooms: RoomManager, replication: Replication) -> None:
        self.rooms = rooms
        self._replication = replication

    @contextlib.asynccontextmanager
    async def open(self, notebook_id: uuid.UUID) -> AsyncIterator[NotebookPeer]:
        """Hold the notebook's room (loading it if needed) for as long as the block runs."""
        async with self.rooms.use(notebook_id) as room:
            yield NotebookPeer(room, self.rooms, self._replication)
