"""The Execution lifecycle and its contacts' calls as a state machine (hypothesis),
against a model of DOMAIN.md §7.3, with the real progress read model (on SQLite) fed
every event as the projector would.

Checked after every step: each valid transition succeeds and each other one raises
"Invalid state transition" and records nothing; the read model's status is the model's;
``total = completed + failed + pending + inProgress + skipped`` with the right count in
each bucket, before, during and after the calls are queued; a contact ends in exactly
one final state and stays there; cancelling or stopping skips every contact not yet
called (each skip an event), as the dispatcher does through the read model's query."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from domain import base
from domain.call import LIVE, Call
from domain.errors import InvalidStateTransition
from domain.execution import Execution
from domain.retry import RetryStrategy
from projections.progress import ProgressView
from projections.store import make_view

T0 = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)
ACTIVE = {"scheduled", "running", "paused", "paused_threshold"}
# DOMAIN.md §7.3 (and issue 5: stopped at stopAt, paused_threshold by auto-pause rules).
VALID = {
    ("scheduled", "start"): "running",
    ("running", "complete"): "completed",
    ("running", "pause"): "paused",
    ("paused", "resume"): "running",
    ("paused_threshold", "resume"): "running",
    ("running", "auto_pause"): "paused_threshold",
    **{(s, "cancel"): "cancelled" for s in ACTIVE},
    **{(s, "stop"): "stopped" for s in ACTIVE},
}
MOVES = {
    "start": lambda e, at: e.start(at),
    "complete": lambda e, at: e.complete(at),
    "pause": lambda e, at: e.pause(),
    "resume": lambda e, at: e.resume(),
    "auto_pause": lambda e, at: e.auto_pause("n1", 5, 5),
    "cancel": lambda e, at: e.cancel(at),
    "stop": lambda e, at: e.stop(at),
}
BUCKET = {"pending": "pending", "dialing": "in_progress", "ringing": "in_progress", "in_progress": "in_progress"}
STRATEGY = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 0, "maxRetries": 1})

_views: list[ProgressView] = []


def progress_view() -> ProgressView:
    if not _views:
        path = Path(tempfile.mkdtemp()) / "progress.sqlite"
        _views.append(make_view(ProgressView, "progress", {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                                           "PROGRESS_SQLITE_DBNAME": str(path)}))
    return _views[0]


class ExecutionLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.previous_clock = base._clock[0]
        base.set_clock(lambda: self.now)
        self.view = progress_view()

    def teardown(self) -> None:
        base.set_clock(self.previous_clock)

    def _project(self, *aggregates: Any) -> list[Any]:
        events = [e for a in aggregates for e in a.collect_events()]
        with self.view.transaction() as c:
            for e in events:
                self.view.handle(c, e)
        return events

    @initialize(n=st.integers(1, 4))
    def launch(self, n: int) -> None:
        self.contacts = [uuid4() for _ in range(n)]
        self.execution = Execution(uuid4(), uuid4(), {"name": "P", "retryStrategy": STRATEGY.to_json()}, {"graph": {}},
                                   [str(c) for c in self.contacts], T0, None)
        self.status = "scheduled"
        self.calls: list[Call] = []
        self.finals: dict[int, list[str]] = {}
        self._project(self.execution)

    # -- the execution ------------------------------------------------------------------

    def _move(self, move: str) -> None:
        target = VALID.get((self.status, move))
        if target is None:
            with pytest.raises(InvalidStateTransition) as error:
                MOVES[move](self.execution, self.now)
            assert str(error.value).startswith("Invalid state transition")
            assert self.execution.status == self.status
            assert self.execution.pending_events == []
            return
        MOVES[move](self.execution, self.now)
        assert len(self._project(self.execution)) == 1
        self.status = target

    # One rule per move: hypothesis then reaches every state (with one rule drawing the
    # move, the moves that end an execution cut most runs short).
    @rule(state=st.sampled_from(["running", "paused", "paused_threshold"]))
    def reach(self, state: str) -> None:
        """Walk valid moves to ``state`` (if it is reachable from here), so that every
        state is visited often, not only when chance strings the right moves together."""
        paths: dict[str, list[str]] = {self.status: []}
        frontier = [self.status]
        while frontier:
            here = frontier.pop(0)
            for (source, move), target in VALID.items():
                if source == here and target not in paths:
                    paths[target] = paths[here] + [move]
                    frontier.append(target)
        for move in paths.get(state, []):
            self._move(move)

    @rule()
    def start(self) -> None:
        self._move("start")

    @rule()
    def pause(self) -> None:
        self._move("pause")

    @rule()
    def resume(self) -> None:
        self._move("resume")

    @rule()
    def auto_pause(self) -> None:
        self._move("auto_pause")

    @rule()
    def complete(self) -> None:
        self._move("complete")

    @rule()
    def cancel(self) -> None:
        self._move("cancel")

    @rule()
    def stop(self) -> None:
        self._move("stop")

    @rule(minutes=st.integers(1, 90))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    # -- the dispatcher -------------------------------------------------------------------

    @precondition(lambda self: not self.calls)
    @rule()
    def queue_calls(self) -> None:
        # Queued whatever the status: a cancelled execution's contacts are then skipped.
        self.calls = [Call(self.execution.id, c, self.execution.organization_id, self.execution.program_id,
                           "+212612345674", {"id": str(c)}, T0) for c in self.contacts]
        self.execution.record_calls_queued(len(self.calls))
        self._project(*self.calls, self.execution)

    @precondition(lambda self: self.status in ("cancelled", "stopped") and self.calls)
    @rule()
    def skip_what_is_left(self) -> None:
        mine = {str(c.id): c for c in self.calls}
        for call_id in self.view.pending_calls_of_ended_executions(limit=100_000):
            if call_id in mine:
                assert mine[call_id].skip("execution_ended", self.now)
                assert [type(e).__name__ for e in self._project(mine[call_id])] == ["Skipped"]
        assert all(c.status != "pending" for c in self.calls)

    # -- the workers and the provider --------------------------------------------------

    @precondition(lambda self: self.status == "running" and self.calls)
    @rule(i=st.integers(0, 3))
    def dial(self, i: int) -> None:
        call = self.calls[i % len(self.calls)]
        if call.status == "pending" and self.now >= call.not_before:
            call.claim(call.attempt, self.now, "w")
            self._project(call)

    @precondition(lambda self: self.calls)
    @rule(i=st.integers(0, 3), status=st.sampled_from(["completed", "busy", "no_answer", "failed"]))
    def attempt_ends(self, i: int, status: str) -> None:
        # Calls in progress finish whatever the execution's status (pause, cancel, stop).
        call = self.calls[i % len(self.calls)]
        was_live = call.status in LIVE
        assert call.end_attempt(call.attempt, status, None, 1000, self.now, STRATEGY) == was_live
        self._project(call)

    # -- what must always hold ---------------------------------------------------------

    @invariant()
    def counters_add_up(self) -> None:
        if not hasattr(self, "execution"):
            return
        row = self.view.execution(str(self.execution.id))
        assert row is not None and row["status"] == self.status == self.execution.status
        buckets = ("pending", "in_progress", "completed", "failed", "skipped")
        assert row["total"] == len(self.contacts) == sum(row[b] for b in buckets), row
        expected = dict.fromkeys(buckets, 0)
        for c in self.calls:
            expected[BUCKET.get(c.status) or c.result] += 1
        expected["pending"] += len(self.contacts) - len(self.calls)  # not queued yet: pending
        assert {b: row[b] for b in buckets} == expected

    @invariant()
    def a_contact_ends_in_one_final_state(self) -> None:
        for i, c in enumerate(getattr(self, "calls", [])):
            if c.status == "finished":
                assert c.result in ("completed", "failed", "skipped")
                self.finals.setdefault(i, [c.result])
                assert self.finals[i] == [c.result], "a finished contact changed its result"
                assert not c.skip("again", self.now) and c.pending_events == []
            else:
                assert c.result is None and i not in self.finals


ExecutionLifecycle.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
test_execution_lifecycle = ExecutionLifecycle.TestCase
