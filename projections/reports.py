"""Report aggregates: per execution and attempt number, per flow node (with the keypress
split), usage per organization and month, and the organization's activity log.

Counters move with the event that changes them, so a report read is a handful of
primary-key lookups however large the execution (call_history keeps the rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import Tracking

from domain.call import attempt_id
from domain.timeparse import format_instant
from projections.store import ViewMixin

OUTCOME_COLUMNS = {
    "completed": "completed",
    "voicemail": "voicemail",
    "no_answer": "no_answer",
    "busy": "busy",
    "rejected": "rejected",
    "failed": "failed",
    "cancelled": "cancelled",
}


class ReportsView(ViewMixin):
    TABLES = (
        # Which execution a Call stream belongs to (Call events after Created carry only its id).
        """CREATE TABLE IF NOT EXISTS report_calls (
            job_id TEXT PRIMARY KEY, execution_id TEXT NOT NULL, organization_id TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS report_attempts (
            execution_id TEXT NOT NULL, attempt INTEGER NOT NULL,
            attempted INTEGER NOT NULL DEFAULT 0, answered INTEGER NOT NULL DEFAULT 0,
            completed INTEGER NOT NULL DEFAULT 0, voicemail INTEGER NOT NULL DEFAULT 0,
            no_answer INTEGER NOT NULL DEFAULT 0, busy INTEGER NOT NULL DEFAULT 0,
            rejected INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
            cancelled INTEGER NOT NULL DEFAULT 0, duration_total INTEGER NOT NULL DEFAULT 0,
            duration_count INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (execution_id, attempt))""",
        """CREATE TABLE IF NOT EXISTS report_nodes (
            execution_id TEXT NOT NULL, node_id TEXT NOT NULL, node_type TEXT NOT NULL,
            node_label TEXT, unique_calls INTEGER NOT NULL, total_executions INTEGER NOT NULL,
            PRIMARY KEY (execution_id, node_id))""",
        # The attempts that reached each node (to count each attempt once per node).
        """CREATE TABLE IF NOT EXISTS report_visits (
            call_id TEXT NOT NULL, node_id TEXT NOT NULL, PRIMARY KEY (call_id, node_id))""",
        """CREATE TABLE IF NOT EXISTS report_digits (
            execution_id TEXT NOT NULL, node_id TEXT NOT NULL, digits TEXT NOT NULL,
            n INTEGER NOT NULL, PRIMARY KEY (execution_id, node_id, digits))""",
        # Billable seconds: each answered attempt rounded up to a whole minute.
        """CREATE TABLE IF NOT EXISTS report_usage (
            organization_id TEXT NOT NULL, month TEXT NOT NULL, calls INTEGER NOT NULL,
            answered INTEGER NOT NULL, billable_seconds INTEGER NOT NULL,
            PRIMARY KEY (organization_id, month))""",
        # Commands issued by people (API keys), not by the platform's own processes.
        """CREATE TABLE IF NOT EXISTS report_activity (
            organization_id TEXT NOT NULL, at TEXT NOT NULL, aggregate_id TEXT NOT NULL,
            version INTEGER NOT NULL, event_type TEXT NOT NULL, actor TEXT NOT NULL, role TEXT,
            request_id TEXT, correlation_id TEXT, PRIMARY KEY (aggregate_id, version))""",
        "CREATE INDEX IF NOT EXISTS report_activity_org ON report_activity (organization_id, at)",
        # The organization of every stream, for the event feed's filter (later events of a
        # stream do not carry it).
        """CREATE TABLE IF NOT EXISTS report_streams (
            originator_id TEXT PRIMARY KEY, organization_id TEXT NOT NULL)""",
    )
    DROP = tuple(
        f"DROP TABLE IF EXISTS {t}"
        for t in (
            "report_streams", "report_activity", "report_usage", "report_digits", "report_visits",
            "report_nodes", "report_attempts", "report_calls",
        )
    )  # fmt: skip

    # -- queries --------------------------------------------------------------------

    def attempts(self, execution_id: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM report_attempts WHERE execution_id = ? ORDER BY attempt", (execution_id,))

    def nodes(self, execution_id: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM report_nodes WHERE execution_id = ? ORDER BY node_id", (execution_id,))

    def digits(self, execution_id: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM report_digits WHERE execution_id = ? ORDER BY node_id, digits", (execution_id,))

    def usage(self, organization_id: str, month: str | None = None) -> list[dict[str, Any]]:
        if month:
            return self.rows(
                "SELECT * FROM report_usage WHERE organization_id = ? AND month = ?", (organization_id, month)
            )
        return self.rows("SELECT * FROM report_usage WHERE organization_id = ? ORDER BY month", (organization_id,))

    def activity(
        self, organization_id: str, limit: int, offset: int, actor: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = "organization_id = ?", [organization_id]
        if actor:
            where += " AND actor = ?"
            params.append(actor)
        total = self.one(f"SELECT COUNT(*) AS n FROM report_activity WHERE {where}", params)
        rows = self.rows(
            f"SELECT * FROM report_activity WHERE {where} ORDER BY at DESC, aggregate_id, version DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return rows, int(total["n"]) if total else 0

    def call_totals(self) -> dict[str, int]:
        """Across every execution, for /metrics: attempts dialled, answered, and each outcome."""
        cols = ("attempted", "answered", "completed", "voicemail", "no_answer", "busy", "rejected", "failed", "cancelled")
        row = self.one("SELECT " + ", ".join(f"COALESCE(SUM({k}), 0) AS {k}" for k in cols) + " FROM report_attempts")
        return {k: int((row or {}).get(k) or 0) for k in cols}

    def organizations_of(self, originator_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(originator_ids), 500):
            chunk = originator_ids[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            for r in self.rows(
                f"SELECT originator_id, organization_id FROM report_streams WHERE originator_id IN ({marks})", chunk
            ):
                out[r["originator_id"]] = r["organization_id"]
        return out

    # -- handlers -------------------------------------------------------------------

    ACTIVITY_SQL = (
        "INSERT INTO report_activity (organization_id, at, aggregate_id, version, event_type, actor, role, "
        "request_id, correlation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (aggregate_id, version) DO NOTHING"
    )
    STREAMS_SQL = (
        "INSERT INTO report_streams (originator_id, organization_id) VALUES (?, ?) "
        "ON CONFLICT (originator_id) DO NOTHING"
    )

    def apply_batch(
        self, items: Sequence[tuple[Any, Tracking]], handle: Callable[[Any, Any], None], last: Tracking | None = None
    ) -> None:
        """As ViewMixin's, but the activity log and stream rows of the whole batch (one of
        each per command event: most of the log) are written with one executemany each.
        Nothing in the batch reads them, so writing them last is the same."""
        if not items and last is None:
            return
        activity: list[tuple[Any, ...]] = []
        streams: list[tuple[Any, ...]] = []
        with self.transaction() as c:
            for event, _ in items:
                self._handle(c, event, activity, streams)
            if activity:
                c.executemany(self.q(self.ACTIVITY_SQL), activity)
            if streams:
                c.executemany(self.q(self.STREAMS_SQL), streams)
            self._insert_tracking(c, last or items[-1][1])  # type: ignore[attr-defined]

    def handle(self, c: Any, event: Any) -> None:
        activity: list[tuple[Any, ...]] = []
        streams: list[tuple[Any, ...]] = []
        self._handle(c, event, activity, streams)
        for row in activity:
            self.ex(c, self.ACTIVITY_SQL, row)
        for row in streams:
            self.ex(c, self.STREAMS_SQL, row)

    def _handle(self, c: Any, event: Any, activity: list[tuple[Any, ...]], streams: list[tuple[Any, ...]]) -> None:
        name = type(event).__qualname__.replace(".", "_")
        handler = getattr(self, "on_" + name, None)
        if handler is not None:
            handler(c, event)
        if not name.startswith("Call_"):
            row = self._activity(event)
            if row is not None:
                activity.append(row)
        if name.endswith("_Created"):
            org = event.originator_id if name == "Organization_Created" else getattr(event, "organization_id", None)
            if org is not None:
                streams.append((str(event.originator_id), str(org)))

    def _activity(self, e: Any) -> tuple[Any, ...] | None:
        meta = getattr(e, "meta", None) or {}
        org = meta.get("organizationId")
        actor = meta.get("actor")
        if not org or not actor or actor == "system":
            return None
        return (org, format_instant(e.timestamp), str(e.originator_id), e.originator_version,
                type(e).__qualname__, actor, meta.get("role"), meta.get("requestId"), meta.get("correlationId"))  # fmt: skip

    def _execution_of(self, c: Any, job_id: Any) -> tuple[str, str] | None:
        rows = self.fetch(c, "SELECT execution_id, organization_id FROM report_calls WHERE job_id = ?", (str(job_id),))
        return (rows[0]["execution_id"], rows[0]["organization_id"]) if rows else None

    def _bump(self, c: Any, execution_id: str, attempt: int, **deltas: int) -> None:
        self.ex(
            c,
            "INSERT INTO report_attempts (execution_id, attempt) VALUES (?, ?) ON CONFLICT (execution_id, attempt) DO NOTHING",
            (execution_id, attempt),
        )
        sets = ", ".join(f"{k} = {k} + ?" for k in deltas)
        self.ex(
            c,
            f"UPDATE report_attempts SET {sets} WHERE execution_id = ? AND attempt = ?",
            (*deltas.values(), execution_id, attempt),
        )

    def on_Call_Created(self, c: Any, e: Any) -> None:
        self.ex(
            c,
            "INSERT INTO report_calls (job_id, execution_id, organization_id) VALUES (?, ?, ?) "
            "ON CONFLICT (job_id) DO NOTHING",
            (str(e.originator_id), str(e.execution_id), str(e.organization_id)),
        )

    def on_Call_DialClaimed(self, c: Any, e: Any) -> None:
        found = self._execution_of(c, e.originator_id)
        if found:
            self._bump(c, found[0], e.attempt, attempted=1)

    def on_Call_Answered(self, c: Any, e: Any) -> None:
        found = self._execution_of(c, e.originator_id)
        if found:
            self._bump(c, found[0], e.attempt, answered=1)

    def on_Call_AttemptEnded(self, c: Any, e: Any) -> None:
        found = self._execution_of(c, e.originator_id)
        if not found:
            return
        execution_id, org = found
        deltas: dict[str, int] = {}
        column = OUTCOME_COLUMNS.get(e.outcome)
        if column:
            deltas[column] = 1
        if e.duration_ms is not None:
            deltas["duration_total"] = int(e.duration_ms)
            deltas["duration_count"] = 1
        if deltas:
            self._bump(c, execution_id, e.attempt, **deltas)
        self._nodes(c, e, execution_id, e.unanswered_steps or [])
        answered = e.outcome in ("completed", "voicemail")
        billable = -(-int(e.duration_ms or 0) // 60_000) * 60 if answered else 0
        month = (format_instant(e.at) or "")[:7]
        self.ex(
            c,
            "INSERT INTO report_usage (organization_id, month, calls, answered, billable_seconds) "
            "VALUES (?, ?, 1, ?, ?) ON CONFLICT (organization_id, month) DO UPDATE SET "
            "calls = report_usage.calls + 1, answered = report_usage.answered + excluded.answered, "
            "billable_seconds = report_usage.billable_seconds + excluded.billable_seconds",
            (org, month, int(answered), billable),
        )

    def on_Call_FlowAdvanced(self, c: Any, e: Any) -> None:
        found = self._execution_of(c, e.originator_id)
        if not found:
            return
        turn = e.turn or {}
        self._nodes(c, e, found[0], turn.get("steps") or [])
        inputs = [ev for ev in turn.get("events") or [] if ev.get("type") == "dtmf_collected"]
        if "events" not in turn and turn.get("input") is not None:
            inputs = [turn["input"]]
        for ev in inputs:
            self.ex(
                c,
                "INSERT INTO report_digits (execution_id, node_id, digits, n) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (execution_id, node_id, digits) DO UPDATE SET n = report_digits.n + 1",
                (found[0], ev.get("nodeId") or "", str(ev.get("digits") or "")),
            )

    def _nodes(self, c: Any, e: Any, execution_id: str, steps: list[dict[str, Any]]) -> None:
        if not steps:
            return
        cid = str(attempt_id(e.originator_id, e.attempt))
        for step in steps:
            node_id = step["nodeId"]
            first = not self.fetch(c, "SELECT 1 FROM report_visits WHERE call_id = ? AND node_id = ?", (cid, node_id))
            if first:
                self.ex(c, "INSERT INTO report_visits (call_id, node_id) VALUES (?, ?)", (cid, node_id))
            self.ex(
                c,
                "INSERT INTO report_nodes (execution_id, node_id, node_type, node_label, unique_calls, total_executions) "
                "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (execution_id, node_id) DO UPDATE SET "
                "unique_calls = report_nodes.unique_calls + excluded.unique_calls, "
                "total_executions = report_nodes.total_executions + 1",
                (execution_id, node_id, step.get("nodeType") or "", step.get("nodeLabel"), int(first)),
            )
