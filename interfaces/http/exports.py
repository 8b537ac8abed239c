"""Streamed exports of call reports (every attempt of one execution) and contact
histories (every attempt to call one contact, across programs), as CSV or NDJSON.

The rows are read from the call history page by page (keyset on creation time and
call id) and written as they are read, so an export of a million calls holds one page
in memory, whatever its size. NDJSON lines are the ``CallAttemptReport`` of
``/api/call-report/call/{id}`` plus the program; CSV rows flatten it (RFC 4180 quoting:
the path, keypresses and final variables are single cells)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

from litestar import Request, Response, get
from litestar.response import Stream

from domain.errors import ContactNotFoundError, NotFound, ValidationError
from interfaces.http.common import authenticate, in_thread
from interfaces.http.executions import attempt_report_from

PAGE = 500
FORMATS = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}

COLUMNS = (
    "callId", "jobId", "attempt", "executionId", "programId", "programName", "launchedBy", "contactId",
    "to", "from", "status", "outcome", "outcomeReason", "answeredBy", "queuedAt", "dialedAt", "answeredAt",
    "endedAt", "durationMs", "flowId", "flowName", "flowVersion", "path", "keypresses", "recordings", "finalVariables",
)  # fmt: skip


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def _format(value: str | None) -> str:
    fmt = (value or "csv").lower()
    if fmt not in FORMATS:
        raise ValidationError.single("format", "must be csv or ndjson")
    return fmt


def attempt_record(
    r: dict[str, Any], steps: list[dict[str, Any]], events: list[dict[str, Any]]
) -> dict[str, Any]:
    """The full report of one attempt, with its program and who launched it."""
    report = attempt_report_from(r, steps, events)
    report["program"] = {"id": r["program_id"], "name": r.get("program_name"), "launchedBy": r.get("launched_by"),
                         "launchedAt": r.get("launched_at")}  # fmt: skip
    report["keypresses"] = [e["digits"] for e in report["events"] if e["type"] == "dtmf_collected"]
    report["recordings"] = [
        e["recordId"] for e in report["events"] if e["type"] == "record_stop" and e.get("recordId")
    ]
    return report


def csv_row(report: dict[str, Any]) -> list[Any]:
    call, flow = report["call"], report["flowExecution"]
    values = {
        "callId": report["callId"], "jobId": report["jobId"], "attempt": report["attempt"],
        "executionId": report["programExecutionId"], "programId": report["programId"],
        "programName": report["program"]["name"], "launchedBy": report["program"]["launchedBy"],
        "contactId": report["contactId"], "to": call["to"], "from": call["from"], "status": report["status"],
        "outcome": report["outcome"], "outcomeReason": report["outcomeReason"], "answeredBy": call["answeredBy"],
        "queuedAt": call["createdAt"], "dialedAt": call["dialedAt"], "answeredAt": call["answeredAt"],
        "endedAt": call["terminatedAt"], "durationMs": call["durationMs"], "flowId": flow["flowId"],
        "flowName": flow["flowName"], "flowVersion": flow["flowVersion"],
        "path": " > ".join(s["nodeId"] for s in flow["executionPath"]),
        "keypresses": " ".join(report["keypresses"]), "recordings": " ".join(report["recordings"]),
        "finalVariables": json.dumps(flow["finalVariables"], separators=(",", ":"), sort_keys=True),
    }  # fmt: skip
    return ["" if values[k] is None else values[k] for k in COLUMNS]


def _records(
    c: Any, page: Callable[[tuple[str, str] | None], list[dict[str, Any]]]
) -> Iterator[dict[str, Any]]:
    after = None
    while True:
        rows = page(after)
        if not rows:
            return
        ids = [r["call_id"] for r in rows]
        steps, events = c.history.steps_of(ids), c.history.events_of(ids)
        for r in rows:
            yield attempt_record(r, steps[r["call_id"]], events[r["call_id"]])
        if len(rows) < PAGE:
            return
        after = (rows[-1]["created_at"], rows[-1]["call_id"])


def _encode(records: Iterator[dict[str, Any]], fmt: str) -> Iterator[bytes]:
    if fmt == "ndjson":
        for rec in records:
            yield (json.dumps(rec, separators=(",", ":"), default=str) + "\n").encode()
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")  # RFC 4180: quotes and CRLF
    writer.writerow(COLUMNS)
    for n, rec in enumerate(records, 1):
        writer.writerow(csv_row(rec))
        if n % 100 == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def _stream(records: Iterator[dict[str, Any]], fmt: str, name: str) -> Response[Any]:
    return Stream(
        _encode(records, fmt),
        media_type=FORMATS[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )


@get("/api/program-execution/{execution_id:str}/report/calls/export")
@in_thread
def export_execution_calls(
    request: Request[Any, Any, Any],
    execution_id: str,
    format: str | None = None,
    status: str | None = None,
) -> Response[Any]:
    """Every attempt of the execution (optionally of one status), streamed as CSV or NDJSON."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    fmt = _format(format)
    c.campaigns.execution(who.organization_id, execution_id)  # NotFound for another organization's
    records = _records(
        c,
        lambda after: c.history.attempts_after(
            execution_id=execution_id, status=status, after=after, limit=PAGE
        ),
    )
    return _stream(records, fmt, f"execution-{execution_id}-calls")


@get("/api/contact/{contact_id:str}/calls/export")
@in_thread
def export_contact_calls(
    request: Request[Any, Any, Any], contact_id: str, format: str | None = None
) -> Response[Any]:
    """Every attempt to call the contact across programs (the audit trail of a person), streamed."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    fmt = _format(format)
    org = str(who.organization_id)
    if not c.history.attempts_after(contact=(org, contact_id), limit=1):
        try:
            c.campaigns.contact(who.organization_id, contact_id)
        except (ContactNotFoundError, NotFound):
            raise ContactNotFoundError("Contact not found") from None
    records = _records(
        c,
        lambda after: c.history.attempts_after(contact=(org, contact_id), after=after, limit=PAGE),
    )
    return _stream(records, fmt, f"contact-{contact_id}-calls")


EXPORT_HANDLERS = [export_execution_calls, export_contact_calls]
