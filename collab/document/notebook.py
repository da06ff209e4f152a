"""A notebook document built and read whole: deterministic seeding, .ipynb in and out,
copies. The schema (keys, run states, shapes) is ``collab.document.schema``'s.

Seeding is deterministic: the same notebook JSON seeded with the same notebook id always
gives the same Yjs items under the same ids (a fixed client id and a fixed order of writes;
only the byte order inside plain JSON maps may differ), so applying a seed twice is a no-op
and can never duplicate cells.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import nbformat
from pycrdt import Array, Doc, Map, Text

from collab.document.schema import CELL_TYPES, CELLS, DEPENDENCIES, META, SESSION_MAPS
from collab.errors import BadRequest

# The Yjs client id of seed content. Browsers pick random 32-bit ids, so a collision is as
# unlikely as between any two clients; what matters is that it never changes.
SEED_CLIENT_ID = 0x5EED

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
    """nbformat's NotebookNode is a dict subclass; the binding wants plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _set_sorted(target: Map[Any], values: dict[str, JSON]) -> None:
    # Sorted keys: the same input always integrates in the same order with the same clocks.
    for key in sorted(values):
        target[key] = values[key]


def _output_prelim(output: dict[str, JSON]) -> dict[str, JSON]:
    out = {k: _plain(v) for k, v in output.items()}
    if out.get("output_type") == "stream":
        out["text"] = _text(out.get("text"))
    return out


def _write_output(outputs: Array[Any], output: dict[str, JSON]) -> None:
    target: Map[Any] = Map()
    outputs.append(target)
    values = _output_prelim(output)
    for key in sorted(values):
        if key == "text" and values.get("output_type") == "stream":
            target[key] = Text(values[key])
        else:
            target[key] = values[key]


def _write_cell(cells: Array[Any], cell: dict[str, JSON], cell_id: str) -> None:
    cell_type = cell.get("cell_type", "code")
    if cell_type not in CELL_TYPES:
        raise BadRequest(f"unknown cell type {cell_type!r}")
    target: Map[Any] = Map()
    cells.append(target)
    metadata = _plain(dict(cell.get("metadata") or {}))
    if cell_type == "code":
        metadata.setdefault("language", "python")
    # Fixed order: id, cell_type, source, metadata, outputs, execution_count, attachments.
    target["id"] = cell_id
    target["cell_type"] = cell_type
    target["source"] = Text(_text(cell.get("source")))
    cell_metadata: Map[Any] = Map()
    target["metadata"] = cell_metadata
    _set_sorted(cell_metadata, metadata)
    if cell_type == "code":
        outputs: Array[Any] = Array()
        target["outputs"] = outputs
        for output in cell.get("outputs") or []:
            _write_output(outputs, dict(output))
        count = cell.get("execution_count")
        target["execution_count"] = count if isinstance(count, int) else None
    if cell.get("attachments"):
        target["attachments"] = _plain(cell["attachments"])


def seed_update(notebook: dict[str, JSON], notebook_id: uuid.UUID) -> bytes:
    """The whole notebook as one Yjs update whose item ids depend only on id and content."""
    doc: Doc[Any] = Doc(client_id=SEED_CLIENT_ID)
    cells = doc.get(CELLS, type=Array)
    meta = doc.get(META, type=Map)
    used: set[str] = set()
    with doc.transaction():
        meta["nbformat"] = NBFORMAT
        meta["nbformat_minor"] = NBFORMAT_MINOR
        metadata: Map[Any] = Map()
        meta["metadata"] = metadata
        values = _plain(dict(notebook.get("metadata") or {}))
        dependencies = values.pop(DEPENDENCIES, [])
        _set_sorted(metadata, values)
        # A Y.Array from the start, so two people adding a package at once both keep theirs
        # (a plain list is replaced whole by whoever writes last).
        metadata[DEPENDENCIES] = (
            Array(dependencies) if isinstance(dependencies, list) else dependencies
        )
        for index, cell in enumerate(notebook.get("cells") or []):
            cell_id = str(cell.get("id") or "")
            if not cell_id or cell_id in used:
                cell_id = str(uuid.uuid5(notebook_id, f"cell-{index}"))
            used.add(cell_id)
            _write_cell(cells, dict(cell), cell_id)
    return doc.get_update()


def _integers(value: JSON) -> JSON:
    # Yjs numbers are doubles: a count written as 3 reads back as 3.0.
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def plain_json(value: JSON) -> JSON:
    """A shared type or plain value as plain JSON.

    A map or list is rendered by the binding in one pass (``str``) and parsed: ``to_py``
    reads a list element by element, and each read walks the list from its start, so a
    notebook's cells took quadratic time (~1.5 s for 10,000 cells, on the event loop).
    The rendering also turns bytes into lists of numbers and NaN into null, as JSON has
    neither."""
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, Map | Array):
        value = json.loads(str(value))
    return _integers(value)


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


def to_ipynb(doc: Doc[Any], title: str | None = None) -> dict[str, JSON]:
    """The document as an nbformat 4.5 notebook (valid for nbformat.validate)."""
    meta = plain_json(doc.get(META, type=Map))
    metadata = dict(meta.get("metadata") or {})
    if metadata.get(DEPENDENCIES) == []:
        del metadata[DEPENDENCIES]  # every notebook has the list; an empty one says nothing
    if title is not None:
        metadata["title"] = title
    cells = []
    for raw in plain_json(doc.get(CELLS, type=Array)):
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


def copy_update(doc: Doc[Any], title: str) -> bytes:
    """A new notebook's document holding exactly this one's content (cells, sources, outputs,
    metadata) under ``title``, without the session state of the original's kernel."""
    copy: Doc[Any] = Doc()
    copy.apply_update(doc.get_update())
    meta = copy.get(META, type=Map)
    with copy.transaction():
        for name in SESSION_MAPS:
            session = copy.get(name, type=Map)
            for key in list(session.keys()):
                del session[key]
        set_title(meta, title)
    return copy.get_update()


def rename_document(doc: Doc[Any], title: str) -> None:
    """Set the title in the document (one transaction), so open clients see a rename live."""
    with doc.transaction():
        set_title(doc.get(META, type=Map), title)


def set_title(meta: Map[Any], title: str) -> None:
    """Write the notebook's title into its ``meta`` map (creating ``metadata`` if missing)."""
    metadata = meta.get("metadata")
    if not isinstance(metadata, Map):
        metadata = Map()
        meta["metadata"] = metadata
    metadata["title"] = title
