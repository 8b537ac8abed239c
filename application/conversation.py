"""The conversation with the phone network: each provider callback becomes events on the
Call (answered, flow turns, attempt ended) and, for voice callbacks, instructions to play.

Duplicate and out-of-order callbacks are expected: a voice callback that was already
answered gets the instructions it got the first time; a stale status appends nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from application.calls import CallsApp
from application.executions import ExecutionCache, ExecutionInfo
from application.ports import Clock
from domain.base import audit_context
from domain.call import Call
from domain.flows import engine


@dataclass
class Reply:
    """Instructions for the phone network; ``seq`` numbers the turn that produced them."""

    instructions: list[dict[str, Any]]
    seq: int


HANGUP = [{"verb": "hangup", "reason": "not_live"}]


def flow_context(info: ExecutionInfo, call: Call) -> dict[str, Any]:
    contact = call.contact
    return {
        "contact": {**contact, "primaryPhone": call.to, "phone": call.to},
        "call": {"from": call.from_number, "to": call.to, "id": str(call.id), "attempt": call.attempt},
        "sys": {
            "callId": str(call.id),
            "contactId": str(call.contact_id),
            "contactPhone": call.to,
            "organizationId": info.organization_id,
            "programId": info.program_id,
            "answeredBy": call.answered_by,
            "callDirection": "outbound",
        },
    }


def unanswered_steps(info: ExecutionInfo, call: Call, outcome: str) -> list[dict[str, Any]]:
    if call.answered_by is not None:
        return []
    return engine.on_unanswered(info.graph, outcome, flow_context(info, call)).steps


class Conversation:
    def __init__(self, calls: CallsApp, executions: ExecutionCache, clock: Clock) -> None:
        self.calls = calls
        self.executions = executions
        self.clock = clock

    def answered(self, call_id: str, attempt: int, answered_by: str | None) -> Reply:
        """The voice callback: the callee picked up (``answered_by`` human or machine)."""

        def change(call: Call) -> Reply:
            if attempt != call.attempt:
                return Reply(HANGUP, 0)
            if call.turns:
                return Reply(call.turns[0]["instructions"], 0)
            if not call.is_live(attempt):
                return Reply(HANGUP, 0)
            call.record_answered(attempt, answered_by)
            info = self.executions.get(call.execution_id)
            turn = engine.on_answer(info.graph, call.answered_by, flow_context(info, call))
            data = turn.to_dict()
            data["at"] = self.clock.now().isoformat()
            call.record_turn(attempt, {"type": "answer", "answeredBy": call.answered_by}, data)
            return Reply(turn.instructions, 0)

        with audit_context(actor="telephony", correlationId=call_id):
            return self.calls.update(call_id, change)

    def input(self, call_id: str, attempt: int, seq: int, digits: str | None) -> Reply | None:
        """Keys pressed (or none) at the gather of turn ``seq - 1``. None: no such turn."""

        def change(call: Call) -> Reply | None:
            if attempt != call.attempt or seq < 1:
                return Reply(HANGUP, seq)
            if seq < len(call.turns):
                return Reply(call.turns[seq]["instructions"], seq)
            if seq > len(call.turns) or not call.is_live(attempt):
                return None if seq > len(call.turns) else Reply(HANGUP, seq)
            info = self.executions.get(call.execution_id)
            state = engine.FlowState.from_dict(call.flow_state)
            if state.waiting_node is None:
                return Reply(HANGUP, seq)
            turn = engine.on_input(info.graph, state, state.waiting_node, digits, flow_context(info, call))
            if turn is None:
                return Reply(HANGUP, seq)
            data = turn.to_dict()
            data["at"] = self.clock.now().isoformat()
            trigger = {"type": "input" if digits else "timeout", "digits": digits or "", "nodeId": state.waiting_node}
            call.record_turn(attempt, trigger, data)
            return Reply(turn.instructions, seq)

        with audit_context(actor="telephony", correlationId=call_id):
            return self.calls.update(call_id, change)

    def status(
        self,
        call_id: str,
        attempt: int,
        status: str,
        answered_by: str | None = None,
        duration_ms: int | None = None,
        reason: str | None = None,
    ) -> bool:
        """A call-progress callback in our words: ringing, answered, or a final outcome."""

        def change(call: Call) -> bool:
            before = len(call.pending_events)
            if status == "ringing":
                call.record_ringing(attempt)
            elif status == "answered":
                call.record_answered(attempt, answered_by)
            else:
                if answered_by and call.answered_by is None and status == "completed":
                    call.record_answered(attempt, answered_by)
                info = self.executions.get(call.execution_id)
                steps = unanswered_steps(info, call, status)
                call.end_attempt(attempt, status, reason, duration_ms, self.clock.now(), info.retry, steps)
            return len(call.pending_events) > before

        with audit_context(actor="telephony", correlationId=call_id):
            return self.calls.update(call_id, change)
