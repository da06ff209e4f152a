"""Prometheus metrics, in a registry of the app's own (no import-time global state).

Extensions add theirs to ``services.metrics.registry``; ``GET /metrics`` serves them all.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.updates = Counter(
            "weft_document_updates",
            "Document updates accepted (clients and peers)",
            registry=self.registry,
        )
        self.persist_seconds = Histogram(
            "weft_persist_seconds",
            "Time to append one group-commit round to PostgreSQL",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.persist_batch = Histogram(
            "weft_persist_batch_updates",
            "Updates per group-commit round",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=self.registry,
        )
        self.notify_lag_seconds = Histogram(
            "weft_notify_lag_seconds",
            "From another server's append to its update applied here",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.refused_frames = Counter(
            "weft_refused_frames",
            "Connections closed for bad input, by close code",
            ["code"],
            registry=self.registry,
        )

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read when scraped (rooms loaded, clients connected, kernels alive...)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.services.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE)
