"""Execution progress: the counters of every execution and the state of every call.

The counters move together with the call they describe, in the same transaction, so
``total = completed + failed + pending + inProgress + skipped`` holds in every read.
This view is also the dispatcher's index of due calls.
"""

from __future__ import annotations

from typing import Any

from domain.timeparse import format_instant, sortable
from projections.store import ViewMixin, dumps

BUCKETS = ("pending", "in_progress", "completed", "failed", "skipped")


# Executions follow two event logs; whatever order a rebuild interleaves them in,
# ``updated_at`` is the latest event's time, so a rebuilt view equals the live one.
LATEST = "updated_at = CASE WHEN updated_at < ? THEN ? ELSE updated_at END"


def _key(value: Any) -> str:
    return sortable(value)


class ProgressView(ViewMixin):
    TABLES = (
        """CREATE TABLE IF NOT EXISTS progress_executions (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, program_id TEXT NOT NULL,
            audience_id TEXT, flow_id TEXT, flow_version INTEGER, status TEXT NOT NULL,
            total INTEGER NOT NULL, pending INTEGER NOT NULL, in_progress INTEGER NOT NULL,
            completed INTEGER NOT NULL, failed INTEGER NOT NULL, skipped INTEGER NOT NULL,
            calls_queued INTEGER NOT NULL DEFAULT 0, scheduled_start_at TEXT NOT NULL,
            scheduled_stop_at TEXT, actual_start_at TEXT, actual_end_at TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, program TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS progress_executions_status ON progress_executions (status)",
        "CREATE INDEX IF NOT EXISTS progress_executions_program ON progress_executions (program_id)",
        """CREATE TABLE IF NOT EXISTS progress_calls (
            call_id TEXT PRIMARY KEY, execution_id TEXT NOT NULL, organization_id TEXT NOT NULL,
            contact_id TEXT NOT NULL, bucket TEXT NOT NULL, attempt INTEGER NOT NULL,
            not_before TEXT NOT NULL, result TEXT, updated_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS progress_calls_due ON progress_calls (bucket, not_before)",
        "CREATE INDEX IF NOT EXISTS progress_calls_execution ON progress_calls (execution_id, bucket)",
        # The dispatcher's own memory of what it sent (not part of the projection: a
        # rebuild keeps it, and a lost message is sent again once the lease expires).
        """CREATE TABLE IF NOT EXISTS dispatch_log (
            call_id TEXT NOT NULL, attempt INTEGER NOT NULL, dispatched_at TEXT NOT NULL,
            PRIMARY KEY (call_id, attempt))""",
    )
    DROP = ("DROP TABLE IF EXISTS progress_calls", "DROP TABLE IF EXISTS progress_executions")

    # -- queries --------------------------------------------------------------------

    def execution(self, execution_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM progress_executions WHERE id = ?", (execution_id,))

    def executions(self, organization_id: str, program_id: str | None = None, active_only: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT * FROM progress_executions WHERE organization_id = ?"
        params: list[Any] = [organization_id]
        if program_id:
            sql += " AND program_id = ?"
            params.append(program_id)
        if active_only:
            sql += " AND status IN ('scheduled', 'running', 'paused', 'paused_threshold')"
        return self.rows(sql + " ORDER BY created_at DESC, id", params)

    def executions_due_to_start(self, now_key: str) -> list[str]:
        return [
            r["id"]
            for r in self.rows(
                "SELECT id FROM progress_executions WHERE status = 'scheduled' AND scheduled_start_at <= ?",
                (now_key,),
            )
        ]

    def executions_to_queue(self) -> list[str]:
        return [
            r["id"]
            for r in self.rows(
                "SELECT id FROM progress_executions WHERE calls_queued = 0 "
                "AND status IN ('scheduled', 'running', 'paused', 'paused_threshold')"
            )
        ]

    def executions_to_complete(self) -> list[str]:
        return [
            r["id"]
            for r in self.rows(
                "SELECT id FROM progress_executions WHERE status = 'running' AND calls_queued = 1 "
                "AND pending = 0 AND in_progress = 0"
            )
        ]

    def pending_calls_of_ended_executions(self, limit: int = 1000) -> list[str]:
        return [
            r["call_id"]
            for r in self.rows(
                "SELECT c.call_id FROM progress_calls c JOIN progress_executions e ON e.id = c.execution_id "
                "WHERE e.status IN ('cancelled', 'stopped') AND c.bucket = 'pending' LIMIT ?",
                (limit,),
            )
        ]

    def due_calls(self, now_key: str, lease_key: str, limit: int) -> list[tuple[str, int]]:
        """Pending calls of running executions that are due and not sent within the lease."""
        rows = self.rows(
            "SELECT c.call_id, c.attempt FROM progress_calls c "
            "JOIN progress_executions e ON e.id = c.execution_id "
            "LEFT JOIN dispatch_log d ON d.call_id = c.call_id AND d.attempt = c.attempt "
            "WHERE c.bucket = 'pending' AND c.not_before <= ? AND e.status = 'running' "
            "AND (d.dispatched_at IS NULL OR d.dispatched_at < ?) "
            "ORDER BY c.not_before LIMIT ?",
            (now_key, lease_key, limit),
        )
        return [(r["call_id"], int(r["attempt"])) for r in rows]

    def mark_dispatched(self, items: list[tuple[str, int]], at_key: str) -> None:
        if not items:
            return
        with self.transaction() as c:
            for call_id, attempt in items:
                self.ex(
                    c,
                    "INSERT INTO dispatch_log (call_id, attempt, dispatched_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (call_id, attempt) DO UPDATE SET dispatched_at = excluded.dispatched_at",
                    (call_id, attempt, at_key),
                )

    # -- event handlers ------------------------------------------------------------

    def handle(self, c: Any, event: Any) -> None:
        handler = getattr(self, "on_" + type(event).__qualname__.replace(".", "_"), None)
        if handler is not None:
            handler(c, event)

    def _exec(self, c: Any, event: Any, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.ex(
            c,
            f"UPDATE progress_executions SET {sets}, {LATEST} WHERE id = ?",
            (*fields.values(), format_instant(event.timestamp), format_instant(event.timestamp), str(event.originator_id)),
        )

    def on_Execution_Created(self, c: Any, e: Any) -> None:
        total = len(e.contact_ids)
        program = e.program
        self.ex(
            c,
            "INSERT INTO progress_executions (id, organization_id, program_id, audience_id, flow_id, "
            "flow_version, status, total, pending, in_progress, completed, failed, skipped, calls_queued, "
            "scheduled_start_at, scheduled_stop_at, created_at, updated_at, program) "
            "VALUES (?, ?, ?, ?, ?, ?, 'scheduled', ?, ?, 0, 0, 0, 0, 0, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.organization_id),
                str(e.program_id),
                program.get("audienceId"),
                e.flow.get("flowId"),
                e.flow.get("flowVersion"),
                total,
                total,
                _key(e.scheduled_start_at),
                format_instant(e.scheduled_stop_at),
                format_instant(e.timestamp),
                format_instant(e.timestamp),
                dumps({**program, "flowName": e.flow.get("flowName")}),
            ),
        )

    def on_Execution_Started(self, c: Any, e: Any) -> None:
        self._exec(c, e, status="running", actual_start_at=format_instant(e.at))

    def on_Execution_CallsQueued(self, c: Any, e: Any) -> None:
        self._exec(c, e, calls_queued=1)

    def on_Execution_Completed(self, c: Any, e: Any) -> None:
        self._exec(c, e, status="completed", actual_end_at=format_instant(e.at))

    def on_Execution_Cancelled(self, c: Any, e: Any) -> None:
        self._exec(c, e, status="cancelled", actual_end_at=format_instant(e.at))

    def on_Execution_Paused(self, c: Any, e: Any) -> None:
        self._exec(c, e, status="paused")

    def on_Execution_Resumed(self, c: Any, e: Any) -> None:
        self._exec(c, e, status="running")

    def on_Call_Created(self, c: Any, e: Any) -> None:
        self.ex(
            c,
            "INSERT INTO progress_calls (call_id, execution_id, organization_id, contact_id, bucket, "
            "attempt, not_before, updated_at) VALUES (?, ?, ?, ?, 'pending', 1, ?, ?) "
            "ON CONFLICT (call_id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.execution_id),
                str(e.organization_id),
                str(e.contact_id),
                _key(e.not_before),
                format_instant(e.timestamp),
            ),
        )

    def _move(self, c: Any, e: Any, bucket: str, **fields: Any) -> None:
        rows = self.fetch(c, "SELECT execution_id, bucket FROM progress_calls WHERE call_id = ?", (str(e.originator_id),))
        if not rows:
            return
        old = rows[0]["bucket"]
        sets = "".join(f", {k} = ?" for k in fields)
        self.ex(
            c,
            f"UPDATE progress_calls SET bucket = ?, updated_at = ?{sets} WHERE call_id = ?",
            (bucket, format_instant(e.timestamp), *fields.values(), str(e.originator_id)),
        )
        if old != bucket:
            assert old in BUCKETS and bucket in BUCKETS
            self.ex(
                c,
                f"UPDATE progress_executions SET {old} = {old} - 1, {bucket} = {bucket} + 1, "
                f"{LATEST} WHERE id = ?",
                (format_instant(e.timestamp), format_instant(e.timestamp), rows[0]["execution_id"]),
            )

    def on_Call_DialClaimed(self, c: Any, e: Any) -> None:
        self._move(c, e, "in_progress")

    def on_Call_RetryScheduled(self, c: Any, e: Any) -> None:
        self._move(c, e, "pending", attempt=e.attempt, not_before=_key(e.not_before))

    def on_Call_Finished(self, c: Any, e: Any) -> None:
        self._move(c, e, "completed" if e.result == "completed" else "failed", result=e.outcome)

    def on_Call_Skipped(self, c: Any, e: Any) -> None:
        self._move(c, e, "skipped", result="skipped")
