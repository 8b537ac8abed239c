"""The conversation with the phone network: each provider callback becomes events on the
Call (answered, flow turns, attempt ended) and, for voice callbacks, instructions to play.

Duplicate and out-of-order callbacks are expected: a voice callback that was already
answered gets the instructions it got the first time; a stale status appends nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from application.calls import CallsApp
from application.executions import ExecutionCache, ExecutionInfo
from application.flow_requests import FlowHttp, FlowRequests
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


def flow_completed(info: ExecutionInfo, call: Call) -> bool:
    """Did the answered call complete its flow? With nodes marked ``"markComplete": true``
    it must have entered one of them; otherwise the flow must have ended (at a hangup
    or at a node with no way on) rather than stopped by the callee hanging up mid-way."""
    marked = {
        nid for nid, node in info.graph.nodes.items()
        if node.get("markComplete") or (node.get("config") or {}).get("markComplete")
    }
    if marked:
        return any(s.get("nodeId") in marked for t in call.turns for s in t.get("steps") or [])
    state = call.flow_state or {}
    return bool(state.get("ended"))


def unanswered_steps(info: ExecutionInfo, call: Call, outcome: str) -> list[dict[str, Any]]:
    if call.answered_by is not None:
        return []
    return engine.on_unanswered(info.graph, outcome, flow_context(info, call)).steps


def _settle(info: ExecutionInfo, turn: engine.Turn, ctx: dict[str, Any], requests: FlowRequests) -> engine.Turn:
    """Perform the turn's webhook calls (once, even if the change is retried) and resume."""
    return engine.settle(info.graph, turn, ctx, requests.perform)


