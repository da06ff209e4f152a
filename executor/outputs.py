"""Turning runner messages into notebook outputs, live, within the caps on what one run may
put into the shared document (every collaborator downloads it).

Each cap ends in a visible note, in the cell, of what was cut and which setting sets it:
stream text per cell, bytes per output, bytes and number of outputs per cell, bytes of a
cell's symbols, and the outputs kept with the run's record (``GET /api/runs/{id}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collab.document.schema import SYMBOL_CUT_TYPE, Symbol
from collab.sync.peers import NotebookPeer

_NOTE_RESERVE = 1000  # room kept under a cap for the note that says it was reached
_TRACEBACK_LINES = 100
_TRACEBACK_LINE_CHARS = 2000
_EVALUE_CHARS = 10_000


@dataclass(frozen=True)
class OutputLimits:
    stream_bytes: int = 1_000_000
    output_bytes: int = 5_000_000
    cell_bytes: int = 10_000_000
    cell_count: int = 1000
    record_bytes: int = 2_000_000
    symbols_bytes: int = 500_000


def size_of(value: Any) -> int:
    """About the JSON size of ``value`` in bytes, without encoding it all at once."""
    total = 0
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            total += len(item.encode("utf-8", "surrogatepass")) + 2
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)  # `: ` and `, `
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list):
            total += 2 + 2 * len(item)
            todo.extend(item)
        else:
            total += 8
    return total


def _bytes(size: int) -> str:
    return f"{size / 1e6:.3g} MB" if size >= 100_000 else f"{size:,} bytes"


def _note(text: str) -> dict[str, Any]:
    return {
        "output_type": "display_data",
        "data": {"text/plain": text},
        "metadata": {"weft": {"cut": True}},
    }


class OutputWriter:
    """Writes one run's outputs into its cell (as peer edits) and keeps a copy for the API."""

    def __init__(
        self, notebook: NotebookPeer, cell_id: str, limits: OutputLimits | int | None = None
    ) -> None:
        self._notebook = notebook
        self._cell_id = cell_id
        if isinstance(limits, int):
            limits = OutputLimits(stream_bytes=limits)
        self.limits = limits or OutputLimits()
        self._streamed = 0
        self._truncated = False
        self._total = 0  # bytes of this cell's outputs so far
        self._count = 0  # outputs in the cell so far
        self._full = False  # a per-cell cap was reached: everything later is dropped
        self._kept: list[dict[str, Any]] = []

    # -- what goes into the cell -------------------------------------------------------

    def _room(self, size: int, new_output: bool) -> bool:
        """Whether ``size`` more bytes (in a new output, or not) fit the cell's caps; when
        they do not, the note saying so is written once and everything later dropped."""
        if self._full:
            return False
        limits = self.limits
        if new_output and self._count + 1 >= limits.cell_count:
            text = (
                f"[outputs cut: this cell reached {limits.cell_count} outputs "
                "(WEFT_CELL_OUTPUTS_MAX_COUNT); later outputs were dropped]"
            )
        elif self._total + size > limits.cell_bytes - _NOTE_RESERVE:
            text = (
                f"[outputs cut: this cell's outputs reached {_bytes(limits.cell_bytes)} "
                "(WEFT_CELL_OUTPUTS_MAX_BYTES); later outputs were dropped]"
            )
        else:
            return True
        self._full = True
        self._put(_note(text))
        return False

    def _put(self, output: dict[str, Any]) -> None:
        self._notebook.add_output(self._cell_id, output)
        self._kept.append(output)
        self._count += 1
        self._total += size_of(output)

    def stream(self, name: str, text: str) -> None:
        if self._truncated or not text:
            return
        size = len(text.encode("utf-8", "surrogatepass"))
        cap = self.limits.stream_bytes
        if self._streamed + size > cap:
            keep = max(cap - self._streamed, 0)
            text = text.encode("utf-8", "surrogatepass")[:keep].decode(errors="ignore")
            text += f"\n[output truncated: more than {cap} bytes; later output dropped]\n"
            self._truncated = True
        last = self._kept[-1] if self._kept else None
        appends = bool(last and last["output_type"] == "stream" and last["name"] == name)
        if not self._room(len(text.encode("utf-8", "surrogatepass")), not appends):
            return
        self._streamed += size
        self._notebook.append_stream(self._cell_id, name, text)
        if last and appends:
            last["text"] += text
            self._total += len(text.encode("utf-8", "surrogatepass"))
        else:
            self._kept.append({"output_type": "stream", "name": name, "text": text})
            self._count += 1
            self._total += size_of(self._kept[-1])

    def add(self, output: dict[str, Any]) -> None:
        size = size_of(output)
        if size > self.limits.output_bytes:
            output = self._cut(output, size)
            size = size_of(output)
        if self._room(size, True):
            self._put(output)

    def _cut(self, output: dict[str, Any], size: int) -> dict[str, Any]:
        """What is left of an output over the per-output cap, saying what was cut."""
        note = (
            f"[output cut: {_bytes(size)}, over the limit of {_bytes(self.limits.output_bytes)} "
            "per output (WEFT_OUTPUT_MAX_BYTES)]"
        )
        if output["output_type"] == "error":
            lines = [line[:_TRACEBACK_LINE_CHARS] for line in output["traceback"]]
            return {
                **output,
                "ename": output["ename"][:200],
                "evalue": output["evalue"][:_EVALUE_CHARS],
                "traceback": [*lines[-_TRACEBACK_LINES:], note],
            }
        plain = output.get("data", {}).get("text/plain")
        text = plain + "\n" + note if isinstance(plain, str) and len(plain) <= 10_000 else note
        cut = {**output, "data": {"text/plain": text}, "metadata": {"weft": {"cut": True}}}
        return cut

    def error(self, ename: str, evalue: str, traceback: list[str]) -> None:
        self.add({"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback})

    # -- what is kept with the run -----------------------------------------------------

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """This run's outputs for its record, within ``record_bytes``."""
        kept: list[dict[str, Any]] = []
        total = 0
        for index, output in enumerate(self._kept):
            size = size_of(output)
            if total + size > self.limits.record_bytes - _NOTE_RESERVE:
                left = len(self._kept) - index
                kept.append(
                    _note(
                        f"[{left} output{'s' if left != 1 else ''} not kept with this run's "
                        f"record, past {_bytes(self.limits.record_bytes)} "
                        "(WEFT_RUN_RECORD_MAX_BYTES); the notebook shows them]"
                    )
                )
                break
            kept.append(output)
            total += size
        return kept


def cap_symbols(symbols: list[dict[str, Any]], max_bytes: int) -> list[Symbol]:
    """A cell's symbols within ``max_bytes``, in order; one last entry counts the rest
    (the runner's, checked by executor.protocol: name, type and repr are strings)."""
    kept: list[Symbol] = []
    total = 0
    for index, symbol in enumerate(symbols):
        entry: Symbol = {
            **symbol,  # type: ignore[typeddict-item]  # a schema, and what else it sent
            "name": symbol["name"][:200],
            "type": symbol["type"][:200],
            "repr": symbol["repr"][:1000],
        }
        size = size_of(entry)
        if total + size > max_bytes - _NOTE_RESERVE:
            left = len(symbols) - index
            kept.append(
                {
                    "name": f"... {left} more",
                    "type": SYMBOL_CUT_TYPE,
                    "repr": (
                        f"{left} more name{'s' if left != 1 else ''} not listed: this cell's "
                        f"symbols passed {_bytes(max_bytes)} (WEFT_SYMBOLS_MAX_BYTES)"
                    ),
                }
            )
            break
        kept.append(entry)
        total += size
    return kept
