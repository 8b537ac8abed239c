"""Report aggregates: per execution and attempt number, per flow node (with the keypress
split), usage per organization and month, and the organization's activity log.

Counters move with the event that changes them, so a report read is a handful of
primary-key lookups however large the execution (call_history keeps the rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import msgspec
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
    PARTITIONED_REBUILD = True  # counters that add, rows of one stream; shared rows written in key order
    PERSONAL = frozenset({"domain.call:Call.FlowAdvanced"})  # the keypresses among a turn's events
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
            cancelled INTEGER NOT NULL DEFAULT 0, duration_total BIGINT NOT NULL DEFAULT 0,
            duration_count INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (execution_id, attempt))""",
        """CREATE TABLE IF NOT EXISTS report_nodes (
            execution_id TEXT NOT NULL, node_id TEXT NOT NULL, node_type TEXT NOT NULL,
            node_label TEXT, unique_calls INTEGER NOT NULL, total_executions INTEGER NOT NULL,
            PRIMARY KEY (execution_id, node_id))""",
        # The nodes each attempt reached (to count each attempt once per node): a row an
        # attempt, its nodes' ids a sorted JSON array. A row per (attempt, node) was 550,000
        # index entries in a rebuild of 10^6 events, a third of PostgreSQL's work in it.
        """CREATE TABLE IF NOT EXISTS report_visits (call_id TEXT PRIMARY KEY, node_ids TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS report_digits (
            execution_id TEXT NOT NULL, node_id TEXT NOT NULL, digits TEXT NOT NULL,
            n INTEGER NOT NULL, PRIMARY KEY (execution_id, node_id, digits))""",
        # Billable seconds: each answered attempt rounded up to a whole minute.
        """CREATE TABLE IF NOT EXISTS report_usage (
            organization_id TEXT NOT NULL, month TEXT NOT NULL, calls INTEGER NOT NULL,
            answered INTEGER NOT NULL, billable_seconds BIGINT NOT NULL,
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
        """The organization of each stream: report_streams, or for a Call stream its
        report_calls row (written instead since a call's row names it: 123,000 rows fewer
        in a rebuild of a million events)."""
        out: dict[str, str] = {}
        for i in range(0, len(originator_ids), 500):
            chunk = originator_ids[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            for r in self.rows(
                f"SELECT originator_id, organization_id FROM report_streams WHERE originator_id IN ({marks}) "
                f"UNION ALL SELECT job_id, organization_id FROM report_calls WHERE job_id IN ({marks})",
                chunk + chunk,
            ):
                out[r["originator_id"]] = r["organization_id"]
        return out

    # -- handlers -------------------------------------------------------------------
    #
    # Call events only add to counters, so a batch's changes are summed in memory
    # (``_Pending``) and written at its end with one statement per table (executemany of
    # upserts that add). The rows a batch reads (which execution a call belongs to, which
    # nodes an attempt already reached) are read once per batch, and its own changes are
    # seen in memory: the result is the same as applying the events one by one.

    ACTIVITY_SQL = (
        "INSERT INTO report_activity (organization_id, at, aggregate_id, version, event_type, actor, role, "
        "request_id, correlation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (aggregate_id, version) DO NOTHING"
    )
    STREAMS_SQL = (
        "INSERT INTO report_streams (originator_id, organization_id) VALUES (?, ?) "
        "ON CONFLICT (originator_id) DO NOTHING"
    )
    CALLS_SQL = (
        "INSERT INTO report_calls (job_id, execution_id, organization_id) VALUES (?, ?, ?) "
        "ON CONFLICT (job_id) DO NOTHING"
    )
    ATTEMPT_COLUMNS = (
        "attempted", "answered", *OUTCOME_COLUMNS.values(), "duration_total", "duration_count",
    )  # fmt: skip
    ATTEMPTS_SQL = (
        f"INSERT INTO report_attempts (execution_id, attempt, {', '.join(ATTEMPT_COLUMNS)}) "
        f"VALUES (?, ?, {', '.join('?' for _ in ATTEMPT_COLUMNS)}) ON CONFLICT (execution_id, attempt) DO UPDATE SET "
        + ", ".join(f"{k} = report_attempts.{k} + excluded.{k}" for k in ATTEMPT_COLUMNS)
    )
    VISITS_SQL = (
        "INSERT INTO report_visits (call_id, node_ids) VALUES (?, ?) "
        "ON CONFLICT (call_id) DO UPDATE SET node_ids = excluded.node_ids"
    )
    NODES_SQL = (
        "INSERT INTO report_nodes (execution_id, node_id, node_type, node_label, unique_calls, total_executions) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (execution_id, node_id) DO UPDATE SET "
        "unique_calls = report_nodes.unique_calls + excluded.unique_calls, "
        "total_executions = report_nodes.total_executions + excluded.total_executions"
    )
    DIGITS_SQL = (
        "INSERT INTO report_digits (execution_id, node_id, digits, n) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (execution_id, node_id, digits) DO UPDATE SET n = report_digits.n + excluded.n"
    )
    USAGE_SQL = (
        "INSERT INTO report_usage (organization_id, month, calls, answered, billable_seconds) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (organization_id, month) DO UPDATE SET "
        "calls = report_usage.calls + excluded.calls, answered = report_usage.answered + excluded.answered, "
        "billable_seconds = report_usage.billable_seconds + excluded.billable_seconds"
    )

    _wanted_topics: dict[str, bool] = {}  # noqa: RUF012 - a cache shared by every instance, topics are global

    def wants(self, topic: str) -> bool:
        """Every event but the Call events no counter depends on (placed, ringing,
        finished ...: most of the calls log), which the runner then skips undecoded."""
        found = self._wanted_topics.get(topic)
        if found is None:
            name = topic.rsplit(":", 1)[-1]
            # Every other event: the activity log and the streams' organizations.
            found = not name.startswith("Call.") or hasattr(self, "on_" + name.replace(".", "_"))
            self._wanted_topics[topic] = found
        return found

    def apply_batch(
        self, items: Sequence[tuple[Any, Tracking]], handle: Callable[[Any, Any], None], last: Tracking | None = None
    ) -> None:
        """As ViewMixin's, with the batch's reads done up front and its writes summed."""
        if not items and last is None:
            return
        with self.transaction() as c:
            pending = _Pending(self, c)
            pending.preload([event for event, _ in items])
            for event, _ in items:
                self._handle(pending, event)
            pending.flush()
            self._insert_tracking(c, last or items[-1][1])  # type: ignore[attr-defined]
        self.after_batch()

    def handle(self, c: Any, event: Any) -> None:
        pending = _Pending(self, c)
        self._handle(pending, event)
        pending.flush()

    # Per event class: its handler, whether it goes to the activity log, whether it starts
    # a stream (and whether that stream is an organization's own).
    _dispatch: dict[type, tuple[Callable[..., None] | None, bool, bool, bool]] = {}  # noqa: RUF012

    def _handle(self, p: _Pending, event: Any) -> None:
        cls = type(event)
        found = self._dispatch.get(cls)
        if found is None:
            name = cls.__qualname__.replace(".", "_")
            found = self._dispatch[cls] = (
                # A Call stream's organization is its report_calls row (organizations_of).
                getattr(type(self), "on_" + name, None), not name.startswith("Call_"),
                name.endswith("_Created") and name != "Call_Created", name == "Organization_Created",
            )  # fmt: skip
        handler, audited, created, organization = found
        if handler is not None:
            handler(self, p, event)
        if audited:
            row = self._activity(event)
            if row is not None:
                p.activity.append(row)
        if created:
            org = event.originator_id if organization else getattr(event, "organization_id", None)
            if org is not None:
                p.streams.append((str(event.originator_id), str(org)))

    def _activity(self, e: Any) -> tuple[Any, ...] | None:
        meta = getattr(e, "meta", None) or {}
        org = meta.get("organizationId")
        actor = meta.get("actor")
        if not org or not actor or actor == "system":
            return None
        return (org, format_instant(e.timestamp), str(e.originator_id), e.originator_version,
                type(e).__qualname__, actor, meta.get("role"), meta.get("requestId"), meta.get("correlationId"))  # fmt: skip

    def on_Call_Created(self, p: _Pending, e: Any) -> None:
        job = p.job_of(e)
        if p.execution_of(job) is None:
            p.jobs[job] = (str(e.execution_id), str(e.organization_id))
            p.new_jobs.append((job, str(e.execution_id), str(e.organization_id)))

    def on_Call_DialClaimed(self, p: _Pending, e: Any) -> None:
        found = p.execution_of(p.job_of(e))
        if found:
            p.bump(found[0], e.attempt, "attempted", 1)

    def on_Call_ClaimReleased(self, p: _Pending, e: Any) -> None:
        found = p.execution_of(p.job_of(e))
        if found:
            p.bump(found[0], e.attempt, "attempted", -1)

    def on_Call_Answered(self, p: _Pending, e: Any) -> None:
        found = p.execution_of(p.job_of(e))
        if found:
            p.bump(found[0], e.attempt, "answered", 1)

    def on_Call_AttemptEnded(self, p: _Pending, e: Any) -> None:
        found = p.execution_of(p.job_of(e))
        if not found:
            return
        execution_id, org = found
        column = OUTCOME_COLUMNS.get(e.outcome)
        if column:
            p.bump(execution_id, e.attempt, column, 1)
        if e.duration_ms is not None:
            p.bump(execution_id, e.attempt, "duration_total", int(e.duration_ms))
            p.bump(execution_id, e.attempt, "duration_count", 1)
        p.nodes(e, execution_id, e.unanswered_steps or [])
        answered = e.outcome in ("completed", "voicemail")
        billable = -(-int(e.duration_ms or 0) // 60_000) * 60 if answered else 0
        month = (format_instant(e.at) or "")[:7]
        usage = p.usage.setdefault((org, month), [0, 0, 0])
        usage[0] += 1
        usage[1] += int(answered)
        usage[2] += billable

    def on_Call_FlowAdvanced(self, p: _Pending, e: Any) -> None:
        found = p.execution_of(p.job_of(e))
        if not found:
            return
        turn = e.turn or {}
        p.nodes(e, found[0], turn.get("steps") or [])
        inputs = [ev for ev in turn.get("events") or [] if ev.get("type") == "dtmf_collected"]
        if "events" not in turn and turn.get("input") is not None:
            inputs = [turn["input"]]
        for ev in inputs:
            key = (found[0], ev.get("nodeId") or "", str(ev.get("digits") or ""))
            p.digits[key] = p.digits.get(key, 0) + 1


def _dump_ids(ids: list[str]) -> str:
    return msgspec.json.encode(ids).decode()


_load_ids = msgspec.json.Decoder(list[str]).decode


class _Pending:
    """One transaction's reads (cached) and writes (summed) of the reports view."""

    def __init__(self, view: ReportsView, c: Any) -> None:
        self.view = view
        self.c = c
        self.activity: list[tuple[Any, ...]] = []
        self.streams: list[tuple[Any, ...]] = []
        self.jobs: dict[str, tuple[str, str] | None] = {}  # job id -> (execution id, organization id)
        self.new_jobs: list[tuple[str, str, str]] = []
        self.attempts: dict[tuple[str, int], dict[str, int]] = {}
        self.visited: dict[str, set[str]] = {}  # attempt id -> nodes it reached
        self.changed_visits: set[str] = set()  # attempts that reached a node for the first time
        self.node_counts: dict[tuple[str, str], list[Any]] = {}  # -> [type, label, unique, total]
        self.digits: dict[tuple[str, str, str], int] = {}
        self.usage: dict[tuple[str, str], list[int]] = {}
        self.attempt_ids: dict[tuple[Any, int], str] = {}
        self.job_ids: dict[Any, str] = {}

    def preload(self, events: list[Any]) -> None:
        """Read, in two queries, what the batch's call events will look up."""
        jobs, attempts = set(), set()
        for e in events:
            name = type(e).__qualname__
            if not name.startswith("Call."):
                continue
            jobs.add(self.job_of(e))  # a Created one too: is its call counted already (a replay)?
            if name in ("Call.FlowAdvanced", "Call.AttemptEnded"):
                attempts.add(self.attempt_of(e))
        missing = sorted(jobs - set(self.jobs))
        for job in missing:
            self.jobs[job] = None
        for r in self.view.select_in(self.c, "SELECT job_id, execution_id, organization_id FROM report_calls WHERE job_id IN (?*)", missing):
            self.jobs[r["job_id"]] = (r["execution_id"], r["organization_id"])
        unseen = sorted(attempts - set(self.visited))
        for cid in unseen:
            self.visited[cid] = set()
        for r in self.view.select_in(self.c, "SELECT call_id, node_ids FROM report_visits WHERE call_id IN (?*)", unseen):
            self.visited[r["call_id"]].update(_load_ids(r["node_ids"]))

    def job_of(self, e: Any) -> str:
        """``str(e.originator_id)``, made once per stream and batch (a batch holds a few
        events of each call: UUID.__str__ was 8% of a rebuild)."""
        u = e.originator_id
        found = self.job_ids.get(u)
        if found is None:
            found = self.job_ids[u] = str(u)
        return found

    def attempt_of(self, e: Any) -> str:
        key = (e.originator_id, e.attempt)
        found = self.attempt_ids.get(key)
        if found is None:
            found = self.attempt_ids[key] = str(attempt_id(e.originator_id, e.attempt))
        return found

    def execution_of(self, job: str) -> tuple[str, str] | None:
        if job not in self.jobs:
            self.preload_job(job)
        return self.jobs[job]

    def preload_job(self, job: str) -> None:
        rows = self.view.fetch(self.c, "SELECT execution_id, organization_id FROM report_calls WHERE job_id = ?", (job,))
        self.jobs[job] = (rows[0]["execution_id"], rows[0]["organization_id"]) if rows else None

    def bump(self, execution_id: str, attempt: int, column: str, n: int) -> None:
        row = self.attempts.setdefault((execution_id, attempt), {})
        row[column] = row.get(column, 0) + n

    def nodes(self, e: Any, execution_id: str, steps: list[dict[str, Any]]) -> None:
        if not steps:
            return
        cid = self.attempt_of(e)
        seen = self.visited.get(cid)
        if seen is None:
            rows = self.view.fetch(self.c, "SELECT node_ids FROM report_visits WHERE call_id = ?", (cid,))
            seen = self.visited[cid] = set(_load_ids(rows[0]["node_ids"])) if rows else set()
        for step in steps:
            node_id = step["nodeId"]
            first = node_id not in seen
            if first:
                seen.add(node_id)
                self.changed_visits.add(cid)
            counts = self.node_counts.get((execution_id, node_id))
            if counts is None:  # the type and label of the first visit name the node
                counts = self.node_counts[(execution_id, node_id)] = [step.get("nodeType") or "", step.get("nodeLabel"), 0, 0]
            counts[2] += int(first)
            counts[3] += 1

    def flush(self) -> None:
        v, c = self.view, self.c
        t, i = "text", "bigint"  # sums of durations pass 2^31 ms
        writes: list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]] = [
            (v.CALLS_SQL, (t, t, t), self.new_jobs),
            # Rows that several streams add to, in key order: two processes of a rebuild
            # (PARTITIONED_REBUILD) then lock them in the same order.
            (v.ATTEMPTS_SQL, (t, i, *(i for _ in v.ATTEMPT_COLUMNS)),
             [(eid, n, *(d.get(k, 0) for k in v.ATTEMPT_COLUMNS)) for (eid, n), d in sorted(self.attempts.items())]),
            (v.VISITS_SQL, (t, t), [(cid, _dump_ids(sorted(self.visited[cid]))) for cid in sorted(self.changed_visits)]),
            (v.NODES_SQL, (t, t, t, t, i, i),
             [(eid, node, *counts) for (eid, node), counts in sorted(self.node_counts.items())]),
            (v.DIGITS_SQL, (t, t, t, i), [(*key, n) for key, n in sorted(self.digits.items())]),
            (v.USAGE_SQL, (t, t, i, i, i), [(*key, *sums) for key, sums in sorted(self.usage.items())]),
            (v.ACTIVITY_SQL, (t, t, t, i, t, t, t, t, t), self.activity),
            (v.STREAMS_SQL, (t, t), self.streams),
        ]  # fmt: skip
        with c.connection.pipeline() if v.is_postgres else nullcontext():
            # PostgreSQL: the statements go out together and are answered together (one
            # round trip, where a busy machine makes each one cost milliseconds).
            for sql, types, rows in writes:
                if rows:
                    _insert_rows(v, c, sql, types, rows)


def _insert_rows(
    view: ViewMixin, c: Any, sql: str, types: tuple[str, ...], rows: list[tuple[Any, ...]], per_statement: int = 500
) -> None:
    """``INSERT ... VALUES (row) [ON CONFLICT ...]`` for many rows in one statement: one
    statement costs the server far less than one per row (the rows of one statement never
    share a key: each batch sums its rows per key). On PostgreSQL the rows go as one array
    per column (``unnest``), so the statement's text, parsed once, never changes; SQLite
    takes multi-row VALUES of up to 500 rows."""
    head, _, rest = sql.partition(" VALUES (")
    row_marks, _, tail = rest.partition(")")
    if view.is_postgres:  # sent in binary: a text array is escaped element by element in Python
        columns = ", ".join(f"%b::{t}[]" for t in types)
        c.execute(f"{head} SELECT * FROM unnest({columns}){tail}", [list(col) for col in zip(*rows, strict=True)])
        return
    row_sql = "(" + row_marks + ")"
    for i in range(0, len(rows), per_statement):
        chunk = rows[i : i + per_statement]
        statement = f"{head} VALUES {', '.join(row_sql for _ in chunk)}{tail}"
        c.execute(view.q(statement), [value for row in chunk for value in row])
