"""The dial job: claim the attempt on the Call stream, then (and only then) dial.

At most one dial per attempt: a job delivered twice finds the attempt claimed. The
execution state is checked here, at dial time, not only when the job was queued."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

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
    status: str  # placed | error | stale | not_running | claimed_elsewhere | failed | outside_window | suppressed | no_consent | frequency_cap | rate_limited
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
        return self.dial_many([(call_id, attempt)])[0]

    def dial_many(self, jobs: Sequence[tuple[str, int]]) -> list[DialResult]:
        """Dial a batch of jobs (the dispatcher sends several in one message): the same
        steps and checks as one job, each step done for the whole batch at once, so a
        batch costs one load of its calls, one read of the execution state before the
        claims and one after, and one save of the claims, instead of one of each a call.

        Each call is still claimed before it is dialled and checked again once its claim
        is stored, and a claim that loses a race fails alone (``claimed_elsewhere``)."""
        results: list[DialResult | None] = [None] * len(jobs)
        with audit_context(actor=f"worker:{self.worker_name}"):
            keys = [_uuid(call_id) for call_id, _ in jobs]
            erasures = self.calls.erasures_seen()
            found = self.calls.load_many([k for k in keys if k is not None])
            live: list[tuple[int, Call, int]] = []  # (position, call, attempt)
            for n, (key, (_, attempt)) in enumerate(zip(keys, jobs)):
                call = found.get(key) if key is not None else None
                if not isinstance(call, Call) or call.status != "pending" or call.attempt != attempt:
                    results[n] = DialResult("stale")
                else:
                    live.append((n, call, attempt))
            state = self._now([c for _, c, _ in live], with_organization=True)
            now = self.clock.now()
            claimed: list[tuple[int, Call, int]] = []
            for (n, call, attempt), (execution, org, suppressed) in zip(live, state):
                with audit_context(correlationId=str(call.id)):
                    if execution.status != "running":
                        # Paused since the job was sent: the dispatcher sends it again on resume.
                        self.declined(str(call.id), attempt)
                        results[n] = DialResult("not_running")
                        continue
                    assert org is not None  # asked for
                    verdict = self._may_dial(call, attempt, now, org, suppressed)
                    if verdict is not None:
                        results[n] = verdict
                        continue
                    try:
                        call.claim(attempt, now, self.worker_name)
                    except AlreadyClaimed:
                        results[n] = DialResult("claimed_elsewhere")
                        continue
                claimed.append((n, call, attempt))
            stored = self.calls.save_all_or_each([c for _, c, _ in claimed])
            for n, call, _ in claimed:
                if call.id not in stored:
                    results[n] = DialResult("claimed_elsewhere")
            claimed = [job for job in claimed if results[job[0]] is None]
            # Checked again once the claims are stored: a pause recorded between the first
            # check and the claim is seen here, so every dial follows a claim stored before
            # the pause (and a paused execution whose calls in progress are done dials
            # nobody); and the contact's opt-out and consent again (a dial follows no
            # withdrawal stored before it).
            state = self._now([c for _, c, _ in claimed])
            for (n, call, attempt), (execution, _, suppressed) in zip(claimed, state):
                with audit_context(correlationId=str(call.id)):
                    try:
                        results[n] = self._dial_claimed(call, attempt, now, execution, suppressed, erasures)
                    except Exception:
                        # The batch's other claimed calls are still dialled; this one stays
                        # claimed, and the reconciler settles it as it does a worker's crash.
                        log.exception("dial of %s attempt %s broke off", call.id, attempt)
                        results[n] = DialResult("error")
        return [r if r is not None else DialResult("stale") for r in results]

    def _dial_claimed(
        self, call: Call, attempt: int, now: datetime, execution: Execution, suppressed: bool | None, erasures: int
    ) -> DialResult:
        if execution.status != "running":
            self.calls.update(call.id, lambda c: c.release_claim(attempt, "not_running"))
            self.declined(str(call.id), attempt)
            return DialResult("not_running")
        ban = self._contact_ban(call, now, suppressed)
        if ban is not None:
            self.calls.update(call.id, lambda c: _release_and_skip(c, attempt, ban, now))
            return DialResult(ban)
        info = self.executions.get(call.execution_id)
        pool = info.did_pool
        from_number = pool[(call.version + attempt) % len(pool)] if pool else ""
        call_id, to = call.id, call.to
        # Handed over, and the dial recorded by an update, which starts from it: if the
        # provider's first callbacks (ringing, answered) were stored first, that save
        # conflicts and the update records the dial on the stream as stored.
        self.calls.hand_over(call, erasures)
        try:
            sid = self.telephony.place_call(
                to=to,
                from_=from_number,
                call_id=str(call_id),
                attempt=attempt,
                timeout_seconds=info.ring_timeout_seconds,
                machine_detection=info.machine_detection,
            )
        except TelephonyError as exc:
            log.warning("dial of %s attempt %s failed: %s", call_id, attempt, exc)
            self._fail(call_id, attempt, str(exc), now, info)
            return DialResult("failed")
        self.calls.update(call_id, lambda c: c.record_placed(attempt, sid, from_number))
        return DialResult("placed", sid)

    def _now(
        self, calls: Sequence[Call], with_organization: bool = False
    ) -> list[tuple[Execution, Organization | None, bool | None]]:
        """For each call: its execution, its organization (if asked) and whether its
        number is on the do-not-call list (None: no list here), as they stand now, all
        read in one query."""
        dnc = self.suppressions
        entries = [
            UUID(str(dnc.entry_id(c.organization_id, c.to))) if dnc is not None and c.to else None  # (erased: no number)
            for c in calls
        ]
        wanted: dict[UUID, None] = {}
        for call, entry in zip(calls, entries):
            wanted[UUID(str(call.execution_id))] = None
            if with_organization:
                wanted[UUID(str(call.organization_id))] = None
            if entry is not None:
                wanted[entry] = None
        ids = list(wanted)
        current = dict(zip(ids, self.campaigns.current(*ids))) if ids else {}
        out: list[tuple[Execution, Organization | None, bool | None]] = []
        for call, entry in zip(calls, entries):
            execution = current[UUID(str(call.execution_id))]
            if not isinstance(execution, Execution):
                raise NotFound("Execution not found")
            org = current[UUID(str(call.organization_id))] if with_organization else None
            if with_organization and not isinstance(org, Organization):
                raise NotFound("Organization not found")
            suppressed = dnc.listed(current[entry]) if dnc is not None and entry is not None else None
            out.append((execution, org, suppressed))
        return out

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


def _uuid(value: object) -> UUID | None:
    try:
        return value if isinstance(value, UUID) else UUID(str(value))
    except ValueError:
        return None


def _release_and_skip(call: Call, attempt: int, reason: str, now: datetime) -> None:
    call.release_claim(attempt, reason)
    call.skip(reason, now)
