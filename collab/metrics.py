"""Prometheus metrics, in a registry of the app's own (no import-time global state).

Extensions add theirs to ``services.metrics.registry``; ``GET /metrics`` serves them all.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from collab.app_services import kept_services
from collab.errors import Forbidden, Unauthorized
from collab.settings import Settings

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
        self.renumbered = Counter(
            "weft_appends_renumbered",
            "Append batches numbered again because another server appended first",
            registry=self.registry,
        )
        self.refused_updates = Counter(
            "weft_refused_updates",
            "Document updates refused from read-only (viewer) connections",
            registry=self.registry,
        )

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge read when scraped (rooms loaded, clients connected, kernels alive...)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsServices(Protocol):
    """What ``GET /metrics`` reads from the server's services (collab.services.Services)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def metrics(self) -> Metrics: ...


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text. With WEFT_METRICS_TOKEN set it needs that bearer token; without,
    only callers on this machine (loopback) may scrape."""
    services: MetricsServices = kept_services(request)
    expected = services.settings.metrics_token
    if expected is not None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("/metrics needs 'Authorization: Bearer <WEFT_METRICS_TOKEN>'")
    elif not _loopback(request.client.host if request.client else ""):
        raise Forbidden("/metrics answers this machine only; set WEFT_METRICS_TOKEN to scrape it")
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE)
