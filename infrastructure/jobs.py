"""Dramatiq: the broker (Redis in production, an in-memory broker on the embedded
default) and the dial actor. Job retries (a crashed worker) are Dramatiq's; call
retries (busy, no answer) are domain events."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from domain.base import audit_context, current_audit

log = logging.getLogger("gomobile.jobs")

DIAL_QUEUE = "dial"


def build_broker(redis_url: str, namespace: str) -> dramatiq.Broker:
    if redis_url:
        broker: dramatiq.Broker = RedisBroker(url=redis_url, namespace=namespace)
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    return broker


class DramatiqDialQueue:
    """The dial queue port over a Dramatiq actor bound to ``broker``."""

    def __init__(self, broker: dramatiq.Broker, handler: Callable[[str, int], Any] | None = None) -> None:
        self.broker = broker
        self._handler = handler

        def dial(call_id: str, attempt: int, correlation_id: str | None = None) -> None:
            if self._handler is None:
                raise RuntimeError("no dial handler in this process")
            # The job runs under the correlation id it was sent with (a call's work is
            # correlated by the call id, as its events are): its log lines carry it.
            with audit_context(correlationId=correlation_id or call_id):
                result = self._handler(call_id, attempt)
                log.info("dial %s attempt %s: %s", call_id, attempt, getattr(result, "status", result))

        self.actor = dramatiq.actor(
            dial,
            broker=broker,
            actor_name="dial",
            queue_name=DIAL_QUEUE,
            max_retries=5,
            min_backoff=500,
            max_backoff=30000,
            time_limit=120_000,
        )

    def set_handler(self, handler: Callable[[str, int], Any]) -> None:
        self._handler = handler

    def enqueue_dial(self, call_id: str, attempt: int) -> None:
        self.actor.send(call_id, attempt, current_audit().get("correlationId") or call_id)


def start_worker(broker: dramatiq.Broker, threads: int) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker
