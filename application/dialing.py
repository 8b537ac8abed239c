"""The dial job: claim the attempt on the Call stream, then (and only then) dial.

At most one dial per attempt: a job delivered twice finds the attempt claimed. The
execution state is checked here, at dial time, not only when the job was queued."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.calls import CallsApp
from application.campaigns import CampaignsApp
from application.executions import ExecutionCache
from application.ports import Clock, ConsentCheck, Pacer, Suppressions, Telephony, TelephonyError
from domain.base import audit_context
from domain.call import AlreadyClaimed, Call
from domain.errors import NotFound
from domain.execution import Execution
from domain.organization import Organization
from domain.timeparse import parse_instant, sortable
from domain.windows import CallingHours, next_allowed

log = logging.getLogger("gomobile.dialing")


@dataclass
class DialResult:
    status: str  # placed | stale | not_running | claimed_elsewhere | failed | outside_window | suppressed | no_consent | frequency_cap | rate_limited
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
        suppressions: Suppressions | None = None,
        pacer: Pacer | None = None,
        declined: Callable[[str, int], None] | None = None,
        dials_since: Callable[[str, str], tuple[int, str | None]] | None = None,
        consents: ConsentCheck | None = None,
    ) -> None:
        self.campaigns = campaigns
        self.calls = calls
        self.executions = executions
        self.telephony = telephony
        self.clock = clock
        self.worker_name = worker_name
        self.suppressions = suppressions
        self.pacer = pacer
        self.declined = declined or (lambda call_id, attempt: None)
        self.dials_since = dials_since
        self.consents = consents

    def dial(self, call_id: str, attempt: int) -> DialResult:
        with audit_context(actor=f"worker:{self.worker_name}", correlationId=call_id):
            return self._dial(call_id, attempt)

    def _dial(self, call_id: str, attempt: int) -> DialResult:
        call = self.calls.find(call_id)
        if call is None or call.status != "pending" or call.attempt != attempt:
            return DialResult("stale")
        execution, org, suppressed = self._now(call, with_organization=True)
        if execution.status != "running":
            # Paused since the job was sent: let the dispatcher send it again on resume.
            self.declined(call_id, attempt)
            return DialResult("not_running")
        now = self.clock.now()
        assert org is not None  # asked for
        verdict = self._may_dial(call, attempt, now, org, suppressed)
        if verdict is not None:
            return verdict
        try:
            call.claim(attempt, now, self.worker_name)
            self.calls.save(call)
        except (AlreadyClaimed, IntegrityError):
            return DialResult("claimed_elsewhere")
        # Checked again once the claim is stored: a pause recorded between the first check
        # and the claim is seen here, so every dial follows a claim stored before the pause
        # (and a paused execution whose calls in progress are done dials nobody).
        execution, _, suppressed = self._now(call)
        if execution.status != "running":
            self.calls.update(call.id, lambda c: c.release_claim(attempt, "not_running"))
            self.declined(call_id, attempt)
            return DialResult("not_running")
        # And the contact's opt-out and consent again: one withdrawn between the first
        # check and the claim is seen here (a dial follows no withdrawal stored before it).
        ban = self._contact_ban(call, now, suppressed)
        if ban is not None:
            self.calls.update(call.id, lambda c: _release_and_skip(c, attempt, ban, now))
            return DialResult(ban)
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
        # Loaded again rather than saved on the claimed Call in hand: the provider's first
        # callbacks (ringing, answered) are usually stored by now, and a save on the stale
        # Call would fail, then load anyway (against the sandbox, every time).
        self.calls.update(call.id, lambda c: c.record_placed(attempt, sid, from_number))
        return DialResult("placed", sid)

    def _now(self, call: Call, with_organization: bool = False) -> tuple[Execution, Organization | None, bool | None]:
        """The execution, the organization (if asked) and whether the number is on the
        do-not-call list (None: no list here), as they stand now, read in one query."""
        ids = [call.execution_id]
        if with_organization:
            ids.append(call.organization_id)
        dnc = self.suppressions if call.to else None  # (an erased number: no entry to read)
        if dnc is not None:
            ids.append(dnc.entry_id(call.organization_id, call.to))
        found = self.campaigns.current(*(UUID(str(i)) for i in ids))
        execution = found[0]
        if not isinstance(execution, Execution):
            raise NotFound("Execution not found")
        org = found[1] if with_organization else None
        if with_organization and not isinstance(org, Organization):
            raise NotFound("Organization not found")
        suppressed = dnc.listed(found[-1]) if dnc is not None else None
        return execution, org, suppressed

    def _may_dial(
        self, call: Call, attempt: int, now: datetime, org: Organization, suppressed: bool | None
    ) -> DialResult | None:
        """The checks made again at dial time, whatever was true when the job was sent:
        pause windows and calling hours, the do-not-call list, the per-contact daily cap,
        and the pace (calls per second) of the organization and the program."""
        if not call.to:  # its contact was erased: the number no longer reads (crypto-shredding)
            self.calls.update(call.id, lambda c: c.skip("erased", now))
            return DialResult("erased")
        info = self.executions.get(call.execution_id)
        hours = CallingHours.parse(org.settings.get("callingHours"))
        opens = next_allowed(now, info.windows, org.timezone, hours, call.contact.get("timezone"))
        if opens != now:
            self.declined(str(call.id), attempt)
            return DialResult("outside_window")
        ban = self._contact_ban(call, now, suppressed)
        if ban is not None:
            self.calls.update(call.id, lambda c: c.skip(ban, now))
            return DialResult(ban)
        cap = org.settings.get("maxCallsPerContactPerDay")
        if cap and self.dials_since is not None:
            count, oldest = self.dials_since(str(call.contact_id), sortable(now - timedelta(days=1)))
            if count >= cap and oldest is not None:
                until = parse_instant(oldest[:23] + "Z", "claimedAt") + timedelta(days=1)
                self.calls.update(call.id, lambda c: c.defer(attempt, until, "frequency_cap"))
                return DialResult("frequency_cap")
        if self.pacer is not None:
            limits = [(f"org:{org.id}", org.settings.get("callsPerSecond")), (f"program:{info.program_id}", info.calls_per_second)]
            for key, per_second in limits:
                if per_second and not self.pacer.try_acquire(key, float(per_second)):
                    self.declined(str(call.id), attempt)
                    return DialResult("rate_limited")
        return None

    def _contact_ban(self, call: Call, now: datetime, suppressed: bool | None) -> str | None:
        """``suppressed`` (the number is on the do-not-call list: an opt-out), ``no_consent``
        (the program requires a consent scope the contact does not hold now), or None.
        Both read the event store's current state (``suppressed`` was, by ``_now``);
        consent only when the program asks."""
        if suppressed:
            return "suppressed"
        scope = self.executions.get(call.execution_id).require_consent
        if scope and (self.consents is None or not self.consents.holds(call.organization_id, call.contact_id, scope, now)):
            return "no_consent"  # no way to check counts as no consent
        return None

    def _fail(self, call_id: object, attempt: int, reason: str, now: datetime, info: object) -> None:
        from application.conversation import unanswered_steps

        def change(c: Call) -> None:
            steps = unanswered_steps(self.executions.get(c.execution_id), c, "failed")
            c.end_attempt(attempt, "failed", reason, None, now, self.executions.get(c.execution_id).retry, steps)

        self.calls.update(str(call_id), change)


def _release_and_skip(call: Call, attempt: int, reason: str, now: datetime) -> None:
    call.release_claim(attempt, reason)
    call.skip(reason, now)
