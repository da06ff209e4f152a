"""The exact messages sent for representative notebooks (snapshots), the budget, and the
parts the prompt is built from. Set WEFT_UPDATE_SNAPSHOTS=1 to rewrite the snapshots after
a deliberate change of the prompt files, and review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ai.prompt import Cell, PromptInput, build_prompt
from ai.tokens import Tokenizer, load_tokenizer

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted((HERE / "notebooks").glob("*.json"))


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer("gpt-4o-mini")


def prompt_input(case: dict[str, Any]) -> PromptInput:
    selection = case.get("selection")
    return PromptInput(
        mode=case["mode"],
        instruction=case["instruction"],
        cells=[Cell(c["id"], c["cell_type"], c["language"], c["source"]) for c in case["cells"]],
        target=case["target"],
        selection=tuple(selection) if selection else None,  # type: ignore[arg-type]
        symbols=case.get("symbols") or {},
        error=case.get("error"),
        files=case.get("files") or [],
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_messages_match_their_snapshot(path: Path, tokenizer: Tokenizer) -> None:
    case = json.loads(path.read_text())
    prompt = build_prompt(prompt_input(case), tokenizer, case.get("budget", 8000))
    got = {"messages": prompt.messages, "report": prompt.report}
    snapshot = HERE / "snapshots" / f"{path.stem}.json"
    if os.environ.get("WEFT_UPDATE_SNAPSHOTS") == "1" or not snapshot.exists():
        snapshot.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n")
    assert got == json.loads(snapshot.read_text()), f"prompt changed: see {snapshot}"


def test_names_come_from_cells_above_only(tokenizer: Tokenizer) -> None:
    case = json.loads((HERE / "notebooks" / "sales_plot.json").read_text())
    user = build_prompt(prompt_input(case), tokenizer, 8000).messages[1]["content"]
    assert "- sales: pandas.core.frame.DataFrame, 1,200 rows (cell 2)" in user
    assert "columns: month (object), region (object), revenue (float64)" in user
    assert '"month": "2024-01"' in user
    assert "later" not in user.split("## Cells below")[0]  # defined below: not a usable name
    assert "secret (int64)" not in user
    assert "- data/sales.csv (48.2 kB, csv)" in user
    assert "- data/targets.parquet (2.0 kB, parquet, 12 rows)" in user
    assert "<CURSOR/>" in user


def test_the_budget_cuts_the_far_end_never_the_target(tokenizer: Tokenizer) -> None:
    case = json.loads((HERE / "notebooks" / "edit_many_cells.json").read_text())
    data = prompt_input(case)
    roomy = build_prompt(data, tokenizer, 8000)
    assert roomy.report["cells_above"] == 4
    assert roomy.report["cells_below"] == 3
    tight = build_prompt(data, tokenizer, 450)
    assert tight.tokens <= 450
    user = tight.messages[1]["content"]
    assert "for i in range(10):" in user  # the target
    assert "cell three, just above" in user
    assert "cell five, just below" in user
    assert "far above" not in user
    assert "far below" not in user
    assert tight.report["cells_above_cut"] >= 1
    assert tight.report["cells_below_cut"] >= 1
    # Even a budget smaller than the target keeps the whole target and the request.
    tiny = build_prompt(data, tokenizer, 10)
    assert "squares.append(i * i)" in tiny.messages[1]["content"]
    assert "use a list comprehension" in tiny.messages[1]["content"]
    assert tiny.report["cells_above"] == 0


def test_a_long_traceback_keeps_its_end(tokenizer: Tokenizer) -> None:
    case = json.loads((HERE / "notebooks" / "fix_error.json").read_text())
    case["error"]["traceback"] = [f"  frame {n}: something happened here" for n in range(2000)]
    case["error"]["traceback"].append("KeyError: 'revenue'")
    prompt = build_prompt(prompt_input(case), tokenizer, 2000)
    user = prompt.messages[1]["content"]
    assert "KeyError: 'revenue'" in user
    assert "frame 1999" in user
    assert "frame 0:" not in user
    assert "start of the traceback cut" in user
    assert prompt.tokens < 2000


def test_the_notebooks_own_packages_are_listed(tokenizer: Tokenizer) -> None:
    cells = [Cell("a", "code", "python", "")]
    data = PromptInput(mode="generate", instruction="a table", cells=cells, target=0)
    system = build_prompt(data, tokenizer, 4000).messages[0]["content"]
    assert "scikit-learn" in system
    assert "environment also has" not in system
    with_packages = PromptInput(
        mode="generate",
        instruction="a table",
        cells=cells,
        target=0,
        packages=["tabulate 0.10.0"],
    )
    system = build_prompt(with_packages, tokenizer, 4000).messages[0]["content"]
    assert "This notebook's environment also has: tabulate 0.10.0." in system
