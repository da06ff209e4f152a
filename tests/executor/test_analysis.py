"""Static analysis of cells: defined names, free reads, stale dependents."""

from __future__ import annotations

import os
import random

import pytest

from executor.analysis import (
    CodeCell,
    DependencyGraph,
    KernelNamespaces,
    names_bound_surely,
    names_defined,
    names_read,
    names_read_sql,
    stale_after_change,
    stale_cells,
)

CASES = [
    # (source, defined, read)
    ("x = 1", {"x"}, set()),
    ("x = x + 1", {"x"}, {"x"}),
    ("total += 1", {"total"}, {"total"}),
    ("a, (b, *c) = d", {"a", "b", "c"}, {"d"}),
    ("obj.attr = v\nitems[k] = 1", set(), {"obj", "v", "items", "k"}),
    ("import os.path\nimport numpy as np\nfrom m import a, b as c", {"os", "np", "a", "c"}, set()),
    ("from m import *", set(), set()),
    ("import pandas as pd\ndf = pd.read_csv(path)", {"pd", "df"}, {"path"}),
    ("for i in items:\n    acc = i", {"i", "acc"}, {"items"}),
    ("with open(p) as fh:\n    data = fh.read()", {"fh", "data"}, {"open", "p"}),
    ("if (n := len(xs)) > 3:\n    pass\nn", {"n"}, {"len", "xs"}),
    ("squares = [i * k for i in range(n)]", {"squares"}, {"k", "range", "n"}),
    ("pairs = {a: b for a in xs for b in a if b > lim}", {"pairs"}, {"xs", "lim"}),
    ("gen = (i for i in i)", {"gen"}, {"i"}),  # the outer iterable is the cell's i
    ("hits = [y for v in vs if (y := v)]", {"hits", "y"}, {"vs"}),
    ("def f(a, b=default):\n    return a + b + helper(c)", {"f"}, {"default", "helper", "c"}),
    ("def f():\n    return later\nlater = 1", {"f", "later"}, set()),
    ("def f():\n    loc = 1\n    return loc", {"f"}, set()),
    ("@deco\ndef f(x: T) -> R:\n    pass", {"f"}, {"deco", "T", "R"}),
    ("def f():\n    global counter\n    counter += step", {"f", "counter"}, {"step"}),
    (
        "def outer():\n    v = 1\n    def inner():\n        nonlocal v\n        v += w\n"
        "    return inner",
        {"outer"},
        {"w"},
    ),
    ("g = lambda a, b=d0: a + b + free", {"g"}, {"d0", "free"}),
    (
        "class A(Base):\n    z = 1\n    w = z + q\n    def m(self):\n        return z",
        {"A"},
        {"Base", "q", "z"},  # a method cannot see the class body's z
    ),
    ("try:\n    pass\nexcept E as e:\n    print(e)\ne", set(), {"E", "print", "e"}),
    ("del x", set(), {"x"}),
    ("x = 1\ndel x", set(), set()),
    ("x: int", set(), {"int"}),
    ("y: int = 3", {"y"}, {"int"}),
    (
        "match cmd:\n    case [op, *rest]:\n        pass\n    case {'k': v, **kw}:\n        pass",
        {"op", "rest", "v", "kw"},
        {"cmd"},
    ),
    ("async def f():\n    async for q in src():\n        await q", {"f"}, {"src"}),
    ("print(f'{name!r} {width}')", set(), {"print", "name", "width"}),
]


@pytest.mark.parametrize(("source", "defined", "read"), CASES)
def test_defined_and_read(source: str, defined: set[str], read: set[str]) -> None:
    assert names_defined(source) == defined
    assert names_read(source) == read


@pytest.mark.parametrize(
    "source", ["x = (", "def f(:\n", "\x00", "return 1 +", "(" * 500 + ")" * 500]
)
def test_unparseable_cells_give_empty_sets(source: str) -> None:
    assert names_defined(source) == set()
    assert names_read(source) == set()


ORDER = ["a", "b", "c", "d", "e"]
SOURCES = {
    "a": "x = 1",
    "b": "y = x + 1",
    "c": "print('independent')",
    "d": "z = y * 2",
    "e": "w = x + z",
}
DEFINES = {cell: names_defined(src) for cell, src in SOURCES.items()}
READS = {cell: names_read(src) for cell, src in SOURCES.items()}


def test_stale_cells_are_transitive_and_in_order() -> None:
    stale = stale_cells(ORDER, "a", DEFINES["a"], READS, DEFINES)
    assert stale == ["b", "d", "e"]
    assert stale_cells(ORDER, "b", DEFINES["b"], READS, DEFINES) == ["d", "e"]
    assert stale_cells(ORDER, "e", DEFINES["e"], READS, DEFINES) == []


def test_stale_cells_only_look_below() -> None:
    reads = {**READS, "a": {"z"}}  # a reads z, but a is above d
    assert stale_cells(ORDER, "d", DEFINES["d"], reads, DEFINES) == ["e"]


def test_stale_cells_without_defines_are_direct_readers_only() -> None:
    assert stale_cells(ORDER, "a", {"x"}, READS) == ["b", "e"]


def test_a_cell_that_rebinds_a_name_hides_the_change() -> None:
    order = ["a", "b", "c"]
    sources = {"a": "x = 1", "b": "x = 2", "c": "print(x)"}
    defines = {c: names_defined(s) for c, s in sources.items()}
    reads = {c: names_read(s) for c, s in sources.items()}
    binds = {c: names_bound_surely(s) for c, s in sources.items()}
    assert stale_cells(order, "a", defines["a"], reads, defines, binds) == []
    assert stale_cells(order, "b", defines["b"], reads, defines, binds) == ["c"]


def test_a_binding_that_may_not_run_hides_nothing() -> None:
    # Issue 13, defect 1: `if flag: x = 2` may define x, but only surely bound names hide.
    order = ["r0", "r1", "r2", "r3"]
    sources = {"r0": "flag = False", "r1": "x = 1", "r2": "if flag:\n    x = 2", "r3": "print(x)"}
    defines = {c: names_defined(s) for c, s in sources.items()}
    reads = {c: names_read(s) for c, s in sources.items()}
    binds = {c: names_bound_surely(s) for c, s in sources.items()}
    assert "x" in defines["r2"]
    assert binds["r2"] == set()
    assert stale_cells(order, "r1", {"x"}, reads, defines, binds) == ["r3"]
    assert stale_cells(order, "r1", {"x"}, reads, defines) == ["r3"]  # without binds: no hiding


@pytest.mark.parametrize(
    ("source", "surely"),
    [
        ("x = 1\nimport os\ndef f(): pass\nclass K: pass", {"x", "os", "f", "K"}),
        ("if c:\n    x = 1\nfor r in rows:\n    y = r\nwhile 0:\n    z = 1", set()),
        ("try:\n    t = f()\nexcept E:\n    pass", set()),
        ("with open(p) as fh:\n    data = fh.read()", {"fh", "data"}),
        ("x = 1\ndel x", set()),
        ("a, (b, *c) = v\nn: int = 3\nm: int", {"a", "b", "c", "n"}),
    ],
)
def test_names_bound_surely(source: str, surely: set[str]) -> None:
    assert names_bound_surely(source) == surely


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("SELECT * FROM df", {"df"}),
        ("select a from Sales s join main.regions r on s.k = r.k", {"Sales", "regions"}),
        ("WITH t AS (SELECT * FROM raw) SELECT * FROM t", {"raw"}),
        (
            "SELECT (SELECT max(x) FROM sub) FROM df WHERE y IN (SELECT y FROM other)",
            {"df", "sub", "other"},
        ),
        ("SELECT * FROM read_csv('x.csv')", set()),
        ("SELECT * FROM 'data.parquet'", set()),
        ("CREATE TABLE tmp AS SELECT * FROM df; SELECT * FROM tmp JOIN q USING (k)", {"df", "q"}),
        ("FROM df SELECT a", {"df"}),
        ("SELECT 1", set()),
        ("SELEC oops FROM", set()),  # does not parse: reads nothing yet
    ],
)
def test_sql_table_reads(sql: str, tables: set[str]) -> None:
    assert names_read_sql(sql) == tables


