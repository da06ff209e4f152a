"""Fold a snapshot and the updates logged after it into one update: what compaction stores.

Its own module, with nothing but the binding, because it runs in the document worker
(collab.sync.document_worker): folding applies the whole stored document, which for a
large notebook takes the binding a quarter of a second (10,000 cells), and on the event
loop that would stall every notebook the server holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pycrdt import Doc


def fold(updates: Sequence[bytes]) -> bytes:
    """The document state the updates make, as one update. Raises (the binding's ValueError,
    or pyo3's PanicException) if one is unreadable."""
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc.get_update()
