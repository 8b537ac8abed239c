"""Ad-hoc calls (``POST /api/call-requests``): one contact, one flow, now or at
``startAt``. A request is a one-contact execution of its own, so it runs through the
same dispatcher, dial-time checks, retries and reports as any program; it ignores pause
windows (as documented) but not the organization's calling hours or do-not-call list.
The request's ``jobId`` is its Call stream id."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from application.calls import CallsApp
from application.campaigns import CampaignsApp
from domain.call import call_id
from domain.errors import (
    CallRequestValidationError,
    Conflict,
    InvalidRetryStrategyError,
    InvalidStartTimeError,
    NotFound,
    ValidationError,
)
from domain.execution import Execution
from domain.organization import Organization
from domain.phone import to_caller_id
from domain.retry import RetryStrategy
from domain.timeparse import format_instant, parse_instant


def retry_from_request(data: Any) -> dict[str, Any]:
    """The call-request ``retry`` shape (DOMAIN.md §8.4) as a program retry strategy."""
    if not isinstance(data, dict) or "type" not in data:
        raise InvalidRetryStrategyError("retry must be an object with a type: none, fixed-delay or scheduled")
    kind = data["type"]
    if kind == "none":
        return RetryStrategy.parse({"type": "none"}).to_json()
    if kind == "fixed-delay":
        delay, retries = data.get("delay"), data.get("maxRetries")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise InvalidRetryStrategyError("retry.delay must be a number of milliseconds")
        return RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": delay / 60000, "maxRetries": retries}).to_json()
    if kind == "scheduled":
        return RetryStrategy.parse({"type": "scheduled", "retryDates": data.get("dates")}).to_json()
    raise InvalidRetryStrategyError(f"retry.type '{kind}' is unknown (none, fixed-delay or scheduled)")


def adhoc_program_id(organization_id: UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"gomobile:call-requests:{organization_id}")


class CallRequests:
    def __init__(self, campaigns: CampaignsApp, calls: CallsApp) -> None:
        self.campaigns = campaigns
        self.calls = calls

    def request(self, org: Organization, data: dict[str, Any], now: datetime) -> tuple[UUID, Execution]:
        missing = [f for f in ("fromNumber", "contactId", "flowId", "retry") if data.get(f) in (None, "")]
        if missing:
            raise CallRequestValidationError(
                f"Missing required field(s): {', '.join(missing)}", {f: ["is required"] for f in missing}
            )
        try:
            from_number = to_caller_id(data["fromNumber"], org.country, "fromNumber")
        except ValidationError as exc:
            raise CallRequestValidationError(exc.message, exc.field_errors) from None
        pool = org.settings.get("didPool")
        if pool and from_number not in pool:
            raise CallRequestValidationError(
                "fromNumber is not in the organization's DID pool", {"fromNumber": ["is not in the DID pool"]}
            )
        contact = self.campaigns.contact(org.id, data["contactId"])
        flow = self.campaigns.flow(org.id, data["flowId"])
        retry = retry_from_request(data["retry"])
        start_at = now
        if data.get("startAt") is not None:
            try:
                start_at = parse_instant(data["startAt"], "startAt")
            except ValidationError as exc:
                raise InvalidStartTimeError(exc.message, field="startAt") from None
            if start_at < now:
                raise InvalidStartTimeError("startAt is in the past", field="startAt")
        program = {
            "name": "Call request",
            "adhoc": True,
            "programId": None,
            "didPool": [from_number],
            "retryStrategy": retry,
            "startAt": format_instant(start_at),
            "stopAt": None,
            "pauseWindows": None,
        }
        execution = Execution(
            org.id,
            adhoc_program_id(org.id),
            program,
            {"flowId": str(flow.id), "flowName": flow.name, "flowVersion": flow.latest_version, "graph": flow.graph},
            [str(contact.id)],
            start_at,
            None,
        )
        if start_at <= now:
            execution.start(now)
        self.campaigns.save(execution)
        return call_id(execution.id, contact.id), execution

    def cancel(self, organization_id: UUID, job_id: str, now: datetime) -> None:
        """Only while the call waits (not yet dialled): it is skipped, its run cancelled."""
        try:
            job = UUID(job_id)
        except ValueError:
            raise NotFound("Call request not found") from None
        call = self.calls.find(job)
        execution_id = call.execution_id if call is not None else None
        if call is not None and call.organization_id != organization_id:
            raise NotFound("Call request not found")
        if call is not None and call.status != "pending":
            raise Conflict(f"The call request is {call.status} and can no longer be cancelled")
        if execution_id is None:
            raise NotFound("Call request not found (or not queued yet: retry in a moment)")
        execution = self.campaigns.execution(organization_id, execution_id)
        if not execution.program.get("adhoc"):
            raise NotFound("Call request not found")
        if execution.status in ("scheduled", "running", "paused", "paused_threshold"):
            execution.cancel(now)
            self.campaigns.save(execution)
        self.calls.update(job, lambda c: c.skip("cancelled", now))
