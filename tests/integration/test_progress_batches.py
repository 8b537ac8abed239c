"""The progress view applies a batch's Call events in memory and writes them at its end
(``ProgressView.apply_batch``): its rows must be, row for row, those of applying every
event alone with the per-event handlers, on PostgreSQL and on SQLite, whatever the batch
size and wherever the execution's own events (barriers) fall."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from domain import base
from domain.call import Call
from domain.execution import Execution
from domain.retry import RetryStrategy
from projections.progress import ProgressView
from projections.store import make_view

TABLES = {
    "progress_executions": "id",
    "progress_calls": "call_id",
    "progress_node_counts": "execution_id, node_id, epoch",
    "progress_dials": "call_id, attempt",
}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

DIAL = {"nodeId": "dial", "nodeType": "dial", "nodeLabel": "Dial", "outputPath": "onAnswer"}
GREET = [DIAL, {"nodeId": "greet", "nodeType": "say"}, {"nodeId": "menu", "nodeType": "dtmf"}]
THANKS = [{"nodeId": "thanks", "nodeType": "play"}, {"nodeId": "done", "nodeType": "hangup"}]


class _Scenario:
    """Executions and their calls driven through the real aggregates, with a clock that
    moves forwards and sometimes back a little (processes' clocks differ), so that the
    events' times are not in the log's order."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = T0
        self.campaigns: list[Any] = []  # the campaigns log, in order
        self.calls_log: list[Any] = []  # the calls log, in order
        self.interleaved: list[Any] = []  # both, in the order they happened

    def tick(self) -> None:
        self.now += timedelta(milliseconds=self.rng.randint(-1500, 4000))
        if self.rng.random() < 0.05:  # a process whose clock is well behind the others'
            self.now -= timedelta(minutes=self.rng.randint(1, 30))

    def record(self, aggregate: Any) -> None:
        for event in aggregate.collect_events():
            (self.campaigns if isinstance(aggregate, Execution) else self.calls_log).append(event)
            self.interleaved.append(event)

    def call_life(self, call: Call, strategy: RetryStrategy, fate: str) -> Iterator[None]:
        """One call's lifecycle, one step (a few events at most) per ``next``."""
        rng = self.rng
        while True:
            if fate == "skipped" or (fate == "retry_then_skip" and call.attempt > 1):
                call.skip("execution_ended", self.now)
                yield
                return
            if fate == "never":
                return
            if fate == "deferred" or rng.random() < 0.25:
                call.defer(
                    call.attempt,
                    max(self.now, call.not_before) + timedelta(minutes=rng.randint(1, 30)),
                    "window",
                )
                yield
                if fate == "deferred":
                    return  # not due before the end of the log
            attempt = call.attempt
            call.claim(attempt, max(self.now, call.not_before), "w1")
            yield
            if fate == "released" or rng.random() < 0.15:
                call.release_claim(attempt, "execution paused")
                yield
                call.claim(attempt, max(self.now, call.not_before), "w2")  # the same attempt again
                yield
            call.record_placed(attempt, f"CA{uuid.uuid4().hex}", "+212500000001")
            call.record_ringing(attempt)
            yield
            answered = fate != "retry_then_skip" and rng.random() < 0.6
            if answered:
                call.record_answered(attempt, "human")
                call.record_turn(
                    attempt, {"kind": "answer"}, {"steps": GREET, "state": {"nodeId": "menu"}}
                )
                yield
                call.record_turn(
                    attempt,
                    {"kind": "gather", "digits": "1"},
                    {"steps": THANKS, "state": {"nodeId": "done"}},
                )
                yield
                status = "completed" if rng.random() < 0.8 else "failed"
                call.end_attempt(attempt, status, None, 20_000, self.now, strategy)
            else:
                status = rng.choice(["no_answer", "busy"])
                call.end_attempt(
                    attempt, status, status, None, self.now, strategy, unanswered_steps=[DIAL]
                )
            yield
            if call.status != "pending":
                return  # finished (completed or failed)


def _scenario(seed: int) -> _Scenario:
    s = _Scenario(seed)
    rng = s.rng
    base.set_clock(lambda: s.now)
    retry = {"type": "fixed_delay", "delayMinutes": 5, "maxRetries": 2}
    org = uuid.uuid4()
    executions: list[tuple[Execution, RetryStrategy]] = []
    lives: list[Iterator[None]] = []
    calls: list[Call] = []
    late: list[
        Execution
    ] = []  # recorded after some of their calls' events (a rebuild's interleaving)
    for n, strategy_json in enumerate((retry, {"type": "none"}, retry)):
        contacts = [uuid.uuid4() for _ in range(rng.randint(15, 30))]
        strategy = RetryStrategy.parse(strategy_json)
        execution = Execution(org, uuid.uuid4(), {"name": f"P{n}", "retryStrategy": strategy.to_json()},
                              {"flowId": "f", "flowVersion": 1, "graph": {}}, [str(c) for c in contacts], s.now, None)  # fmt: skip
        execution.start(s.now)
        execution.record_calls_queued(len(contacts))
        if n == 2:
            late.append(execution)
        else:
            s.record(execution)
        executions.append((execution, strategy))
        for contact in contacts:
            call = Call(execution.id, contact, org, execution.program_id, "+212612345678", {"timezone": rng.choice([None, "Africa/Casablanca"])}, s.now)  # fmt: skip
            calls.append(call)
            s.record(call)
            fate = rng.choices(
                ["normal", "skipped", "released", "retry_then_skip", "never", "deferred"],
                [10, 2, 2, 2, 1, 1],
            )[0]
            lives.append(s.call_life(call, strategy, fate))
    # Calls of an execution the view never hears of, and a call whose Created is not in
    # the log: their events change nothing (the rows they would touch do not exist).
    ghost_execution = uuid.uuid4()
    for _ in range(3):
        call = Call(ghost_execution, uuid.uuid4(), org, uuid.uuid4(), "+212612345679", {}, s.now)
        calls.append(call)
        s.record(call)
        lives.append(s.call_life(call, RetryStrategy.parse(retry), "normal"))
    orphan = Call(executions[0][0].id, uuid.uuid4(), org, uuid.uuid4(), "+212612345670", {}, s.now)
    orphan.collect_events()  # its Created is lost
    lives.append(s.call_life(orphan, RetryStrategy.parse(retry), "normal"))
    created = [e for e in s.calls_log if type(e).__qualname__ == "Call.Created"]
    steps = 0
    while lives:
        s.tick()
        steps += 1
        i = rng.randrange(len(lives))
        try:
            next(lives[i])
        except StopIteration:
            lives.pop(i)
        for call in [*calls, orphan]:
            if call.pending_events:
                s.record(call)
        if late and steps == 40:
            s.record(late.pop())
        if steps % 15 == 0:  # the execution's own life between its calls' events
            execution, _ = executions[rng.randrange(len(executions))]
            if execution in late:
                continue
            action = rng.choice(
                ["pause_resume", "rules", "auto_pause_resume", "joined", "duplicate"]
            )
            if action == "pause_resume" and execution.status == "running":
                execution.pause()
                s.record(execution)
                s.tick()
                execution.resume()
            elif action == "rules":
                execution.set_auto_pause_rules([{"nodeId": "menu", "threshold": rng.randint(1, 9)}])
            elif action == "auto_pause_resume" and execution.status == "running":
                execution.auto_pause("menu", 3, 3)
                s.record(execution)
                s.tick()
                execution.resume()
            elif action == "joined":
                execution.record_joined([str(uuid.uuid4())])
            elif action == "duplicate":  # a Created appended again: ON CONFLICT DO NOTHING
                again = dataclasses.replace(rng.choice(created), timestamp=s.now)
                s.calls_log.append(again)
                s.interleaved.append(again)
            if execution.pending_events:
                s.record(execution)
    for execution in late:
        s.record(execution)
    # A DialClaimed appended again, later (a stored dial keeps its first claim).
    claimed = [e for e in s.calls_log if type(e).__qualname__ == "Call.DialClaimed"]
    again = dataclasses.replace(claimed[len(claimed) // 2], timestamp=s.now + timedelta(hours=1))
    s.calls_log.append(again)
    s.interleaved.append(again)
    return s


@pytest.fixture()
def scenario_clock() -> Iterator[None]:
    previous = base._clock[0]
    yield
    base.set_clock(previous)


def _snapshot(view: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: [tuple(r.items()) for r in view.rows(f"SELECT * FROM {t} ORDER BY {key}")]
        for t, key in TABLES.items()
    }


def _one_by_one(view: Any, events: list[Any]) -> dict[str, list[tuple[Any, ...]]]:
    view.reset()
    for event in events:
        with view.transaction() as c:
            view.handle(c, event)
    return _snapshot(view)


def _batched(view: Any, events: list[Any], size: int) -> dict[str, list[tuple[Any, ...]]]:
    view.reset()
    items = [(e, Tracking("progress_test", n)) for n, e in enumerate(events, 1)]
    for i in range(0, len(items), size):
        view.apply_batch(items[i : i + size], view.handle)
    assert view.max_tracking_id("progress_test") == len(items)
    return _snapshot(view)


def _check(view: Any) -> None:
    for seed in (1, 2):
        s = _scenario(seed)
        kinds = Counter(type(e).__qualname__ for e in s.interleaved)
        for kind in ("Call.Created", "Call.DialClaimed", "Call.ClaimReleased", "Call.RetryScheduled", "Call.Finished",
                     "Call.Skipped", "Call.Deferred", "Call.FlowAdvanced", "Call.AttemptEnded", "Execution.Created",
                     "Execution.Resumed", "Execution.AutoPauseRulesSet", "Execution.ContactsJoined"):  # fmt: skip
            assert kinds[kind], (kind, kinds)
        assert (
            len({e.originator_id for e in s.interleaved if type(e).__qualname__ == "Call.Created"})
            < kinds["Call.Created"]
        )
        # The order the live runner applies them in (one log, then the other), and the
        # order they happened in (execution events between call events: barriers).
        for events in (s.campaigns + s.calls_log, s.interleaved):
            expected = _one_by_one(view, events)
            assert all(expected.values()), {t: len(rows) for t, rows in expected.items()}
            epochs = {dict(r)["epoch"] for r in expected["progress_node_counts"]}
            assert len(epochs) > 1, epochs  # node visits counted in several epochs
            buckets = {dict(r)["bucket"] for r in expected["progress_calls"]}
            assert {"pending", "completed", "failed", "skipped"} <= buckets, buckets
            for size in (1, 7, 500):
                got = _batched(view, events, size)
                for table in TABLES:
                    assert got[table] == expected[table], (seed, size, table)


def test_progress_batches_equal_events_one_by_one_on_postgres(
    postgres_database: str, scenario_clock: None
) -> None:
    from infrastructure.settings import Settings

    view = make_view(
        ProgressView, "progress", Settings(database_url=postgres_database).persistence_env()
    )
    try:
        assert view.is_postgres
        _check(view)
    finally:
        view.datastore.close()


def test_progress_batches_equal_events_one_by_one_on_sqlite(
    tmp_path: Path, scenario_clock: None
) -> None:
    view = make_view(ProgressView, "progress", {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                                "PROGRESS_SQLITE_DBNAME": str(tmp_path / "progress.sqlite")})  # fmt: skip
    try:
        assert not view.is_postgres
        _check(view)
    finally:
        view.datastore.close()


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_dispatch_log_keeps_each_sent_call_once_with_its_latest_time(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The dispatcher logs the calls it sent, a batch in one statement: each (call, attempt) once,
    a repeated one in the same batch too, and a later send moves its time (its lease)."""
    from infrastructure.settings import Settings

    env = (Settings(database_url=request.getfixturevalue("postgres_database")).persistence_env() if store == "postgres"
           else {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "PROGRESS_SQLITE_DBNAME": str(tmp_path / "p.sqlite")})
    view = make_view(ProgressView, "progress", env)
    try:
        sent = [(f"c{i}", 1 + i % 2) for i in range(1200)]  # over one SQLite statement's 500 rows
        view.mark_dispatched([*sent, sent[0]], "2025-01-01T00:00:00.000")
        view.mark_dispatched([sent[1], ("c1", 3)], "2025-01-01T00:05:00.000")
        rows = {(r["call_id"], int(r["attempt"])): r["dispatched_at"]
                for r in view.rows("SELECT call_id, attempt, dispatched_at FROM dispatch_log", ())}
        assert len(rows) == 1201
        assert rows[("c0", 1)] == "2025-01-01T00:00:00.000"
        assert rows[("c1", 2)] == rows[("c1", 3)] == "2025-01-01T00:05:00.000"
        view.mark_dispatched([], "2025-01-01T00:09:00.000")  # nothing to log
    finally:
        view.datastore.close()


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_claim_takes_its_call_out_of_the_dial_queue_and_in_flight_counts_each_call_once(
    store: str, tmp_path: Path, request: pytest.FixtureRequest, scenario_clock: None
) -> None:
    """In flight = calls in progress + calls sent and not claimed yet (within the lease).
    A claim moves a call from the second to the first: its send is forgotten (the rows
    sent within the lease stay the dial queue's few, whatever the execution's size), and
    the count neither drops nor counts it twice, batched or one event at a time."""
    from infrastructure.settings import Settings

    env = (Settings(database_url=request.getfixturevalue("postgres_database")).persistence_env() if store == "postgres"
           else {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "PROGRESS_SQLITE_DBNAME": str(tmp_path / "p.sqlite")})
    view = make_view(ProgressView, "progress", env)
    base.set_clock(lambda: T0)
    try:
        for size in (1, 10):
            view.reset()
            with view.transaction() as c:
                c.execute(view.q("DELETE FROM dispatch_log"))
            org = uuid.uuid4()
            contacts = [uuid.uuid4() for _ in range(5)]
            execution = Execution(org, uuid.uuid4(), {"name": "P", "retryStrategy": {"type": "none"}},
                                  {"flowId": "f", "flowVersion": 1, "graph": {}}, [str(c) for c in contacts], T0, None)  # fmt: skip
            execution.start(T0)
            calls = [Call(execution.id, c, org, execution.program_id, "+212612345678", {}, T0) for c in contacts]
            events = [*execution.collect_events()] + [e for call in calls for e in call.collect_events()]
            n = 0

            def apply(events: list[Any], size: int = size) -> None:
                nonlocal n
                items = [(e, Tracking("t", n + k)) for k, e in enumerate(events, 1)]
                n += len(items)
                for i in range(0, len(items), size):
                    view.apply_batch(items[i : i + size], view.handle)

            apply(events)
            eid, key = str(execution.id), "2026-03-02T09:00:01.000"
            lease = "2026-03-02T08:58:00.000"
            view.mark_dispatched([(str(c.id), 1) for c in calls[:4]], key)  # the fifth is not sent
            view.mark_dispatched([(str(calls[3].id), 1)], "2026-03-02T08:50:00.000")  # sent long ago: lease over
            assert view.in_flight(str(org), lease) == {eid: 3}
            for call in calls[:2]:
                call.claim(1, T0, "w1")
            apply([e for call in calls[:2] for e in call.collect_events()])
            assert view.in_flight(str(org), lease) == {eid: 3}  # two in progress, one sent
            sent = {r["call_id"] for r in view.rows("SELECT call_id FROM dispatch_log", ())}
            assert sent == {str(calls[2].id), str(calls[3].id)}
            assert view.due_calls_of(eid, key, lease, 10, [None]) == [(str(calls[3].id), 1), (str(calls[4].id), 1)]
    finally:
        view.datastore.close()
