"""Execution reports (DOMAIN.md §8.1), per-contact call history across programs, usage per
month and the organization's activity log. Read from the projections; only the
execution's own (short) stream is loaded, for its current status and frozen program."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from litestar import Request, get
from litestar.params import Parameter

from domain.errors import ContactNotFoundError, NotFound, ValidationError
from domain.timeparse import parse_instant, sortable
from domain.windows import PauseWindows, in_pause_window
from interfaces.http.common import authenticate, envelope, in_thread, iso, paging
from interfaces.http.executions import attempt_report_from, call_row_dto
from projections.as_of import ExecutionAsOf, execution_as_of

OUTCOMES = ("completed", "voicemail", "no_answer", "busy", "rejected", "failed", "cancelled")


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def _pct(part: float, whole: float) -> float:
    return round(part * 100.0 / whole, 2) if whole else 0.0


def effective_status(status: str, in_window: bool) -> str:
    if status in ("paused", "paused_threshold"):
        # An auto-pause also waits for a person to resume it: to a client it is manual.
        return "paused_manual"
    if status == "running" and in_window:
        return "paused_window"
    return status


def _attempt_rows(c: Any, execution_id: str, reports: Any = None) -> list[dict[str, Any]]:
    return list((reports or c.views["reports"]).attempts(execution_id))


@contextmanager
def _as_of(c: Any, org: Any, execution_id: str, as_of: str) -> Iterator[ExecutionAsOf]:
    """The execution's read models replayed from its events up to ``as_of`` (ISO 8601)."""
    until = parse_instant(as_of, "asOf")
    c.campaigns.execution(org.id, execution_id)  # NotFound for another organization's
    call_ids = [cid for cid, _ in c.progress.calls_by_contact(execution_id).values()]
    with execution_as_of(c.campaigns, c.calls, execution_id, call_ids, until) as past:
        yield past


def summary_report(
    c: Any, org: Any, execution_id: str, now: datetime | None = None, as_of: str | None = None, execution: Any = None
) -> dict[str, Any]:
    """The summary report of one execution of ``org`` (NotFound for anyone else's): as it
    is now, or as it stood at ``as_of``, replayed from the events."""
    if as_of is not None:
        with _as_of(c, org, execution_id, as_of) as past:
            until = parse_instant(as_of, "asOf")
            return _summary(c, org, execution_id, until, past.execution, past.progress, past.reports)
    now = now or c.clock.now()
    execution = execution or c.campaigns.execution(org.id, execution_id)
    return _summary(c, org, execution_id, now, execution, c.progress, c.views["reports"])


