"""Webhook deliveries to client systems: a follower of the campaigns and calls logs that
turns the Call and Execution events of organizations with endpoints into delivery rows,
and sends one Dramatiq job per new delivery in the same batch (infrastructure/jobs.py:
``ClientWebhookQueue``; the job is application/client_webhooks ``deliver``).

Nothing is lost: a delivery row is written with the tracking position that passes its
event, in one transaction, and the batch's jobs are sent as soon as it commits. If the
process dies before the commit, the batch is applied again; if it dies between the
commit and the sends, the rows are there, unfinished, and the next process's first
batch sends a job for each unfinished delivery. A delivery's id is derived from the endpoint and the
event, and its job is idempotent (a delivered delivery is left alone; a claim keeps two
jobs of one delivery from sending it at once).

The delivery log (``webhook_deliveries``, ``webhook_attempts``) is written by the workers
too, so it is not part of the projection's disposable state: a rebuild drops the
endpoint and call indexes only, and re-applying events finds their deliveries already
there (no event is sent twice because a read model was rebuilt)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from domain.base import now
from domain.timeparse import format_instant
from projections.store import ViewMixin, dumps, loads

WEBHOOK_NAMESPACE = uuid5(NAMESPACE_URL, "https://gomobile.ma/webhook-deliveries")

FINAL = ("delivered", "failed", "cancelled")


def delivery_id(endpoint_id: str, event_id: str) -> str:
    return str(uuid5(WEBHOOK_NAMESPACE, f"{endpoint_id}/{event_id}"))


class ClientWebhooksView(ViewMixin):
    DISPATCH_BY_METHOD = True
    TABLES = (
        """CREATE TABLE IF NOT EXISTS webhook_endpoints (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, events TEXT NOT NULL,
            created_at TEXT NOT NULL, active INTEGER NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS webhook_endpoints_org ON webhook_endpoints (organization_id, active)",
        # Only the calls of organizations that had an endpoint when the call was queued
        # (a Call's later events do not name its organization).
        """CREATE TABLE IF NOT EXISTS webhook_calls (
            call_id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, execution_id TEXT NOT NULL,
            contact_id TEXT NOT NULL, program_id TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS webhook_executions (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, program_id TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS webhook_deliveries (
            id TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, organization_id TEXT NOT NULL,
            event_type TEXT NOT NULL, event_id TEXT NOT NULL, payload TEXT NOT NULL,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_status_code INTEGER,
            last_error TEXT, claimed_until TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
            delivered_at TEXT)""",
        "CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at)",
        """CREATE TABLE IF NOT EXISTS webhook_attempts (
            delivery_id TEXT NOT NULL, attempt INTEGER NOT NULL, at TEXT NOT NULL,
            status_code INTEGER, error TEXT, duration_ms INTEGER, PRIMARY KEY (delivery_id, attempt))""",
    )
    DROP = tuple(
        f"DROP TABLE IF EXISTS {t}"
        for t in ("webhook_endpoints", "webhook_calls", "webhook_executions")
    )

    #: sends the job of a new delivery (set by the composition root before the runner starts)
    send: Callable[[str], None] | None = None

    # -- the follower ------------------------------------------------------------------

    def apply_batch(self, items: Any, handle: Any, last: Any = None) -> None:
        """Apply the batch (delivery rows and tracking in one transaction), then send a job
        per new delivery: after the commit, so that no job looks for a row that is not
        there yet. A process that dies between the two leaves those deliveries unsent:
        the first batch of the next process sends every unfinished delivery again."""
        if self.send is None:
            raise RuntimeError("client webhooks: no job sender wired to this view")
        self._sweep_once()
        self._to_send: list[str] = []
        self._orgs: set[str] | None = None  # read again in each batch's transaction
        try:
            super().apply_batch(items, handle, last)
        except BaseException:
            self._to_send = []
            raise
        for did in dict.fromkeys(self._to_send):
            self.send(did)
        self._to_send = []

    def max_tracking_id(self, application_name: str) -> int | None:
        # The runner asks for its position before each round: the first time, even when
        # no event arrives, this process sends what a previous one left unfinished.
        self._sweep_once()
        return super().max_tracking_id(application_name)  # type: ignore[misc, no-any-return]

    def _sweep_once(self) -> None:
        if self.send is None or self.__dict__.get("_swept"):
            return
        self._swept = True
        for did in self.unsent():
            self.send(did)

    def handle(self, c: Any, event: Any) -> None:
        handler = getattr(self, "on_" + type(event).__qualname__.replace(".", "_"), None)
        if handler is not None:
            handler(c, event)

    def on_WebhookEndpoint_Created(self, c: Any, e: Any) -> None:
        self.ex(
            c,
            "INSERT INTO webhook_endpoints (id, organization_id, events, created_at, active) VALUES (?, ?, ?, ?, 1) "
            "ON CONFLICT (id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.organization_id),
                dumps(list(e.events)),
                format_instant(e.timestamp),
            ),
        )
        self._orgs = None

    def on_WebhookEndpoint_Deleted(self, c: Any, e: Any) -> None:
        self.ex(c, "UPDATE webhook_endpoints SET active = 0 WHERE id = ?", (str(e.originator_id),))
        self._orgs = None

    def _with_endpoints(self, c: Any) -> set[str]:
        """The organizations with an active endpoint: the calls of every other one are
        passed over without a query (most calls, on most platforms)."""
        if getattr(self, "_orgs", None) is None:
            rows = self.fetch(
                c, "SELECT DISTINCT organization_id FROM webhook_endpoints WHERE active = 1"
            )
            self._orgs = {r["organization_id"] for r in rows}
        assert self._orgs is not None
        return self._orgs

    def on_Execution_Created(self, c: Any, e: Any) -> None:
        self.ex(
            c,
            "INSERT INTO webhook_executions (id, organization_id, program_id) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (str(e.originator_id), str(e.organization_id), str(e.program_id)),
        )

    def on_Call_Created(self, c: Any, e: Any) -> None:
        if str(e.organization_id) not in self._with_endpoints(c):
            return
        self.ex(
            c,
            "INSERT INTO webhook_calls (call_id, organization_id, execution_id, contact_id, program_id) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (call_id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.organization_id),
                str(e.execution_id),
                str(e.contact_id),
                str(e.program_id),
            ),
        )

    def on_Call_AttemptEnded(self, c: Any, e: Any) -> None:
        self._call(
            c,
            e,
            "call.attempt_ended",
            attempt=e.attempt,
            outcome=e.outcome,
            reason=e.reason,
            durationMs=e.duration_ms,
        )

    def on_Call_RetryScheduled(self, c: Any, e: Any) -> None:
        self._call(
            c, e, "call.retry_scheduled", attempt=e.attempt, notBefore=format_instant(e.not_before)
        )

    def on_Call_Finished(self, c: Any, e: Any) -> None:
        kind = "call.completed" if e.result == "completed" else "call.failed"
        self._call(c, e, kind, result=e.result, outcome=e.outcome)

    def on_Call_Skipped(self, c: Any, e: Any) -> None:
        self._call(c, e, "call.skipped", result="skipped", reason=e.reason)

    def on_Execution_Started(self, c: Any, e: Any) -> None:
        self._execution(c, e, "execution.started", status="running")

    def on_Execution_Paused(self, c: Any, e: Any) -> None:
        self._execution(c, e, "execution.paused", status="paused")

    def on_Execution_AutoPaused(self, c: Any, e: Any) -> None:
        self._execution(
            c,
            e,
            "execution.paused",
            status="paused_threshold",
            nodeId=e.node_id,
            count=e.count,
            threshold=e.threshold,
        )

    def on_Execution_Resumed(self, c: Any, e: Any) -> None:
        self._execution(c, e, "execution.resumed", status="running")

    def on_Execution_Completed(self, c: Any, e: Any) -> None:
        self._execution(c, e, "execution.completed", status="completed")

    def on_Execution_Cancelled(self, c: Any, e: Any) -> None:
        self._execution(c, e, "execution.cancelled", status="cancelled")

    def on_Execution_Stopped(self, c: Any, e: Any) -> None:
        self._execution(c, e, "execution.stopped", status="stopped")

    def _call(self, c: Any, e: Any, kind: str, **data: Any) -> None:
        if not self._with_endpoints(c):
            return
        rows = self.fetch(
            c, "SELECT * FROM webhook_calls WHERE call_id = ?", (str(e.originator_id),)
        )
        if not rows:
            return
        r = rows[0]
        base = {
            "callId": r["call_id"],
            "executionId": r["execution_id"],
            "contactId": r["contact_id"],
            "programId": r["program_id"],
        }
        self._deliver(c, e, r["organization_id"], kind, {**base, **data})

    def _execution(self, c: Any, e: Any, kind: str, **data: Any) -> None:
        if not self._with_endpoints(c):
            return
        rows = self.fetch(
            c, "SELECT * FROM webhook_executions WHERE id = ?", (str(e.originator_id),)
        )
        if not rows:
            return
        r = rows[0]
        self._deliver(
            c,
            e,
            r["organization_id"],
            kind,
            {"executionId": r["id"], "programId": r["program_id"], **data},
        )

    def _deliver(
        self, c: Any, e: Any, organization_id: str, kind: str, data: dict[str, Any]
    ) -> None:
        at = format_instant(e.timestamp)
        endpoints = self.fetch(
            c,
            "SELECT id, events, created_at FROM webhook_endpoints WHERE organization_id = ? AND active = 1",
            (organization_id,),
        )
        event_id = f"{e.originator_id}:{e.originator_version}"
        for endpoint in endpoints:
            # An endpoint hears of what happens after it was registered, not the history
            # a lagging follower is still reading.
            if kind not in loads(endpoint["events"]) or at < endpoint["created_at"]:
                continue
            did = delivery_id(endpoint["id"], event_id)
            payload = {
                "id": did,
                "type": kind,
                "occurredAt": at,
                "organizationId": organization_id,
                "data": data,
            }
            self.ex(
                c,
                "INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, event_id, payload, status, "
                "attempts, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?) ON CONFLICT (id) DO NOTHING",
                (did, endpoint["id"], organization_id, kind, event_id, dumps(payload), at, at),
            )
            if _rowcount(c) == 1:  # not when a rebuild meets a delivery already made
                self.__dict__.setdefault("_to_send", []).append(did)

    # -- the delivery log ----------------------------------------------------------------

    def delivery(self, did: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM webhook_deliveries WHERE id = ?", (did,))

    def claim(self, did: str, now: str, until: str) -> dict[str, Any] | None:
        """Take a delivery for one attempt (None: finished, or another worker is on it)."""
        with self.transaction() as c:
            self.ex(
                c,
                "UPDATE webhook_deliveries SET claimed_until = ? WHERE id = ? AND status NOT IN ('delivered', 'failed', 'cancelled') "
                "AND (claimed_until IS NULL OR claimed_until < ?)",
                (until, did, now),
            )
            if _rowcount(c) != 1:
                return None
            return self.fetch(c, "SELECT * FROM webhook_deliveries WHERE id = ?", (did,))[0]

    def record_attempt(
        self,
        did: str,
        attempt: int,
        at: str,
        status: str,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
    ) -> None:
        with self.transaction() as c:
            self.ex(
                c,
                "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (delivery_id, attempt) DO NOTHING",
                (did, attempt, at, status_code, error, duration_ms),
            )
            self.ex(
                c,
                "UPDATE webhook_deliveries SET status = ?, attempts = ?, last_status_code = ?, last_error = ?, updated_at = ?, "
                "claimed_until = NULL, delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END WHERE id = ?",
                (status, attempt, status_code, error, at, status, at, did),
            )

    def cancel(self, did: str, at: str, why: str) -> None:
        with self.transaction() as c:
            self.ex(
                c,
                "UPDATE webhook_deliveries SET status = 'cancelled', last_error = ?, updated_at = ?, claimed_until = NULL WHERE id = ?",
                (why, at, did),
            )

    def deliveries(
        self, endpoint_id: str, page: int, limit: int, status: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = "endpoint_id = ?", [endpoint_id]
        if status:
            where += " AND status = ?"
            params.append(status)
        total = self.one(f"SELECT COUNT(*) AS n FROM webhook_deliveries WHERE {where}", params)
        rows = self.rows(
            f"SELECT * FROM webhook_deliveries WHERE {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (*params, limit, (page - 1) * limit),
        )
        if rows:
            marks = ", ".join("?" for _ in rows)
            attempts: dict[str, list[dict[str, Any]]] = {}
            for a in self.rows(
                f"SELECT * FROM webhook_attempts WHERE delivery_id IN ({marks}) ORDER BY attempt",
                [r["id"] for r in rows],
            ):
                attempts.setdefault(a["delivery_id"], []).append(a)
            for r in rows:
                r["attempt_log"] = attempts.get(r["id"], [])
        return rows, int(total["n"] if total else 0)

    def unsent(self) -> list[str]:
        """Deliveries not finished and not being sent: their job may have been lost (a
        crash after the commit, or the embedded in-memory broker's queue on a restart)."""
        return [r["id"] for r in self.rows(
            "SELECT id FROM webhook_deliveries WHERE status IN ('pending', 'retrying') "
            "AND (claimed_until IS NULL OR claimed_until < ?)",
            (format_instant(now()),),
        )]  # fmt: skip

    def pending_of(self, endpoint_id: str) -> list[str]:
        return [r["id"] for r in self.rows(
            "SELECT id FROM webhook_deliveries WHERE endpoint_id = ? AND status NOT IN ('delivered', 'failed', 'cancelled')",
            (endpoint_id,),
        )]  # fmt: skip


def _rowcount(c: Any) -> int:
    return int(
        getattr(c, "sqlite_cursor", c).rowcount
    )  # eventsourcing's SQLite cursor wraps sqlite3's
