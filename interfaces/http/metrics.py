"""Prometheus ``GET /metrics``: read at scrape time from the read models and the event
logs (calls placed and their outcomes, projection lag), so every API process reports
the same figures without sharing memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from interfaces.http.common import in_thread

OUTCOMES = ("completed", "voicemail", "no_answer", "busy", "rejected", "failed", "cancelled")


class PlatformCollector(Collector):
    def __init__(self, container: Any) -> None:
        self.container = container

    def collect(self) -> Iterator[Any]:
        c = self.container
        totals = c.views["reports"].call_totals()
        placed = CounterMetricFamily("gomobile_calls_dialled", "Call attempts claimed for dialling")
        placed.add_metric([], totals["attempted"])
        yield placed
        answered = CounterMetricFamily("gomobile_calls_answered", "Call attempts answered (person or machine)")
        answered.add_metric([], totals["answered"])
        yield answered
        outcomes = CounterMetricFamily("gomobile_call_outcomes", "Call attempts ended, by outcome", labels=["outcome"])
        for outcome in OUTCOMES:
            outcomes.add_metric([outcome], totals[outcome])
        yield outcomes
        lag = GaugeMetricFamily(
            "gomobile_projection_lag_events", "Events recorded but not yet applied to a read model",
            labels=["projection", "application"],
        )  # fmt: skip
        for name in c.views:
            for app, n in c.runner(name).lag().items():
                lag.add_metric([name, app], n)
        yield lag


@get("/metrics", include_in_schema=False)
@in_thread
def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    registry = CollectorRegistry()
    registry.register(PlatformCollector(request.app.state.container))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


METRICS_HANDLERS = [metrics]