def _summary(
    c: Any, org: Any, execution_id: str, now: datetime, execution: Any, progress: Any, reports: Any
) -> dict[str, Any]:
    program = execution.program
    row = progress.execution(execution_id) or {}
    total = execution.total_contacts
    states = progress.contact_states(execution_id)
    windows = PauseWindows.parse(program.get("pauseWindows"))
    in_window = in_pause_window(now, windows, org.timezone or "UTC")
    started, ended = execution.actual_start_at, execution.actual_end_at
    duration = int(((ended or now) - started).total_seconds() * 1000) if started else None
    completed = int(row.get("completed", 0))
    sums = {k: 0 for k in ("attempted", "answered", *OUTCOMES)}
    for r in _attempt_rows(c, execution_id, reports):
        for k in sums:
            sums[k] += int(r[k])
    return {
        "executionId": str(execution.id),
        # The instant this report describes (pass it back as ?asOf= to see it again).
        "asOf": sortable(now),
        "programId": str(execution.program_id),
        "organizationId": str(execution.organization_id),
        "status": execution.status,
        "effectiveStatus": effective_status(execution.status, in_window),
        "isInPauseWindow": in_window,
        "scheduledStartAt": iso(execution.scheduled_start_at),
        "scheduledStopAt": iso(execution.scheduled_stop_at),
        "actualStartAt": iso(started),
        "actualEndAt": iso(ended),
        "durationMs": duration,
        "metadata": {
            "flowId": execution.flow.get("flowId"),
            "flowName": execution.flow.get("flowName"),
            "flowVersion": execution.flow.get("flowVersion"),
            "audienceId": program.get("audienceId"),
            "didPool": program.get("didPool"),
            "retryStrategy": program.get("retryStrategy"),
            "pauseWindows": program.get("pauseWindows"),
        },
        "contactMetrics": {
            "totalContacts": total,
            # Contacts whose Call is not queued yet are pending too (the counter starts at the total).
            "pending": max(0, int(row.get("pending", total)) - states.get("queued", 0) - states.get("pendingRetry", 0)),
            "queued": states.get("queued", 0),
            "calling": int(row.get("in_progress", 0)),
            "pendingRetry": states.get("pendingRetry", 0),
            "completed": completed,
            "failed": int(row.get("failed", 0)),
            "skipped": int(row.get("skipped", 0)),
            "reachRate": _pct(completed, total),
        },
        "callMetrics": {
            "totalCalls": sums["attempted"],
            "answered": sums["answered"],
            "completed": sums["completed"],
            "voicemail": sums["voicemail"],
            "noAnswer": sums["no_answer"],
            "busy": sums["busy"],
            "rejected": sums["rejected"],
            "failed": sums["failed"],
            "cancelled": sums["cancelled"],
            "answerRate": _pct(sums["answered"], sums["attempted"]),
            "completionRate": _pct(sums["completed"], sums["answered"]),
        },
    }


def _breakdown_entry(n: int, r: dict[str, Any]) -> dict[str, Any]:
    return {
        "attemptNumber": n,
        "callsAttempted": r["attempted"],
        "callsAnswered": r["answered"],
        "callsCompleted": r["completed"],
        "callsVoicemail": r["voicemail"],
        "callsNoAnswer": r["no_answer"],
        "callsBusy": r["busy"],
        "callsRejected": r["rejected"],
        "callsFailed": r["failed"],
        "answeredPercentage": _pct(r["answered"], r["attempted"]),
        "completedPercentage": _pct(r["completed"], r["attempted"]),
        "averageDurationMs": round(r["duration_total"] / r["duration_count"]) if r["duration_count"] else 0,
    }


def breakdown_report(c: Any, org: Any, execution_id: str, as_of: str | None = None) -> dict[str, Any]:
    if as_of is not None:
        with _as_of(c, org, execution_id, as_of) as past:
            return _breakdown(_attempt_rows(c, execution_id, past.reports), execution_id)
    c.campaigns.execution(org.id, execution_id)
    return _breakdown(_attempt_rows(c, execution_id), execution_id)


def _breakdown(rows: list[dict[str, Any]], execution_id: str) -> dict[str, Any]:
    keys = ("attempted", "answered", *OUTCOMES, "duration_total", "duration_count")
    total = {k: sum(int(r[k]) for r in rows) for k in keys}
    return {
        "executionId": execution_id,
        "perAttempt": [_breakdown_entry(int(r["attempt"]), r) for r in rows],
        "total": _breakdown_entry(0, total),
    }


def node_stats_report(c: Any, org: Any, execution_id: str, as_of: str | None = None, execution: Any = None) -> dict[str, Any]:
    if as_of is not None:
        with _as_of(c, org, execution_id, as_of) as past:
            return _node_stats(c, execution_id, past.execution, past.reports)
    return _node_stats(c, execution_id, execution or c.campaigns.execution(org.id, execution_id), c.views["reports"])


