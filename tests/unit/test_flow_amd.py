"""Asynchronous answering-machine detection in the domain: the pure engine turns a running
flow to the dial node's onVoicemail, and the Call records the verdict once, whether it
comes before the answer, during the flow or after its end."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from domain.call import Call
from domain.flows import engine
from domain.flows.graph import require_graph
from domain.retry import RetryStrategy
from tests.unit.flows_data import as_map, payment_reminder

NOW = datetime(2025, 1, 20, 10, 0, tzinfo=UTC)
CTX: dict[str, Any] = {"contact": {}, "call": {"to": "+212600000000"}, "sys": {}}


def graph(**dial_config: Any) -> Any:
    data = as_map(payment_reminder())
    data["nodes"]["dial-1"]["config"].update(dial_config)
    return require_graph(data)


def test_a_machine_met_at_the_menu_leaves_the_dial_by_on_voicemail() -> None:
    g = graph()
    first = engine.on_answer(g, "human", CTX)
    assert first.state.waiting_node == "collect-response"
    turn = engine.on_machine_detected(g, first.state, CTX)
    assert turn is not None
    assert [(s["nodeId"], s["outputPath"]) for s in turn.steps] == [("dial-1", "onVoicemail"), ("hangup-vm", None)]
    assert turn.events[0] == {"type": "machine_detected", "nodeId": "dial-1", "answeredBy": "machine"}
    assert turn.instructions == [{"verb": "hangup", "reason": "voicemail"}]
    assert turn.state.ended and turn.state.waiting_node is None
    assert turn.state.visits == first.state.visits + 2
    assert first.state.waiting_node == "collect-response"  # the saved state is not changed in place


def test_nothing_to_turn_when_the_flow_ended_amd_is_off_or_there_is_no_voicemail_branch() -> None:
    g = graph()
    ended = engine.resume(g, engine.on_answer(g, "human", CTX).state, "collect-response", {"digits": "1"}, CTX)
    assert ended is not None and ended.state.ended
    assert engine.on_machine_detected(g, ended.state, CTX) is None
    off = graph(enableAMD=False)
    assert engine.on_machine_detected(off, engine.on_answer(off, "human", CTX).state, CTX) is None
    data = as_map(payment_reminder())
    data["nodes"]["dial-1"]["outputs"]["default"] = data["nodes"]["dial-1"]["outputs"].pop("onVoicemail")
    bare = require_graph(data)  # a machine is treated as a person once the flow runs
    assert engine.on_machine_detected(bare, engine.on_answer(bare, "human", CTX).state, CTX) is None


def test_the_node_visit_cap_holds_across_the_turn() -> None:
    data = as_map(payment_reminder())
    data["maxNodeVisits"] = 3
    g = require_graph(data)
    first = engine.on_answer(g, "human", CTX)
    assert first.state.visits == 3
    turn = engine.on_machine_detected(g, first.state, CTX)
    assert turn is not None and turn.state.hangup_reason == "max_node_visits" and turn.steps == []


def call() -> Call:
    c = Call(uuid4(), uuid4(), uuid4(), uuid4(), "+212600000002", {}, NOW)
    c.claim(1, NOW, "w")
    return c


def test_the_call_records_the_verdict_once_and_a_machine_ends_as_voicemail() -> None:
    c = call()
    c.record_answered(1, None)
    assert c.answered_by == "human"
    assert c.record_machine_detection(1, "machine", "machine_start") is True
    assert c.answered_by == "machine" and c.machine_detected == "machine"
    assert c.record_machine_detection(1, "human", "human") is False  # a second verdict
    assert c.record_machine_detection(2, "machine", "machine_start") is False  # another attempt's
    c.end_attempt(1, "completed", None, 9000, NOW, RetryStrategy.parse({"type": "none"}))
    assert c.outcomes == ["voicemail"]
    assert c.record_machine_detection(1, "machine", "machine_start") is False  # after the end
    names = [type(e).__name__ for e in c.collect_events()]
    assert names.count("MachineDetected") == 1


def test_a_verdict_that_overtakes_the_answer_decides_how_the_flow_starts() -> None:
    c = call()
    assert c.record_machine_detection(1, "machine", "machine_end_beep") is True
    assert c.answered_by is None  # not answered yet
    c.record_answered(1, None)  # the voice webhook, without AnsweredBy (async AMD)
    assert c.answered_by == "machine"
    turn = engine.on_answer(graph(), c.answered_by, CTX)
    assert [s["nodeId"] for s in turn.steps] == ["dial-1", "hangup-vm"]


def test_a_person_changes_nothing_but_the_record() -> None:
    c = call()
    c.record_answered(1, None)
    assert c.record_machine_detection(1, "human", "human") is True
    c.end_attempt(1, "completed", None, 9000, NOW, RetryStrategy.parse({"type": "none"}))
    assert c.outcomes == ["completed"]
