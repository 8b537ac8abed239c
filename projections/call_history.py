"""Call history: every attempt of every call, the nodes it passed through, its events.

Serves the documented reports: ``/report/calls`` rows and ``CallAttemptReport`` (with
``flowExecution.executionPath``, ``finalVariables`` and ``events``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from operator import itemgetter
from typing import Any

import msgspec
from eventsourcing.persistence import Tracking

from domain.call import attempt_id
from domain.timeparse import format_instant
from projections.reports import _insert_rows
from projections.store import ViewMixin, loads

ENDED_STATUS = {
    "completed": "completed",
    "voicemail": "completed",
    "busy": "busy",
    "no_answer": "no_answer",
    "rejected": "busy",
    "failed": "failed",
    "cancelled": "cancelled",
}


class CallHistoryView(ViewMixin):
    PARTITIONED_REBUILD = True  # every row of the calls log's events is one stream's
    DISPATCH_BY_METHOD = True
    TABLES = (
        """CREATE TABLE IF NOT EXISTS history_executions (
            id TEXT PRIMARY KEY, organization_id TEXT NOT NULL, program_id TEXT NOT NULL,
            flow_id TEXT, flow_name TEXT, flow_version INTEGER, program_name TEXT, launched_by TEXT,
            launched_at TEXT)""",
        """CREATE TABLE IF NOT EXISTS history_jobs (
            job_id TEXT PRIMARY KEY, execution_id TEXT NOT NULL, organization_id TEXT NOT NULL,
            contact_id TEXT NOT NULL, to_number TEXT NOT NULL, status TEXT NOT NULL,
            final_outcome TEXT, attempts INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS history_attempts (
            call_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, attempt INTEGER NOT NULL,
            execution_id TEXT NOT NULL, program_id TEXT NOT NULL, organization_id TEXT NOT NULL,
            contact_id TEXT NOT NULL, to_number TEXT NOT NULL, from_number TEXT, status TEXT NOT NULL,
            outcome TEXT, outcome_reason TEXT, answered_by TEXT, provider_call_id TEXT,
            created_at TEXT NOT NULL, dialed_at TEXT, answered_at TEXT, ended_at TEXT,
            duration_ms INTEGER, flow_id TEXT, flow_name TEXT, flow_version INTEGER,
            variables TEXT, step_count INTEGER NOT NULL DEFAULT 0, event_count INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX IF NOT EXISTS history_attempts_execution ON history_attempts (execution_id, created_at)",
        "CREATE INDEX IF NOT EXISTS history_attempts_job ON history_attempts (job_id, attempt)",
        # Per-contact history across programs (the audit trail) and search by number.
        "CREATE INDEX IF NOT EXISTS history_attempts_contact ON history_attempts (contact_id, created_at)",
        "CREATE INDEX IF NOT EXISTS history_attempts_to ON history_attempts (organization_id, to_number, created_at)",
        """CREATE TABLE IF NOT EXISTS history_steps (
            call_id TEXT NOT NULL, seq INTEGER NOT NULL, node_id TEXT NOT NULL, node_type TEXT NOT NULL,
            node_label TEXT, output_path TEXT, at TEXT NOT NULL, PRIMARY KEY (call_id, seq))""",
        """CREATE TABLE IF NOT EXISTS history_events (
            call_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, at TEXT NOT NULL,
            data TEXT NOT NULL, PRIMARY KEY (call_id, seq))""",
        """CREATE TABLE IF NOT EXISTS history_recordings (
            id TEXT PRIMARY KEY, call_id TEXT NOT NULL, job_id TEXT NOT NULL, organization_id TEXT NOT NULL,
            node_id TEXT NOT NULL, recording_type TEXT NOT NULL, provider_sid TEXT, url TEXT,
            duration_ms INTEGER, created_at TEXT NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS history_recordings_org ON history_recordings (organization_id, created_at)",
    )
    DROP = tuple(
        f"DROP TABLE IF EXISTS {t}"
        for t in (
            "history_recordings",
            "history_events",
            "history_steps",
            "history_attempts",
            "history_jobs",
            "history_executions",
        )
    )

    # -- queries --------------------------------------------------------------------

    def attempts_page(
        self, execution_id: str, page: int, limit: int, status: str | None
    ) -> tuple[list[dict[str, Any]], int]:
        where = "execution_id = ?"
        params: list[Any] = [execution_id]
        if status:
            where += " AND status = ?"
            params.append(status)
        total = self.one(f"SELECT COUNT(*) AS n FROM history_attempts WHERE {where}", params)
        rows = self.rows(
            f"SELECT * FROM history_attempts WHERE {where} ORDER BY created_at, call_id LIMIT ? OFFSET ?",
            (*params, limit, (page - 1) * limit),
        )
        return rows, int(total["n"]) if total else 0

    def attempt(self, call_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM history_attempts WHERE call_id = ?", (call_id,))

    def job(self, job_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM history_jobs WHERE job_id = ?", (job_id,))

    def job_attempts(self, job_id: str) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT * FROM history_attempts WHERE job_id = ? ORDER BY attempt", (job_id,)
        )

    def contact_attempts(self, organization_id: str, contact_id: str) -> list[dict[str, Any]]:
        """Every attempt to call a contact, across programs, with who launched each program."""
        return self.rows(
            "SELECT a.*, x.program_name, x.launched_by, x.launched_at FROM history_attempts a "
            "JOIN history_executions x ON x.id = a.execution_id "
            "WHERE a.contact_id = ? AND a.organization_id = ? ORDER BY a.created_at, a.attempt",
            (contact_id, organization_id),
        )

    def attempts_after(
        self,
        *,
        execution_id: str | None = None,
        contact: tuple[str, str] | None = None,
        status: str | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """One page of an execution's attempts, or of a contact's (organization id, contact
        id) across programs, in (created_at, call_id) order after ``after``: exports read
        page by page (keyset), so memory does not grow with the report."""
        where, params = [], []
        if execution_id is not None:
            where.append("a.execution_id = ?")
            params.append(execution_id)
        if contact is not None:
            where += ["a.organization_id = ?", "a.contact_id = ?"]
            params += list(contact)
        if status:
            where.append("a.status = ?")
            params.append(status)
        if after is not None:
            where.append("(a.created_at > ? OR (a.created_at = ? AND a.call_id > ?))")
            params += [after[0], after[0], after[1]]
        return self.rows(
            "SELECT a.*, x.program_name, x.launched_by, x.launched_at FROM history_attempts a "
            "JOIN history_executions x ON x.id = a.execution_id WHERE "
            + " AND ".join(where or ["1 = 1"])
            + " ORDER BY a.created_at, a.call_id LIMIT ?",
            (*params, limit),
        )

    def outcomes_by_second(self, execution_id: str) -> list[dict[str, Any]]:
        """How many attempts of the execution ended with each outcome, per second (UTC)."""
        return self.rows(
            "SELECT substr(ended_at, 1, 19) AS at, outcome, COUNT(*) AS n FROM history_attempts "
            "WHERE execution_id = ? AND ended_at IS NOT NULL AND outcome IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
            (execution_id,),
        )

    def number_attempts(
        self, organization_id: str, to_number: str, limit: int = 200
    ) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT a.*, x.program_name, x.launched_by FROM history_attempts a "
            "JOIN history_executions x ON x.id = a.execution_id "
            "WHERE a.organization_id = ? AND a.to_number = ? ORDER BY a.created_at DESC, a.attempt DESC LIMIT ?",
            (organization_id, to_number, limit),
        )

    def steps_of(self, call_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {cid: [] for cid in call_ids}
        for i in range(0, len(call_ids), 500):
            chunk = call_ids[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            for r in self.rows(
                f"SELECT * FROM history_steps WHERE call_id IN ({marks}) ORDER BY call_id, seq",
                chunk,
            ):
                out[r["call_id"]].append(r)
        return out

    def events_of(self, call_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {cid: [] for cid in call_ids}
        for i in range(0, len(call_ids), 500):
            chunk = call_ids[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            for r in self.rows(
                f"SELECT * FROM history_events WHERE call_id IN ({marks}) ORDER BY call_id, seq",
                chunk,
            ):
                r["data"] = loads(r["data"])
                out[r["call_id"]].append(r)
        return out

    def steps(self, call_id: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM history_steps WHERE call_id = ? ORDER BY seq", (call_id,))

    def events(self, call_id: str) -> list[dict[str, Any]]:
        rows = self.rows("SELECT * FROM history_events WHERE call_id = ? ORDER BY seq", (call_id,))
        for r in rows:
            r["data"] = loads(r["data"])
        return rows

    # -- handlers -------------------------------------------------------------------

    def handle(self, c: Any, event: Any) -> None:
        handler = getattr(self, "on_" + type(event).__qualname__.replace(".", "_"), None)
        if handler is not None:
            handler(c, event)

    # A batch's Call events are applied in memory (``_Batch``): the rows they touch are read
    # up front (a few queries for the whole batch), changed in order as the handlers below
    # would change them, and written at the end (one statement per table). The other events
    # (executions, erasures: rare) are barriers: what is pending is written first, then they
    # go through their handler. The result is the same as applying the events one by one.

    def apply_batch(
        self,
        items: Sequence[tuple[Any, Tracking]],
        handle: Callable[[Any, Any], None],
        last: Tracking | None = None,
    ) -> None:
        if not items and last is None:
            return
        with self.transaction() as c:
            run: list[Any] = []
            for event, _ in items:
                kind = self._batch_kind(type(event))
                if kind == "batched":
                    run.append(event)
                elif kind == "barrier":
                    if run:
                        _Batch(self, c).apply(run)
                        run = []
                    handle(c, event)
            if run:
                _Batch(self, c).apply(run)
            self._insert_tracking(c, last or items[-1][1])  # type: ignore[attr-defined]
        self.after_batch()

    _batch_kinds: dict[type, str] = {}  # noqa: RUF012 - a cache shared by every instance

    def _batch_kind(self, cls: type) -> str:
        """ "batched" (a Call event ``_Batch`` applies), "barrier" (another event with a
        handler), or "ignored" (no handler: ``handle`` would do nothing)."""
        found = self._batch_kinds.get(cls)
        if found is None:
            name = cls.__qualname__.replace(".", "_")
            found = self._batch_kinds[cls] = (
                "batched" if hasattr(_Batch, name) and name.startswith("Call_")
                else "barrier" if hasattr(self, "on_" + name) else "ignored"
            )  # fmt: skip
        return found

    def on_Execution_Created(self, c: Any, e: Any) -> None:
        self.ex(
            c,
            "INSERT INTO history_executions (id, organization_id, program_id, flow_id, flow_name, flow_version, "
            "program_name, launched_by, launched_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.organization_id),
                str(e.program_id),
                e.flow.get("flowId"),
                e.flow.get("flowName"),
                e.flow.get("flowVersion"),
                (e.program or {}).get("name"),
                (getattr(e, "meta", None) or {}).get("actor"),
                format_instant(e.timestamp),
            ),
        )

    def _new_attempt(self, c: Any, job_id: str, attempt: int, at: str) -> None:
        self.ex(
            c,
            "INSERT INTO history_attempts (call_id, job_id, attempt, execution_id, program_id, "
            "organization_id, contact_id, to_number, status, created_at, flow_id, flow_name, flow_version) "
            "SELECT ?, j.job_id, ?, j.execution_id, x.program_id, j.organization_id, j.contact_id, "
            "j.to_number, 'queued', ?, x.flow_id, x.flow_name, x.flow_version "
            "FROM history_jobs j JOIN history_executions x ON x.id = j.execution_id WHERE j.job_id = ? "
            "ON CONFLICT (call_id) DO NOTHING",
            (str(attempt_id(job_id, attempt)), attempt, at, job_id),
        )
        self.ex(
            c,
            "UPDATE history_jobs SET attempts = ?, updated_at = ? WHERE job_id = ?",
            (attempt, at, job_id),
        )

    def on_Call_Created(self, c: Any, e: Any) -> None:
        job_id, at = str(e.originator_id), format_instant(e.timestamp)
        self.ex(
            c,
            "INSERT INTO history_jobs (job_id, execution_id, organization_id, contact_id, to_number, status, "
            "attempts, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'queued', 1, ?, ?) "
            "ON CONFLICT (job_id) DO NOTHING",
            (job_id, str(e.execution_id), str(e.organization_id), str(e.contact_id), e.to, at, at),
        )
        self._new_attempt(c, job_id, 1, at)

    def _attempt(self, c: Any, e: Any, **fields: Any) -> str:
        cid = str(attempt_id(e.originator_id, e.attempt))
        if fields:
            sets = ", ".join(f"{k} = ?" for k in fields)
            self.ex(
                c, f"UPDATE history_attempts SET {sets} WHERE call_id = ?", (*fields.values(), cid)
            )
        return cid

    def _event(self, c: Any, cid: str, type_: str, at: str | None, data: dict[str, Any]) -> None:
        row = self.fetch(c, "SELECT event_count FROM history_attempts WHERE call_id = ?", (cid,))
        if not row:
            return
        seq = int(row[0]["event_count"])
        self.ex(
            c,
            "INSERT INTO history_events (call_id, seq, type, at, data) VALUES (?, ?, ?, ?, ?)",
            (cid, seq, type_, at, _dumps(data)),
        )
        self.ex(c, "UPDATE history_attempts SET event_count = ? WHERE call_id = ?", (seq + 1, cid))

    def _steps(self, c: Any, cid: str, steps: list[dict[str, Any]], at: str | None) -> None:
        row = self.fetch(c, "SELECT step_count FROM history_attempts WHERE call_id = ?", (cid,))
        if not row:
            return
        seq = int(row[0]["step_count"])
        for s in steps:
            self.ex(
                c,
                "INSERT INTO history_steps (call_id, seq, node_id, node_type, node_label, output_path, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (cid, seq, s["nodeId"], s["nodeType"], s.get("nodeLabel"), s.get("outputPath"), at),
            )
            seq += 1
        self.ex(c, "UPDATE history_attempts SET step_count = ? WHERE call_id = ?", (seq, cid))

    def on_Call_DialClaimed(self, c: Any, e: Any) -> None:
        at = format_instant(e.timestamp)
        self._attempt(c, e, status="dialing", dialed_at=at)
        self.ex(
            c,
            "UPDATE history_jobs SET status = 'active', updated_at = ? WHERE job_id = ?",
            (at, str(e.originator_id)),
        )

    def on_Call_ClaimReleased(self, c: Any, e: Any) -> None:
        """Claimed, then given back undialled: the attempt is queued again."""
        self._attempt(c, e, status="queued", dialed_at=None)
        if e.attempt == 1:
            self.ex(c, "UPDATE history_jobs SET status = 'queued', updated_at = ? WHERE job_id = ?",
                    (format_instant(e.timestamp), str(e.originator_id)))  # fmt: skip

    def on_Call_Placed(self, c: Any, e: Any) -> None:
        cid = self._attempt(c, e, from_number=e.from_number, provider_call_id=e.provider_call_id)
        row = self.fetch(c, "SELECT to_number FROM history_attempts WHERE call_id = ?", (cid,))
        to = row[0]["to_number"] if row else None
        self._event(c, cid, "dial", format_instant(e.timestamp), {"to": to, "from": e.from_number})

    def on_Call_Ringing(self, c: Any, e: Any) -> None:
        self.ex(
            c,
            "UPDATE history_attempts SET status = 'ringing' WHERE call_id = ? AND status = 'dialing'",
            (str(attempt_id(e.originator_id, e.attempt)),),
        )

    def on_Call_Answered(self, c: Any, e: Any) -> None:
        at = format_instant(e.timestamp)
        cid = self._attempt(c, e, status="in_progress", answered_at=at, answered_by=e.answered_by)
        self._event(c, cid, "answer", at, {"answeredBy": e.answered_by})

    def on_Call_MachineDetected(self, c: Any, e: Any) -> None:
        """Asynchronous AMD: the verdict comes after the answer; while the call is live it
        says who answered (as the Call itself does), a late one changes nothing."""
        self.ex(
            c,
            "UPDATE history_attempts SET answered_by = ? WHERE call_id = ? AND status = 'in_progress'",
            (e.answered_by, str(attempt_id(e.originator_id, e.attempt))),
        )

    def on_Call_FlowAdvanced(self, c: Any, e: Any) -> None:
        cid = str(attempt_id(e.originator_id, e.attempt))
        at = format_instant(e.timestamp)
        turn = e.turn
        resolved = turn.get("resolved")
        if resolved:
            self.ex(
                c,
                "UPDATE history_steps SET output_path = ? WHERE call_id = ? AND seq = "
                "(SELECT MAX(seq) FROM history_steps WHERE call_id = ? AND node_id = ?)",
                (resolved["outputPath"], cid, cid, resolved["nodeId"]),
            )
        self._steps(c, cid, turn["steps"], at)
        for type_, data, recorded in turn_events(turn):
            self._event(c, cid, type_, at, data)
            if recorded is not None:
                self._recording(c, e, cid, recorded, at)
        self._attempt(c, e, variables=_dumps((turn.get("state") or {}).get("variables", {})))

    def _recording(self, c: Any, e: Any, cid: str, ev: dict[str, Any], at: str | None) -> None:
        self.ex(
            c,
            "INSERT INTO history_recordings (id, call_id, job_id, organization_id, node_id, recording_type, "
            "provider_sid, url, duration_ms, created_at) SELECT ?, ?, ?, organization_id, ?, ?, ?, ?, ?, ? "
            "FROM history_attempts WHERE call_id = ? ON CONFLICT (id) DO NOTHING",
            (ev["recordId"], cid, str(e.originator_id), ev["nodeId"], ev.get("recordingType", "segment"),
             ev.get("recordingSid"), ev.get("recordingUrl"), ev.get("durationMs"), at, cid),
        )  # fmt: skip

    # What an event row of an erased contact's call keeps: the facts, not what was said,
    # pressed, recorded or sent (issue 7, crypto-shredding); other values read empty.
    ERASED_KEEP = frozenset({"answeredBy", "hangupType", "hangupReason", "nodeId", "durationMs", "mode",
                             "recordId", "recordingType", "completedBy", "ringDurationMs", "from"})  # fmt: skip

    def on_Contact_Erased(self, c: Any, e: Any) -> None:
        """The contact's calls lose its number, its variables, the contents of their events
        and their recordings' links; dates, outcomes, durations and node paths stay."""
        contact = str(e.originator_id)
        rows = self.fetch(
            c, "SELECT call_id, job_id FROM history_attempts WHERE contact_id = ?", (contact,)
        )
        calls = [r["call_id"] for r in rows]
        for job in {r["job_id"] for r in rows}:
            self.ex(c, "UPDATE history_jobs SET to_number = '' WHERE job_id = ?", (job,))
        self.ex(
            c,
            "UPDATE history_attempts SET to_number = '', variables = NULL WHERE contact_id = ?",
            (contact,),
        )
        for i in range(0, len(calls), 500):
            chunk = calls[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            self.ex(
                c,
                f"UPDATE history_recordings SET url = NULL, provider_sid = NULL WHERE call_id IN ({marks})",
                chunk,
            )
            events = self.fetch(
                c,
                f"SELECT call_id, seq, data FROM history_events WHERE call_id IN ({marks})",
                chunk,
            )
            kept = [(_dumps({k: v if k in self.ERASED_KEEP else _emptied(v) for k, v in (loads(r["data"]) or {}).items()}),
                     r["call_id"], r["seq"]) for r in events]  # fmt: skip
            if kept:
                c.executemany(
                    self.q("UPDATE history_events SET data = ? WHERE call_id = ? AND seq = ?"), kept
                )

    def recordings(
        self, organization_id: str, limit: int, offset: int, call_id: str | None = None
    ) -> list[dict[str, Any]]:
        where, params = "organization_id = ?", [organization_id]
        if call_id is not None:
            where += " AND call_id = ?"
            params.append(call_id)
        return self.rows(
            f"SELECT * FROM history_recordings WHERE {where} ORDER BY created_at, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )

    def recording(self, organization_id: str, recording_id: str) -> dict[str, Any] | None:
        return self.one(
            "SELECT * FROM history_recordings WHERE organization_id = ? AND id = ?",
            (organization_id, recording_id),
        )

    def on_Call_AttemptEnded(self, c: Any, e: Any) -> None:
        at = format_instant(e.at)
        cid = self._attempt(
            c,
            e,
            status=ENDED_STATUS.get(e.outcome, e.outcome),
            outcome=e.outcome,
            outcome_reason=e.reason,
            ended_at=at,
            duration_ms=e.duration_ms,
        )
        self._steps(c, cid, e.unanswered_steps, at)
        self._event(c, cid, "hangup", at, {"hangupType": e.outcome, "hangupReason": e.reason})

    def on_Call_RetryScheduled(self, c: Any, e: Any) -> None:
        self._new_attempt(c, str(e.originator_id), e.attempt, format_instant(e.not_before) or "")

    def on_Call_Finished(self, c: Any, e: Any) -> None:
        self.ex(
            c,
            "UPDATE history_jobs SET status = ?, final_outcome = ?, updated_at = ? WHERE job_id = ?",
            (
                "completed" if e.result == "completed" else "failed",
                e.outcome,
                format_instant(e.at),
                str(e.originator_id),
            ),
        )

    def on_Call_Skipped(self, c: Any, e: Any) -> None:
        at = format_instant(e.at)
        job_id = str(e.originator_id)
        self.ex(
            c,
            "UPDATE history_jobs SET status = 'skipped', final_outcome = 'skipped', updated_at = ? WHERE job_id = ?",
            (at, job_id),
        )
        self.ex(
            c,
            "UPDATE history_attempts SET status = 'skipped', outcome = 'skipped', outcome_reason = ? "
            "WHERE job_id = ? AND status = 'queued'",
            (e.reason, job_id),
        )


def turn_events(turn: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """The history events a flow turn records, in order: (type, data, the engine's event
    when it names a recording to keep). Both the per-event handler and the batch use it."""
    if "events" in turn:  # what the flow engine reports: prompts, inputs, variables, recordings ...
        for ev in turn["events"]:
            recorded = ev if ev["type"] == "record_stop" and ev.get("recordId") else None
            yield ev["type"], {k: v for k, v in ev.items() if k != "type"}, recorded
        return
    # turns recorded before the engine reported events
    if turn.get("input") is not None:
        inp = turn["input"]
        yield "dtmf_collected", {"digits": inp["digits"], "mode": inp["mode"], "nodeId": inp["nodeId"]}, None
    # (a turn whose personal fields were not stored, its contact unknown, has none of them)
    for ins in turn.get("instructions") or []:
        if ins["verb"] in ("say", "play"):
            yield "play", {k: v for k, v in ins.items() if k != "verb"}, None


def _emptied(value: Any) -> Any:
    """A value of an erased contact's event, as the events now read (infrastructure/privacy)."""
    return (
        ""
        if isinstance(value, str)
        else {}
        if isinstance(value, dict)
        else []
        if isinstance(value, list)
        else None
    )


JOB_COLUMNS = ("job_id", "execution_id", "organization_id", "contact_id", "to_number", "status", "final_outcome",
               "attempts", "created_at", "updated_at")  # fmt: skip
ATTEMPT_COLUMNS = (
    "call_id", "job_id", "attempt", "execution_id", "program_id", "organization_id", "contact_id", "to_number",
    "from_number", "status", "outcome", "outcome_reason", "answered_by", "provider_call_id", "created_at",
    "dialed_at", "answered_at", "ended_at", "duration_ms", "flow_id", "flow_name", "flow_version", "variables",
    "step_count", "event_count",
)  # fmt: skip
STEP_COLUMNS = ("call_id", "seq", "node_id", "node_type", "node_label", "output_path", "at")
EVENT_COLUMNS = ("call_id", "seq", "type", "at", "data")
RECORDING_COLUMNS = ("id", "call_id", "job_id", "organization_id", "node_id", "recording_type", "provider_sid",
                     "url", "duration_ms", "created_at")  # fmt: skip
_INTEGER = frozenset(
    {"attempts", "attempt", "duration_ms", "flow_version", "step_count", "event_count", "seq"}
)


_ENCODE = msgspec.json.Encoder(enc_hook=str).encode


def _dumps(value: Any) -> str:
    """The history's JSON texts (an event's data, an attempt's variables), encoded by msgspec:
    a fifth of ``json.dumps``'s cost, and a text is kept as UTF-8 rather than escaped. They
    are read back with ``loads`` (the same values either way)."""
    return _ENCODE(value).decode()


def _types(columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("bigint" if k in _INTEGER else "text" for k in columns)


def _tuples(
    rows: dict[str, dict[str, Any] | None], keys: set[str], columns: tuple[str, ...]
) -> list[tuple[Any, ...]]:
    """The rows of ``keys`` (each names a row that exists), as ``columns``."""
    get = itemgetter(*columns)  # a tuple of the values, in C (the loop over columns was 9% of a rebuild)
    return [get(rows[key]) for key in sorted(keys)]


def _insert_sql(table: str, columns: tuple[str, ...], tail: str = "") -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}){tail}"


class _Batch:
    """A run of Call events of one transaction, applied in memory, as the ``on_Call_*``
    handlers would apply them one by one, then written (``flush``).

    Rows are read once (``preload``): the jobs and attempts the events name, the attempts
    of the jobs skipped, the executions new attempts are made from, and the last step of
    each node of the attempts whose turns resolve a node. A row that does not exist is
    cached as None, so that an event about it changes nothing, as its UPDATE would not.
    Rows made or changed by the run are kept whole and written back whole."""

    def __init__(self, view: CallHistoryView, c: Any) -> None:
        self.view = view
        self.c = c
        self.ids: dict[tuple[Any, int], str] = {}
        self.executions: dict[str, dict[str, Any] | None] = {}
        self.jobs: dict[str, dict[str, Any] | None] = {}
        self.attempts: dict[str, dict[str, Any] | None] = {}
        self.job_attempts: dict[str, set[str]] = {}  # job id -> every attempt of it (jobs skipped)
        # attempt id -> node id -> the seq of its last step (attempts whose turns resolve a node)
        self.last_steps: dict[str, dict[str, int]] = {}
        self.new_jobs: set[str] = set()
        self.changed_jobs: set[str] = set()
        self.new_attempts: set[str] = set()
        self.changed_attempts: set[str] = set()
        self.steps: dict[tuple[str, int], list[Any]] = {}  # new steps, in order
        self.step_paths: dict[tuple[str, int], Any] = {}  # output paths of stored steps
        self.events: list[tuple[Any, ...]] = []
        self.recordings: dict[str, tuple[Any, ...]] = {}
        self.job_ids: dict[Any, str] = {}

    # -- reads ----------------------------------------------------------------------

    def job_of(self, u: Any) -> str:
        """``str(u)`` of a stream id, made once per batch (UUID.__str__ was 6% of a rebuild)."""
        found = self.job_ids.get(u)
        if found is None:
            found = self.job_ids[u] = str(u)
        return found

    def attempt_of(self, job: Any, attempt: int) -> str:
        key = (job, attempt)
        found = self.ids.get(key)
        if found is None:
            found = self.ids[key] = str(attempt_id(job, attempt))
        return found

    def preload(self, events: list[Any]) -> None:
        jobs: set[str] = set()
        attempts: set[str] = set()
        skipped: set[str] = set()
        resolved: set[str] = set()
        executions: set[str] = set()
        for e in events:
            name = type(e).__qualname__
            job = self.job_of(e.originator_id)
            jobs.add(job)
            if name == "Call.Created":
                attempts.add(self.attempt_of(e.originator_id, 1))
                executions.add(str(e.execution_id))
            elif name == "Call.Skipped":
                skipped.add(job)
            elif name != "Call.Finished":  # the others name an attempt
                cid = self.attempt_of(e.originator_id, e.attempt)
                attempts.add(cid)
                if name == "Call.FlowAdvanced" and (e.turn or {}).get("resolved"):
                    resolved.add(cid)
        self._load_jobs(sorted(jobs - self.jobs.keys()))
        executions.update(j["execution_id"] for j in self.jobs.values() if j is not None)
        self._load_executions(sorted(executions - self.executions.keys()))
        self._load_attempts(sorted(attempts - self.attempts.keys()))
        self._load_job_attempts(sorted(skipped - self.job_attempts.keys()))
        self._load_last_steps(sorted(resolved - self.last_steps.keys()))

    def _load_jobs(self, keys: list[str]) -> None:
        self.jobs.update(dict.fromkeys(keys))
        sql = f"SELECT {', '.join(JOB_COLUMNS)} FROM history_jobs WHERE job_id IN (?*)"
        for r in self.view.select_in(self.c, sql, keys):
            self.jobs[r["job_id"]] = r

    def _load_executions(self, keys: list[str]) -> None:
        self.executions.update(dict.fromkeys(keys))
        sql = "SELECT id, program_id, flow_id, flow_name, flow_version FROM history_executions WHERE id IN (?*)"
        for r in self.view.select_in(self.c, sql, keys):
            self.executions[r["id"]] = r

    def _load_attempts(self, keys: list[str]) -> None:
        self.attempts.update(dict.fromkeys(keys))
        sql = f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM history_attempts WHERE call_id IN (?*)"
        for r in self.view.select_in(self.c, sql, keys):
            self.attempts[r["call_id"]] = r

    def _load_job_attempts(self, keys: list[str]) -> None:
        for job in keys:  # the attempts made in memory (none stored yet: they are new)
            self.job_attempts[job] = {
                cid for cid in self.new_attempts if (self.attempts[cid] or {}).get("job_id") == job
            }
        sql = f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM history_attempts WHERE job_id IN (?*)"
        for r in self.view.select_in(self.c, sql, keys):
            cid = r["call_id"]
            if self.attempts.get(cid) is None:  # else the row read before (maybe changed since)
                self.attempts[cid] = r
            self.job_attempts[r["job_id"]].add(cid)

    def _load_last_steps(self, keys: list[str]) -> None:
        for cid in keys:  # and the steps made in memory, later than any stored
            nodes = self.last_steps[cid] = {}
            for (call, seq), row in self.steps.items():
                if call == cid:
                    nodes[row[2]] = seq
        sql = "SELECT call_id, node_id, MAX(seq) AS seq FROM history_steps WHERE call_id IN (?*) GROUP BY call_id, node_id"
        for r in self.view.select_in(self.c, sql, keys):
            nodes = self.last_steps[r["call_id"]]
            nodes.setdefault(r["node_id"], int(r["seq"]))

    def job(self, job: str) -> dict[str, Any] | None:
        if job not in self.jobs:
            self._load_jobs([job])
        return self.jobs[job]

    def execution(self, execution_id: str) -> dict[str, Any] | None:
        if execution_id not in self.executions:
            self._load_executions([execution_id])
        return self.executions[execution_id]

    def attempt(self, cid: str) -> dict[str, Any] | None:
        if cid not in self.attempts:
            self._load_attempts([cid])
        return self.attempts[cid]

    # -- changes --------------------------------------------------------------------

    def apply(self, events: list[Any]) -> None:
        self.preload(events)
        for e in events:
            getattr(self, type(e).__qualname__.replace(".", "_"))(e)
        self.flush()

    def update_job(self, job: str, **fields: Any) -> None:
        row = self.job(job)
        if row is not None:
            row.update(fields)
            if job not in self.new_jobs:
                self.changed_jobs.add(job)

    def update_attempt(self, cid: str, **fields: Any) -> dict[str, Any] | None:
        row = self.attempt(cid)
        if row is not None:
            row.update(fields)
            if cid not in self.new_attempts:
                self.changed_attempts.add(cid)
        return row

    def new_attempt(self, job: str, attempt: int, at: str) -> None:
        """``_new_attempt``: INSERT ... SELECT from the job and its execution, ON CONFLICT
        DO NOTHING; then the job's count of attempts."""
        cid = self.attempt_of(job, attempt)
        j = self.job(job)
        if j is None:
            return
        x = self.execution(j["execution_id"])
        if x is not None and self.attempt(cid) is None:
            row = dict.fromkeys(ATTEMPT_COLUMNS)
            row.update(
                call_id=cid, job_id=job, attempt=attempt, execution_id=j["execution_id"], program_id=x["program_id"],
                organization_id=j["organization_id"], contact_id=j["contact_id"], to_number=j["to_number"],
                status="queued", created_at=at, flow_id=x["flow_id"], flow_name=x["flow_name"],
                flow_version=x["flow_version"], step_count=0, event_count=0,
            )  # fmt: skip
            self.attempts[cid] = row
            self.new_attempts.add(cid)
            if job in self.job_attempts:
                self.job_attempts[job].add(cid)
        self.update_job(job, attempts=attempt, updated_at=at)

    def event(self, cid: str, type_: str, at: str | None, data: dict[str, Any]) -> None:
        row = self.attempt(cid)
        if row is None:
            return
        seq = int(row["event_count"])
        self.events.append((cid, seq, type_, at, _dumps(data)))
        self.update_attempt(cid, event_count=seq + 1)

    def add_steps(self, cid: str, steps: list[dict[str, Any]], at: str | None) -> None:
        row = self.attempt(cid)
        if row is None:
            return
        seq = int(row["step_count"])
        nodes = self.last_steps.get(cid)
        for s in steps:
            self.steps[(cid, seq)] = [
                cid,
                seq,
                s["nodeId"],
                s["nodeType"],
                s.get("nodeLabel"),
                s.get("outputPath"),
                at,
            ]
            if nodes is not None:
                nodes[s["nodeId"]] = seq
            seq += 1
        self.update_attempt(cid, step_count=seq)

    def resolve(self, cid: str, node_id: str, output_path: Any) -> None:
        """UPDATE history_steps SET output_path WHERE seq = the node's last step."""
        nodes = self.last_steps.get(cid)
        if nodes is None:
            self._load_last_steps([cid])
            nodes = self.last_steps[cid]
        seq = nodes.get(node_id)
        if seq is None:
            return
        new = self.steps.get((cid, seq))
        if new is not None:
            new[5] = output_path
        else:
            self.step_paths[(cid, seq)] = output_path

    # -- the events (as the on_Call_* handlers of CallHistoryView) --------------------

    def Call_Created(self, e: Any) -> None:
        job, at = self.job_of(e.originator_id), format_instant(e.timestamp)
        if self.job(job) is None:
            self.jobs[job] = {
                "job_id": job, "execution_id": str(e.execution_id), "organization_id": str(e.organization_id),
                "contact_id": str(e.contact_id), "to_number": e.to, "status": "queued", "final_outcome": None,
                "attempts": 1, "created_at": at, "updated_at": at,
            }  # fmt: skip
            self.new_jobs.add(job)
        self.new_attempt(job, 1, at)

    def Call_DialClaimed(self, e: Any) -> None:
        at = format_instant(e.timestamp)
        self.update_attempt(
            self.attempt_of(e.originator_id, e.attempt), status="dialing", dialed_at=at
        )
        self.update_job(self.job_of(e.originator_id), status="active", updated_at=at)

    def Call_ClaimReleased(self, e: Any) -> None:
        self.update_attempt(
            self.attempt_of(e.originator_id, e.attempt), status="queued", dialed_at=None
        )
        if e.attempt == 1:
            self.update_job(
                self.job_of(e.originator_id), status="queued", updated_at=format_instant(e.timestamp)
            )

    def Call_Placed(self, e: Any) -> None:
        cid = self.attempt_of(e.originator_id, e.attempt)
        row = self.update_attempt(
            cid, from_number=e.from_number, provider_call_id=e.provider_call_id
        )
        to = row["to_number"] if row else None
        self.event(cid, "dial", format_instant(e.timestamp), {"to": to, "from": e.from_number})

    def Call_Ringing(self, e: Any) -> None:
        cid = self.attempt_of(e.originator_id, e.attempt)
        row = self.attempt(cid)
        if row is not None and row["status"] == "dialing":
            self.update_attempt(cid, status="ringing")

    def Call_Answered(self, e: Any) -> None:
        at = format_instant(e.timestamp)
        cid = self.attempt_of(e.originator_id, e.attempt)
        self.update_attempt(cid, status="in_progress", answered_at=at, answered_by=e.answered_by)
        self.event(cid, "answer", at, {"answeredBy": e.answered_by})

    def Call_MachineDetected(self, e: Any) -> None:
        cid = self.attempt_of(e.originator_id, e.attempt)
        row = self.attempt(cid)
        if row is not None and row["status"] == "in_progress":
            self.update_attempt(cid, answered_by=e.answered_by)

    def Call_FlowAdvanced(self, e: Any) -> None:
        cid = self.attempt_of(e.originator_id, e.attempt)
        at = format_instant(e.timestamp)
        turn = e.turn
        resolved = turn.get("resolved")
        if resolved:
            self.resolve(cid, resolved["nodeId"], resolved["outputPath"])
        self.add_steps(cid, turn["steps"], at)
        for type_, data, recorded in turn_events(turn):
            self.event(cid, type_, at, data)
            if recorded is not None:
                self.recording(e, cid, recorded, at)
        self.update_attempt(cid, variables=_dumps((turn.get("state") or {}).get("variables", {})))

    def recording(self, e: Any, cid: str, ev: dict[str, Any], at: str | None) -> None:
        """INSERT ... SELECT organization_id FROM the attempt, ON CONFLICT (id) DO NOTHING:
        the first of an id in the run is written, and not over a stored one (``flush``)."""
        row = self.attempt(cid)
        if row is None or ev["recordId"] in self.recordings:
            return
        self.recordings[ev["recordId"]] = (
            ev["recordId"], cid, self.job_of(e.originator_id), row["organization_id"], ev["nodeId"],
            ev.get("recordingType", "segment"), ev.get("recordingSid"), ev.get("recordingUrl"), ev.get("durationMs"), at,
        )  # fmt: skip

    def Call_AttemptEnded(self, e: Any) -> None:
        at = format_instant(e.at)
        cid = self.attempt_of(e.originator_id, e.attempt)
        self.update_attempt(
            cid, status=ENDED_STATUS.get(e.outcome, e.outcome), outcome=e.outcome, outcome_reason=e.reason,
            ended_at=at, duration_ms=e.duration_ms,
        )  # fmt: skip
        self.add_steps(cid, e.unanswered_steps, at)
        self.event(cid, "hangup", at, {"hangupType": e.outcome, "hangupReason": e.reason})

    def Call_RetryScheduled(self, e: Any) -> None:
        self.new_attempt(self.job_of(e.originator_id), e.attempt, format_instant(e.not_before) or "")

    def Call_Finished(self, e: Any) -> None:
        self.update_job(
            self.job_of(e.originator_id), status="completed" if e.result == "completed" else "failed",
            final_outcome=e.outcome, updated_at=format_instant(e.at),
        )  # fmt: skip

    def Call_Skipped(self, e: Any) -> None:
        job = self.job_of(e.originator_id)
        self.update_job(
            job, status="skipped", final_outcome="skipped", updated_at=format_instant(e.at)
        )
        if job not in self.job_attempts:
            self._load_job_attempts([job])
        for cid in self.job_attempts[job]:
            row = self.attempts[cid]
            if row is not None and row["status"] == "queued":
                self.update_attempt(
                    cid, status="skipped", outcome="skipped", outcome_reason=e.reason
                )

    # -- writes ---------------------------------------------------------------------

    def flush(self) -> None:
        v, c = self.view, self.c
        jobs, attempts = self.jobs, self.attempts
        inserts = [
            (_insert_sql("history_jobs", JOB_COLUMNS), _types(JOB_COLUMNS), _tuples(jobs, self.new_jobs, JOB_COLUMNS)),
            (_insert_sql("history_attempts", ATTEMPT_COLUMNS), _types(ATTEMPT_COLUMNS),
             _tuples(attempts, self.new_attempts, ATTEMPT_COLUMNS)),
            (_insert_sql("history_steps", STEP_COLUMNS), _types(STEP_COLUMNS), [tuple(r) for r in self.steps.values()]),
            (_insert_sql("history_events", EVENT_COLUMNS), _types(EVENT_COLUMNS), self.events),
            (_insert_sql("history_recordings", RECORDING_COLUMNS, " ON CONFLICT (id) DO NOTHING"),
             _types(RECORDING_COLUMNS), list(self.recordings.values())),
        ]  # fmt: skip
        updates = [
            ("history_jobs", JOB_COLUMNS, _tuples(jobs, self.changed_jobs, JOB_COLUMNS)),
            ("history_attempts", ATTEMPT_COLUMNS, _tuples(attempts, self.changed_attempts, ATTEMPT_COLUMNS)),
            ("history_steps", ("call_id", "seq", "output_path"),
             [(cid, seq, path) for (cid, seq), path in self.step_paths.items()]),
        ]  # fmt: skip
        with c.connection.pipeline() if v.is_postgres else nullcontext():
            for table, columns, rows in updates:
                if rows:
                    self._update_rows(table, columns, rows)
            for sql, types, rows in inserts:
                if rows:
                    _insert_rows(v, c, sql, types, rows)

    def _update_rows(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> None:
        """Rows of ``table`` whose key (the first columns: ``call_id, seq`` for steps) is
        given take the other columns' values."""
        n_key = 2 if table == "history_steps" else 1
        keys, values = columns[:n_key], columns[n_key:]
        if self.view.is_postgres:
            arrays = ", ".join(f"%b::{t}[]" for t in _types(columns))
            self.c.execute(
                f"UPDATE {table} AS t SET {', '.join(f'{k} = u.{k}' for k in values)} "
                f"FROM unnest({arrays}) AS u({', '.join(columns)}) WHERE "
                + " AND ".join(f"t.{k} = u.{k}" for k in keys),
                [list(col) for col in zip(*rows, strict=True)],
            )
            return
        self.c.executemany(
            f"UPDATE {table} SET {', '.join(f'{k} = ?' for k in values)} WHERE "
            + " AND ".join(f"{k} = ?" for k in keys),
            [(*row[n_key:], *row[:n_key]) for row in rows],
        )
