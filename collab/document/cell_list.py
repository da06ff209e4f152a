"""A document's ``cells``, kept in order as the binding's objects, from the list's own events.

pycrdt reads a list by index, and yrs walks the list from its start for every read: reading
a notebook's cells one by one is quadratic (~110 ms for 2,000 cells with outputs, ~1.5 s for
10,000, measured by bench/notebook_reads.py), and it ran on the event loop that serves
every notebook, for every indexing pass, every run and every output written. A ``CellList``
follows the list's changes instead (each event's delta: retained, inserted and deleted
entries), so reading entry ``i`` costs nothing and reading all of them is linear. Made
before the document's content is applied, the first event carries every cell; made on a
document that already has cells, it reads them once, cell by cell.

>>> cells = CellList(doc)
>>> doc.apply_update(stored)        # cells.entries() follows every change from now on
>>> for cell in cells.entries(): ...
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from pycrdt import Array, ArrayEvent, Doc

from collab.document.schema import CELLS


class CellList:
    def __init__(self, doc: Doc[Any]) -> None:
        self._doc = doc
        self._cells: Array[Any] = doc.get(CELLS, type=Array)
        self._entries: list[Any] | None = None  # None: read them again (see entries)
        if not len(self._cells):
            self._entries = []
        # Observed through a weak reference: the document holds its observers, and a bound
        # method would hold this list and through it the document, a cycle through the
        # binding that Python's collector cannot see (every document read with a CellList
        # stayed in memory for good: ~8 MB for 2,000 cells with outputs).
        self._subscription = self._cells.observe(_weakly(self._changed))

    def close(self) -> None:
        """Stop following the list: its owner is done changing the document. Reads after
        this see the list as it was."""
        self._cells.unobserve(self._subscription)

    def _changed(self, event: ArrayEvent) -> None:
        # Never raise into the binding's observer machinery (it can panic the document):
        # if this fails, the entries are read again when asked for.
        try:
            old = self._entries
            if old is None:
                return
            delta: list[dict[str, Any]] = event.delta  # type: ignore[attr-defined]  # slots
            new: list[Any] = []
            position = 0
            for change in delta:
                if "retain" in change:
                    count = int(change["retain"])
                    new.extend(old[position : position + count])
                    position += count
                elif "delete" in change:
                    position += int(change["delete"])
                elif "insert" in change:
                    new.extend(change["insert"])
            new.extend(old[position:])
            self._entries = new
        except Exception:
            self._entries = None

    def _current(self) -> list[Any]:
        if self._entries is None:
            with self._doc.transaction():  # cell by cell, once
                self._entries = self._cells[0 : len(self._cells)]
        return self._entries

    def entries(self) -> list[Any]:
        """The entries of ``cells`` in order (maps, or whatever else is there): a copy."""
        return list(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def entry(self, index: int) -> Any:
        return self._current()[index]


def _weakly(method: Callable[[ArrayEvent], None]) -> Callable[[ArrayEvent], None]:
    """``method``, called only while its object lives; holds no reference to it."""
    ref = weakref.WeakMethod(method)

    def call(event: ArrayEvent) -> None:
        target = ref()
        if target is not None:
            target(event)

    return call
