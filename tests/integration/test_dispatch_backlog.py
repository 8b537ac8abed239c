"""The dispatcher keeps no more of an execution's calls waiting in the dial queue than its
backlog (a batch, by default), on PostgreSQL and Redis as deployed.

With the organization's concurrency as the only bound, a run of 20,000 calls kept 3,000 sent
and not yet claimed: they would not dial sooner, and each of the dispatcher's ten ticks a
second read every one of them twice (the in-flight count and the due calls' query skipping
them), 14 ms a tick. A claim frees a place, as before, once the progress view has it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Platform, wait_for


class _Queue:
    """The dial queue, as the dispatcher sees it: what was sent, never dialled."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def enqueue_dials(self, due: list[tuple[str, int]]) -> None:
        self.sent.extend(due)


@pytest.mark.integration
def test_no_more_than_the_backlog_waits_in_the_dial_queue(tmp_path: Path, postgres_database: str, redis_namespace: tuple[str, str]) -> None:
    from application.dispatcher import Dispatcher

    redis_url, namespace = redis_namespace
    p = Platform(tmp_path / "var", database_url=postgres_database, redis_url=redis_url, redis_namespace=namespace, start_dispatcher=False)
    try:
        org_id, key = p.new_org()
        container = p.container
        from uuid import UUID

        container.campaigns.update_organization_settings(UUID(org_id), {"maxConcurrentCalls": 1000})
        with p.client(key) as c:
            ids = [c.post("/api/contact", json={"primaryPhone": f"+2126123450{i:02d}"}).json()["id"] for i in range(30)]
            audience = c.post("/api/audience", json={"name": "Thirty"}).json()
            c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": ids})
            flow = c.post("/api/flows", json={"name": "f", "graph": {"startNodeId": "h", "nodes": [{"id": "h", "type": "hangup"}]}}).json()
            program = c.post("/api/programs", json={"name": "p", "audienceId": audience["id"], "flowId": flow["id"],
                                                    "startAt": "2025-01-01T00:00:00Z", "didPool": ["+212500000001"],
                                                    "retryStrategy": {"type": "none"}}).json()  # fmt: skip
            eid = c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
        queue = _Queue()
        dispatcher = Dispatcher(container.campaigns, container.calls, container.progress, queue, p.clock, batch=10, backlog=12)  # type: ignore[arg-type]

        def queued() -> Any:  # (the calls are made by a tick, then projected)
            queued = len(container.progress.calls_by_contact(eid)) == 30
            if not queued:
                dispatcher.tick()
            return queued

        wait_for(queued, 20, what="the 30 calls in the progress view")
        counts: list[int] = []

        def ticks(until: int) -> bool:
            counts.append(dispatcher.tick()["dispatched"])
            return len(queue.sent) >= until

        wait_for(lambda: ticks(12), 20, what="12 calls sent")
        for _ in range(10):  # a second of ticks: nothing more
            ticks(13)
            time.sleep(0.1)
        assert len(queue.sent) == 12 and max(counts) <= 10, counts
        assert container.progress.flights(org_id, "0") == {eid: (0, 12)}

        # Two claims: two places, once the progress view has them.
        for call_id, attempt in queue.sent[:2]:
            container.calls.update(call_id, lambda call, a=attempt: call.claim(a, p.clock.now(), "test"))
        wait_for(lambda: container.progress.flights(org_id, "0") == {eid: (2, 10)}, 20, what="the claims projected")
        assert dispatcher.tick()["dispatched"] == 2 and dispatcher.tick()["dispatched"] == 0  # (zones known by now)
        assert len(set(queue.sent)) == 14  # never the same call twice
        assert container.progress.in_flight(org_id, "0") == {eid: 14}

        # Every pending call sent: no more queries of the calls at each tick.
        dispatcher.backlog = 100
        wait_for(lambda: ticks(30), 20, what="the 30 calls sent")
        view, asked = container.progress, []
        due_calls_of = view.due_calls_of
        view.due_calls_of = lambda *a: asked.append(a) or due_calls_of(*a)  # type: ignore[method-assign]
        try:
            wait_for(lambda: container.progress.flights(org_id, "0") == {eid: (2, 28)}, 20, what="28 sent, 2 claimed")
            assert [dispatcher.tick()["dispatched"] for _ in range(5)] == [0] * 5 and asked == []
        finally:
            del view.due_calls_of
        assert len(set(queue.sent)) == 30
    finally:
        p.close()
