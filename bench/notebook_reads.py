"""Server-side reads of a large notebook: what the event loop pays for them.

The search indexer reads every cell's text, the executor reads every cell before a run
(``NotebookPeer.cells``) and looks a cell up for every output it writes
(``NotebookPeer.cell_index``), and an export reads everything (``to_ipynb``). All of them run
on the event loop that serves every notebook. pycrdt reads a list element by element, each
read walking the list from its start, so reading cells one by one is quadratic; these
reads now take the whole list in one pass, and the peer keeps the cells' indexes.

For notebooks of ``--cells`` cells (bench/large_docs.py's: 4 code cells in 5 with two
outputs each), in a real Room, the best and the median of ``--repeat`` rounds, in ms:

- ``cell_by_cell``: the ids and sources read cell by cell (how these reads were made
  before), for the ratio within this run;
- ``document_cells`` (the indexer), ``cells`` (the executor's snapshot), ``to_ipynb``;
- ``cell_index_first`` (a new peer: one read of the list), ``cell_index_kept`` (the
  document unchanged since), ``cell_index_after_edit`` (someone typed meanwhile: one check).

    .venv/bin/python bench/notebook_reads.py
    .venv/bin/python bench/notebook_reads.py --cells 1000,2000,10000 --repeat 5

One JSON line; see bench/README.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sync_latency as sl
from large_docs import make_ipynb
from pycrdt import Array, Map

from collab.document.cell_text import document_cells
from collab.document.notebook import parse_ipynb, seed_update, to_ipynb
from collab.sync.peers import NotebookPeer
from collab.sync.room import Room


class NoWriter:
    """The room's update sink: this benchmark keeps nothing (it measures reads)."""

    def schedule(self, room: Room) -> None:
        pass


def cell_by_cell(room: Room) -> tuple[list[str], list[str]]:
    cells = room.doc.get("cells", type=Array)
    ids, sources = [], []
    with room.doc.transaction():
        for index in range(len(cells)):
            cell = cells[index]
            if isinstance(cell, Map):
                ids.append(str(cell.get("id") or ""))
                sources.append(str(cell.get("source") or ""))
    return ids, sources


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1000


def measure(cells: int, repeat: int) -> dict[str, Any]:
    notebook = parse_ipynb(json.dumps(make_ipynb(cells)).encode())
    notebook_id = uuid.uuid4()
    room = Room(notebook_id, [seed_update(notebook, notebook_id)], 0, NoWriter())
    last = f"c{cells - 1:05d}"
    samples: dict[str, list[float]] = {}

    def add(name: str, ms: float) -> None:
        samples.setdefault(name, []).append(ms)

    for _ in range(repeat):
        add("cell_by_cell", timed(lambda: cell_by_cell(room)))
        add("document_cells", timed(lambda: document_cells(room.doc, room.cells)))
        peer = NotebookPeer(room, None)  # type: ignore[arg-type]  # reads only
        add("cells", timed(peer.cells))
        add("cell_index_first", timed(lambda peer=peer: peer.cell_index(last)))
        add("cell_index_kept", timed(lambda peer=peer: peer.cell_index(last)))
        source = room.doc.get("cells", type=Array)[0]["source"]
        source.insert(0, "#")  # someone typed: the document changed
        add("cell_index_after_edit", timed(lambda peer=peer: peer.cell_index(last)))
        add("to_ipynb", timed(lambda: to_ipynb(room.doc)))
    assert peer.cell_index(last) == cells - 1
    report: dict[str, Any] = {"doc_bytes": len(room.doc.get_update())}
    for name, values in samples.items():
        report[f"{name}_ms"] = {
            "best": round(min(values), 2),
            "median": round(statistics.median(values), 2),
        }
    report["cell_by_cell_over_document_cells"] = round(
        min(samples["cell_by_cell"]) / min(samples["document_cells"]), 2
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="1000,2000,10000", help="comma-separated sizes")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per size (default 5)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.cells.split(",") if n.strip()]
    if not sizes or any(not 1 <= n <= 20_000 for n in sizes) or not 1 <= args.repeat <= 50:
        parser.error("--cells must be 1..20000 each, --repeat 1..50")
    result: dict[str, Any] = {
        "bench": "notebook_reads",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "rev": sl.git_revision(),
        "repeat": args.repeat,
    }
    for size in sizes:
        print(f"[notebook_reads] {size} cells", file=sys.stderr, flush=True)
        result[f"cells_{size}"] = measure(size, args.repeat)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
