"""The call history's batch mode (``CallHistoryView.apply_batch``: a batch's Call events
applied in memory and written with a few statements) gives, row for row, the tables that
its handlers give applying the same events one by one, on PostgreSQL and on SQLite.

The events are made by the real domain (calls answered, unanswered and retried, claims
released, answering machines detected before and after the answer, turns that resolve a
node, turns of the older format, recordings, skipped calls, a Created delivered twice,
events of calls whose rows do not exist) and interleaved as the log interleaves calls;
contacts are erased in the middle, and a second execution starts among the calls."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from domain.call import Call
from domain.contact import Contact
from domain.execution import Execution
from domain.retry import RetryStrategy
from projections.call_history import CallHistoryView
from projections.store import make_view

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STRATEGY = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 5, "maxRetries": 2})
TABLES = {
    "history_executions": "id",
    "history_jobs": "job_id",
    "history_attempts": "call_id",
    "history_steps": "call_id, seq",
    "history_events": "call_id, seq",
    "history_recordings": "id",
}

GREET = {
    "steps": [
        {"nodeId": "dial", "nodeType": "dial", "nodeLabel": "Dial", "outputPath": "onAnswer"},
        {"nodeId": "greet", "nodeType": "say", "nodeLabel": "Greeting"},
        {"nodeId": "menu", "nodeType": "dtmf", "nodeLabel": "Menu"},
    ],
    "events": [{"type": "play", "nodeId": "greet", "text": "Hello, press 1 or 2."}],
    "instructions": [{"verb": "say", "text": "Hello, press 1 or 2."}],
    "state": {"variables": {}, "nodeId": "menu"},
}


def keypress(digit: str, loop: bool = False) -> dict[str, Any]:
    """A keypress resolving ``menu``; ``loop`` goes back to the menu (a second visit)."""
    steps = (
        [{"nodeId": "menu", "nodeType": "dtmf", "nodeLabel": "Menu"}]
        if loop
        else [
            {"nodeId": "thanks", "nodeType": "play", "nodeLabel": "Thanks"},
            {"nodeId": "done", "nodeType": "hangup", "nodeLabel": "Done"},
        ]
    )
    return {
        "resolved": {"nodeId": "menu", "outputPath": f"branches.{digit}"},
        "steps": steps,
        "events": [
            {"type": "dtmf_collected", "nodeId": "menu", "digits": digit, "mode": "single_digit"},
            {"type": "variable_set", "name": "choice", "value": digit},
        ],
        "instructions": [{"verb": "say", "text": "Thank you."}, {"verb": "hangup"}],
        "state": {
            "variables": {"choice": digit, "loop": loop},
            "nodeId": "menu" if loop else "done",
        },
    }


def recording_turn(record_id: str | None, node: str = "rec") -> dict[str, Any]:
    stop: dict[str, Any] = {"type": "record_stop", "nodeId": node, "recordingType": "segment",
                            "recordingSid": f"RE{node}", "recordingUrl": f"https://rec.example/{record_id}",
                            "durationMs": 4200}  # fmt: skip
    if record_id is not None:
        stop["recordId"] = record_id
    return {
        "resolved": {
            "nodeId": "nowhere",
            "outputPath": "next",
        },  # a node never reached: nothing changes
        "steps": [{"nodeId": node, "nodeType": "record", "nodeLabel": "Message"}],
        "events": [{"type": "record_start", "nodeId": node}, stop],
        "instructions": [{"verb": "record"}],
        "state": {"variables": {"secret": "said something"}, "nodeId": node},
    }


def old_format_turn(digits: str | None, resolved: bool) -> dict[str, Any]:
    """A turn recorded before the engine reported events: input and instructions only."""
    turn: dict[str, Any] = {
        "steps": [{"nodeId": "menu", "nodeType": "dtmf", "nodeLabel": "Menu"}],
        "instructions": [
            {"verb": "say", "text": "Choose."},
            {"verb": "gather"},
            {"verb": "play", "url": "u"},
        ],
        "state": {"variables": {"digits": digits}, "nodeId": "menu"},
    }
    if digits is not None:
        turn["input"] = {"digits": digits, "mode": "single_digit", "nodeId": "menu"}
    if resolved:
        turn["resolved"] = {"nodeId": "menu", "outputPath": "branches.old"}
    return turn


UNANSWERED = [
    {"nodeId": "dial", "nodeType": "dial", "nodeLabel": "Dial", "outputPath": "onNoAnswer"}
]


def one_call(kind: int, n: int, execution: Any, contact: Any, org_id: Any) -> Call:
    """Call ``n`` through one of the lifecycles (``kind``), its events pending."""
    at = T0 + timedelta(seconds=n)
    call = Call(execution.id, contact.id, org_id, execution.program_id, f"+2126{n:08d}", {}, T0)
    if kind == 4:  # deferred, then skipped
        call.defer(1, T0 + timedelta(hours=1), "window")
        call.skip("cancelled", at)
        return call
    if kind == 5:  # busy, no answer, then skipped while its third attempt waits
        for attempt, outcome in ((1, "busy"), (2, "no_answer")):
            call.claim(attempt, at + timedelta(hours=attempt), "w")
            call.record_placed(attempt, f"CA{n}x{attempt}", "+212500000001")
            # A verdict while it rang, never answered: the attempt keeps no answerer.
            if attempt == 1:
                call.record_machine_detection(attempt, "machine", None)
            call.end_attempt(
                attempt, outcome, outcome, None, at + timedelta(hours=attempt), STRATEGY, UNANSWERED
            )
        call.skip("stopped", at + timedelta(hours=5))
        return call
    attempt = 1
    if kind == 1:  # not answered first, answered on the retry
        call.claim(1, at, "w")
        call.record_placed(1, f"CA{n}a", "+212500000001")
        call.record_ringing(1)
        call.end_attempt(1, "no_answer", "no answer", None, at, STRATEGY, UNANSWERED)
        attempt, at = 2, at + timedelta(minutes=5)
        call.claim(2, at, "w")  # the retry's claim given back (the job stays active)
        call.release_claim(2, "paused")
    if kind == 2:  # a claim given back undialled, then claimed again
        call.claim(1, at, "w")
        call.release_claim(1, "paused")
    call.claim(attempt, at, "w")
    call.record_placed(attempt, f"CA{n}b", "+212500000002")
    call.record_ringing(attempt)
    if kind == 3:  # the machine verdict before the answer (the view ignores it), then the answer
        call.record_machine_detection(attempt, "machine", "beep")
    call.record_answered(attempt, "human")
    if kind == 2:  # the verdict after the answer: the attempt says who answered
        call.record_machine_detection(attempt, "machine", None)
    if kind == 6:
        call.record_turn(attempt, {"kind": "answer"}, old_format_turn(None, False))
        call.record_turn(attempt, {"kind": "gather"}, old_format_turn("3", True))
        call.record_turn(attempt, {"kind": "gather"}, old_format_turn("4", True))
    else:
        call.record_turn(attempt, {"kind": "answer"}, GREET)
        call.record_turn(attempt, {"kind": "gather"}, keypress("9", loop=True))
        if kind in (1, 7):
            call.record_turn(attempt, {"kind": "record"}, recording_turn(f"rec-{n}"))
        if kind == 7:  # the same recording reported again, and one without an id
            call.record_turn(attempt, {"kind": "record"}, recording_turn(f"rec-{n}", node="rec2"))
            call.record_turn(attempt, {"kind": "record"}, recording_turn(None, node="rec3"))
        call.record_turn(attempt, {"kind": "gather"}, keypress(str(n % 3)))
    call.end_attempt(attempt, "completed", None, 20_000 + n, at + timedelta(seconds=30), STRATEGY,
                     flow_completed=kind != 7)  # fmt: skip
    return call


def event_stream() -> tuple[list[Any], dict[str, int]]:
    """Every event, in a log's order, and how many of some kinds it holds."""
    rng = random.Random(20260302)
    org_id = uuid.uuid4()
    program = {
        "name": "Survey",
        "retryStrategy": {"type": "fixed_delay", "delayMinutes": 5, "maxRetries": 2},
    }
    flow = {
        "flowId": str(uuid.uuid4()),
        "flowName": "Survey",
        "flowVersion": 3,
        "graph": {"nodes": []},
    }
    first = Execution(org_id, uuid.uuid4(), program, flow, [], T0, None)
    first.start(T0)
    second = Execution(
        org_id, uuid.uuid4(), {"name": "Second"}, {**flow, "flowVersion": 4}, [], T0, None
    )
    unknown = Execution(org_id, uuid.uuid4(), {"name": "Never projected"}, flow, [], T0, None)
    contacts = [Contact(org_id, f"+2126{n:08d}", f"06{n:08d}", {}) for n in range(48)]
    calls: list[list[Any]] = []
    for n, contact in enumerate(contacts):
        execution = first if n < 32 else second if n < 44 else unknown
        calls.append(one_call(n % 8, n, execution, contact, org_id).collect_events())
    # The log interleaves the calls' events (each call's in its order).
    queues = [list(events) for events in calls[:32]]
    interleaved: list[Any] = []
    while any(queues):
        q = rng.choice([q for q in queues if q])
        interleaved.append(q.pop(0))
    stream: list[Any] = [*first.collect_events()]
    erased_early = contacts[1]  # kind 1: erased between its two attempts
    ended = next(i for i, e in enumerate(interleaved)
                 if type(e).__qualname__ == "Call.AttemptEnded" and e.originator_id == calls[1][0].originator_id)  # fmt: skip
    middle = len(interleaved) // 2
    for i, e in enumerate(interleaved):
        stream.append(e)
        if i == ended:
            stream.append(_erased(erased_early))
        if i == middle:
            stream.append(calls[0][0])  # Call 0's Created again, after it went on
            stream.extend(second.collect_events())  # a second execution, among the calls
    # Then the second execution's calls, a contact erased after its call was over, calls
    # of an execution never projected, and events of a call whose Created never came.
    for events in calls[32:44]:
        stream.extend(events)
    stream.append(_erased(contacts[7]))
    # Late duplicates of provider callbacks: a Ringing after the attempt ended changes nothing.
    stream.extend(e for e in calls[0] if type(e).__qualname__ == "Call.Ringing")
    for events in calls[44:47]:
        stream.extend(events)
    stream.extend(calls[47][1:])
    names = [type(e).__qualname__ for e in stream]
    counts = {name: names.count(name) for name in set(names)}
    return stream, counts