def _graph(sources: dict[str, str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    return (
        {c: names_read(s) for c, s in sources.items()},
        {c: names_defined(s) for c, s in sources.items()},
    )


def test_stale_after_a_delete_or_a_move() -> None:
    sources = {"a": "x = 1", "b": "x = 2", "c": "print(x)", "d": "y = 0", "e": "print(y)"}
    reads, defines = _graph(sources)
    binds = {"a": {"x"}, "b": {"x"}, "c": set(), "d": {"y"}, "e": set()}
    order = list(sources)
    after_delete = {k: v for k, v in binds.items() if k != "b"}
    stale = stale_after_change(
        [c for c in order if c != "b"],
        reads,
        defines,
        after_delete,
        before_order=order,
        before_binds=binds,
    )
    assert stale == ["c"]
    # b moved above a: c sees a's x now; e is untouched.
    moved = ["b", "a", "c", "d", "e"]
    assert stale_after_change(
        moved, reads, defines, binds, before_order=order, before_binds=binds
    ) == ["c"]
    # A run of d that bound y to another object.
    assert stale_after_change(
        order, reads, defines, binds, before_order=order, before_binds=binds, rebound={"d": {"y"}}
    ) == ["e"]
    # ... and one that bound it to the same object: nothing a cell below sees changed.
    assert (
        stale_after_change(
            order,
            reads,
            defines,
            binds,
            before_order=order,
            before_binds=binds,
            rebound={"d": set()},
        )
        == []
    )


def test_unknown_cell_has_no_stale_dependents() -> None:
    assert stale_cells(ORDER, "zz", {"x"}, READS, DEFINES) == []


# -- the dependency graph, kept current cell by cell ----------------------------------------


def test_the_graph_analyses_only_cells_whose_source_changed() -> None:
    graph = DependencyGraph()
    cells = [CodeCell("a", "x = 1"), CodeCell("b", "y = x * 2"), CodeCell("c", "print(y)")]
    assert graph.update(cells) == ["a", "b", "c"]
    facts = {c.id: graph.facts(c.id) for c in cells}
    cells[0] = CodeCell("a", "x = 2\nz = x")
    assert graph.update(cells) == ["a"]
    assert graph.facts("b") is facts["b"]
    assert graph.facts("c") is facts["c"]
    reads, defines = graph.edges({})
    assert defines == {"a": {"x", "z"}, "b": {"y"}, "c": set()}
    assert reads == {"a": set(), "b": {"x"}, "c": {"print", "y"}}
    # A move analyses nothing; a deleted cell leaves the graph; a new language is a change.
    assert graph.update([cells[2], cells[0]]) == []
    assert graph.facts("b") is None
    assert graph.update([CodeCell("c", "print(y)", "sql"), cells[0]]) == ["c"]
    assert graph.update([CodeCell("c", "print(y)", "sql", "out"), cells[0]]) == ["c"]


def test_a_run_analyses_only_the_cells_edited_since_the_last() -> None:
    names = KernelNamespaces()
    cells = [CodeCell("a", "x = 1"), CodeCell("b", "y = x * 2"), CodeCell("c", "print(y)")]
    names.cells_changed(cells)
    names.ran(cells, "a", {"x"})
    facts = {c.id: names.graph.facts(c.id) for c in cells}
    cells[2] = CodeCell("c", "print(x)")  # edited while nothing ran
    assert names.ran(cells, "a", {"x"}, ["x"]) == ["b", "c"]
    assert names.graph.facts("a") is facts["a"]
    assert names.graph.facts("b") is facts["b"]
    assert names.graph.facts("c") is not facts["c"]


def test_the_graph_kept_current_matches_one_built_afresh() -> None:
    """Random edits, moves, deletes and language changes: the graph kept current gives the
    same edges as a graph built from the cells as they are (WEFT_GRAPH_EDITS for more)."""
    rng = random.Random(17)
    sources = [
        "x = 1",
        "y = x + 1",
        "SELECT * FROM df",
        "df = load(x)",
        "print(y, DF)",
        "def f():\n    return z",
        "z = f()",
        "import os",
        "x",
    ]
    cells = [CodeCell(f"c{i}", rng.choice(sources)) for i in range(6)]
    graph = DependencyGraph()
    for step in range(int(os.environ.get("WEFT_GRAPH_EDITS", "500"))):
        kind = rng.randrange(4)
        i = rng.randrange(len(cells))
        if kind == 0:
            cells[i] = CodeCell(cells[i].id, rng.choice(sources), cells[i].language)
        elif kind == 1:
            cells.insert(rng.randrange(len(cells)), cells.pop(i))
        elif kind == 2 and len(cells) > 2:
            cells.pop(i)
        else:
            language = "sql" if cells[i].language == "python" else "python"
            cells.insert(i, CodeCell(f"n{step}", cells[i].source, language))
        graph.update(cells)
        fresh = DependencyGraph()
        fresh.update(cells)
        bound = {c.id: {"DF"} for c in cells[:1]}
        assert graph.edges(bound) == fresh.edges(bound), step
