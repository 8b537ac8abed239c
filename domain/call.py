"""A call: one contact of one execution, through all its attempts, to a final result.

One stream per (execution, contact), so thousands of calls never contend on one
aggregate. Every method is idempotent against duplicated or late provider callbacks:
a fact about an attempt that is not the current one, or a state already reached,
appends nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import AuditedAggregate
from domain.retry import RetryStrategy

OUTCOMES = ("completed", "incomplete", "voicemail", "no_answer", "busy", "rejected", "failed", "cancelled")
LIVE = ("dialing", "ringing", "in_progress")


def call_id(execution_id: UUID | str, contact_id: UUID | str) -> UUID:
    """Deterministic: queueing one contact of one execution twice touches one Call."""
    return uuid5(NAMESPACE_URL, f"gomobile:call:{execution_id}:{contact_id}")


def attempt_id(call: UUID | str, attempt: int) -> UUID:
    """The public ``callId`` of one attempt (the Call stream id is the report's ``jobId``)."""
    return uuid5(NAMESPACE_URL, f"gomobile:attempt:{call}:{attempt}")


class AlreadyClaimed(Exception):
    """This attempt was already claimed (or is not the current one): do not dial."""


class Call(AuditedAggregate):
    @staticmethod
    def create_id(execution_id: UUID, contact_id: UUID) -> UUID:
        return call_id(execution_id, contact_id)

    def __init__(
        self,
        execution_id: UUID,
        contact_id: UUID,
        organization_id: UUID,
        program_id: UUID,
        to: str,
        contact: dict[str, Any],
        not_before: datetime,
    ) -> None:
        self.execution_id = execution_id
        self.contact_id = contact_id
        self.organization_id = organization_id
        self.program_id = program_id
        self.to = to
        self.contact = contact
        self.not_before = not_before
        self.status = "pending"
        self.attempt = 1
        self.provider_call_id: str | None = None
        self.from_number: str | None = None
        self.answered_by: str | None = None
        self.turns: list[dict[str, Any]] = []
        self.flow_state: dict[str, Any] | None = None
        self.result: str | None = None
        self.outcomes: list[str] = []

    # -- dialling -------------------------------------------------------------------

    def claim(self, attempt: int, now: datetime, worker: str) -> None:
        """Reserve the right to dial ``attempt``; raises AlreadyClaimed if it is not ours."""
        if self.status != "pending" or self.attempt != attempt:
            raise AlreadyClaimed(f"attempt {attempt} of call {self.id} is {self.status}")
        if now < self.not_before:
            raise AlreadyClaimed(f"attempt {attempt} of call {self.id} is not due before {self.not_before}")
        self._claim(attempt, worker)

    @event("DialClaimed")
    def _claim(self, attempt: int, worker: str) -> None:
        self.status = "dialing"
        self.provider_call_id = None
        self.answered_by = None
        self.machine_detected: str | None = None
        self.turns = []
        self.flow_state = None

    def release_claim(self, attempt: int, reason: str) -> None:
        """The claim was made but nothing was dialled (the execution was paused or ended
        between the job's check and its claim): the attempt is pending again."""
        if self.status == "dialing" and self.attempt == attempt and self.provider_call_id is None:
            self._release(attempt, reason)

    @event("ClaimReleased")
    def _release(self, attempt: int, reason: str) -> None:
        self.status = "pending"

    def record_placed(self, attempt: int, provider_call_id: str, from_number: str) -> None:
        """The provider took the call: recorded even after the attempt's callbacks (the
        dial's answer is stored after the provider answered it), but not once the call is
        finished, which nothing follows (the sandbox can send every callback of a call
        before the worker stores its answer)."""
        if attempt == self.attempt and self.provider_call_id is None and self.status != "finished":
            self._placed(attempt, provider_call_id, from_number)

    @event("Placed")
    def _placed(self, attempt: int, provider_call_id: str, from_number: str) -> None:
        self.provider_call_id = provider_call_id
        self.from_number = from_number

    def record_ringing(self, attempt: int) -> None:
        if attempt == self.attempt and self.status == "dialing":
            self._ringing(attempt)

    @event("Ringing")
    def _ringing(self, attempt: int) -> None:
        self.status = "ringing"

    def record_answered(self, attempt: int, answered_by: str | None) -> None:
        if attempt == self.attempt and self.status in ("dialing", "ringing"):
            # An asynchronous AMD verdict can overtake the answer it is about.
            self._answered(attempt, getattr(self, "machine_detected", None) or answered_by or "human")

    @event("Answered")
    def _answered(self, attempt: int, answered_by: str) -> None:
        self.status = "in_progress"
        self.answered_by = answered_by

    def record_machine_detection(self, attempt: int, answered_by: str, detail: str | None) -> bool:
        """Asynchronous answering-machine detection's verdict (``human`` or ``machine``),
        which may come before or after the flow started. Once per attempt; False when a
        duplicate, stale, or the call is over."""
        if attempt != self.attempt or self.status not in LIVE or getattr(self, "machine_detected", None):
            return False
        self._machine_detected(attempt, answered_by, detail)
        return True

    @event("MachineDetected")
    def _machine_detected(self, attempt: int, answered_by: str, detail: str | None) -> None:
        self.machine_detected = answered_by
        if self.status == "in_progress":
            self.answered_by = answered_by

    # -- the flow -------------------------------------------------------------------

    def is_live(self, attempt: int) -> bool:
        return attempt == self.attempt and self.status in LIVE

    @event("FlowAdvanced")
    def record_turn(self, attempt: int, trigger: dict[str, Any], turn: dict[str, Any]) -> None:
        """One webhook's worth of the flow: the input received and the nodes entered."""
        self.turns.append({"trigger": trigger, **turn})
        self.flow_state = turn["state"]

    # -- the end of an attempt ------------------------------------------------------

    def end_attempt(
        self,
        attempt: int,
        status: str,
        reason: str | None,
        duration_ms: int | None,
        now: datetime,
        strategy: RetryStrategy,
        unanswered_steps: list[dict[str, Any]] | None = None,
        flow_completed: bool = True,
    ) -> bool:
        """The provider says the attempt is over (``status`` is one of OUTCOMES, before
        voicemail is told apart). Decides retry or final result. False if a duplicate."""
        if attempt != self.attempt or self.status not in LIVE:
            return False
        outcome = status
        if status == "completed" and self.answered_by == "machine":
            outcome = "voicemail"
        elif status == "completed" and not flow_completed:
            outcome = "incomplete"  # a person answered, the flow never completed
        self._end_attempt(attempt, outcome, reason, duration_ms, now, unanswered_steps or [])
        next_at = strategy.next_attempt_at(attempt, outcome, now, list(self.outcomes))
        if next_at is not None:
            self._retry(attempt + 1, next_at)
        else:
            self._finish("completed" if outcome == "completed" else "failed", outcome, now)
        return True

    @event("AttemptEnded")
    def _end_attempt(
        self,
        attempt: int,
        outcome: str,
        reason: str | None,
        duration_ms: int | None,
        at: datetime,
        unanswered_steps: list[dict[str, Any]],
    ) -> None:
        self.status = "ended"
        self.outcomes.append(outcome)

    @event("RetryScheduled")
    def _retry(self, attempt: int, not_before: datetime) -> None:
        self.status = "pending"
        self.attempt = attempt
        self.not_before = not_before

    @event("Finished")
    def _finish(self, result: str, outcome: str | None, at: datetime) -> None:
        self.status = "finished"
        self.result = result

    def defer(self, attempt: int, not_before: datetime, reason: str) -> None:
        """Not now (a window closed, a frequency cap reached): the attempt waits."""
        if self.status == "pending" and attempt == self.attempt and not_before > self.not_before:
            self._defer(attempt, not_before, reason)

    @event("Deferred")
    def _defer(self, attempt: int, not_before: datetime, reason: str) -> None:
        self.not_before = not_before

    def skip(self, reason: str, now: datetime) -> bool:
        """Cancel/stop: a contact not being called is skipped (a call in progress finishes)."""
        if self.status != "pending":
            return False
        self._skip(reason, now)
        return True

    @event("Skipped")
    def _skip(self, reason: str, at: datetime) -> None:
        self.status = "finished"
        self.result = "skipped"
