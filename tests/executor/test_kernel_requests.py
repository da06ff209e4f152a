"""Kernel requests at the runner: completions, signatures and frame pages, as a real runner
subprocess answers them (docs/runner-protocol.md, "Requests")."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.executor.test_runner import Kernel, Msg

FRAME = "application/vnd.weft.frame+json"
_ids = itertools.count(1)


def ask(kernel: Kernel, kind: str, timeout: float = 30, **fields: Any) -> Msg:
    request_id = f"q{next(_ids)}"
    kernel.send({"type": "request", "request_id": request_id, "kind": kind, **fields})
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        msg = kernel.next(timeout=remaining)
        if msg["type"] == "response":
            assert msg["request_id"] == request_id, msg
            return msg
        assert msg["type"] == "stream", msg  # nothing but late output may come between
    raise AssertionError(f"no answer to {kind} in {timeout} s")


def result(kernel: Kernel, kind: str, **fields: Any) -> dict[str, Any]:
    msg = ask(kernel, kind, **fields)
    assert msg["ok"], msg
    value: dict[str, Any] = msg["result"]
    return value


def labels(answer: dict[str, Any]) -> list[str]:
    return [item["label"] for item in answer["items"]]


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(tmp_path)
    try:
        yield k
    finally:
        k.close()


def test_completions_see_only_the_cells_above(kernel: Kernel) -> None:
    kernel.run("alpha_above = 1\nimport math", cell="a")
    kernel.run("alpha_below = 2", cell="c", visible=["a"])
    answer = result(kernel, "complete", code="print(alpha_", visible=["a"])
    assert answer["prefix"] == "alpha_"
    assert labels(answer) == ["alpha_above"]
    # The same names as a run of the cell would see: the cell below is not visible.
    assert kernel.run("alpha_below", cell="b", visible=["a"]).error["ename"] == "NameError"
    assert "alpha_below" in labels(result(kernel, "complete", code="alpha_", visible=["a", "c"]))
    assert "floor" in labels(result(kernel, "complete", code="math.fl", visible=["a"]))
    assert labels(result(kernel, "complete", code="math.fl", visible=[])) == []
    words = labels(result(kernel, "complete", code="whi", visible=[]))
    assert "while" in words  # keywords and builtins come too
    assert "pandas" in labels(result(kernel, "complete", code="import pand", visible=[]))


def test_attributes_of_live_objects_without_calling_anything(kernel: Kernel) -> None:
    run = kernel.run(
        "import pandas as pd\n"
        "calls = []\n"
        "class Sneaky:\n"
        "    @property\n"
        "    def boom(self):\n"
        "        calls.append('boom')\n"
        "        return self\n"
        "    def method(self, a, b=2):\n"
        "        '''Adds things.\n\n        More words.'''\n"
        "df = pd.DataFrame({'price': [1.0], 'region name': ['x']})\n"
        "s = Sneaky()",
        cell="a",
    )
    assert run.status == "ok", run.messages
    got = {i["label"]: i for i in result(kernel, "complete", code="df.", visible=["a"])["items"]}
    assert got["price"]["detail"] == "column float64"
    assert {"sort_values", "groupby", "columns"} <= set(got)
    assert labels(result(kernel, "complete", code="df['reg", visible=["a"])) == ["region name"]
    assert "mean" in labels(result(kernel, "complete", code="df.price.me", visible=["a"]))
    sneaky = {i["label"]: i for i in result(kernel, "complete", code="s.", visible=["a"])["items"]}
    assert sneaky["boom"]["type"] == "property"
    assert sneaky["method"]["type"] == "function"
    # Following a property would call it: nothing completes, and nothing ran.
    assert result(kernel, "complete", code="s.boom.", visible=["a"])["items"] == []
    assert "foo()" not in json.dumps(result(kernel, "complete", code="foo().", visible=["a"]))
    assert (
        kernel.run("calls", cell="z", visible=["a"]).of("result")[0]["data"]["text/plain"] == "[]"
    )


def test_signatures_and_the_first_doc_line(kernel: Kernel) -> None:
    kernel.run("import pandas as pd\ndef f(x, y=1, *rest, key=None):\n    'Does f.'", cell="a")
    sig = result(kernel, "signature", code="f(1, ", visible=["a"])["signature"]
    assert sig["name"] == "f"
    assert sig["params"][:2] == ["x", "y=1"]
    assert sig["active"] == 1
    assert sig["doc"] == "Does f."
    assert result(kernel, "signature", code="f(1, key=", visible=["a"])["signature"]["active"] == 3
    read = result(kernel, "signature", code="pd.read_csv('a,b(.csv', se", visible=["a"])
    assert read["signature"]["params"][1].startswith("sep")
    assert read["signature"]["active"] == 1
    frame = result(kernel, "signature", code="pd.DataFrame({'a': [1]}).head(", visible=["a"])
    assert frame["signature"] is None  # knowing it would mean calling DataFrame(...)
    kernel.run("df = pd.DataFrame({'a': [1]})", cell="b", visible=["a"])
    head = result(kernel, "signature", code="df.head(", visible=["a", "b"])["signature"]
    assert head["params"][0].startswith("n")
    assert "self" not in head["params"][0]
    assert result(kernel, "signature", code="f(1)", visible=["a"])["signature"] is None
    assert result(kernel, "signature", code="g(", visible=["a"])["signature"] is None


def _frame(kernel: Kernel, rows: int) -> dict[str, Any]:
    run = kernel.run(
        "import pandas as pd, numpy as np\n"
        f"n = {rows}\n"
        "df = pd.DataFrame({'i': np.arange(n), 'v': (np.arange(n) * 7919) % 1000,\n"
        "                   'name': ['n%d' % (k % 10) for k in range(n)]})\n"
        "df",
        cell="a",
    )
    assert run.status == "ok", run.messages
    data: dict[str, Any] = run.of("result")[0]["data"]
    return data


def test_a_large_frame_shows_its_shape_and_one_page(kernel: Kernel) -> None:
    data = _frame(kernel, 200_000)
    assert "text/html" not in data
    assert data["text/plain"].startswith("DataFrame: 200,000 rows x 3 columns")
    grid = data[FRAME]
    assert grid["rows"] == 200_000
    assert len(grid["page"]["rows"]) == 50
    assert [c["dtype"] for c in grid["columns"]][:2] == ["int64", "int64"]
    assert grid["columns"][1]["summary"] == {"nulls": 0, "min": 0, "max": 999, "mean": 499.5}
    assert len(json.dumps(data)) < 20_000  # one page, never the frame
    small = kernel.run("df.head(3)", cell="b", visible=["a"]).of("result")[0]["data"]
    assert "text/html" in small
    assert len(small[FRAME]["page"]["rows"]) == 3


def test_pages_sorted_and_filtered_by_the_kernel(kernel: Kernel) -> None:
    ref = _frame(kernel, 200_000)[FRAME]["ref"]
    page = result(
        kernel,
        "frame_page",
        ref=ref,
        sort=[{"column": "v", "descending": True}],
        page=1,
        page_size=5,
    )
    assert page["offset"] == 5
    assert page["total"] == 200_000
    assert all(row[1] == 999 for row in page["rows"])
    filtered = result(
        kernel,
        "frame_page",
        ref=ref,
        filter=[
            {"column": "name", "op": "==", "value": "n3"},
            {"column": "v", "op": "<", "value": "10"},
        ],
        sort=[{"column": "i"}],
        page_size=200,
    )
    assert filtered["total"] == sum(
        1 for k in range(200_000) if k % 10 == 3 and (k * 7919) % 1000 < 10
    )
    assert [r[0] for r in filtered["rows"]] == sorted(r[0] for r in filtered["rows"])
    contains = result(
        kernel, "frame_page", ref=ref, filter=[{"column": "name", "op": "contains", "value": "7"}]
    )
    assert contains["total"] == 20_000


def test_hostile_requests_get_a_clear_error_and_the_kernel_carries_on(kernel: Kernel) -> None:
    ref = _frame(kernel, 1000)[FRAME]["ref"]
    missing = ask(
        kernel, "frame_page", ref=ref, filter=[{"column": "nope", "op": "==", "value": 1}]
    )
    assert not missing["ok"]
    assert "no column 'nope'" in missing["error"]
    assert "its columns: i, v, name" in missing["error"]
    unknown = ask(kernel, "frame_page", ref="0123456789abcdef")
    assert not unknown["ok"]
    assert "no longer holds this table" in unknown["error"]
    expression = ask(
        kernel,
        "frame_page",
        ref=ref,
        filter=[{"column": "v", "op": "__import__('os')", "value": 1}],
    )
    assert not expression["ok"]
    assert "unknown filter op" in expression["error"]
    nan = ask(kernel, "frame_page", ref=ref, filter=[{"column": "v", "op": ">", "value": "ten"}])
    assert not nan["ok"]
    assert "not a number" in nan["error"]
    huge = result(kernel, "complete", code="x" * 5_000_000 + ".", visible=["a"])
    assert huge["items"] == []
    assert not ask(kernel, "dance")["ok"]
    # A re-run of the cell drops the frames of its earlier outputs.
    _frame(kernel, 10)
    assert "no longer holds" in ask(kernel, "frame_page", ref=ref)["error"]
    assert kernel.run("1 + 1", cell="z").status == "ok"


def test_a_slow_request_is_cut_at_its_budget(tmp_path: Path) -> None:
    k = Kernel(tmp_path, env={"WEFT_KERNEL_REQUEST_BUDGET_SECONDS": "0.5", "PATH": "/usr/bin:/bin"})
    try:
        k.run(
            "class Slow:\n    def __dir__(self):\n        while True: pass\nslow = Slow()", cell="a"
        )
        started = time.monotonic()
        answer = ask(k, "complete", code="slow.", visible=["a"])
        assert time.monotonic() - started < 5
        assert not answer["ok"]
        assert "more than 0.5 s" in answer["error"]
        assert k.run("2 + 2", cell="b").of("result")[0]["data"]["text/plain"] == "4"
    finally:
        k.close()


def test_a_request_waits_for_the_running_cell(kernel: Kernel) -> None:
    kernel.run("ready = 1", cell="a")
    run_id = kernel.start("import time\ntime.sleep(0.5)\nlate = 1", cell="b", visible=["a"])
    kernel.send(
        {"type": "request", "request_id": "w", "kind": "complete", "code": "la", "visible": ["b"]}
    )
    order: list[Msg] = []
    while len(order) < 2:
        msg = kernel.next()
        if msg["type"] in ("done", "response"):
            order.append(msg)
    assert [m["type"] for m in order] == ["done", "response"]
    assert order[0]["run_id"] == run_id
    assert "late" in labels(order[1]["result"])


def test_sorting_agrees_with_pandas_for_numbers_ties_missing_values_and_text(
    kernel: Kernel,
) -> None:
    run = kernel.run(
        "import pandas as pd, numpy as np\n"
        "rng = np.random.default_rng(7)\n"
        "f = pd.DataFrame({'a': rng.integers(0, 5, 3000), 'b': rng.random(3000),\n"
        "                  'u': rng.integers(0, 3, 3000).astype('uint8'),\n"
        "                  's': rng.choice(['x', 'y', 'z'], 3000)})\n"
        "f.loc[::7, 'b'] = np.nan\n"
        "f.loc[::11, 's'] = None\n"
        "f['t'] = pd.Timestamp('2024-01-01') + pd.to_timedelta(rng.integers(0, 9, 3000), 'D')\n"
        "f.loc[::13, 't'] = pd.NaT\n"
        "f",
        cell="a",
    )
    ref = run.of("result")[0]["data"][FRAME]["ref"]
    sorts: list[list[dict[str, Any]]] = [
        [{"column": "b", "descending": True}],
        [{"column": "a"}, {"column": "b", "descending": True}],
        [{"column": "u", "descending": True}, {"column": "a"}],
        [{"column": "s", "descending": True}, {"column": "a"}],
        [{"column": "s"}, {"column": "b", "descending": True}],
        [{"column": "t", "descending": True}],
        [{"column": "t"}, {"column": "s", "descending": True}],
    ]
    for sort in sorts:
        page = result(kernel, "frame_page", ref=ref, sort=sort, page_size=200, page=3)
        expected = kernel.run(
            "f.sort_values("
            + repr([k["column"] for k in sort])
            + ", ascending="
            + repr([not k.get("descending", False) for k in sort])
            + ", kind='stable', na_position='last').index[600:800].tolist()",
            cell="z",
            visible=["a"],
        )
        assert page["index"] == json.loads(expected.of("result")[0]["data"]["text/plain"]), sort


def test_frames_shown_are_held_within_a_budget_and_those_in_a_namespace_stay(
    kernel: Kernel,
) -> None:
    """The 16 newest frames shown are held; older ones only while a namespace holds them."""
    kept = _frame(kernel, 100)[FRAME]["ref"]  # `df` in cell a's namespace
    shown = []
    for k in range(20):  # frames nothing else refers to
        run = kernel.run(f"df.head({k + 1})", cell=f"h{k}", visible=["a"])
        shown.append(run.of("result")[0]["data"][FRAME]["ref"])
    assert ask(kernel, "frame_page", ref=kept)["ok"]
    assert all(ask(kernel, "frame_page", ref=ref)["ok"] for ref in shown[-16:])
    gone = ask(kernel, "frame_page", ref=shown[0])
    assert not gone["ok"]
    assert "no longer holds" in gone["error"]