def _erased(contact: Contact) -> Any:
    contact.collect_events()
    contact.erase()
    (event,) = contact.collect_events()
    return event


def snapshot(view: CallHistoryView) -> dict[str, list[dict[str, Any]]]:
    return {
        table: view.rows(f"SELECT * FROM {table} ORDER BY {key}") for table, key in TABLES.items()
    }


def one_by_one(
    view: CallHistoryView, events: list[Any], cuts: set[int]
) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """The reference: each event through ``handle`` (its ``on_*`` handler), one transaction
    each; the tables after the first ``n`` events, for each ``n`` of ``cuts``."""
    view.reset()
    out = {}
    for i, event in enumerate(events, 1):
        with view.transaction() as c:
            view.handle(c, event)
            view._insert_tracking(c, Tracking("log", i))  # type: ignore[attr-defined]
        if i in cuts:
            out[i] = snapshot(view)
    assert view.max_tracking_id("log") == len(events)  # type: ignore[attr-defined]
    return out


def check_batches(
    view: CallHistoryView, events: list[Any], size: int, expected: dict[int, Any]
) -> None:
    """The events in batches of ``size``: after each batch whose end is a cut of ``expected``,
    every table holds the rows it holds there one by one."""
    view.reset()
    items = [(event, Tracking("log", i)) for i, event in enumerate(events, 1)]
    compared = 0
    for start in range(0, len(items), size):
        batch = items[start : start + size]
        end = start + len(batch)
        if end == len(items):  # the last batch read further than its last event
            view.apply_batch(batch, view.handle, Tracking("log", len(items) + 3))
        else:
            view.apply_batch(batch, view.handle)
        if end in expected:
            got = snapshot(view)
            for table in TABLES:
                assert got[table] == expected[end][table], (
                    f"{table} differs after {end} events in batches of {size}"
                )
            compared += 1
    assert view.max_tracking_id("log") == len(items) + 3  # type: ignore[attr-defined]
    assert compared >= 1 and len(items) in expected


