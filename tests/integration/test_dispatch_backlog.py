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


@pytest.mark.integration
def test_a_launch_queues_no_more_than_the_progress_view_has_room_for(
    tmp_path: Path, postgres_database: str, redis_namespace: tuple[str, str]
) -> None:
    """Queueing a launch outran the projection: 6,000 calls made in 1.5 s while the dials'
    events came in, and the read models fell 1.2-1.4 s behind (issue 6's bound is 1 s).
    A batch is now no larger than ``projection_backlog`` less the events of the calls log
    the progress view has not applied, and waits while that room is less than a first
    batch; the calls could not be sent sooner anyway (the dispatcher sends what the view
    has projected)."""
    from uuid import UUID

    from application.dispatcher import Dispatcher
    from domain.audience import Audience
    from domain.contact import Contact

    redis_url, namespace = redis_namespace
    p = Platform(tmp_path / "var", database_url=postgres_database, redis_url=redis_url, redis_namespace=namespace, start_dispatcher=False)
    try:
        org_id, _ = p.new_org()
        container = p.container
        org = container.campaigns.organization(UUID(org_id))
        people = [Contact(org.id, f"+2126123{i:05d}", "", {}) for i in range(800)]  # batches 200, 200, 400 unbounded
        container.campaigns.save(*people)
        audience = Audience(org.id, "Eight hundred", None)
        audience.add_members([str(x.id) for x in people])
        container.campaigns.save(audience)
        flow = container.campaigns.create_flow(org.id, {"name": "f", "graph": {"startNodeId": "h", "nodes": [{"id": "h", "type": "hangup"}]}})
        program = container.campaigns.create_program(org, {
            "name": "p", "audienceId": str(audience.id), "flowId": str(flow.id), "startAt": "2025-01-01T00:00:00Z",
            "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}})  # fmt: skip
        eid = str(container.campaigns.launch_program(org, str(program.id), p.clock.now()).id)
        wait_for(lambda: eid in container.progress.executions_to_queue(), 20, what="the execution in the progress view")
        dispatcher = Dispatcher(container.campaigns, container.calls, container.progress, _Queue(), p.clock, projection_backlog=300)  # type: ignore[arg-type]

        def queued_upto() -> int:
            return int(container.campaigns.execution(None, eid).queued_upto)

        def projected(n: int) -> None:
            wait_for(lambda: len(container.progress.calls_by_contact(eid)) == n, 20, what=f"{n} calls projected")

        view = container.views["progress"]
        with view.held_for_rebuild():  # the progress view applies nothing meanwhile
            assert dispatcher.tick()["queued"] == 200  # room for 300: the first batch
            for _ in range(5):  # room for 100: less than a first batch
                assert dispatcher.tick()["queued"] == 0
            assert queued_upto() == 200
            dispatcher.projection_backlog = None  # (the bound alone holds the batch back)
            assert dispatcher.tick()["queued"] == 200 and queued_upto() == 400
            dispatcher.projection_backlog = 300
            assert dispatcher.tick()["queued"] == 0
        projected(400)
        with view.held_for_rebuild():
            assert dispatcher.tick()["queued"] == 300 and queued_upto() == 700  # (400 unbounded)
            assert dispatcher.tick()["queued"] == 0  # no room until those are projected
        projected(700)
        assert dispatcher.tick()["queued"] == 100 and queued_upto() == 800
        projected(800)
        assert eid not in container.progress.executions_to_queue()
    finally:
        p.close()
