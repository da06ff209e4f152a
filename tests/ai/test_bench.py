"""The quality harness itself, against the fake provider: a right answer passes its check
in the real executor, a wrong one fails it, and the two arms are told apart."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.executor.conftest import docker_engine
from tests.support.openai_server import FakeOpenAI, stream

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

__all__ = ["docker_engine"]

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


async def test_the_harness_scores_answers_by_running_them(
    docker_engine: object, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import assist_quality

    monkeypatch.setenv("OPENAI_API_KEY", "sk-bench")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    monkeypatch.setenv("WEFT_AI_MODEL", "fake-model")
    monkeypatch.setenv("WEFT_AI_MAX_RETRIES", "0")
    tasks = assist_quality.load_tasks(["total_by_odd_column"])
    # With schemas the model (here: the script) knows the column; without, it guesses.
    fake.script(
        stream("```python\ntotal = orders['amt_usd_gross'].sum()\n```"),
        stream("total = orders['revenue'].sum()"),
    )
    report = await assist_quality.bench(tasks, [True, False])
    assert report["with_schemas"]["passed"] == 1
    assert report["without_schemas"]["passed"] == 0
    assert "KeyError" in report["without_schemas"]["results"][0]["why"]
    with_schemas, without = fake.bodies()
    assert "amt_usd_gross (double)" in with_schemas["messages"][-1]["content"]
    assert "amt_usd_gross" not in without["messages"][-1]["content"]
