"""The notebook API for peers: how the executor and the assistant read cells and write
outputs, run states, symbols and code.

Peers never touch the CRDT binding: every write here is an ordinary transaction on the
room's document, so it is made durable and broadcast exactly like a person's edit
(see ``Room._after_transaction``).

>>> async with open_notebook(services.rooms, notebook_id) as notebook:
...     with notebook.batch():
...         notebook.set_run(cell_id, {"state": "running"})
...         notebook.clear_outputs(cell_id)
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Map, Text

from collab.document.notebook import _json as to_json
from collab.sync import protocol
from collab.sync.protocol import AwarenessEntry
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


class NotebookPeer:
    def __init__(self, room: Room) -> None:
        self._room = room
        self._doc = room.doc
        self._batching = False

    @property
    def notebook_id(self) -> uuid.UUID:
        return self._room.notebook_id

    # -- reading ----------------------------------------------------------------------

    def _cells(self) -> Array[Any]:
        cells: Array[Any] = self._doc.get("cells", type=Array)
        return cells

    def _map(self, name: str) -> Map[Any]:
        table: Map[Any] = self._doc.get(name, type=Map)
        return table

    def cells(self) -> list[CellSnapshot]:
        snapshots = []
        for index, cell in enumerate(self._cells()):
            if not isinstance(cell, Map):
                continue  # anything else an editor put into `cells` is no cell
            metadata = to_json(cell["metadata"]) if "metadata" in cell else {}
            cell_type = str(cell["cell_type"]) if "cell_type" in cell else "code"
            snapshots.append(
                CellSnapshot(
                    id=str(cell["id"]),
                    index=index,
                    cell_type=cell_type,
                    language=str(metadata.get("language") or "python"),
                    source=str(cell["source"]) if "source" in cell else "",
                    metadata=metadata,
                )
            )
        return snapshots

    def cell(self, cell_id: str) -> CellSnapshot | None:
        return next((c for c in self.cells() if c.id == cell_id), None)

    def _ycell(self, cell_id: str) -> Map[Any] | None:
        cells = self._cells()
        for index in range(len(cells)):
            cell = cells[index]
            if isinstance(cell, Map) and "id" in cell and str(cell["id"]) == cell_id:
                return cell
        return None

    def metadata(self) -> dict[str, Any]:
        meta = self._map("meta")
        value = to_json(meta["metadata"]) if "metadata" in meta else {}
        return value if isinstance(value, dict) else {}

    def run(self, cell_id: str) -> dict[str, Any] | None:
        runs = self._map("runs")
        return to_json(runs[cell_id]) if cell_id in runs else None

    def runs(self) -> dict[str, dict[str, Any]]:
        value = to_json(self._map("runs"))
        return value if isinstance(value, dict) else {}

    def symbols(self) -> dict[str, list[dict[str, Any]]]:
        value = to_json(self._map("symbols"))
        return value if isinstance(value, dict) else {}

    def outputs(self, cell_id: str) -> list[dict[str, Any]]:
        cell = self._ycell(cell_id)
        if cell is None or "outputs" not in cell:
            return []
        value = to_json(cell["outputs"])
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

    def set_run(self, cell_id: str, state: dict[str, Any]) -> None:
        runs = self._map("runs")
        self._write(lambda: runs.__setitem__(cell_id, state))

    def set_kernel(self, state: dict[str, Any]) -> None:
        """The notebook's kernel status (starting, idle, busy, dead), for the status light."""
        kernel = self._map("kernel")

        def action() -> None:
            for key in list(kernel.keys()):
                if key not in state:
                    del kernel[key]
            for key in sorted(state):
                kernel[key] = state[key]

        self._write(action)

    def set_metadata(self, key: str, value: Any) -> None:
        """One entry of the notebook's metadata (``meta.metadata``: dependencies, the
        resolved environment), as an edit everyone sees."""
        meta = self._map("meta")

        def action() -> None:
            metadata = meta.get("metadata")
            if not isinstance(metadata, Map):
                metadata = Map()
                meta["metadata"] = metadata
            metadata[key] = value

        self._write(action)

    def set_symbols(self, cell_id: str, symbols: list[dict[str, Any]]) -> None:
        table = self._map("symbols")
        self._write(lambda: table.__setitem__(cell_id, symbols))

    def forget(self, cell_id: str) -> None:
        """Drop a deleted cell's run state and symbols."""
        runs, table = self._map("runs"), self._map("symbols")

        def action() -> None:
            if cell_id in runs:
                del runs[cell_id]
            if cell_id in table:
                del table[cell_id]

        self._write(action)

    def set_execution_count(self, cell_id: str, count: int | None) -> None:
        cell = self._ycell(cell_id)
        if cell is not None:
            self._write(lambda: cell.__setitem__("execution_count", count))

    @staticmethod
    def _outputs(cell: Map[Any]) -> Array[Any]:
        outputs = cell.get("outputs")
        if not isinstance(outputs, Array):
            outputs = Array()
            cell["outputs"] = outputs
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
                    and last.get("output_type") == "stream"
                    and last.get("name") == name
                ):
                    stream += text
                    return
            added: Map[Any] = Map()
            outputs.append(added)
            added["output_type"] = "stream"
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

    # -- text, in place (the assistant) ----------------------------------------------------

    def cell_text(self, cell_id: str) -> CellText | None:
        """A handle on one cell's source as it is now: writes through it are ordinary
        transactions, and it keeps pointing at the same text if the cell moves index."""
        cell = self._ycell(cell_id)
        source = cell.get("source") if cell is not None else None
        if not isinstance(source, Text):
            return None
        return CellText(self, cell_id, source)

    def observe_cells(self, callback: Callable[[Delta], None]) -> Callable[[], None]:
        """Call ``callback`` with the delta of every insertion or deletion of cells (not of
        changes inside them); returns the function that stops it."""
        return _observe(self._cells(), callback)

    def cell_index(self, cell_id: str) -> int | None:
        cells = self._cells()
        for index in range(len(cells)):
            cell = cells[index]
            if isinstance(cell, Map) and "id" in cell and str(cell["id"]) == cell_id:
                return index
        return None

    # -- the assistant's marks and presence --------------------------------------------

    def assist(self) -> dict[str, dict[str, Any]]:
        """The top-level ``assist`` map: cell id -> the assistant's work in that cell (a
        generation streaming, or a suggestion pending), for every collaborator to see."""
        value = to_json(self._map("assist"))
        return value if isinstance(value, dict) else {}

    def set_assist(self, cell_id: str, value: dict[str, Any] | None) -> None:
        table = self._map("assist")

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
        self._room.apply_remote_awareness(payload)
        self._room.publish_awareness(payload)


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
    """Hold the notebook's room (loading it if needed) for as long as the block runs."""
    async with rooms.use(notebook_id) as room:
        yield NotebookPeer(room)
