"""/metrics: the Prometheus text format, parsed with prometheus-client, moving with work."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import new_notebook
from tests.support.nodeclient import node_client
from tests.support.server import ServerProcess

pytestmark = pytest.mark.anyio


async def scrape(api: httpx.AsyncClient) -> dict[str, float]:
    response = await api.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


async def test_metrics_move_when_work_happens(server: ServerProcess, api: httpx.AsyncClient):
    before = await scrape(api)
    assert before["weft_rooms"] == 0
    assert before["weft_clients"] == 0
    notebook_id = await new_notebook(api)
    async with (
        node_client(server.ws_base, notebook_id, token=server.token) as alice,
        node_client(server.ws_base, notebook_id, token=server.token) as bob,
    ):
        for n in range(5):
            await alice.call("insert", text=f"x{n}")
        # Bob seeing the last edit means the server stored all five (persist before broadcast).
        await bob.wait_text("x4")
        during = await scrape(api)
        assert during["weft_rooms"] == 1
        assert during["weft_clients"] == 2
    after = await scrape(api)
    assert after["weft_document_updates_total"] >= before.get("weft_document_updates_total", 0) + 5
    assert after["weft_persist_seconds_count"] > before.get("weft_persist_seconds_count", 0)
    # One node: its own appends' notifications are skipped, never fetched back from the log.
    assert after.get("weft_notify_lag_seconds_count", 0) == 0
    assert "weft_run_queue_depth" in after
    assert "weft_kernels" in after
