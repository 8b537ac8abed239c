"""Prometheus ``GET /metrics``: read at scrape time from the read models and the event
logs (calls placed and their outcomes, calls waiting to be dialled, projection lag), so
every API process reports the same figures without sharing memory; and the latency of
the Twilio webhooks this process answered (a histogram per process, as Prometheus
scrapes each)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from interfaces.http.common import in_thread

OUTCOMES = ("completed", "voicemail", "no_answer", "busy", "rejected", "failed", "cancelled")

WEBHOOK_SECONDS = Histogram(
    "gomobile_webhook_seconds", "Time to answer a Twilio webhook, by kind (voice, status, ...)", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=None,
)  # fmt: skip


def observe_request(path: str, status: int, seconds: float) -> None:
    """Called by the request-id middleware for every request this process answered."""
    if path.startswith("/twilio/"):
        WEBHOOK_SECONDS.labels(path.split("/")[2] or "other").observe(seconds)


# Pending calls whose time has come in running executions: not yet sent to the dial queue
# ("due"), or sent and not yet claimed by a worker ("queued").
WAITING_SQL = (
    "SELECT CASE WHEN d.call_id IS NULL THEN 'due' ELSE 'queued' END AS state, COUNT(*) AS n "
    "FROM progress_calls c JOIN progress_executions e ON e.id = c.execution_id AND e.status = 'running' "
    "LEFT JOIN dispatch_log d ON d.call_id = c.call_id AND d.attempt = c.attempt "
    "WHERE c.bucket = 'pending' AND c.not_before <= ? GROUP BY 1"
)


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
        from domain.timeparse import sortable

        rows = c.progress.rows(WAITING_SQL, (sortable(c.clock.now()),))
        counts = {r["state"]: int(r["n"]) for r in rows}
        waiting = GaugeMetricFamily("gomobile_calls_waiting", "Calls due to be dialled, by state", labels=["state"])
        for state in ("due", "queued"):
            waiting.add_metric([state], counts.get(state, 0))
        yield waiting
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
    registry.register(WEBHOOK_SECONDS)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


METRICS_HANDLERS = [metrics]
