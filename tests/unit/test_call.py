"""The Call aggregate: one contact of one execution through all its attempts. Provider
callbacks arrive late, twice or out of order; none of that may change the outcome."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import Application

from domain import base
from domain.base import audit_context, set_clock
from domain.call import AlreadyClaimed, Call, attempt_id, call_id
from domain.retry import RetryStrategy

T0 = datetime(2025, 1, 20, 10, 0, tzinfo=UTC)
NONE = RetryStrategy.parse({"type": "none"})
FIXED = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 10, "maxRetries": 3})


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Iterator[Clock]:
    previous = base._clock[0]
    fake = Clock(T0)
    set_clock(fake)
    try:
        yield fake
    finally:
        set_clock(previous)


def new_call(not_before: datetime = T0) -> Call:
    execution, contact = uuid4(), uuid4()
    return Call(
        execution_id=execution,
        contact_id=contact,
        organization_id=uuid4(),
        program_id=uuid4(),
        to="+212612345678",
        contact={"id": str(contact), "firstName": "Amina"},
        not_before=not_before,
    )


def names(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def answered_call(answered_by: str = "human") -> Call:
    call = new_call()
    call.claim(1, T0, "w1")
    call.record_placed(1, "CA1", "+212500000001")
    call.record_ringing(1)
    call.record_answered(1, answered_by)
    return call


# -- identity ------------------------------------------------------------------------------


def test_call_ids_are_deterministic_per_execution_and_contact():
    e, c = uuid4(), uuid4()
    assert call_id(e, c) == call_id(str(e), str(c)) == Call.create_id(e, c)
    assert call_id(e, c) != call_id(e, uuid4())
    assert attempt_id(call_id(e, c), 1) != attempt_id(call_id(e, c), 2)
    call = new_call()
    assert call.id == call_id(call.execution_id, call.contact_id)


# -- claiming ------------------------------------------------------------------------------


def test_claim_twice_raises_already_claimed(clock):
    call = new_call()
    call.claim(1, T0, "worker-a")
    with pytest.raises(AlreadyClaimed):
        call.claim(1, T0, "worker-b")
    events = call.collect_events()
    assert names(events) == ["Created", "DialClaimed"]
    assert events[1].worker == "worker-a"
    assert call.status == "dialing"


def test_claim_before_not_before_is_refused(clock):
    call = new_call(not_before=T0 + timedelta(minutes=5))
    with pytest.raises(AlreadyClaimed, match="not due before"):
        call.claim(1, T0 + timedelta(minutes=4, seconds=59), "w")
    assert call.status == "pending"
    call.claim(1, T0 + timedelta(minutes=5), "w")
    assert call.status == "dialing"


def test_claim_of_another_attempt_is_refused():
    call = new_call()
    with pytest.raises(AlreadyClaimed):
        call.claim(2, T0, "w")


# -- the happy path ------------------------------------------------------------------------


def test_answered_and_completed_call_finishes_completed(clock):
    call = answered_call()
    assert call.is_live(1) and call.status == "in_progress" and call.answered_by == "human"
    call.record_turn(1, {"type": "answer"}, {"steps": [], "instructions": [], "state": {"ended": True}})
    assert call.end_attempt(1, "completed", None, 42000, T0 + timedelta(minutes=1), FIXED)
    events = call.collect_events()
    assert names(events) == [
        "Created",
        "DialClaimed",
        "Placed",
        "Ringing",
        "Answered",
        "FlowAdvanced",
        "AttemptEnded",
        "Finished",
    ]
    assert events[-2].outcome == "completed" and events[-2].duration_ms == 42000
    assert (call.status, call.result, call.outcomes) == ("finished", "completed", ["completed"])
    assert call.flow_state == {"ended": True}
    assert not call.is_live(1)


def test_answered_without_answered_by_means_human():
    call = new_call()
    call.claim(1, T0, "w")
    call.record_answered(1, None)
    assert call.answered_by == "human"


def test_answered_by_machine_and_completed_is_voicemail():
    call = answered_call("machine")
    call.collect_events()
    call.end_attempt(1, "completed", None, 9000, T0, NONE)
    ended, finished = call.collect_events()
    assert ended.outcome == "voicemail"
    assert (finished.result, finished.outcome) == ("failed", "voicemail")
    assert call.outcomes == ["voicemail"]


def test_voicemail_is_retried_when_the_strategy_asks():
    strategy = RetryStrategy.parse(
        {"type": "fixed_delay", "delayMinutes": 60, "maxRetries": 1, "retryOnVoicemail": True}
    )
    call = answered_call("machine")
    call.end_attempt(1, "completed", None, 9000, T0, strategy)
    assert (call.status, call.attempt, call.not_before) == ("pending", 2, T0 + timedelta(hours=1))


# -- retries -------------------------------------------------------------------------------


def test_busy_under_fixed_delay_schedules_attempt_2_after_the_delay(clock):
    call = new_call()
    call.claim(1, T0, "w")
    call.collect_events()
    ended_at = T0 + timedelta(seconds=20)
    assert call.end_attempt(1, "busy", "busy", None, ended_at, FIXED)
    ended, retry = call.collect_events()
    assert names([ended, retry]) == ["AttemptEnded", "RetryScheduled"]
    assert ended.outcome == "busy" and ended.attempt == 1
    assert retry.attempt == 2
    assert retry.not_before == ended_at + timedelta(minutes=10)
    assert (call.status, call.attempt) == ("pending", 2)
    with pytest.raises(AlreadyClaimed):
        call.claim(2, ended_at + timedelta(minutes=9), "w")
    call.claim(2, ended_at + timedelta(minutes=10), "w")
    assert call.status == "dialing"


def test_fixed_delay_3_retries_then_failed_after_the_4th_attempt():
    call = new_call()
    at = T0
    for attempt in range(1, 5):
        call.claim(attempt, at, "w")
        call.end_attempt(attempt, "no_answer", None, None, at, FIXED)
        at = call.not_before
    assert call.outcomes == ["no_answer"] * 4
    assert (call.status, call.result, call.attempt) == ("finished", "failed", 4)
    assert names(call.collect_events()).count("RetryScheduled") == 3


def test_a_new_attempt_forgets_the_previous_answer():
    call = answered_call("machine")
    call.end_attempt(1, "no_answer", None, None, T0, FIXED)
    call.claim(2, call.not_before, "w")
    assert call.answered_by is None and call.provider_call_id is None and call.turns == []


# -- duplicate and late callbacks ----------------------------------------------------------


def test_duplicate_end_attempt_appends_nothing():
    call = answered_call()
    assert call.end_attempt(1, "completed", None, 1000, T0, NONE) is True
    call.collect_events()
    assert call.end_attempt(1, "completed", None, 1000, T0, NONE) is False
    assert call.end_attempt(1, "busy", None, None, T0, FIXED) is False
    assert call.collect_events() == []
    assert call.outcomes == ["completed"]


def test_late_callbacks_after_the_end_are_ignored():
    call = answered_call()
    call.end_attempt(1, "completed", None, 1000, T0, NONE)
    call.collect_events()
    call.record_ringing(1)
    call.record_answered(1, "machine")
    call.record_placed(1, "CA-other", "+212500000002")
    assert call.collect_events() == []
    assert (call.status, call.answered_by, call.provider_call_id) == ("finished", "human", "CA1")


def test_callbacks_of_a_previous_attempt_do_not_touch_the_retry():
    call = new_call()
    call.claim(1, T0, "w")
    call.end_attempt(1, "busy", None, None, T0, FIXED)
    call.claim(2, call.not_before, "w")
    call.collect_events()
    call.record_ringing(1)
    call.record_answered(1, "human")
    assert call.end_attempt(1, "completed", None, 5, T0, FIXED) is False
    assert call.collect_events() == []
    assert (call.status, call.attempt) == ("dialing", 2)


def test_ringing_after_answer_does_not_go_back():
    call = answered_call()
    call.collect_events()
    call.record_ringing(1)
    call.record_answered(1, "machine")
    assert call.collect_events() == []
    assert call.status == "in_progress" and call.answered_by == "human"


def test_duplicate_placed_keeps_the_first_provider_id():
    call = new_call()
    call.claim(1, T0, "w")
    call.record_placed(1, "CA1", "+212500000001")
    call.collect_events()
    call.record_placed(1, "CA2", "+212500000009")
    assert call.collect_events() == []
    assert (call.provider_call_id, call.from_number) == ("CA1", "+212500000001")


# -- skip ----------------------------------------------------------------------------------


def test_skip_only_while_pending():
    pending = new_call()
    assert pending.skip("cancelled", T0) is True
    assert (pending.status, pending.result) == ("finished", "skipped")
    assert names(pending.collect_events())[-1] == "Skipped"
    assert pending.skip("cancelled", T0) is False
    with pytest.raises(AlreadyClaimed):
        pending.claim(1, T0, "w")

    dialing = new_call()
    dialing.claim(1, T0, "w")
    dialing.collect_events()
    assert dialing.skip("cancelled", T0) is False  # a call in progress finishes
    assert dialing.collect_events() == [] and dialing.status == "dialing"


def test_a_contact_waiting_for_a_retry_can_be_skipped():
    call = new_call()
    call.claim(1, T0, "w")
    call.end_attempt(1, "busy", None, None, T0, FIXED)
    assert call.skip("stopped", T0) is True
    assert call.result == "skipped"


# -- audit and time ------------------------------------------------------------------------


def test_every_event_carries_meta_from_audit_context_and_the_clock_time(clock):
    with audit_context(actor="apikey:k1", requestId="req-1", correlationId=None):
        call = new_call()
        call.claim(1, T0, "w")
    clock.at = T0 + timedelta(minutes=2)
    with audit_context(actor="twilio", requestId="req-2"):
        call.record_answered(1, "human")
        with audit_context(correlationId="corr-9"):
            call.end_attempt(1, "completed", None, 1, clock.at, NONE)
    events = call.collect_events()
    assert [e.meta for e in events] == [
        {"actor": "apikey:k1", "requestId": "req-1"},
        {"actor": "apikey:k1", "requestId": "req-1"},
        {"actor": "twilio", "requestId": "req-2"},
        {"actor": "twilio", "requestId": "req-2", "correlationId": "corr-9"},
        {"actor": "twilio", "requestId": "req-2", "correlationId": "corr-9"},
    ]
    assert [e.timestamp for e in events] == [T0, T0] + [T0 + timedelta(minutes=2)] * 3
    assert call.modified_on == T0 + timedelta(minutes=2)


def test_outside_any_audit_context_the_actor_is_system(clock):
    call = new_call()
    assert [e.meta for e in call.collect_events()] == [{"actor": "system"}]


# -- persistence ---------------------------------------------------------------------------


def test_event_sequence_survives_a_round_trip_through_an_application(clock):
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    with audit_context(actor="apikey:k1"):
        call = new_call()
        call.claim(1, T0, "w")
        call.record_placed(1, "CA1", "+212500000001")
        call.record_ringing(1)
        call.end_attempt(1, "no_answer", "timeout", None, T0 + timedelta(seconds=30), FIXED)
    app.save(call)
    clock.at = T0 + timedelta(minutes=11)
    again = app.repository.get(call.id)
    assert isinstance(again.id, UUID) and again.version == call.version == 6
    assert (again.status, again.attempt, again.outcomes) == ("pending", 2, ["no_answer"])
    assert again.not_before == T0 + timedelta(minutes=10, seconds=30)
    assert again.contact == call.contact and again.execution_id == call.execution_id
    assert again.provider_call_id == "CA1"

    again.claim(2, clock.at, "w2")
    again.record_answered(2, "human")
    again.record_turn(2, {"digits": "1"}, {"steps": [{"nodeId": "a"}], "state": {"visits": 3}})
    again.end_attempt(2, "completed", None, 5000, clock.at, FIXED)
    app.save(again)

    final = app.repository.get(call.id)
    assert (final.status, final.result, final.outcomes) == ("finished", "completed", ["no_answer", "completed"])
    assert final.turns == again.turns and final.flow_state == {"visits": 3}
    stored = list(app.events.get(call.id))
    assert names(stored) == [
        "Created",
        "DialClaimed",
        "Placed",
        "Ringing",
        "AttemptEnded",
        "RetryScheduled",
        "DialClaimed",
        "Answered",
        "FlowAdvanced",
        "AttemptEnded",
        "Finished",
    ]
    assert all(e.meta == {"actor": "apikey:k1"} for e in stored[:6])
    assert all(e.meta == {"actor": "system"} for e in stored[6:])
    assert stored[-1].timestamp == T0 + timedelta(minutes=11)


def test_the_providers_answer_to_a_dial_is_not_recorded_once_the_attempt_is_over() -> None:
    """The callbacks of a call can all be stored before the worker stores the provider's
    answer to its dial: that late "placed" must not follow the end of the attempt."""
    from datetime import UTC, datetime
    from uuid import uuid4

    from domain.call import Call
    from domain.retry import RetryStrategy

    now = datetime(2026, 1, 1, 10, tzinfo=UTC)
    call = Call(uuid4(), uuid4(), uuid4(), uuid4(), "+212612345678", {}, now)
    call.claim(1, now, "w")
    call.record_ringing(1)
    call.end_attempt(1, "no_answer", None, None, now, RetryStrategy.parse({"type": "none"}))
    ended = [type(e).__name__ for e in call.pending_events]
    call.record_placed(1, "CA1", "+212500000001")
    assert [type(e).__name__ for e in call.pending_events] == ended and ended[-1] == "Finished"
    assert call.provider_call_id is None

    live = Call(uuid4(), uuid4(), uuid4(), uuid4(), "+212612345678", {}, now)
    live.claim(1, now, "w")
    live.record_ringing(1)
    live.record_placed(1, "CA2", "+212500000001")  # a callback first, the dial's answer next: kept
    assert type(live.pending_events[-1]).__name__ == "Placed" and live.provider_call_id == "CA2"


def test_one_process_updates_a_call_in_turns_instead_of_racing_to_one_version(clock: Clock) -> None:
    """Two callbacks of one call in one process (the ringing status and the voice request
    arrive together): each change runs once, on the state the other left, instead of
    both loading one version and one of them conflicting, loading and running again."""
    import threading
    import time

    from application.calls import CallsApp

    calls = CallsApp()
    call = Call(uuid4(), uuid4(), uuid4(), uuid4(), "+212600000001", {}, T0)
    calls.save(call)
    runs: list[str] = []
    go = threading.Barrier(2)

    def later(name: str, minutes: int) -> None:
        def change(c: Call) -> None:
            runs.append(name)
            time.sleep(0.05)  # both would hold the same version by now
            c.defer(1, c.not_before + timedelta(minutes=minutes), name)

        go.wait()
        calls.update(call.id, change)

    threads = [threading.Thread(target=later, args=(n, m)) for n, m in (("a", 5), ("b", 7))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(runs) == ["a", "b"]
    assert calls.call(call.id).not_before == T0 + timedelta(minutes=12)


def test_an_update_starts_from_the_call_it_kept_and_reloads_only_on_a_conflict(clock: Clock, tmp_path: Any) -> None:
    """The Call an update leaves is kept, and the next update starts from it without
    reading the stream at all. When another process appended meanwhile, the save made
    from the kept call conflicts (the events' unique stream version): the stream is then
    loaded and the change runs again on it, so what is stored follows every event. A
    change that finds nothing to do on the kept call is checked against the stream, and
    one the kept call refuses runs again on the stream. Once this process has seen an
    erasure, nothing kept is used."""
    from pathlib import Path

    from infrastructure.bootstrap import Container
    from infrastructure.settings import Settings

    c = Container(Settings(data_dir=Path(tmp_path) / "var"))
    try:
        calls = c.calls
        call = Call(uuid4(), uuid4(), uuid4(), uuid4(), "+212600000001", {}, T0)
        calls.save(call)
        calls.update(call.id, lambda x: x.defer(1, T0 + timedelta(minutes=5), "first"))
        loads: list[object] = []
        reads: list[object] = []
        replay, read = calls.call, calls.repository.event_store.get
        calls.call = lambda id_: loads.append(id_) or replay(id_)  # type: ignore[method-assign]
        calls.repository.event_store.get = lambda *a, **kw: reads.append((a, kw)) or read(*a, **kw)  # type: ignore[method-assign]
        runs: list[int] = []

        def later(x: Call) -> None:
            runs.append(x.version)
            x.defer(1, x.not_before + timedelta(minutes=1), "later")

        # Nothing stored elsewhere: no read, one run.
        calls.update(call.id, later)
        assert runs == [2] and loads == [] and reads == []
        assert replay(call.id).not_before == T0 + timedelta(minutes=6)

        # Another process's save: the kept call's save conflicts, the stream is loaded,
        # the change runs again on it, and both changes are stored.
        elsewhere = replay(call.id)
        elsewhere.defer(1, elsewhere.not_before + timedelta(minutes=9), "elsewhere")
        calls.save(elsewhere)
        runs.clear()
        calls.update(call.id, later)
        assert runs == [3, 4] and loads == [call.id]
        stored = replay(call.id)
        assert stored.not_before == T0 + timedelta(minutes=16) and stored.version == 5
        assert [type(e).__name__ for e in read(call.id)].count("Deferred") == 4

        # Nothing to do on the kept state: checked against the stream, where another
        # process's event makes it something to do.
        elsewhere = replay(call.id)
        elsewhere.defer(1, elsewhere.not_before + timedelta(minutes=2), "elsewhere again")
        calls.save(elsewhere)
        seen: list[int] = []

        def only_after_18_minutes(x: Call) -> None:
            seen.append(x.version)
            if x.not_before >= T0 + timedelta(minutes=18):
                x.defer(1, x.not_before + timedelta(minutes=1), "saw the other")

        loads.clear()
        calls.update(call.id, only_after_18_minutes)
        assert seen == [5, 6] and loads == []  # brought forward by the newer event, not replayed
        assert replay(call.id).not_before == T0 + timedelta(minutes=19)

        # A change the kept state refuses runs again on the stream as stored; one that
        # the stored state refuses too fails.
        later_on = T0 + timedelta(hours=1)
        calls.update(call.id, lambda x: x.claim(1, later_on, "w1"))
        elsewhere = replay(call.id)
        elsewhere.release_claim(1, "paused")
        calls.save(elsewhere)
        tried: list[str] = []

        def claim(x: Call) -> None:
            tried.append(x.status)
            x.claim(1, later_on, "w3")

        calls.update(call.id, claim)
        assert tried == ["dialing", "pending"]
        assert [getattr(e, "worker", None) for e in read(call.id)][-3:] == ["w1", None, "w3"]
        tried.clear()
        with pytest.raises(AlreadyClaimed):
            calls.update(call.id, claim)
        assert tried == ["dialing", "dialing"]

        loads.clear()
        calls.mapper.keystore.forget(call.contact_id)  # an erasure seen by this process
        calls.update(call.id, later)
        assert loads == [call.id]  # read again, not kept across the erasure
    finally:
        c.close()


def test_a_batch_that_conflicts_is_saved_each_alone_and_nothing_else_is_lost(clock: Clock) -> None:
    """A shared save fails as a whole when one of its calls lost a race; the others are
    then saved one by one, with their events (a failed save had already taken them)."""
    from application.calls import CallsApp

    calls = CallsApp()
    taken, free = new_call(), new_call()
    calls.save(taken, free)
    mine = [calls.call(taken.id), calls.call(free.id)]  # loaded before the rival's claim
    rival = calls.call(taken.id)
    rival.claim(1, T0, "w2")
    calls.save(rival)
    for c in mine:
        c.claim(1, T0, "w1")
    assert calls.save_all_or_each(mine) == {free.id}
    claimed_by = lambda c: [e.worker for e in calls.events.get(c.id) if type(e).__name__ == "DialClaimed"]
    assert claimed_by(free) == ["w1"]
    assert claimed_by(taken) == ["w2"]
    # New calls beside one that exists already: the new ones are all stored.
    fresh = [new_call(), new_call()]
    assert calls.save_all_or_each([new_call_like(taken), *fresh]) == {c.id for c in fresh}
    assert all(calls.find(c.id) is not None for c in fresh)


def new_call_like(call: Call) -> Call:
    """A second Call of the same execution and contact (the same stream id)."""
    return Call(call.execution_id, call.contact_id, call.organization_id, call.program_id, call.to, call.contact, T0)


def test_the_calls_in_flight_at_200_calls_a_second_stay_kept_for_their_next_callback(clock: Clock) -> None:
    """A kept call lives as long as its contact's key (30 s): every call between its
    first and last callbacks at 200 calls a second (6,000) is still kept at its next
    callback, which then reads nothing."""
    from application.calls import CallsApp

    calls = CallsApp()
    in_flight = [new_call() for _ in range(200 * 30)]
    calls.save(*in_flight)
    for call in in_flight:  # each call's first callback
        calls.update(call.id, lambda c: c.claim(1, T0, "w1"))
    loads: list[object] = []
    replay = calls.call
    calls.call = lambda id_: loads.append(id_) or replay(id_)  # type: ignore[method-assign]
    for call in in_flight:  # and its next, in the same order
        calls.update(call.id, lambda c: c.record_placed(1, f"CA{c.id.hex}", "+212500000001"))
    assert loads == []