@pytest.fixture(params=["sqlite", "postgres"])
def view(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CallHistoryView]:
    if request.param == "postgres":
        from infrastructure.settings import Settings

        url = request.getfixturevalue("postgres_database")
        env = Settings(database_url=url).persistence_env()
    else:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(tmp_path / "history.sqlite"),
        }
    v = make_view(CallHistoryView, "call_history", env)
    yield v
    v.datastore.close()


def test_batches_give_the_rows_of_events_applied_one_by_one(view: CallHistoryView) -> None:
    events, counts = event_stream()
    # The stream holds what it is meant to test.
    for name in ("Call.RetryScheduled", "Call.ClaimReleased", "Call.MachineDetected", "Call.Skipped",
                 "Call.Deferred", "Contact.Erased", "Execution.Created", "Call.Finished"):  # fmt: skip
        assert counts.get(name, 0) >= 2 if name != "Execution.Created" else counts[name] == 2, name
    sizes = (1, 7, 500)
    cuts = {n for n in range(7, len(events), 7)} | {len(events)}
    after = one_by_one(view, events, cuts)
    expected = after[len(events)]
    attempts = expected["history_attempts"]
    assert len(expected["history_executions"]) == 2
    assert len(expected["history_jobs"]) == 47  # not the one whose Created never came
    assert {a["attempt"] for a in attempts} == {1, 2, 3}
    statuses = {a["status"] for a in attempts}
    assert {"completed", "no_answer", "busy", "skipped"} <= statuses
    assert {a["outcome"] for a in attempts} >= {"voicemail", "incomplete", "completed", "skipped"}
    assert {a["answered_by"] for a in attempts} == {None, "human", "machine"}
    assert any(a["to_number"] == "" and a["variables"] is None for a in attempts)  # erased
    assert any(
        a["to_number"] == "" and a["variables"] is not None for a in attempts
    )  # erased, then called
    paths = {s["output_path"] for s in expected["history_steps"]}
    assert paths >= {"branches.0", "branches.9", "branches.old", "onNoAnswer"}
    assert (
        len(expected["history_recordings"]) == 11
    )  # 12 reported: one twice, one of a call never created
    assert any(r["url"] is None for r in expected["history_recordings"])  # erased
    assert any(e["data"] == '{"to":"","from":"+212500000002"}' for e in expected["history_events"])

    for size in sizes:  # compared after every 7th event (batches of 1 and 7) and at the end
        check_batches(view, events, size, after)