def _node_stats(c: Any, execution_id: str, execution: Any, reports: Any) -> dict[str, Any]:
    attempts = _attempt_rows(c, execution_id, reports)
    total_calls = sum(int(r["attempted"]) for r in attempts)
    completed = sum(int(r["completed"]) for r in attempts)
    counted = {r["node_id"]: r for r in reports.nodes(execution_id)}
    digits: dict[str, dict[str, int]] = {}
    for r in reports.digits(execution_id):
        digits.setdefault(r["node_id"], {})[r["digits"]] = int(r["n"])
    graph_nodes = (execution.flow.get("graph") or {}).get("nodes") or []
    order = [n["id"] for n in graph_nodes] + sorted(set(counted) - {n["id"] for n in graph_nodes})
    by_id = {n["id"]: n for n in graph_nodes}
    nodes = []
    for node_id in order:
        r = counted.get(node_id) or {}
        node = by_id.get(node_id, {})
        entry: dict[str, Any] = {
            "nodeId": node_id,
            "nodeType": node.get("type") or r.get("node_type"),
            "nodeLabel": node.get("label") or r.get("node_label"),
            "uniqueCalls": int(r.get("unique_calls", 0)),
            "totalExecutions": int(r.get("total_executions", 0)),
            "percentage": _pct(int(r.get("unique_calls", 0)), total_calls),
        }
        if node_id in digits or entry["nodeType"] in ("dtmf", "gather", "menu"):
            split = digits.get(node_id, {})
            n = sum(split.values())
            entry["dtmfBreakdown"] = split
            entry["dtmfPercentages"] = {d: _pct(k, n) for d, k in split.items()}
        nodes.append(entry)
    return {
        "executionId": execution_id,
        "nodes": nodes,
        "totalCalls": total_calls,
        "completedCalls": completed,
        "completionRate": _pct(completed, total_calls),
    }


# Bucket widths a person reads easily, in seconds.
BUCKET_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)


