"""The notebook document schema (DESIGN.md "The document"), and .ipynb in and out.

One Y.Doc per notebook, compatible with jupyter_ydoc's YNotebook:

- ``cells``: Y.Array of Y.Map {id, cell_type, source: Y.Text, metadata: Y.Map,
  outputs: Y.Array of Y.Map (a stream's ``text`` is a Y.Text), execution_count}
- ``meta``: Y.Map {nbformat, nbformat_minor, metadata: Y.Map}
- ``runs`` and ``symbols``: Y.Map keyed by cell id, owned by the executor.

Seeding is deterministic: the same notebook JSON seeded with the same notebook id always
gives the same Yjs items under the same ids (a fixed client id and a fixed order of writes;
only the byte order inside plain JSON maps may differ), so applying a seed twice is a no-op
and can never duplicate cells.
"""

from __future__ import annotations

import uuid
from typing import Any

import nbformat
import y_py as Y

from collab.errors import BadRequest

# The Yjs client id of seed content. Browsers pick random 32-bit ids, so a collision is as
# unlikely as between any two clients; what matters is that it never changes.
SEED_CLIENT_ID = 0x5EED

CELL_TYPES = ("code", "markdown", "raw")
NBFORMAT = 4
NBFORMAT_MINOR = 5

JSON = Any


def empty_notebook(title: str) -> dict[str, JSON]:
    """What a new notebook holds: one empty Python code cell, as Jupyter starts."""
    return {
        "nbformat": NBFORMAT,
        "nbformat_minor": NBFORMAT_MINOR,
        "metadata": {
            "title": title,
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [
            {
                "cell_type": "code",
                "source": "",
                "metadata": {"language": "python"},
                "outputs": [],
                "execution_count": None,
            }
        ],
    }


def parse_ipynb(raw: bytes) -> dict[str, JSON]:
    """Read and validate an .ipynb upload; anything nbformat rejects is a 400 naming why."""
    try:
        node = nbformat.reads(raw.decode("utf-8"), as_version=NBFORMAT)
    except UnicodeDecodeError:
        raise BadRequest("the notebook is not UTF-8 text") from None
    except Exception as exc:  # nbformat raises several unrelated types for bad input
        raise BadRequest(f"not a Jupyter notebook: {exc}") from None
    try:
        nbformat.validate(node)
    except nbformat.ValidationError as exc:
        raise BadRequest(f"invalid notebook: {exc.message}") from None
    return dict(node)


def _text(value: JSON) -> str:
    if isinstance(value, list):
        return "".join(str(part) for part in value)
    return "" if value is None else str(value)


def _plain(value: JSON) -> JSON:
    """nbformat's NotebookNode is a dict subclass; y-py wants plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _set_sorted(txn: Y.YTransaction, target: Y.YMap, values: dict[str, JSON]) -> None:
    # Sorted keys: the same input always integrates in the same order with the same clocks.
    for key in sorted(values):
        target.set(txn, key, values[key])


def _output_prelim(output: dict[str, JSON]) -> dict[str, JSON]:
    out = {k: _plain(v) for k, v in output.items()}
    if out.get("output_type") == "stream":
        out["text"] = _text(out.get("text"))
    return out


def _write_output(txn: Y.YTransaction, outputs: Y.YArray, output: dict[str, JSON]) -> None:
    outputs.append(txn, Y.YMap({}))
    target = outputs[len(outputs) - 1]
    values = _output_prelim(output)
    for key in sorted(values):
        if key == "text" and values.get("output_type") == "stream":
            target.set(txn, key, Y.YText(values[key]))
        else:
            target.set(txn, key, values[key])


def _write_cell(txn: Y.YTransaction, cells: Y.YArray, cell: dict[str, JSON], cell_id: str) -> None:
    cell_type = cell.get("cell_type", "code")
    if cell_type not in CELL_TYPES:
        raise BadRequest(f"unknown cell type {cell_type!r}")
    cells.append(txn, Y.YMap({}))
    target = cells[len(cells) - 1]
    metadata = _plain(dict(cell.get("metadata") or {}))
    if cell_type == "code":
        metadata.setdefault("language", "python")
    # Fixed order: id, cell_type, source, metadata, outputs, execution_count, attachments.
    target.set(txn, "id", cell_id)
    target.set(txn, "cell_type", cell_type)
    target.set(txn, "source", Y.YText(_text(cell.get("source"))))
    target.set(txn, "metadata", Y.YMap({}))
    _set_sorted(txn, target["metadata"], metadata)
    if cell_type == "code":
        target.set(txn, "outputs", Y.YArray([]))
        for output in cell.get("outputs") or []:
            _write_output(txn, target["outputs"], dict(output))
        count = cell.get("execution_count")
        target.set(txn, "execution_count", count if isinstance(count, int) else None)
    if cell.get("attachments"):
        target.set(txn, "attachments", _plain(cell["attachments"]))


def seed_update(notebook: dict[str, JSON], notebook_id: uuid.UUID) -> bytes:
    """The whole notebook as one Yjs update whose item ids depend only on id and content."""
    doc = Y.YDoc(client_id=SEED_CLIENT_ID)
    cells = doc.get_array("cells")
    meta = doc.get_map("meta")
    used: set[str] = set()
    with doc.begin_transaction() as txn:
        meta.set(txn, "nbformat", NBFORMAT)
        meta.set(txn, "nbformat_minor", NBFORMAT_MINOR)
        meta.set(txn, "metadata", Y.YMap({}))
        _set_sorted(txn, meta["metadata"], _plain(dict(notebook.get("metadata") or {})))
        for index, cell in enumerate(notebook.get("cells") or []):
            cell_id = str(cell.get("id") or "")
            if not cell_id or cell_id in used:
                cell_id = str(uuid.uuid5(notebook_id, f"cell-{index}"))
            used.add(cell_id)
            _write_cell(txn, cells, dict(cell), cell_id)
    return bytes(Y.encode_state_as_update(doc))


def _json(value: JSON) -> JSON:
    """A Y type or plain value as plain JSON."""
    if isinstance(value, Y.YText):
        return str(value)
    if isinstance(value, Y.YMap):
        return {k: _json(value[k]) for k in value}
    if isinstance(value, Y.YArray):
        return [_json(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _export_output(output: dict[str, JSON], execution_count: int | None) -> dict[str, JSON]:
    kind = output.get("output_type")
    if kind == "stream":
        return {
            "output_type": "stream",
            "name": output.get("name", "stdout"),
            "text": _text(output.get("text")),
        }
    if kind == "error":
        return {
            "output_type": "error",
            "ename": str(output.get("ename", "")),
            "evalue": str(output.get("evalue", "")),
            "traceback": [str(t) for t in output.get("traceback") or []],
        }
    result: dict[str, JSON] = {
        "output_type": kind if kind in ("display_data", "execute_result") else "display_data",
        "data": output.get("data") or {},
        "metadata": output.get("metadata") or {},
    }
    if result["output_type"] == "execute_result":
        count = output.get("execution_count", execution_count)
        result["execution_count"] = int(count) if isinstance(count, int | float) else None
    return result


def to_ipynb(doc: Y.YDoc, title: str | None = None) -> dict[str, JSON]:
    """The document as an nbformat 4.5 notebook (valid for nbformat.validate)."""
    meta = _json(doc.get_map("meta"))
    metadata = dict(meta.get("metadata") or {})
    if title is not None:
        metadata["title"] = title
    cells = []
    for raw in _json(doc.get_array("cells")):
        cell_type = raw.get("cell_type", "code")
        cell: dict[str, JSON] = {
            "id": str(raw.get("id")),
            "cell_type": cell_type,
            "metadata": raw.get("metadata") or {},
            "source": _text(raw.get("source")),
        }
        if cell_type == "code":
            count = raw.get("execution_count")
            cell["execution_count"] = int(count) if isinstance(count, int | float) else None
            cell["outputs"] = [
                _export_output(o, cell["execution_count"]) for o in raw.get("outputs") or []
            ]
        elif raw.get("attachments"):
            cell["attachments"] = raw["attachments"]
        cells.append(cell)
    return {
        "nbformat": NBFORMAT,
        "nbformat_minor": NBFORMAT_MINOR,
        "metadata": metadata,
        "cells": cells,
    }


# Maps that describe a live session (its kernel, its runs, the names it holds), not content.
SESSION_MAPS = ("runs", "symbols", "kernel")


def copy_update(doc: Y.YDoc, title: str) -> bytes:
    """A new notebook's document holding exactly this one's content (cells, sources, outputs,
    metadata) under ``title``, without the session state of the original's kernel."""
    copy = Y.YDoc()
    Y.apply_update(copy, Y.encode_state_as_update(doc))
    meta = copy.get_map("meta")
    with copy.begin_transaction() as txn:
        for name in SESSION_MAPS:
            session = copy.get_map(name)
            for key in list(session.keys()):
                session.pop(txn, key)
        if "metadata" not in meta:
            meta.set(txn, "metadata", Y.YMap({}))
        meta["metadata"].set(txn, "title", title)
    return bytes(Y.encode_state_as_update(copy))
