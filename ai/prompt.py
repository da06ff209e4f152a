"""The messages sent to the model: the prompt files in ``ai/prompts/`` filled in with the
notebook's context, cut to a token budget.

The target cell, the request and (for fix) the error are always sent. The rest is added by
priority until the budget is spent: the names the cell can use (nearest defining cell
first, DataFrames with their schemas), the workspace's files (with CSV and Parquet
schemas), then the cells around it, nearest first, alternating above and below. Each kind
stops at the first item that does not fit, so what is cut is always the far end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from ai.tokens import Tokenizer

PROMPTS = Path(__file__).resolve().parent / "prompts"

LANGUAGE_NAMES = {"python": "Python", "sql": "SQL"}
CURSOR = "<CURSOR/>"
SELECTION_START, SELECTION_END = "<SELECTION>", "</SELECTION>"

# How much of one thing is shown at most.
MAX_COLUMNS = 40
MAX_SAMPLE_ROWS = 3
MAX_VALUE_CHARS = 40
MAX_REPR_CHARS = 120
MAX_FILES = 100
ERROR_SHARE = 4  # the error may take at most 1/ERROR_SHARE of the budget
MESSAGE_OVERHEAD = 4  # tokens the chat format adds per message

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


@cache
def load_prompt(name: str) -> str:
    return (PROMPTS / f"{name}.md").read_text(encoding="utf-8")


def _fill(name: str, **values: str) -> str:
    return Template(load_prompt(name)).substitute(values)


@dataclass(frozen=True)
class Cell:
    id: str
    cell_type: str
    language: str
    source: str


@dataclass(frozen=True)
class PromptInput:
    """Everything the prompt is made of, as plain data (read from the document, the
    executor's symbols and the file store)."""

    mode: str  # generate | edit | fix
    instruction: str
    cells: list[Cell]
    target: int  # index of the cell written in
    # [start, end) in the target's source (str indices); None: generate at the end of the
    # cell, or edit/fix the whole cell. start == end: generate at a cursor.
    selection: tuple[int, int] | None = None
    symbols: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    # The notebook's own packages beyond the runtime image ("tabulate 0.10.0"), from its
    # resolved environment (meta.metadata.environment).
    packages: list[str] = field(default_factory=list)

    @property
    def language(self) -> str:
        return self.cells[self.target].language


@dataclass
class Prompt:
    messages: list[dict[str, str]]
    tokens: int
    # What went in and what was cut: counts, for the generation's record and the tests.
    report: dict[str, int]


# -- rendering pieces -------------------------------------------------------------------


def _short(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_cell(index: int, cell: Cell) -> str:
    kind = cell.language if cell.cell_type == "code" else cell.cell_type
    fence = "sql" if kind == "sql" else "python" if kind == "python" else ""
    body = cell.source.rstrip("\n")
    if cell.cell_type == "markdown":
        return f"### Cell {index + 1} (markdown)\n{body}" if body else f"### Cell {index + 1}"
    return f"### Cell {index + 1} ({kind})\n```{fence}\n{body}\n```"


def render_schema(schema: dict[str, Any]) -> list[str]:
    lines = []
    columns = list(schema.get("columns") or [])
    shown = ", ".join(f"{c.get('name')} ({c.get('dtype')})" for c in columns[:MAX_COLUMNS])
    more = len(columns) - MAX_COLUMNS
    lines.append(f"  columns: {shown}" + (f", and {more} more" if more > 0 else ""))
    names = [str(c.get("name")) for c in columns[:MAX_COLUMNS]]
    for row in list(schema.get("sample") or [])[:MAX_SAMPLE_ROWS]:
        values = {
            n: _short(v, MAX_VALUE_CHARS) if isinstance(v, str | dict | list) else v
            for n, v in zip(names, row, strict=False)
        }
        lines.append("  sample row: " + json.dumps(values, ensure_ascii=False))
    return lines


def render_symbol(symbol: dict[str, Any], cell_number: int) -> str:
    name, kind = symbol.get("name"), str(symbol.get("type") or "")
    schema = symbol.get("schema")
    if isinstance(schema, dict):
        rows = _count(schema.get("rows"))
        head = f"- {name}: {kind}"
        if rows is not None:
            head += f", {rows:,} rows"
        head += f" (cell {cell_number})"
        return "\n".join([head, *render_schema(schema)])
    return (
        f"- {name}: {kind} = {_short(symbol.get('repr', ''), MAX_REPR_CHARS)} (cell {cell_number})"
    )


def _count(value: Any) -> int | None:
    """A count from the document (JSON numbers may come back as floats)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _size(size: Any) -> str:
    size = _count(size)
    if size is None:
        return ""
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def render_file(entry: dict[str, Any]) -> str:
    path = str(entry.get("path"))
    if entry.get("type") == "dir":
        return f"- {path}/"
    line = f"- {path}"
    size = _size(entry.get("size"))
    schema = entry.get("schema")
    details = [size] if size else []
    if isinstance(schema, dict):
        if "error" in schema:
            details.append(str(schema["error"]))
        else:
            details.append(str(schema.get("format", "table")))
            rows = _count(schema.get("rows"))
            if rows is not None:
                details.append(f"{rows:,} rows")
    if details:
        line += f" ({', '.join(details)})"
    if isinstance(schema, dict) and schema.get("columns"):
        line += "\n" + "\n".join(render_schema({"columns": schema["columns"]}))
    return line


def render_error(error: dict[str, Any], tokenizer: Tokenizer, limit: int) -> str:
    """The error output: name, message and traceback, keeping the end (where the cause is)
    when it is too long."""
    trace = "\n".join(_ANSI.sub("", str(t)) for t in error.get("traceback") or [])
    head = f"{error.get('ename', 'Error')}: {error.get('evalue', '')}".strip()
    text = trace if head.split(":")[0] in trace else f"{trace}\n{head}".strip()
    if tokenizer.count(text) > limit:
        lines = text.splitlines()
        kept: list[str] = []
        used = tokenizer.count(head) + 10
        for line in reversed(lines):
            cost = tokenizer.count(line) + 1
            if used + cost > limit:
                break
            kept.insert(0, line)
            used += cost
        text = "… (start of the traceback cut)\n" + "\n".join(kept)
        if head not in text:
            text += "\n" + head
    return text


# -- visible names ------------------------------------------------------------------------


def visible_symbols(data: PromptInput) -> list[tuple[dict[str, Any], int]]:
    """(symbol, index of the defining cell) for every name the target cell can use: names
    from cells above only (no hidden state), the nearest definition of each, nearest first."""
    seen: set[str] = set()
    found = []
    for index in range(data.target - 1, -1, -1):
        for symbol in data.symbols.get(data.cells[index].id) or []:
            name = str(symbol.get("name"))
            if name and name not in seen:
                seen.add(name)
                found.append((symbol, index))
    return found


# -- the messages ---------------------------------------------------------------------------


def _target(data: PromptInput) -> tuple[str, str]:
    """The target cell as shown to the model, and the task's template name."""
    cell = data.cells[data.target]
    source = cell.source
    if data.selection is None:
        if data.mode == "generate":
            marked, task = (
                source.rstrip("\n") + ("\n" if source.strip() else "") + CURSOR,
                "generate",
            )
        else:
            marked, task = source, data.mode
    else:
        start, end = data.selection
        if start == end and data.mode == "generate":
            marked, task = source[:start] + CURSOR + source[start:], "generate"
        else:
            marked = source[:start] + SELECTION_START + source[start:end] + SELECTION_END
            marked += source[end:]
            task = "fix_selection" if data.mode == "fix" else "replace"
    fence = "sql" if cell.language == "sql" else "python"
    return f"```{fence}\n{marked.rstrip(chr(10))}\n```", task


def _language_rules(language: str, packages: list[str]) -> str:
    if language == "sql":
        return load_prompt("sql").rstrip("\n")
    extra = (
        f" This notebook's environment also has: {', '.join(packages[:40])}." if packages else ""
    )
    return Template(load_prompt("python")).substitute(packages=extra).rstrip("\n")


def build_prompt(data: PromptInput, tokenizer: Tokenizer, budget: int) -> Prompt:
    """The system and user messages for ``data``: the fixed part (the target cell, the task,
    the error) always, then as much context as ``budget`` tokens leave room for."""
    system = _system_message(data.language, data.packages)
    target, task_name = _target(data)
    task = _task(data, task_name, tokenizer, budget)
    fixed = system, _user_message(data, target, task, context="")
    room = _Budget(tokenizer, budget - sum(map(tokenizer.count, fixed)) - 2 * MESSAGE_OVERHEAD)
    visible = visible_symbols(data)
    context = _choose_context(data, visible, room)
    user = _user_message(data, target, task, context.render())
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    tokens = tokenizer.count(system) + tokenizer.count(user) + 2 * MESSAGE_OVERHEAD
    report = {
        "prompt_tokens": tokens,
        "budget_tokens": budget,
        **context.counts(data, len(visible)),
    }
    return Prompt(messages, tokens, report)


def _system_message(language: str, packages: list[str]) -> str:
    return _fill(
        "system",
        language_name=LANGUAGE_NAMES.get(language, language),
        language_rules=_language_rules(language, packages),
    ).strip()


def _task(data: PromptInput, task_name: str, tokenizer: Tokenizer, budget: int) -> str:
    """What the model is asked to do; for fix, with the error (at most a share of the budget)."""
    error = ""
    if data.mode == "fix":
        error_limit = max(200, budget // ERROR_SHARE)
        error = render_error(data.error or {}, tokenizer, error_limit) if data.error else ""
        error = "```\n" + (error or "(no error output was recorded)") + "\n```"
    instruction = data.instruction.strip()
    return _fill(
        f"task_{task_name}",
        instruction=instruction,
        error=error,
        instruction_line=f" The person adds: {instruction}" if instruction else "",
    ).strip()


def _user_message(data: PromptInput, target: str, task: str, context: str) -> str:
    return _fill(
        "request",
        context=context,
        cell_number=str(data.target + 1),
        cell_count=str(len(data.cells)),
        language_name=LANGUAGE_NAMES.get(data.language, data.language),
        target=target,
        task=task,
    ).strip()


class _Budget:
    """The tokens left for context. A section's heading is paid for with its first item."""

    def __init__(self, tokenizer: Tokenizer, left: int) -> None:
        self._tokenizer = tokenizer
        self.left = left

    def _heading(self, section: str) -> int:
        empty = Template(load_prompt(section)).safe_substitute(cells="", symbols="", files="")
        return self._tokenizer.count(empty)

    def take(self, text: str, section: str, *, first: bool) -> bool:
        """Spend what ``text`` costs, if it fits."""
        cost = self._tokenizer.count(text) + (self._heading(section) if first else 0)
        if cost > self.left:
            return False
        self.left -= cost
        return True

    def fill(self, texts: Iterable[str], section: str) -> list[str]:
        """The texts (one a line) in order, up to the first that does not fit."""
        taken: list[str] = []
        for text in texts:
            if not self.take(text + "\n", section, first=not taken):
                break
            taken.append(text)
        return taken


@dataclass
class _Context:
    """The context that fits, each kind in the order it was chosen (nearest first)."""

    symbols: list[str]
    files: list[str]
    above: list[str]
    below: list[str]

    def render(self) -> str:
        context = ""
        if self.above:
            context += _fill("section_cells_above", cells="\n\n".join(reversed(self.above)))
        if self.symbols:
            context += _fill("section_symbols", symbols="\n".join(self.symbols))
        if self.files:
            context += _fill("section_files", files="\n".join(self.files))
        if self.below:
            context += _fill("section_cells_below", cells="\n\n".join(self.below))
        return context

    def counts(self, data: PromptInput, names_visible: int) -> dict[str, int]:
        """What went in and what was cut, by kind."""
        return {
            "cells_above": len(self.above),
            "cells_above_cut": data.target - len(self.above),
            "cells_below": len(self.below),
            "cells_below_cut": len(data.cells) - data.target - 1 - len(self.below),
            "symbols": len(self.symbols),
            "symbols_cut": names_visible - len(self.symbols),
            "files": len(self.files),
            "files_cut": min(len(data.files), MAX_FILES)
            - len(self.files)
            + max(0, len(data.files) - MAX_FILES),
        }


def _choose_context(
    data: PromptInput, visible: list[tuple[dict[str, Any], int]], room: _Budget
) -> _Context:
    """By priority: the names the cell can use, the workspace's files, the cells around."""
    symbols = room.fill((render_symbol(s, index + 1) for s, index in visible), "section_symbols")
    files = room.fill(map(render_file, data.files[:MAX_FILES]), "section_files")
    above, below = _cells_around(data, room)
    return _Context(symbols, files, above, below)


def _cells_around(data: PromptInput, room: _Budget) -> tuple[list[str], list[str]]:
    """The cells above and below the target, nearest first, one above then one below, each
    side until it runs out or its next cell does not fit."""

    def rendered(indices: range) -> Iterator[str]:
        return (render_cell(index, data.cells[index]) for index in indices)

    sides = {
        "above": rendered(range(data.target - 1, -1, -1)),
        "below": rendered(range(data.target + 1, len(data.cells))),
    }
    chosen: dict[str, list[str]] = {side: [] for side in sides}
    while sides:
        for side, texts in list(sides.items()):
            text = next(texts, None)
            section = f"section_cells_{side}"
            if text is None or not room.take(text + "\n\n", section, first=not chosen[side]):
                del sides[side]
            else:
                chosen[side].append(text)
    return chosen["above"], chosen["below"]