def outcomes_over_time(c: Any, org: Any, execution_id: str, buckets: int = 40, execution: Any = None) -> dict[str, Any]:
    """How many attempts ended with each outcome in each interval of the run (at most
    ``buckets`` intervals of a readable width), from the call history. (``execution``:
    already loaded, and so known to be the organization's.)"""
    if execution is None:
        c.campaigns.execution(org.id, execution_id)
    rows = c.history.outcomes_by_second(execution_id)
    found = [o for o in OUTCOMES if any(r["outcome"] == o for r in rows)]
    found += sorted({r["outcome"] for r in rows} - set(found))
    out: dict[str, Any] = {"executionId": execution_id, "bucketSeconds": 0, "outcomes": found, "buckets": [],
                           "totals": {o: sum(int(r["n"]) for r in rows if r["outcome"] == o) for o in found}}  # fmt: skip
    if not rows:
        return out
    seconds = [(int(parse_instant(r["at"] + "Z", "at").timestamp()), r["outcome"], int(r["n"])) for r in rows]
    first, last = seconds[0][0], seconds[-1][0]
    # Intervals aligned on their width (whole minutes, hours ...); if none fits, one
    # interval from the first end to the last.
    width = next((w for w in BUCKET_WIDTHS if last // w - first // w + 1 <= buckets), 0)
    start = first - first % width if width else first
    width = width or last - first + 1
    counts: list[dict[str, int]] = [{} for _ in range((last - start) // width + 1)]
    for at, outcome, n in seconds:
        slot = counts[(at - start) // width]
        slot[outcome] = slot.get(outcome, 0) + n
    out["bucketSeconds"] = width
    out["buckets"] = [
        {"start": iso(datetime.fromtimestamp(start + i * width, UTC)), "counts": {o: slot.get(o, 0) for o in found}}
        for i, slot in enumerate(counts)
    ]
    return out


def contact_calls(c: Any, org: Any, contact_id: str) -> dict[str, Any]:
    """Every attempt to call the contact, across programs: the audit trail of a person."""
    rows = c.history.contact_attempts(str(org.id), contact_id)
    if not rows:
        try:
            c.campaigns.contact(org.id, contact_id)
        except (ContactNotFoundError, NotFound):
            raise ContactNotFoundError("Contact not found") from None
    ids = [r["call_id"] for r in rows]
    steps, events = c.history.steps_of(ids), c.history.events_of(ids)
    data = []
    for r in rows:
        report = attempt_report_from(r, steps[r["call_id"]], events[r["call_id"]])
        report["program"] = {
            "id": r["program_id"],
            "name": r.get("program_name"),
            "launchedBy": r.get("launched_by"),
            "launchedAt": r.get("launched_at"),
        }
        report["keypresses"] = [e["digits"] for e in report["events"] if e["type"] == "dtmf_collected"]
        report["recordings"] = [e["recordId"] for e in report["events"] if e["type"] == "record_stop" and e.get("recordId")]
        data.append(report)
    return {"contactId": contact_id, "total": len(data), "data": data}


@get("/api/program-execution/{execution_id:str}/report")
@in_thread
def execution_report(
    request: Request[Any, Any, Any], execution_id: str, as_of: str | None = Parameter(query="asOf", default=None)
) -> dict[str, Any]:
    """The summary report; with ``asOf`` (ISO 8601), the report as it stood at that
    instant, replayed from the events up to it."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return summary_report(c, who.organization, execution_id, as_of=as_of)


@get("/api/program-execution/{execution_id:str}/report/breakdown")
@in_thread
def execution_breakdown(
    request: Request[Any, Any, Any], execution_id: str, as_of: str | None = Parameter(query="asOf", default=None)
) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return breakdown_report(c, who.organization, execution_id, as_of)


@get("/api/program-execution/{execution_id:str}/report/node-stats")
@in_thread
def execution_node_stats(
    request: Request[Any, Any, Any], execution_id: str, as_of: str | None = Parameter(query="asOf", default=None)
) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return node_stats_report(c, who.organization, execution_id, as_of)


@get("/api/program-execution/{execution_id:str}/report/outcomes-over-time")
@in_thread
def execution_outcomes_over_time(
    request: Request[Any, Any, Any], execution_id: str, buckets: int | None = None
) -> dict[str, Any]:
    """Attempts ended per outcome in each interval of the run (the dashboard's chart)."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    n = 40 if buckets is None else buckets
    if not 1 <= n <= 500:
        raise ValidationError.single("buckets", "must be an integer from 1 to 500")
    return outcomes_over_time(c, who.organization, execution_id, n)


@get("/api/contact/{contact_id:str}/calls")
@in_thread
def contact_call_history(request: Request[Any, Any, Any], contact_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return contact_calls(c, who.organization, contact_id)


@get("/api/usage")
@in_thread
def usage(request: Request[Any, Any, Any], month: str | None = None) -> dict[str, Any]:
    """Calls, answered calls and billable minutes (answered time rounded up per call) per month."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    if month is not None and (len(month) != 7 or month[4] != "-" or not (month[:4] + month[5:]).isdigit()):
        raise ValidationError.single("month", "must be YYYY-MM")
    rows = c.views["reports"].usage(str(who.organization_id), month)
    return {
        "organizationId": str(who.organization_id),
        "data": [
            {"month": r["month"], "calls": r["calls"], "answeredCalls": r["answered"],
             "billableMinutes": r["billable_seconds"] // 60}
            for r in rows
        ],
    }  # fmt: skip


@get("/api/activity")
@in_thread
def activity(
    request: Request[Any, Any, Any], page: int | None = None, limit: int | None = None, actor: str | None = None
) -> dict[str, Any]:
    """Who issued which command, when, under which request and correlation ids."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    p, lim = paging(page, limit)
    rows, total = c.views["reports"].activity(str(who.organization_id), lim, (p - 1) * lim, actor)
    data = [
        {"at": r["at"], "actor": r["actor"], "role": r.get("role"), "event": r["event_type"],
         "resourceId": r["aggregate_id"], "version": r["version"], "requestId": r.get("request_id"),
         "correlationId": r.get("correlation_id")}
        for r in rows
    ]  # fmt: skip
    return envelope(data, p, lim, total)


REPORT_HANDLERS = [
    execution_report, execution_breakdown, execution_node_stats, execution_outcomes_over_time,
    contact_call_history, usage, activity,
]  # fmt: skip

__all__ = [
    "REPORT_HANDLERS", "breakdown_report", "call_row_dto", "node_stats_report", "outcomes_over_time", "summary_report",
]  # fmt: skip
