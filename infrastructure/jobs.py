"""Dramatiq: the broker (Redis in production, an in-memory broker on the embedded
default) and the dial actor. Job retries (a crashed worker) are Dramatiq's; call
retries (busy, no answer) are domain events."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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

    def __init__(
        self,
        broker: dramatiq.Broker,
        handler: Callable[[str, int], Any] | None = None,
        batch_handler: Callable[[list[tuple[str, int]]], list[Any]] | None = None,
        batch: int = 1,
    ) -> None:
        self.broker = broker
        self._handler = handler
        self._batch_handler = batch_handler
        self.batch = max(1, batch)

        def dial(call_id: str, attempt: int, correlation_id: str | None = None) -> None:
            if self._handler is None:
                raise RuntimeError("no dial handler in this process")
            # The job runs under the correlation id it was sent with (a call's work is
            # correlated by the call id, as its events are): its log lines carry it.
            with audit_context(correlationId=correlation_id or call_id):
                result = self._handler(call_id, attempt)
                log.info("dial %s attempt %s: %s", call_id, attempt, getattr(result, "status", result))

        # Both dial actors: one queue, the same retries of a crashed job, the same limit.
        options: dict[str, Any] = {
            "broker": broker, "queue_name": DIAL_QUEUE, "max_retries": 5, "min_backoff": 500,
            "max_backoff": 30000, "time_limit": 120_000,
        }  # fmt: skip
        self.actor = dramatiq.actor(dial, actor_name="dial", **options)

        def dial_batch(jobs: list[list[Any]], correlation_id: str | None = None) -> None:
            """Several dial jobs in one message (``[[call id, attempt], ...]``): one
            message, one load of the calls, one save of their claims (Dialer.dial_many).
            Delivered again after a crash, the jobs already claimed are found claimed."""
            if self._batch_handler is None:
                raise RuntimeError("no dial handler in this process")
            with audit_context(**({"correlationId": correlation_id} if correlation_id else {})):
                results = self._batch_handler([(str(c), int(a)) for c, a in jobs])
                for (call_id, attempt), result in zip(jobs, results):
                    log.info("dial %s attempt %s: %s", call_id, attempt, getattr(result, "status", result))

        self.batch_actor = dramatiq.actor(dial_batch, actor_name="dial_batch", **options)

    def set_handler(
        self, handler: Callable[[str, int], Any], batch_handler: Callable[[list[tuple[str, int]]], list[Any]] | None = None
    ) -> None:
        self._handler = handler
        self._batch_handler = batch_handler

    def enqueue_dial(self, call_id: str, attempt: int) -> None:
        self.actor.send(call_id, attempt, current_audit().get("correlationId") or call_id)

    def enqueue_dials(self, jobs: Sequence[tuple[str, int]]) -> None:
        """Send ``jobs`` ``batch`` to a message (one job alone goes as a ``dial``)."""
        correlation_id = current_audit().get("correlationId")
        for i in range(0, len(jobs), self.batch):
            part = jobs[i : i + self.batch]
            if len(part) == 1:
                self.enqueue_dial(*part[0])
            else:
                self.batch_actor.send([[str(c), a] for c, a in part], correlation_id)


def start_worker(broker: dramatiq.Broker, threads: int, poll_ms: int = 100) -> dramatiq.Worker:
    """``poll_ms``: how long an idle consumer waits at most between two fetches (Dramatiq's
    ``worker_timeout``; it backs off up to that while its queue stays empty)."""
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=poll_ms)
    worker.start()
    return worker


# -- webhooks to client systems (issue 7) ---------------------------------------------

CLIENT_WEBHOOKS_QUEUE = "client_webhooks"


class ClientWebhookQueue:
    """The ``client_webhook`` actor: one job per delivery, sent by the follower in
    projections/client_webhooks.py, run by application/client_webhooks ``deliver``. A
    failed attempt raises, and Dramatiq's Retries middleware tries again with exponential
    backoff (GOMOBILE_WEBHOOK_MAX_RETRIES / _MIN_BACKOFF_MS / _MAX_BACKOFF_MS)."""

    def __init__(self, broker: dramatiq.Broker, max_retries: int, min_backoff: int, max_backoff: int) -> None:
        self._handler: Callable[[str], Any] | None = None

        def client_webhook(delivery_id: str) -> None:
            if self._handler is None:
                raise RuntimeError("no client webhook handler in this process")
            log.info("client webhook delivery %s: %s", delivery_id, self._handler(delivery_id))

        self.actor = dramatiq.actor(
            client_webhook, broker=broker, actor_name="client_webhook", queue_name=CLIENT_WEBHOOKS_QUEUE,
            max_retries=max_retries, min_backoff=min_backoff, max_backoff=max_backoff, time_limit=120_000,
        )  # fmt: skip

    def set_handler(self, handler: Callable[[str], Any]) -> None:
        self._handler = handler

    def send(self, delivery_id: str) -> None:
        self.actor.send(delivery_id)


def post_webhook(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[int | None, str | None]:
    """POST ``body`` to a client's endpoint: (status code, error). Redirects are followed
    only on the same scheme, host and port (307/308 keep the POST), never elsewhere."""
    import httpx

    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for _ in range(4):
            try:
                r = client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                return None, f"{type(exc).__name__}: {exc}"[:500]
            if r.status_code not in (307, 308) or "location" not in r.headers:
                return r.status_code, None if r.is_success else f"HTTP {r.status_code}: {r.text[:200]}"
            target = httpx.URL(url).join(r.headers["location"])
            origin = httpx.URL(url)
            if (target.scheme, target.host, target.port) != (origin.scheme, origin.host, origin.port):
                return r.status_code, f"redirect to another host ({target.host}) not followed"
            url = str(target)
        return r.status_code, "too many redirects"
