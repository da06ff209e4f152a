"""Where the assistant's text is in a cell while people keep typing in it.

A suggestion follows the cell's text by observing it: every change arrives as a Yjs delta,
right after its transaction, and moves the insertion point and the marks of which bytes
are the assistant's. From those marks, rejecting deletes exactly the assistant's bytes
(whatever others typed between them stays) and puts back what the assistant had replaced,
where it was. For the other clients, the same runs are published as Yjs relative positions
(``relative_ranges``), which each resolves in its own copy of the text.

Offsets count UTF-8 bytes, the binding's (yrs) unit for text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from collab.sync.peers import CellText, Delta, NotebookPeer

log = logging.getLogger(__name__)


def _length(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, list | tuple):
        return len(value)
    return 1


def map_position(position: int, delta: Delta, assoc: int) -> int | None:
    """``position`` after ``delta``. At an insertion exactly there, ``assoc < 0`` stays
    before the inserted content and ``assoc > 0`` moves after it. A position inside deleted
    content moves to where the deletion was; ``None`` is never returned for text."""
    old = new = 0
    for op in delta:
        if "retain" in op:
            n = int(op["retain"])
            if position < old + n:
                return new + position - old
            old += n
            new += n
        elif "insert" in op:
            if position == old and assoc < 0:
                return new
            new += _length(op["insert"])
        elif "delete" in op:
            n = int(op["delete"])
            if position < old + n:
                return new
            old += n
    return new + position - old


def _char_clocks(text: str, clock: int) -> tuple[list[int], int]:
    """For each UTF-8 byte of ``text`` written from Yjs clock ``clock`` on, the clock of its
    character's first UTF-16 unit; and the clock after the text."""
    clocks: list[int] = []
    for char in text:
        clocks.extend([clock] * len(char.encode("utf-8")))
        clock += 2 if ord(char) > 0xFFFF else 1
    return clocks, clock


def _position(client: int, clock: int, assoc: int) -> dict[str, Any]:
    """A Yjs relative position naming one character (``relativePositionToJSON``)."""
    return {"item": {"client": client, "clock": clock}, "assoc": assoc}


def index_after(index: int, delta: Delta) -> int | None:
    """The index of an array item after ``delta``, or ``None`` if the delta deleted it."""
    old = new = 0
    for op in delta:
        if "retain" in op:
            n = int(op["retain"])
            if index < old + n:
                return new + index - old
            old += n
            new += n
        elif "insert" in op:
            new += _length(op["insert"])
        elif "delete" in op:
            n = int(op["delete"])
            if index < old + n:
                return None
            old += n
    return new + index - old


class Suggestion:
    """The assistant's text in one cell, from the first token until it is accepted or
    rejected.

    >>> suggestion = Suggestion(notebook, text, start=0, end=len(text))  # to replace it all
    >>> suggestion.write("import pandas as pd\\n")
    >>> suggestion.reject()   # the cell as it was, plus what others typed meanwhile
    """

    def __init__(
        self,
        notebook: NotebookPeer,
        text: CellText,
        start: int,
        end: int,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._notebook = notebook
        self._text = text
        self._owned = bytearray(len(text))  # 1 for each byte the assistant wrote
        # For each byte the assistant wrote, the Yjs clock of the first UTF-16 unit of its
        # character (-1 for others' bytes); all under the peer's one client id.
        self._clocks: list[int] = [-1] * len(text)
        self._client = 0
        self._next_clock: int | None = None  # the clock of the insertion being written
        self._own = False
        self._on_lost = on_lost
        self.lost: str | None = None  # why the suggestion can no longer be tracked
        self._cell_index = notebook.cell_index(text.cell_id)
        self._stops = [text.observe(self._text_changed), notebook.observe_cells(self._cells)]
        size = len(text)
        start, end = max(0, min(start, size)), max(0, min(end, size))
        start, end = min(start, end), max(start, end)
        # The text to replace is removed with the first piece written, so the cell keeps
        # its code until the new code starts to arrive (and keeps it if none ever does).
        self._replace: tuple[int, int] | None = (start, end) if end > start else None
        self.removed = ""
        self.origin = start  # where the replaced text was (and the suggestion begins)
        self.anchor = start  # where the next piece of text goes
        self.version = 0  # grows with every change of the cell's text

    # -- following the document --------------------------------------------------------

    def _text_changed(self, delta: Delta) -> None:
        if self.lost:
            return
        self.version += 1
        own = self._own
        self.anchor = map_position(self.anchor, delta, +1 if own else -1) or 0
        self.origin = map_position(self.origin, delta, -1) or 0
        if self._replace is not None:
            # Others' text typed right at either edge of the range is not replaced.
            start = map_position(self._replace[0], delta, +1) or 0
            end = map_position(self._replace[1], delta, -1) or 0
            self._replace = (start, max(start, end))
        i = 0
        mark = b"\x01" if own else b"\x00"
        for op in delta:
            if "retain" in op:
                i += int(op["retain"])
            elif "insert" in op:
                inserted = op["insert"]
                n = _length(inserted)
                self._owned[i:i] = mark * n
                clocks = [-1] * n
                if own and self._next_clock is not None and isinstance(inserted, str):
                    clocks, self._next_clock = _char_clocks(inserted, self._next_clock)
                self._clocks[i:i] = clocks
                i += n
            elif "delete" in op:
                n = int(op["delete"])
                del self._owned[i : i + n]
                del self._clocks[i : i + n]
        if len(self._owned) != len(self._text):
            self._lose("lost track of the cell's text")

    def _cells(self, delta: Delta) -> None:
        if self._cell_index is None or self.lost:
            return
        self._cell_index = index_after(self._cell_index, delta)
        if self._cell_index is None:
            self._lose("the cell was deleted or moved")

    def _lose(self, reason: str) -> None:
        self.lost = reason
        log.warning("suggestion no longer tracked: %s", reason)
        self.stop()
        if self._on_lost is not None:
            self._on_lost(reason)

    def _write_own(self, action: Any) -> None:
        self._own = True
        try:
            action()
        finally:
            self._own = False

    # -- the assistant's writes ----------------------------------------------------------

    @property
    def written(self) -> int:
        """Bytes of the assistant's text still in the cell."""
        return sum(self._owned)

    @property
    def changed(self) -> bool:
        """Whether the cell differs from before because of the assistant."""
        return self.written > 0 or bool(self.removed)

    @property
    def ends_with_newline(self) -> bool:
        """Whether the text before the insertion point ends a line (or is empty)."""
        data = str(self._text).encode("utf-8")
        return self.anchor == 0 or data[self.anchor - 1 : self.anchor] == b"\n"

    def write(self, piece: str) -> None:
        """Insert ``piece`` where the last one ended (which others' edits may have moved)."""
        if piece and not self.lost:
            # Alone in its transaction: the observer must see it while ``_own`` is set.
            assert not self._notebook.in_batch, "the assistant's text is never batched"
            if self._replace is not None:
                start, end = self._replace
                self._replace = None
                current = str(self._text).encode("utf-8")
                self.removed = current[start:end].decode("utf-8", errors="replace")
                self._write_own(lambda: self._text.delete(start, end - start))
                self.origin = self.anchor = start
            anchor = min(self.anchor, len(self._text))
            self._client, self._next_clock = self._text.next_id()
            try:
                self._write_own(lambda: self._text.insert(anchor, piece))
            finally:
                self._next_clock = None

    def own_text(self) -> str:
        """The assistant's bytes still in the cell, in order (others' typing left out)."""
        data = str(self._text).encode("utf-8")
        return bytes(b for b, o in zip(data, self._owned, strict=False) if o).decode(
            "utf-8", errors="replace"
        )

    def ranges(self) -> list[tuple[int, int]]:
        """The assistant's bytes as [start, end) runs."""
        runs: list[tuple[int, int]] = []
        start = None
        for i, owned in enumerate(self._owned):
            if owned and start is None:
                start = i
            elif not owned and start is not None:
                runs.append((start, i))
                start = None
        if start is not None:
            runs.append((start, len(self._owned)))
        return runs

    def relative_ranges(self) -> list[dict[str, Any]]:
        """``ranges()`` as Yjs relative positions, what the document's ``assist`` mark
        carries: ``{"start", "end"}`` per run, in the JSON of Yjs's
        ``relativePositionToJSON`` (``Y.createRelativePositionFromJSON`` reads it, and
        ``Y.createAbsolutePositionFromRelativePosition`` gives the offset, in UTF-16 code
        units, in any copy of the text). ``start`` names the run's first character with
        assoc 0 and ``end`` its last with assoc -1, so text typed right before or right
        after the run stays outside it; a run always begins and ends on whole characters."""
        if self.lost:
            return []
        data = str(self._text).encode("utf-8")
        found: list[dict[str, Any]] = []
        for start, end in self.ranges():
            while start < end and data[start] & 0xC0 == 0x80:
                start += 1  # never inside a character (the assistant writes whole ones)
            last = end - 1
            while last > start and data[last] & 0xC0 == 0x80:
                last -= 1
            if last < start or self._clocks[start] < 0 or self._clocks[last] < 0:
                continue
            # A character of four UTF-8 bytes is two UTF-16 units: name its second one.
            final = self._clocks[last] + (1 if data[last] >= 0xF0 else 0)
            found.append(
                {
                    "start": _position(self._client, self._clocks[start], 0),
                    "end": _position(self._client, final, -1),
                }
            )
        return found

    # -- endings -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop following the text (after accept or reject)."""
        stops, self._stops = self._stops, []
        for stop in stops:
            stop()

    def accept(self) -> None:
        """The text stays as it is: ordinary text from now on."""
        self.stop()

    def reject(self) -> None:
        """Remove the assistant's bytes and put back what it replaced, in one transaction;
        whatever others typed meanwhile stays."""
        if self.lost:
            self.stop()
            return
        runs = self.ranges()
        # The replaced text goes back where the suggestion begins: text others typed right
        # before it stays before it. With nothing of the suggestion left, where it was.
        origin = runs[0][0] if runs else self.origin
        remaining = len(self._text) - sum(end - start for start, end in runs)
        self.stop()
        with self._notebook.batch():
            for start, end in reversed(runs):
                self._text.delete(start, end - start)
            if self.removed:
                self._text.insert(max(0, min(origin, remaining)), self.removed)
