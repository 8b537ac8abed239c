"""Execution progress: the counters of every execution and the state of every call.

The counters move together with the call they describe, in the same transaction, so
``total = completed + failed + pending + inProgress + skipped`` holds in every read.
This view is also the dispatcher's index of due calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from eventsourcing.persistence import Tracking

from domain.timeparse import format_instant, sortable
from projections.reports import _insert_rows
from projections.store import ViewMixin, dumps

BUCKETS = ("pending", "in_progress", "completed", "failed", "skipped")


# Executions follow two event logs; whatever order a rebuild interleaves them in,
# ``updated_at`` is the latest event's time, so a rebuilt view equals the live one.
LATEST = "updated_at = CASE WHEN updated_at < ? THEN ? ELSE updated_at END"


def _key(value: Any) -> str:
    return sortable(value)


class ProgressView(ViewMixin):
    PARTITIONED_REBUILD = True  # a call's rows, counters that add (written in key order)
    PERSONAL = frozenset()  # a contact's time zone and a turn's nodes are kept in clear
    DISPATCH_BY_METHOD = True
    TABLES = (
        """CREATE TABLE IF NOT EXISTS progress_executions (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, program_id TEXT NOT NULL,
            audience_id TEXT, flow_id TEXT, flow_version INTEGER, status TEXT NOT NULL,
            total INTEGER NOT NULL, pending INTEGER NOT NULL, in_progress INTEGER NOT NULL,
            completed INTEGER NOT NULL, failed INTEGER NOT NULL, skipped INTEGER NOT NULL,
            calls_queued INTEGER NOT NULL DEFAULT 0, epoch INTEGER NOT NULL DEFAULT 0,
            auto_pause_rules TEXT, scheduled_start_at TEXT NOT NULL,
            scheduled_stop_at TEXT, actual_start_at TEXT, actual_end_at TEXT,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL, program TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS progress_executions_status ON progress_executions (status)",
        "CREATE INDEX IF NOT EXISTS progress_executions_program ON progress_executions (program_id)",
        """CREATE TABLE IF NOT EXISTS progress_calls (
            call_id TEXT PRIMARY KEY, execution_id TEXT NOT NULL, organization_id TEXT NOT NULL,
            contact_id TEXT NOT NULL, timezone TEXT, bucket TEXT NOT NULL, attempt INTEGER NOT NULL,
            not_before TEXT NOT NULL, result TEXT, updated_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS progress_calls_due ON progress_calls (bucket, not_before)",
        # An execution's due calls in order (the dispatcher's LIMIT stops early), and its
        # calls by bucket.
        "CREATE INDEX IF NOT EXISTS progress_calls_execution_due ON progress_calls (execution_id, bucket, not_before)",
        # How often each node ran, per execution and auto-pause epoch (a resume or new
        # rules start a new epoch), for auto-pause rules and node statistics.
        """CREATE TABLE IF NOT EXISTS progress_node_counts (
            execution_id TEXT NOT NULL, node_id TEXT NOT NULL, epoch INTEGER NOT NULL,
            visits INTEGER NOT NULL, PRIMARY KEY (execution_id, node_id, epoch))""",
        # Every dial claimed, per contact, for frequency caps across programs.
        """CREATE TABLE IF NOT EXISTS progress_dials (
            call_id TEXT NOT NULL, attempt INTEGER NOT NULL, organization_id TEXT NOT NULL,
            contact_id TEXT NOT NULL, claimed_at TEXT NOT NULL, PRIMARY KEY (call_id, attempt))""",
        "CREATE INDEX IF NOT EXISTS progress_dials_contact ON progress_dials (contact_id, claimed_at)",
        # The dispatcher's own memory of what it sent (not part of the projection: a
        # rebuild keeps it, and a lost message is sent again once the lease expires).
        # A row lives from the send to the claim (the projector deletes it then), so the
        # rows sent within a lease are the calls waiting in the dial queue: few, found by
        # this index whatever the size of the execution.
        """CREATE TABLE IF NOT EXISTS dispatch_log (
            call_id TEXT NOT NULL, attempt INTEGER NOT NULL, dispatched_at TEXT NOT NULL,
            PRIMARY KEY (call_id, attempt))""",
        "CREATE INDEX IF NOT EXISTS dispatch_log_sent ON dispatch_log (dispatched_at)",
    )
    DROP = tuple(
        f"DROP TABLE IF EXISTS {t}"
        for t in ("progress_dials", "progress_node_counts", "progress_calls", "progress_executions")
    )

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
                # Cancelled or stopped before its calls were queued: queue them anyway,
                # so that each contact is accounted for (skipped) in the counters.
                "SELECT id FROM progress_executions WHERE calls_queued = 0"
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

    def executions_to_stop(self, now_key: str) -> list[str]:
        return [
            r["id"]
            for r in self.rows(
                "SELECT id FROM progress_executions WHERE scheduled_stop_at IS NOT NULL "
                "AND scheduled_stop_at <= ? AND status IN ('scheduled', 'running', 'paused', 'paused_threshold')",
                (now_key[:23] + "Z",),
            )
        ]

    def running_executions(self) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM progress_executions WHERE status = 'running' ORDER BY created_at, id")

    def node_counts(self, execution_id: str, since_epoch: int) -> dict[str, int]:
        rows = self.rows(
            "SELECT node_id, SUM(visits) AS n FROM progress_node_counts WHERE execution_id = ? AND epoch >= ? GROUP BY node_id",
            (execution_id, since_epoch),
        )
        return {r["node_id"]: int(r["n"]) for r in rows}

    def contact_states(self, execution_id: str) -> dict[str, int]:
        """The pending contacts of an execution split for the report: never dialled and
        not yet sent (``pending``), sent to the dial queue (``queued``), waiting for a
        retry (``pendingRetry``)."""
        rows = self.rows(
            "SELECT CASE WHEN d.call_id IS NOT NULL THEN 'queued' WHEN c.attempt > 1 THEN 'pendingRetry' "
            "ELSE 'pending' END AS state, COUNT(*) AS n FROM progress_calls c "
            "LEFT JOIN dispatch_log d ON d.call_id = c.call_id AND d.attempt = c.attempt "
            "WHERE c.execution_id = ? AND c.bucket = 'pending' GROUP BY 1",
            (execution_id,),
        )
        return {r["state"]: int(r["n"]) for r in rows}

    def reserved(self, execution_id: str, lease_key: str) -> int:
        """Calls sent to the dial queue within the lease and not yet claimed."""
        row = self.one(
            "SELECT COUNT(*) AS n FROM progress_calls c JOIN dispatch_log d ON d.call_id = c.call_id "
            "AND d.attempt = c.attempt WHERE c.execution_id = ? AND c.bucket = 'pending' AND d.dispatched_at >= ?",
            (execution_id, lease_key),
        )
        return int(row["n"]) if row else 0

    def in_flight(self, organization_id: str, lease_key: str) -> dict[str, int]:
        """Per execution of the organization: calls in progress plus calls sent to the
        dial queue and not yet claimed."""
        return {eid: live + sent for eid, (live, sent) in self.flights(organization_id, lease_key).items()}

    def flights(self, organization_id: str, lease_key: str) -> dict[str, tuple[int, int]]:
        """Per execution of the organization: (calls in progress, calls sent to the dial
        queue within the lease and not yet claimed), read in one statement (one snapshot),
        so that a call moving from one to the other between two reads is never missed."""
        # From the sends within the lease (dispatch_log_sent: claimed calls' rows are gone)
        # to their calls, never from the execution's pending calls (a launch's million):
        # each send's call is looked up by its key in a subquery of its own, which the
        # planner cannot turn round, even on tables not analysed yet (a fresh execution's).
        rows = self.rows(
            "SELECT e.id, e.in_progress AS live, (SELECT COUNT(*) FROM dispatch_log d WHERE d.dispatched_at >= ? "
            "AND (SELECT c.execution_id FROM progress_calls c WHERE c.call_id = d.call_id AND c.attempt = d.attempt "
            "AND c.bucket = 'pending') = e.id) AS sent "
            "FROM progress_executions e WHERE e.organization_id = ? AND (e.in_progress > 0 OR e.status = 'running')",
            (lease_key, organization_id),
        )
        return {r["id"]: (int(r["live"]), int(r["sent"])) for r in rows}

    def in_progress_of_organization(self, organization_id: str) -> int:
        row = self.one(
            "SELECT COALESCE(SUM(in_progress), 0) AS n FROM progress_executions WHERE organization_id = ?",
            (organization_id,),
        )
        return int(row["n"]) if row else 0

    def due_timezones(self, execution_id: str, now_key: str) -> list[str | None]:
        return [
            r["timezone"]
            for r in self.rows(
                "SELECT DISTINCT timezone FROM progress_calls WHERE execution_id = ? AND bucket = 'pending' AND not_before <= ?",
                (execution_id, now_key),
            )
        ]

    def due_calls_of(
        self, execution_id: str, now_key: str, lease_key: str, limit: int, timezones: list[str | None]
    ) -> list[tuple[str, int]]:
        """Due, not recently sent, pending calls of one execution whose contacts' time zones are open."""
        if not timezones or limit <= 0:
            return []
        named = [t for t in timezones if t is not None]
        tz_sql = []
        if named:
            tz_sql.append("c.timezone IN (" + ", ".join("?" for _ in named) + ")")
        if None in timezones:
            tz_sql.append("c.timezone IS NULL")
        rows = self.rows(
            "SELECT c.call_id, c.attempt FROM progress_calls c "
            "LEFT JOIN dispatch_log d ON d.call_id = c.call_id AND d.attempt = c.attempt "
            "WHERE c.execution_id = ? AND c.bucket = 'pending' AND c.not_before <= ? "
            "AND (d.dispatched_at IS NULL OR d.dispatched_at < ?) "
            f"AND ({' OR '.join(tz_sql)}) ORDER BY c.not_before LIMIT ?",
            (execution_id, now_key, lease_key, *named, limit),
        )
        return [(r["call_id"], int(r["attempt"])) for r in rows]

    def calls_by_contact(self, execution_id: str) -> dict[str, tuple[str, str]]:
        """contact id → (call id, bucket) of one execution."""
        return {
            r["contact_id"]: (r["call_id"], r["bucket"])
            for r in self.rows("SELECT contact_id, call_id, bucket FROM progress_calls WHERE execution_id = ?", (execution_id,))
        }

    def stale_live_calls(self, before_key: str, limit: int = 200) -> list[str]:
        """Calls claimed before then and still in progress: candidates for reconciling
        with the provider (a final callback may have been lost)."""
        return [
            r["call_id"]
            for r in self.rows(
                "SELECT call_id FROM progress_calls WHERE bucket = 'in_progress' AND updated_at < ? "
                "ORDER BY updated_at LIMIT ?",
                (before_key[:23] + "Z", limit),
            )
        ]

    def forget_dispatch(self, call_id: str, attempt: int) -> None:
        """A worker declined the job (window closed, rate limited): let it be sent again."""
        with self.transaction() as c:
            self.ex(c, "DELETE FROM dispatch_log WHERE call_id = ? AND attempt = ?", (call_id, attempt))

    def dials_since(self, contact_id: str, since_key: str) -> tuple[int, str | None]:
        """How many dials of this contact were claimed since then, and the oldest of them."""
        row = self.one(
            "SELECT COUNT(*) AS n, MIN(claimed_at) AS oldest FROM progress_dials WHERE contact_id = ? AND claimed_at >= ?",
            (contact_id, since_key),
        )
        return (int(row["n"]), row["oldest"]) if row else (0, None)

    def pending_calls_of_ended_executions(self, limit: int = 1000) -> list[str]:
        # The dispatcher asks at each tick. First the few executions that are ended and
        # still count pending contacts (the counter counts the snapshot's, so it is never
        # under the pending calls), then their calls: a join from the calls' side scanned
        # every pending call of every running execution (2.4 ms a tick at 20,000), and
        # the planner chose it.
        ended = self.rows(
            "SELECT id FROM progress_executions WHERE status IN ('cancelled', 'stopped') AND pending > 0 ORDER BY id"
        )
        found: list[str] = []
        for row in ended:
            found += [
                r["call_id"]
                for r in self.rows(
                    "SELECT call_id FROM progress_calls WHERE execution_id = ? AND bucket = 'pending' LIMIT ?",
                    (row["id"], limit - len(found)),
                )
            ]
            if len(found) >= limit:
                break
        return found

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
        # One statement for the batch (a row each was one statement per call dialled);
        # a key given twice is one row (a statement may not upsert a row twice).
        rows = [(call_id, attempt, at_key) for call_id, attempt in dict.fromkeys(items)]
        with self.transaction() as c:
            _insert_rows(
                self, c,
                "INSERT INTO dispatch_log (call_id, attempt, dispatched_at) VALUES (?, ?, ?) "
                "ON CONFLICT (call_id, attempt) DO UPDATE SET dispatched_at = excluded.dispatched_at",
                ("text", "bigint", "text"), rows,
            )

    # -- event handlers ------------------------------------------------------------

    # A batch (the runner's transaction) applies its Call events in memory, from the rows
    # of the calls it touches read in one query, and writes the result at its end in a few
    # statements (``_Batch``): the rows are those of applying each event alone with the
    # ``on_*`` handlers below, which ``handle`` still does. Execution events are rare and
    # go through ``handle``, after what the batch holds so far is written (a barrier), so
    # every effect lands in the events' order.

    def apply_batch(
        self,
        items: Sequence[tuple[Any, Tracking]],
        handle: Callable[[Any, Any], None],
        last: Tracking | None = None,
    ) -> None:
        if not items and last is None:
            return
        with self.transaction() as c:
            batch = _Batch(self, c)
            events = [event for event, _ in items]
            batch.preload(events)
            stale = False
            for n, event in enumerate(events):
                apply = batch.handlers.get(type(event).__qualname__)
                if apply is not None:
                    if stale:  # read again what the rest of the batch looks up
                        batch.preload(events[n:])
                        stale = False
                    apply(event)
                elif self.wants_event(event):
                    batch.flush()  # the barrier: the batch's effects so far, then this event's
                    handle(c, event)
                    # A resume or new rules start an epoch, a launch adds an execution: what
                    # the batch read may have changed.
                    batch.calls.clear()
                    batch.epochs.clear()
                    stale = True
            batch.flush()
            self._insert_tracking(c, last or items[-1][1])  # type: ignore[attr-defined]
        self._inserted_since_analyze += batch.inserted
        self.after_batch()

    def wants_event(self, event: Any) -> bool:
        return hasattr(self, "on_" + type(event).__qualname__.replace(".", "_"))

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

    def on_Execution_ContactsJoined(self, c: Any, e: Any) -> None:
        n = len(e.contact_ids)
        self.ex(
            c,
            "UPDATE progress_executions SET total = total + ?, pending = pending + ? WHERE id = ?",
            (n, n, str(e.originator_id)),
        )

    def on_Execution_SnapshotTaken(self, c: Any, e: Any) -> None:
        # A snapshot by reference: its size is known now (the launch recorded none).
        self.ex(
            c,
            "UPDATE progress_executions SET total = total + ?, pending = pending + ? WHERE id = ? AND total = 0",
            (e.total, e.total, str(e.originator_id)),
        )

    def on_Execution_QueueProgress(self, c: Any, e: Any) -> None:
        if e.missing:  # deleted contacts leave the snapshot: total and pending shrink together
            self.ex(
                c,
                "UPDATE progress_executions SET total = total - ?, pending = pending - ? WHERE id = ?",
                (e.missing, e.missing, str(e.originator_id)),
            )

    def on_Execution_Completed(self, c: Any, e: Any) -> None:
        self._exec(c, e, status="completed", actual_end_at=format_instant(e.at))

    def on_Execution_Cancelled(self, c: Any, e: Any) -> None:
        self._exec(c, e, status="cancelled", actual_end_at=format_instant(e.at))

    def on_Execution_Paused(self, c: Any, e: Any) -> None:
        self._exec(c, e, status="paused")

    def on_Execution_Resumed(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE progress_executions SET epoch = epoch + 1 WHERE id = ?", (str(e.originator_id),))
        self._exec(c, e, status="running")

    def on_Execution_Stopped(self, c: Any, e: Any) -> None:
        self._exec(c, e, status="stopped", actual_end_at=format_instant(e.at))

    def on_Execution_AutoPaused(self, c: Any, e: Any) -> None:
        self._exec(c, e, status="paused_threshold")

    def on_Execution_AutoPauseRulesSet(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE progress_executions SET epoch = epoch + 1 WHERE id = ?", (str(e.originator_id),))
        self._exec(c, e, auto_pause_rules=dumps(e.rules))

    def _count_nodes(self, c: Any, e: Any, steps: list[dict[str, Any]]) -> None:
        if not steps:
            return
        rows = self.fetch(
            c,
            "SELECT c.execution_id, x.epoch FROM progress_calls c JOIN progress_executions x ON x.id = c.execution_id "
            "WHERE c.call_id = ?",
            (str(e.originator_id),),
        )
        if not rows:
            return
        eid, epoch = rows[0]["execution_id"], rows[0]["epoch"]
        counts: dict[str, int] = {}
        for step in steps:
            counts[step["nodeId"]] = counts.get(step["nodeId"], 0) + 1
        for node_id, n in counts.items():
            self.ex(
                c,
                "INSERT INTO progress_node_counts (execution_id, node_id, epoch, visits) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (execution_id, node_id, epoch) DO UPDATE SET visits = progress_node_counts.visits + excluded.visits",
                (eid, node_id, epoch, n),
            )

    def on_Call_FlowAdvanced(self, c: Any, e: Any) -> None:
        self._count_nodes(c, e, (e.turn or {}).get("steps") or [])

    def on_Call_AttemptEnded(self, c: Any, e: Any) -> None:
        self._count_nodes(c, e, getattr(e, "unanswered_steps", None) or [])

    def on_Call_Deferred(self, c: Any, e: Any) -> None:
        self.ex(
            c,
            "UPDATE progress_calls SET not_before = ?, updated_at = ? WHERE call_id = ?",
            (_key(e.not_before), format_instant(e.timestamp), str(e.originator_id)),
        )

    CREATED_SQL = (
        "INSERT INTO progress_calls (call_id, execution_id, organization_id, contact_id, timezone, bucket, "
        "attempt, not_before, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 1, ?, ?) "
        "ON CONFLICT (call_id) DO NOTHING"
    )

    @staticmethod
    def _created_row(e: Any) -> tuple[Any, ...]:
        return (
            str(e.originator_id),
            str(e.execution_id),
            str(e.organization_id),
            str(e.contact_id),
            (e.contact or {}).get("timezone"),
            _key(e.not_before),
            format_instant(e.timestamp),
        )

    def on_Call_Created(self, c: Any, e: Any) -> None:
        self.ex(c, self.CREATED_SQL, self._created_row(e))

    def after_batch(self) -> None:
        self._keep_statistics()
        super().after_batch()

    _inserted_since_analyze = 0
    _rows_at_analyze = 0.0
    ANALYZED_BY_VIEW = frozenset({"progress_calls", "dispatch_log"})  # (the rest: ViewMixin.keep_statistics)

    def _keep_statistics(self) -> None:
        """PostgreSQL plans the dispatcher's per-tick queries from table statistics. With
        autovacuum off (as on this project's CI server) or lagging behind a launch of a
        million calls, a table planned as nearly empty is scanned whole on every tick (a
        second a query at 900,000 pending calls, 2 ms once analyzed). So this view analyzes
        its hot tables itself once they have grown by a fifth since it last did (at least
        10,000 rows), as autovacuum's analyze threshold would."""
        if not self.is_postgres:
            return
        if self._inserted_since_analyze < max(10_000, self._rows_at_analyze / 5):
            return
        with self.transaction() as c:
            c.execute("ANALYZE progress_calls")
            c.execute("ANALYZE dispatch_log")
            c.execute("SELECT reltuples FROM pg_class WHERE oid = 'progress_calls'::regclass")
            row = c.fetchone()
        self._rows_at_analyze = float((row or {}).get("reltuples") or 0) if isinstance(row, dict) else float(row[0] if row else 0)
        self._inserted_since_analyze = 0

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
        self.ex(
            c,
            "INSERT INTO progress_dials (call_id, attempt, organization_id, contact_id, claimed_at) "
            "SELECT call_id, ?, organization_id, contact_id, ? FROM progress_calls WHERE call_id = ? "
            "ON CONFLICT (call_id, attempt) DO NOTHING",
            (e.attempt, _key(e.timestamp), str(e.originator_id)),
        )
        self.ex(c, _Batch.SENT_SQLITE, (str(e.originator_id), e.attempt))  # out of the dial queue

    def on_Call_ClaimReleased(self, c: Any, e: Any) -> None:
        self._move(c, e, "pending")
        self.ex(c, "DELETE FROM progress_dials WHERE call_id = ? AND attempt = ?", (str(e.originator_id), e.attempt))

    def on_Call_RetryScheduled(self, c: Any, e: Any) -> None:
        self._move(c, e, "pending", attempt=e.attempt, not_before=_key(e.not_before))

    def on_Call_Finished(self, c: Any, e: Any) -> None:
        self._move(c, e, "completed" if e.result == "completed" else "failed", result=e.outcome)

    def on_Call_Skipped(self, c: Any, e: Any) -> None:
        self._move(c, e, "skipped", result="skipped")


_CALL_COLUMNS = (
    "call_id", "execution_id", "organization_id", "contact_id", "timezone", "bucket", "attempt", "not_before",
    "result", "updated_at",
)  # fmt: skip
# Indexes into a call's row (the columns above, without call_id).
_EXECUTION, _ORGANIZATION, _CONTACT, _TIMEZONE, _BUCKET, _ATTEMPT, _NOT_BEFORE, _RESULT, _UPDATED = range(9)  # fmt: skip
_COUNTERS = {bucket: i for i, bucket in enumerate(BUCKETS)}


class _Batch:
    """One transaction's Call events of the progress view, applied in memory: the rows of
    the calls they touch (read once), the counters' changes per execution, the node visits
    per (execution, node, epoch) and the dials claimed or released, written by ``flush``."""

    CALLS_SQL = (
        f"INSERT INTO progress_calls ({', '.join(_CALL_COLUMNS)}) VALUES ({', '.join('?' for _ in _CALL_COLUMNS)}) "
        "ON CONFLICT (call_id) DO UPDATE SET bucket = excluded.bucket, attempt = excluded.attempt, "
        "not_before = excluded.not_before, result = excluded.result, updated_at = excluded.updated_at"
    )
    NODES_SQL = (
        "INSERT INTO progress_node_counts (execution_id, node_id, epoch, visits) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (execution_id, node_id, epoch) DO UPDATE SET visits = progress_node_counts.visits + excluded.visits"
    )
    DIALS_SQL = (
        "INSERT INTO progress_dials (call_id, attempt, organization_id, contact_id, claimed_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (call_id, attempt) DO NOTHING"
    )
    COUNTERS_PG = (
        "UPDATE progress_executions AS e SET "
        + ", ".join(f"{b} = e.{b} + u.{b}" for b in BUCKETS)
        + ", updated_at = CASE WHEN e.updated_at < u.at THEN u.at ELSE e.updated_at END "
        f"FROM unnest(%b::text[], {', '.join('%b::bigint[]' for _ in BUCKETS)}, %b::text[]) "
        f"AS u(id, {', '.join(BUCKETS)}, at) WHERE e.id = u.id"
    )
    COUNTERS_SQLITE = (
        "UPDATE progress_executions SET "
        + ", ".join(f"{b} = {b} + ?" for b in BUCKETS)
        + f", {LATEST} WHERE id = ?"
    )
    UNDIAL_PG = (
        "DELETE FROM progress_dials AS d USING unnest(%b::text[], %b::bigint[]) AS u(call_id, attempt) "
        "WHERE d.call_id = u.call_id AND d.attempt = u.attempt"
    )
    UNDIAL_SQLITE = "DELETE FROM progress_dials WHERE call_id = ? AND attempt = ?"
    SENT_SQLITE = "DELETE FROM dispatch_log WHERE call_id = ? AND attempt = ?"
    SENT_PG = (  # claimed: no longer waiting in the dial queue (ProgressView.in_flight)
        "DELETE FROM dispatch_log AS d USING unnest(%b::text[], %b::bigint[]) AS u(call_id, attempt) "
        "WHERE d.call_id = u.call_id AND d.attempt = u.attempt"
    )

    def __init__(self, view: ProgressView, c: Any) -> None:
        self.view = view
        self.c = c
        # call id -> its row as stored, then as this batch leaves it (None: no row)
        self.calls: dict[str, list[Any] | None] = {}
        self.epochs: dict[str, int | None] = {}  # execution id -> epoch (None: no row)
        self.inserted = 0  # calls created (for the view's statistics upkeep)
        self._clear()
        self.handlers: dict[str, Callable[[Any], None]] = {
            "Call.Created": self.created,
            "Call.DialClaimed": self.dial_claimed,
            "Call.ClaimReleased": self.claim_released,
            "Call.RetryScheduled": self.retry_scheduled,
            "Call.Finished": self.finished,
            "Call.Skipped": self.skipped,
            "Call.Deferred": self.deferred,
            "Call.FlowAdvanced": self.flow_advanced,
            "Call.AttemptEnded": self.attempt_ended,
        }

    def _clear(self) -> None:
        self.dirty: dict[str, list[Any]] = {}  # call id -> row to write
        # execution id -> [change of each bucket's counter..., time of the latest move]
        self.counters: dict[str, list[Any]] = {}
        self.visits: dict[tuple[str, str, int], int] = {}
        # (call id, attempt) -> the dial row the batch leaves there (None: none), and
        # whether a stored row may have been deleted (then it is deleted before inserting).
        self.dials: dict[tuple[str, int], list[Any]] = {}

    # -- reads ------------------------------------------------------------------------

    def _load_calls(self, ids: list[str]) -> None:
        for cid in ids:
            self.calls[cid] = None
        sql = f"SELECT {', '.join(_CALL_COLUMNS)} FROM progress_calls WHERE call_id IN (?*)"
        for r in self.view.select_in(self.c, sql, ids):
            self.calls[r["call_id"]] = [r[k] for k in _CALL_COLUMNS[1:]]

    def _load_epochs(self, ids: list[str]) -> None:
        for eid in ids:
            self.epochs[eid] = None
        for r in self.view.select_in(self.c, "SELECT id, epoch FROM progress_executions WHERE id IN (?*)", ids):
            self.epochs[r["id"]] = r["epoch"]

    def preload(self, events: list[Any]) -> None:
        """Read, in one query each, the rows of the calls the batch's events are about and
        the epochs of their executions."""
        ids: dict[str, None] = {}
        executions: dict[str, None] = {}
        counting = False
        for e in events:
            name = type(e).__qualname__
            if name in self.handlers:
                ids[str(e.originator_id)] = None
                if name == "Call.Created":
                    executions[str(e.execution_id)] = None
                elif name in ("Call.FlowAdvanced", "Call.AttemptEnded"):
                    counting = True
        self._load_calls([cid for cid in ids if cid not in self.calls])
        if counting:
            for row in self.calls.values():
                if row is not None:
                    executions[row[_EXECUTION]] = None
            self._load_epochs([eid for eid in executions if eid not in self.epochs])

    def row(self, cid: str) -> list[Any] | None:
        if cid not in self.calls:
            self._load_calls([cid])
        return self.calls[cid]

    def epoch(self, eid: str) -> int | None:
        if eid not in self.epochs:
            self._load_epochs([eid])
        return self.epochs[eid]

    # -- the events, as ProgressView's on_Call_* handlers apply them -----------------

    def created(self, e: Any) -> None:
        cid = str(e.originator_id)
        if self.row(cid) is not None:
            return  # ON CONFLICT DO NOTHING
        row = list(ProgressView._created_row(e)[1:])
        # (execution, organization, contact, timezone, not_before, updated_at) -> a row
        self.calls[cid] = self.dirty[cid] = [*row[:4], "pending", 1, row[4], None, row[5]]
        self.inserted += 1

    def _move(self, e: Any, bucket: str) -> list[Any] | None:
        cid = str(e.originator_id)
        row = self.row(cid)
        if row is None:
            return None
        at = format_instant(e.timestamp)
        old = row[_BUCKET]
        row[_BUCKET] = bucket
        row[_UPDATED] = at
        self.dirty[cid] = row
        if old != bucket:
            assert old in BUCKETS and bucket in BUCKETS
            counters = self.counters.get(row[_EXECUTION])
            if counters is None:
                counters = self.counters[row[_EXECUTION]] = [0, 0, 0, 0, 0, at]
            counters[_COUNTERS[old]] -= 1
            counters[_COUNTERS[bucket]] += 1
            counters[5] = max(counters[5], at)  # LATEST (fixed-width texts sort like the instants)
        return row

    def dial_claimed(self, e: Any) -> None:
        row = self._move(e, "in_progress")
        if row is None:
            return
        key = (str(e.originator_id), e.attempt)
        dial = self.dials.get(key)
        value = (key[0], e.attempt, row[_ORGANIZATION], row[_CONTACT], _key(e.timestamp))
        if dial is None:  # the stored row, if any, stays (ON CONFLICT DO NOTHING)
            self.dials[key] = [value, False]
        elif dial[0] is None:  # deleted in this batch: inserted again
            dial[0] = value

    def claim_released(self, e: Any) -> None:
        self._move(e, "pending")
        self.dials[(str(e.originator_id), e.attempt)] = [None, True]

    def retry_scheduled(self, e: Any) -> None:
        row = self._move(e, "pending")
        if row is not None:
            row[_ATTEMPT] = e.attempt
            row[_NOT_BEFORE] = _key(e.not_before)

    def finished(self, e: Any) -> None:
        row = self._move(e, "completed" if e.result == "completed" else "failed")
        if row is not None:
            row[_RESULT] = e.outcome

    def skipped(self, e: Any) -> None:
        row = self._move(e, "skipped")
        if row is not None:
            row[_RESULT] = "skipped"

    def deferred(self, e: Any) -> None:
        cid = str(e.originator_id)
        row = self.row(cid)
        if row is not None:
            row[_NOT_BEFORE] = _key(e.not_before)
            row[_UPDATED] = format_instant(e.timestamp)
            self.dirty[cid] = row

    def _count_nodes(self, e: Any, steps: list[dict[str, Any]]) -> None:
        if not steps:
            return
        row = self.row(str(e.originator_id))
        if row is None:
            return
        eid = row[_EXECUTION]
        epoch = self.epoch(eid)
        if epoch is None:  # the execution has no row: nothing is counted (as the join finds none)
            return
        visits = self.visits
        for step in steps:
            key = (eid, step["nodeId"], epoch)
            visits[key] = visits.get(key, 0) + 1

    def flow_advanced(self, e: Any) -> None:
        self._count_nodes(e, (e.turn or {}).get("steps") or [])

    def attempt_ended(self, e: Any) -> None:
        self._count_nodes(e, getattr(e, "unanswered_steps", None) or [])

    # -- writes -----------------------------------------------------------------------

    def flush(self) -> None:
        """Write what the batch changed since the last flush, in a few statements."""
        if not (self.dirty or self.counters or self.visits or self.dials):
            return
        v, c, pg = self.view, self.c, self.view.is_postgres
        t, i = "text", "bigint"
        undial = [key for key, (_, deleted) in self.dials.items() if deleted]
        dials = [value for value, _ in self.dials.values() if value is not None]
        with c.connection.pipeline() if pg else nullcontext():
            # PostgreSQL: the statements go out together and are answered together.
            if self.dirty:
                rows = [(cid, *row) for cid, row in self.dirty.items()]
                _insert_rows(v, c, self.CALLS_SQL, (t, t, t, t, t, t, i, t, t, t), rows)
            # Rows that several streams add to, in key order: two processes of a rebuild
            # (PARTITIONED_REBUILD) then lock them in the same order.
            if self.counters:
                if pg:
                    rows = [(eid, *d) for eid, d in sorted(self.counters.items())]
                    c.execute(self.COUNTERS_PG, [list(col) for col in zip(*rows, strict=True)])
                else:
                    rows = [(*d[:5], d[5], d[5], eid) for eid, d in sorted(self.counters.items())]
                    c.executemany(self.COUNTERS_SQLITE, rows)
            if self.visits:
                rows = [(*key, n) for key, n in sorted(self.visits.items())]
                _insert_rows(v, c, self.NODES_SQL, (t, t, i, i), rows)
            if undial:  # before the inserts: a dial released then claimed again is the new claim
                if pg:
                    c.execute(self.UNDIAL_PG, [[cid for cid, _ in undial], [n for _, n in undial]])
                else:
                    c.executemany(self.UNDIAL_SQLITE, undial)
            if dials:
                _insert_rows(v, c, self.DIALS_SQL, (t, i, t, t, t), dials)
                if pg:
                    c.execute(self.SENT_PG, [[d[0] for d in dials], [d[1] for d in dials]])
                else:
                    c.executemany(self.SENT_SQLITE, [(d[0], d[1]) for d in dials])
        self._clear()