class Voice(Protocol):
    def stitch(self, organization_id: Any, instructions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Spoken numbers, dates and words as dictionary audio where a dictionary covers them."""
        ...


class _Recorded:
    """The turn a change recorded (the last run of it, if optimistic concurrency retried)."""

    def __init__(self) -> None:
        self.turn: tuple[Call, int, list[dict[str, Any]]] | None = None

    def __call__(self, call: Call, trigger: dict[str, Any], data: dict[str, Any]) -> None:
        call.record_turn(call.attempt, trigger, data)
        self.turn = (call, len(call.turns) - 1, data.get("events") or [])


class Conversation:
    def __init__(
        self,
        calls: CallsApp,
        executions: ExecutionCache,
        clock: Clock,
        http: FlowHttp | None = None,
        voice: Voice | None = None,
        opt_out_now: Callable[[Call, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.calls = calls
        # A turn's opt-outs, carried out before the callback is answered (see _update).
        self.opt_out_now = opt_out_now
        self.executions = executions
        self.clock = clock
        self.http = http
        self.voice = voice

    def _spoken(self, info: ExecutionInfo, turn: engine.Turn) -> engine.Turn:
        if self.voice is not None and turn.instructions:
            turn.instructions = self.voice.stitch(info.organization_id, turn.instructions)
        return turn

    def _update(self, call_id: str, change: Any, recorded: _Recorded) -> Any:
        """Apply ``change`` to the Call. What a saved turn asks of the platform (opt-out,
        contact updates, SMS) is in the turn's event; application/flow_effects carries it
        out, durably, from the calls log."""

        def run(call: Call) -> Any:
            recorded.turn = None  # a retried change keeps only what its last run recorded
            return change(call)

        with audit_context(actor="telephony", correlationId=call_id):
            result = self.calls.update(call_id, run)
            # An opt-out binds before the next dial of the number in any execution, not
            # when the outbox gets to it (which still runs it, durably, and finds it done).
            opt_outs = [e for e in (recorded.turn[2] if recorded.turn else []) if e.get("type") == "opt_out_requested"]
            if opt_outs and self.opt_out_now is not None and recorded.turn is not None:
                try:
                    self.opt_out_now(recorded.turn[0], opt_outs)
                except Exception:  # the outbox's retries carry it out
                    logging.getLogger("gomobile.flow").warning("opt-out of call %s left to the outbox", call_id, exc_info=True)
            return result

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
            ctx = flow_context(info, call)
            turn = self._spoken(info, _settle(info, engine.on_answer(info.graph, call.answered_by, ctx), ctx, requests))
            data = turn.to_dict()
            data["at"] = self.clock.now().isoformat()
            record(call, {"type": "answer", "answeredBy": call.answered_by}, data)
            return Reply(turn.instructions, 0)

        requests = FlowRequests(self.http)
        record = _Recorded()
        return self._update(call_id, change, record)  # type: ignore[no-any-return]

    def machine_detected(self, call_id: str, attempt: int, answered_by: str, detail: str | None = None) -> Reply | None:
        """Asynchronous answering-machine detection's verdict (``human`` or ``machine``;
        ``detail`` is the provider's word, e.g. machine_end_beep). Recorded on the Call
        once. A machine met while the flow runs turns the call to the dial node's
        ``onVoicemail``: the reply is that turn's instructions, which the caller must send
        to the live call (they replace whatever it is playing). None: nothing to play."""
        requests = FlowRequests(self.http)

        def change(call: Call) -> Reply | None:
            if not call.record_machine_detection(attempt, answered_by, detail):
                return None
            if answered_by != "machine" or not call.turns:
                return None  # a person goes on; a verdict before the answer routes it
            info = self.executions.get(call.execution_id)
            ctx = flow_context(info, call)
            turn = engine.on_machine_detected(info.graph, engine.FlowState.from_dict(call.flow_state), ctx)
            if turn is None:
                return None
            turn = self._spoken(info, _settle(info, turn, ctx, requests))
            data = turn.to_dict()
            data["at"] = self.clock.now().isoformat()
            record(call, {"type": "amd", "answeredBy": detail or answered_by}, data)
            return Reply(turn.instructions, len(call.turns) - 1)

        record = _Recorded()
        return self._update(call_id, change, record)  # type: ignore[no-any-return]

    def input(self, call_id: str, attempt: int, seq: int, digits: str | None) -> Reply | None:
        """Keys pressed (or none) at the gather of turn ``seq - 1``. None: no such turn."""
        return self.advance(call_id, attempt, seq, {"digits": digits})

    def advance(self, call_id: str, attempt: int, seq: int, result: dict[str, Any]) -> Reply | None:
        """What the callee did at the waiting node of turn ``seq - 1`` (keys, speech, a
        recording, a transfer's end, or nothing). None: no such turn."""
        requests = FlowRequests(self.http)

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
            ctx = flow_context(info, call)
            turn = engine.resume(info.graph, state, state.waiting_node, result, ctx)
            if turn is None:
                return Reply(HANGUP, seq)
            turn = self._spoken(info, _settle(info, turn, ctx, requests))
            data = turn.to_dict()
            data["at"] = self.clock.now().isoformat()
            heard = {k: v for k, v in result.items() if v not in (None, "")}
            kind = "input" if set(heard) - {"dialStatus"} or "dialStatus" in heard else "timeout"
            trigger = {"type": kind, "digits": result.get("digits") or "", "nodeId": state.waiting_node, "result": heard}
            record(call, trigger, data)
            return Reply(turn.instructions, seq)

        record = _Recorded()
        return self._update(call_id, change, record)  # type: ignore[no-any-return]

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
                steps: list[dict[str, Any]] = []
                if call.answered_by is None and call.is_live(attempt):
                    turn = engine.on_unanswered(info.graph, status, flow_context(info, call))
                    steps = turn.steps
                    if turn.events:  # variables set, SMS or contact updates on the way to the hangup
                        data = {**turn.to_dict(), "steps": [], "at": self.clock.now().isoformat()}
                        record(call, {"type": "unanswered", "outcome": status}, data)
                call.end_attempt(
                    attempt, status, reason, duration_ms, self.clock.now(), info.retry, steps,
                    flow_completed=flow_completed(info, call),
                )
            return len(call.pending_events) > before

        record = _Recorded()
        return self._update(call_id, change, record)  # type: ignore[no-any-return]
