"""The dial job: claim the attempt on the Call stream, then (and only then) dial.

At most one dial per attempt: a job delivered twice finds the attempt claimed. The
execution state is checked here, at dial time, not only when the job was queued."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from domain.call import AlreadyClaimed, Call
from eventsourcing.persistence import IntegrityError

from application.calls import CallsApp
from application.campaigns import CampaignsApp
from application.executions import ExecutionCache
from application.ports import Clock, Telephony, TelephonyError
from domain.base import audit_context

log = logging.getLogger("gomobile.dialing")


@dataclass
class DialResult:
    status: str  # placed | stale | not_running | claimed_elsewhere | failed
    provider_call_id: str | None = None


class Dialer:
    def __init__(
        self,
        campaigns: CampaignsApp,
        calls: CallsApp,
        executions: ExecutionCache,
        telephony: Telephony,
        clock: Clock,
        worker_name: str = "worker",
    ) -> None:
        self.campaigns = campaigns
        self.calls = calls
        self.executions = executions
        self.telephony = telephony
        self.clock = clock
        self.worker_name = worker_name

    def dial(self, call_id: str, attempt: int) -> DialResult:
        with audit_context(actor=f"worker:{self.worker_name}", correlationId=call_id):
            return self._dial(call_id, attempt)

    def _dial(self, call_id: str, attempt: int) -> DialResult:
        call = self.calls.find(call_id)
        if call is None or call.status != "pending" or call.attempt != attempt:
            return DialResult("stale")
        execution = self.campaigns.execution(None, call.execution_id)
        if execution.status != "running":
            return DialResult("not_running")
        now = self.clock.now()
        try:
            call.claim(attempt, now, self.worker_name)
            self.calls.save(call)
        except (AlreadyClaimed, IntegrityError):
            return DialResult("claimed_elsewhere")
        info = self.executions.get(call.execution_id)
        pool = info.did_pool
        from_number = pool[(call.version + attempt) % len(pool)] if pool else ""
        try:
            sid = self.telephony.place_call(
                to=call.to,
                from_=from_number,
                call_id=str(call.id),
                attempt=attempt,
                timeout_seconds=info.ring_timeout_seconds,
                machine_detection=info.machine_detection,
            )
        except TelephonyError as exc:
            log.warning("dial of %s attempt %s failed: %s", call_id, attempt, exc)
            self._fail(call.id, attempt, str(exc), now, info)
            return DialResult("failed")
        self.calls.update(call.id, lambda c: c.record_placed(attempt, sid, from_number))
        return DialResult("placed", sid)

    def _fail(self, call_id: object, attempt: int, reason: str, now: datetime, info: object) -> None:
        from application.conversation import unanswered_steps

        def change(c: Call) -> None:
            steps = unanswered_steps(self.executions.get(c.execution_id), c, "failed")
            c.end_attempt(attempt, "failed", reason, None, now, self.executions.get(c.execution_id).retry, steps)

        self.calls.update(str(call_id), change)
