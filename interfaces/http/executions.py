"""Executions and their reports (read side), plus the lifecycle commands."""

from __future__ import annotations

import time
from typing import Any

from eventsourcing.persistence import IntegrityError
from litestar import Request, delete, get, patch
from litestar.exceptions import HTTPException

from application.campaigns import check_auto_pause_rules
from domain.call import attempt_id
from domain.errors import NotFound
from domain.execution import Execution
from interfaces.http.common import acting, authenticate, envelope, in_thread, iso, paging
from projections.store import loads


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def execution_dto(row: dict[str, Any]) -> dict[str, Any]:
    program = loads(row["program"]) if isinstance(row.get("program"), str) else row.get("program") or {}
    return {
        "id": row["id"],
        "programId": row["program_id"],
        "organizationId": row["organization_id"],
        "audienceId": row.get("audience_id"),
        "flowId": row.get("flow_id"),
        "flowVersion": row.get("flow_version"),
        "status": row["status"],
        "totalContacts": row["total"],
        "contactsCompleted": row["completed"],
        "contactsFailed": row["failed"],
        "contactsPending": row["pending"],
        "contactsInProgress": row["in_progress"],
        "contactsSkipped": row["skipped"],
        "scheduledStartAt": _ms(row["scheduled_start_at"]),
        "scheduledStopAt": row.get("scheduled_stop_at"),
        "actualStartAt": row.get("actual_start_at"),
        "actualEndAt": row.get("actual_end_at"),
        "retryStrategy": program.get("retryStrategy"),
        "didPool": program.get("didPool"),
        "requireConsent": program.get("requireConsent"),  # as launched: checked at each dial
        "autoPauseRules": loads(row["auto_pause_rules"]) if row.get("auto_pause_rules") else program.get("autoPauseRules") or [],
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }


def _ms(sortable_key: str | None) -> str | None:
    """progress keys carry microseconds; the API shows milliseconds."""
    if not sortable_key:
        return sortable_key
    return sortable_key[:23] + "Z"


def _from_aggregate(e: Execution) -> dict[str, Any]:
    """Before the progress view has seen the launch, the execution as of that view is
    all-pending (no call event can have been applied before its launch)."""
    from domain.timeparse import sortable

    return execution_dto(
        {
            "id": str(e.id),
            "program_id": str(e.program_id),
            "organization_id": str(e.organization_id),
            "audience_id": e.program.get("audienceId"),
            "flow_id": e.flow.get("flowId"),
            "flow_version": e.flow.get("flowVersion"),
            "status": e.status,
            "total": e.total_contacts,
            "completed": 0,
            "failed": 0,
            "pending": e.total_contacts,
            "in_progress": 0,
            "skipped": 0,
            "scheduled_start_at": sortable(e.scheduled_start_at),
            "scheduled_stop_at": iso(e.scheduled_stop_at),
            "actual_start_at": iso(e.actual_start_at),
            "actual_end_at": iso(e.actual_end_at),
            "created_at": iso(e.created_on),
            "updated_at": iso(e.modified_on),
            "program": e.program,
        }
    )


def load_execution(c: Any, org: Any, execution_id: str) -> dict[str, Any]:
    row = c.progress.execution(execution_id)
    if row is None:
        return _from_aggregate(c.campaigns.execution(org, execution_id))
    if row["organization_id"] != str(org):
        raise NotFound("Execution not found")
    return execution_dto(row)


