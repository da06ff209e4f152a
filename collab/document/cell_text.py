"""The cells' ids and sources of a notebook document: what the search index stores.

Its own module, with nothing but the binding and the cell list, because a stored document
is read in the document worker (collab.sync.document_worker): applying a large notebook
takes the binding a quarter of a second (10,000 cells), and on the event loop that would
stall every notebook the server holds. The read also takes ~90 MB for 10,000 cells at its
peak, which an allocator keeps in part once freed; the worker gives it back after the read
(measured: the worker at 121 MB during the read, 30 MB a second later)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pycrdt import Doc, Map

from collab.document.cell_list import CellList


def document_cells(doc: Doc[Any], cells: CellList) -> tuple[list[str], list[str]]:
    """(cell ids, cell sources) of a notebook document, in order, from its CellList
    (collab.document.cell_list: reading ``cells`` by index is quadratic in pycrdt)."""
    ids, sources = [], []
    with doc.transaction():
        for cell in cells.entries():
            if not isinstance(cell, Map):
                continue
            source = cell.get("source")
            ids.append(str(cell.get("id") or ""))
            sources.append("" if source is None else str(source))
    return ids, sources


def stored_cells(updates: Sequence[bytes]) -> tuple[list[str], list[str]]:
    """``document_cells`` of the document the stored updates make. Raises (the binding's
    ValueError, or pyo3's PanicException) if one is unreadable."""
    doc: Doc[Any] = Doc()
    cells = CellList(doc)  # before the content: its first event lists every cell
    for update in updates:
        doc.apply_update(update)
    return document_cells(doc, cells)
