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
    language = data.language
    language_name = LANGUAGE_NAMES.get(language, language)
    system = _fill(
        "system",
        language_name=language_name,
        language_rules=_language_rules(language, data.packages),
    ).strip()
    target, task_name = _target(data)
    error = ""
    if data.mode == "fix":
        error_limit = max(200, budget // ERROR_SHARE)
        error = render_error(data.error or {}, tokenizer, error_limit) if data.error else ""
        error = "```\n" + (error or "(no error output was recorded)") + "\n```"
    instruction = data.instruction.strip()
    task = _fill(
        f"task_{task_name}",
        instruction=instruction,
        error=error,
        instruction_line=f" The person adds: {instruction}" if instruction else "",
    ).strip()

    def assemble(context: str) -> str:
        return _fill(
            "request",
            context=context,
            cell_number=str(data.target + 1),
            cell_count=str(len(data.cells)),
            language_name=language_name,
            target=target,
            task=task,
        ).strip()

    fixed = tokenizer.count(system) + tokenizer.count(assemble("")) + 2 * MESSAGE_OVERHEAD
    left = budget - fixed

    # Section headings are paid for when a section gets its first item.
    def heading(name: str) -> int:
        return tokenizer.count(
            Template(load_prompt(name)).safe_substitute(cells="", symbols="", files="")
        )

    symbols: list[str] = []
    for symbol, index in visible_symbols(data):
        text = render_symbol(symbol, index + 1)
        cost = tokenizer.count(text + "\n") + (0 if symbols else heading("section_symbols"))
        if cost > left:
            break
        symbols.append(text)
        left -= cost

    files: list[str] = []
    for entry in data.files[:MAX_FILES]:
        text = render_file(entry)
        cost = tokenizer.count(text + "\n") + (0 if files else heading("section_files"))
        if cost > left:
            break
        files.append(text)
        left -= cost

    above: list[str] = []  # nearest first
    below: list[str] = []
    open_above, open_below = True, True
    distance = 1
    while open_above or open_below:
        for direction in ("above", "below"):
            index = data.target - distance if direction == "above" else data.target + distance
            chosen = above if direction == "above" else below
            if (direction == "above" and not open_above) or (
                direction == "below" and not open_below
            ):
                continue
            if not 0 <= index < len(data.cells):
                if direction == "above":
                    open_above = False
                else:
                    open_below = False
                continue
            text = render_cell(index, data.cells[index])
            section = "section_cells_above" if direction == "above" else "section_cells_below"
            cost = tokenizer.count(text + "\n\n") + (0 if chosen else heading(section))
            if cost > left:
                if direction == "above":
                    open_above = False
                else:
                    open_below = False
                continue
            chosen.append(text)
            left -= cost
        distance += 1

    context = ""
    if above:
        context += _fill("section_cells_above", cells="\n\n".join(reversed(above)))
    if symbols:
        context += _fill("section_symbols", symbols="\n".join(symbols))
    if files:
        context += _fill("section_files", files="\n".join(files))
    if below:
        context += _fill("section_cells_below", cells="\n\n".join(below))
    user = assemble(context)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    tokens = tokenizer.count(system) + tokenizer.count(user) + 2 * MESSAGE_OVERHEAD
    visible = visible_symbols(data)
    report = {
        "prompt_tokens": tokens,
        "budget_tokens": budget,
        "cells_above": len(above),
        "cells_above_cut": data.target - len(above),
        "cells_below": len(below),
        "cells_below_cut": len(data.cells) - data.target - 1 - len(below),
        "symbols": len(symbols),
        "symbols_cut": len(visible) - len(symbols),
        "files": len(files),
        "files_cut": min(len(data.files), MAX_FILES)
        - len(files)
        + max(0, len(data.files) - MAX_FILES),
    }
    return Prompt(messages, tokens, report)