@get("/api/program-executions/{execution_id:str}")
@in_thread
def get_execution(request: Request[Any, Any, Any], execution_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return load_execution(c, who.organization_id, execution_id)


@get("/api/program-executions")
@in_thread
def list_executions(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    rows = c.progress.executions(str(who.organization_id), active_only=True)
    # Ad-hoc call requests run as one-contact executions; they are not program runs.
    return [execution_dto(r) for r in rows if not (loads(r["program"]) or {}).get("adhoc")]


@get("/api/programs/{program_id:str}/executions")
@in_thread
def program_executions(request: Request[Any, Any, Any], program_id: str) -> list[dict[str, Any]]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    c.campaigns.program(who.organization_id, program_id)
    return [execution_dto(r) for r in c.progress.executions(str(who.organization_id), program_id=program_id)]


def _lifecycle(request: Request[Any, Any, Any], execution_id: str, action: str, body: Any = None) -> Execution:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    rules = body.get("autoPauseRules") if isinstance(body, dict) else None
    checked = check_auto_pause_rules(rules) if rules is not None else None
    with acting(who, request):
        # The dispatcher may append to the same Execution at this moment (start, queue
        # progress): on a version conflict, load it again and re-decide.
        for attempt in range(10):
            execution = c.campaigns.execution(who.organization_id, execution_id)
            if action == "cancel":
                execution.cancel(c.clock.now())
            elif action == "resume":
                execution.resume()
                if checked is not None:
                    # Resuming with new rules replaces the old ones (DOMAIN.md §6.5).
                    execution.set_auto_pause_rules(checked)
            else:
                getattr(execution, action)()
            try:
                c.campaigns.save(execution)
                return execution
            except IntegrityError:
                time.sleep(0.01 * (attempt + 1))
    raise HTTPException(status_code=503, detail="The execution is busy; try again", headers={"Retry-After": "1"})


@patch("/api/program-executions/{execution_id:str}/pause")
@in_thread
def pause_execution(request: Request[Any, Any, Any], execution_id: str) -> dict[str, Any]:
    e = _lifecycle(request, execution_id, "pause")
    dto = load_execution(_c(request), e.organization_id, execution_id)
    dto["status"] = e.status
    return dto


@patch("/api/program-executions/{execution_id:str}/resume")
@in_thread
def resume_execution(request: Request[Any, Any, Any], execution_id: str, data: Any = None) -> dict[str, Any]:
    e = _lifecycle(request, execution_id, "resume", data)
    dto = load_execution(_c(request), e.organization_id, execution_id)
    dto["status"] = e.status
    return dto


@delete("/api/program-executions/{execution_id:str}", status_code=204)
@in_thread
def cancel_execution(request: Request[Any, Any, Any], execution_id: str) -> None:
    _lifecycle(request, execution_id, "cancel")


# -- reports -------------------------------------------------------------------------------


def call_row_dto(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "callId": r["call_id"],
        "jobId": r["job_id"],
        "contactId": r["contact_id"],
        "from": r.get("from_number"),
        "to": r["to_number"],
        "direction": "outbound",
        "attempt": r["attempt"],
        "status": r["status"],
        "outcome": r.get("outcome"),
        "outcomeReason": r.get("outcome_reason"),
        "answeredBy": r.get("answered_by"),
        "startedAt": r.get("dialed_at"),
        "endedAt": r.get("ended_at"),
        "durationMs": r.get("duration_ms"),
    }


def attempt_report(c: Any, r: dict[str, Any]) -> dict[str, Any]:
    return attempt_report_from(r, c.history.steps(r["call_id"]), c.history.events(r["call_id"]))


def attempt_report_from(r: dict[str, Any], steps: list[dict[str, Any]], events: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``CallAttemptReport`` from an attempt row and its path and events (call_history)."""
    visits: dict[str, int] = {}
    for s in steps:
        visits[s["node_id"]] = visits.get(s["node_id"], 0) + 1
    return {
        "callId": r["call_id"],
        "jobId": r["job_id"],
        "attempt": r["attempt"],
        "programId": r["program_id"],
        "programExecutionId": r["execution_id"],
        "contactId": r["contact_id"],
        "call": {
            "status": r["status"],
            "direction": "outbound",
            "from": r.get("from_number"),
            "to": r["to_number"],
            "createdAt": r["created_at"],
            "dialedAt": r.get("dialed_at"),
            "answeredAt": r.get("answered_at"),
            "terminatedAt": r.get("ended_at"),
            "durationMs": r.get("duration_ms"),
            "answeredBy": r.get("answered_by"),
        },
        "status": r["status"],
        "outcome": r.get("outcome"),
        "outcomeReason": r.get("outcome_reason"),
        "flowExecution": {
            "flowId": r.get("flow_id"),
            "flowName": r.get("flow_name"),
            "flowVersion": r.get("flow_version"),
            "executionPath": [
                {
                    "nodeId": s["node_id"],
                    "nodeType": s["node_type"],
                    "nodeLabel": s.get("node_label"),
                    "timestamp": s["at"],
                    "outputPath": s.get("output_path"),
                }
                for s in steps
            ],
            "finalVariables": loads(r.get("variables")) or {},
            "nodeExecutionCount": visits,
        },
        "events": [{"type": e["type"], "timestamp": e["at"], **e["data"]} for e in events],
    }


@get("/api/program-execution/{execution_id:str}/report/calls")
@in_thread
def report_calls(
    request: Request[Any, Any, Any],
    execution_id: str,
    page: int | None = None,
    limit: int | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    load_execution(c, who.organization_id, execution_id)
    p, lim = paging(page, limit)
    rows, total = c.history.attempts_page(execution_id, p, lim, status)
    return envelope([call_row_dto(r) for r in rows], p, lim, total)


@get("/api/call-report/call/{call_id:str}")
@in_thread
def call_report(request: Request[Any, Any, Any], call_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    row = c.history.attempt(call_id)
    if row is None or row["organization_id"] != str(who.organization_id):
        raise NotFound("Call not found")
    return attempt_report(c, row)


@get("/api/call-report/{job_id:str}")
@in_thread
def job_report(request: Request[Any, Any, Any], job_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    job = c.history.job(job_id)
    if job is None or job["organization_id"] != str(who.organization_id):
        raise NotFound("Call job not found")
    return {
        "jobId": job_id,
        "contactId": job["contact_id"],
        "programExecutionId": job["execution_id"],
        "status": job["status"],
        "finalOutcome": job.get("final_outcome"),
        "attempts": [attempt_report(c, r) for r in c.history.job_attempts(job_id)],
    }


@get("/api/users/me")
@in_thread
def users_me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    org = who.organization
    return {
        "id": who.key_id,
        "role": who.role,
        "organization": {
            "id": str(org.id),
            "name": org.name,
            "slug": org.slug,
            "country": org.country,
            "timezone": org.timezone,
            "status": org.status,
            "plan": org.plan,
            "type": org.type,
            "createdAt": iso(org.created_on),
            "updatedAt": iso(org.modified_on),
        },
    }


EXECUTION_HANDLERS = [
    get_execution,
    list_executions,
    program_executions,
    pause_execution,
    resume_execution,
    cancel_execution,
    report_calls,
    call_report,
    job_report,
    users_me,
]

__all__ = ["EXECUTION_HANDLERS", "attempt_id"]
