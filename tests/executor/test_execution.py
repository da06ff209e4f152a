"""Committed cells run in the notebook's kernel; outputs, states and symbols arrive live in
the document for every client; no hidden state."""

from __future__ import annotations

import anyio
import pytest

from tests.executor.conftest import Weft, text_of
from tests.support.nodeclient import node_client

pytestmark = pytest.mark.anyio

SLOW_LOOP = "import time\nfor i in range(6):\n    print('tick', i, flush=True)\n    time.sleep(0.3)"


async def test_output_streams_live_to_an_official_client(weft: Weft):
    notebook_id, (cell,) = await weft.notebook(SLOW_LOOP)
    async with node_client(weft.server.ws_base, notebook_id, token=weft.server.token) as watcher:
        await watcher.call("watch_outputs", cell_id=cell)
        run = await weft.run_and_wait(notebook_id, cell)
        assert run["state"] == "done"
        await anyio.sleep(0.2)
        history = (await watcher.call("history"))["history"]
        final = "".join(f"tick {i}\n" for i in range(6))
        texts = ["".join(o.get("text", "") for o in outputs or []) for outputs in history]
        assert texts[-1] == final
        partial = [t for t in texts if t and t != final]
        assert len(partial) >= 2, texts  # seen while it ran, not only at the end
        state = await watcher.call("state")
        assert state["runs"][cell]["state"] == "done"
        assert state["runs"][cell]["duration_ms"] > 1000
        assert state["cells"][0]["execution_count"] == 1
        assert state["kernel"]["state"] == "idle"
    assert run["outputs"] == [{"output_type": "stream", "name": "stdout", "text": final}]


async def test_committed_source_runs_even_while_people_type(weft: Weft):
    notebook_id, (cell,) = await weft.notebook("print('draft')")
    run = await weft.run_and_wait(notebook_id, cell, source="print('as committed')")
    assert text_of(run) == "as committed\n"


async def test_no_hidden_state_after_delete_and_move(weft: Weft):
    notebook_id, (a, b) = await weft.notebook("x = 41", "y = x + 1\ny")
    await weft.run_and_wait(notebook_id, a)
    run = await weft.run_and_wait(notebook_id, b)
    assert text_of(run) == "42"
    async with node_client(weft.server.ws_base, notebook_id, token=weft.server.token) as person:
        # Move b above a: b no longer sees x.
        await person.call("move_cell", **{"from": 1, "to": 0})
        await anyio.sleep(0.2)
        run = await weft.run_and_wait(notebook_id, b)
        assert run["state"] == "error"
        assert "NameError" in text_of(run)
        # Move it back: it sees x again. Then delete a: x is gone for b.
        await person.call("move_cell", **{"from": 0, "to": 1})
        await anyio.sleep(0.2)
        assert text_of(await weft.run_and_wait(notebook_id, b)) == "42"
        await person.call("delete_cell", index=0)
        await anyio.sleep(0.2)
        run = await weft.run_and_wait(notebook_id, b)
        assert "NameError" in text_of(run)
        traceback = "\n".join(run["outputs"][-1]["traceback"])
        assert "runner.py" not in traceback


async def test_a_name_only_a_later_cell_defines_is_a_name_error(weft: Weft):
    notebook_id, (a, b) = await weft.notebook("print(z)", "z = 1")
    await weft.run_and_wait(notebook_id, b)
    run = await weft.run_and_wait(notebook_id, a)
    assert "NameError" in text_of(run)


async def test_stale_marking_and_reactive_mode(weft: Weft):
    notebook_id, (a, b, c) = await weft.notebook("x = 1", "y = x * 2", "print(y)")
    for cell in (a, b, c):
        await weft.run_and_wait(notebook_id, cell)
    async with node_client(weft.server.ws_base, notebook_id, token=weft.server.token) as person:
        await weft.run_and_wait(notebook_id, a, source="x = 5")
        state = await person.call("state")
        assert state["runs"][b].get("stale") is True
        assert state["runs"][c].get("stale") is True
        assert not state["runs"][a].get("stale")

        await person.call("set_meta", key="reactive", value=True)
        await person.call("set_source", cell=0, text="x = 7")
        await anyio.sleep(0.2)
        await weft.run_and_wait(notebook_id, a)
        with anyio.fail_after(60):
            while True:
                state = await person.call("state")
                outputs = state["cells"][2]["outputs"]
                if (
                    outputs
                    and outputs[0].get("text") == "14\n"
                    and state["runs"][c]["state"] == "done"
                ):
                    break
                await anyio.sleep(0.1)
        assert not state["runs"][c].get("stale")
        assert state["runs"][c]["reason"] == "reactive"


async def test_rich_outputs_symbols_and_sql(weft: Weft):
    notebook_id, (frame, sql, use, plot, chart, err) = await weft.notebook(
        "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', 'z']})\ndf",
        ("SELECT sum(a) AS total FROM df", {"language": "sql", "output_name": "res"}),
        "print(int(res.total[0]))",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.title('t')",
        "{'$schema': 'https://vega.github.io/schema/vega-lite/v5.json', 'mark': 'bar'}",
        "def f():\n    return 1 / 0\n\nf()",
    )
    run = await weft.run_and_wait(notebook_id, frame)
    assert run["state"] == "done", run
    result = run["outputs"][0]
    assert result["output_type"] == "execute_result"
    assert "<table" in result["data"]["text/html"]
    async with node_client(weft.server.ws_base, notebook_id, token=weft.server.token) as person:
        symbols = (await person.call("state"))["symbols"][frame]
    df = next(s for s in symbols if s["name"] == "df")
    assert df["type"].endswith("DataFrame")
    assert df["schema"]["rows"] == 3
    assert [c["name"] for c in df["schema"]["columns"]] == ["a", "b"]

    assert (await weft.run_and_wait(notebook_id, sql))["state"] == "done"
    assert text_of(await weft.run_and_wait(notebook_id, use)) == "6\n"
    run = await weft.run_and_wait(notebook_id, plot)
    assert any("image/png" in o.get("data", {}) for o in run["outputs"]), run["outputs"]
    run = await weft.run_and_wait(notebook_id, chart)
    assert "application/vnd.vegalite.v5+json" in run["outputs"][0]["data"]
    run = await weft.run_and_wait(notebook_id, err)
    error = run["outputs"][-1]
    assert error["ename"] == "ZeroDivisionError"
    assert any("line 2" in line for line in error["traceback"]), error["traceback"]
