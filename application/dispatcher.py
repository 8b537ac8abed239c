"""The dispatcher (process manager of executions): starts scheduled executions when their
time comes, queues their calls, sends due calls to the dial queue, skips what is left of
cancelled executions, and completes executions whose every contact reached a result.

Safe to run in several processes: starting/completing is guarded by the Execution's
optimistic concurrency, dial jobs by the claim on each Call, and the dispatch log only
avoids sending the same attempt twice within a lease."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, overload
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.calls import CallsApp
from application.campaigns import CampaignsApp
from application.ports import Clock, DialQueue
from domain.base import audit_context
from domain.call import call_id
from domain.errors import InvalidStateTransition
from domain.timeparse import sortable
from domain.windows import CallingHours, PauseWindows, in_pause_window, is_allowed
from projections.store import loads

log = logging.getLogger("gomobile.dispatcher")
QUEUE_BATCH = 2000
FIRST_QUEUE_BATCH = 200
# At most this many events of the calls log not yet applied by the progress read model
# once a batch of a launch is queued: a batch is no larger than the room left, and waits
# for a later tick if that is less than a first batch. Queueing outran the projection: a
# 6,000-call launch made its calls in 1.5 s while the dials' events came in, the read
# models fell 1.2-1.4 s behind (issue 6's bound is 1 s), and the calls could not be sent
# any sooner (the dispatcher sends what the progress view has projected). At 2,000 the lag
# at a launch still reached 1.07 s with four workers; at 1,000 a million calls took 433 s
# to queue, against 375 s at 1,500 and 310 s unbounded (docs/PERFORMANCE.md, session 17).
PROJECTION_BACKLOG = 1500


def queue_batch_size(queued: int) -> int:
    """How many calls the next batch of a launch queues, ``queued`` being queued already:
    200, 200, 400, 800, 1,600, then 2,000 a batch. A tick queues one batch, then sends
    the calls that are due: the calls of a batch are sent by the tick after the next (they
    must be projected first), so the first batches are small and the first call goes out
    soon (the million's first call waited for a whole second batch of 2,000, 2 s under
    load). Growing back to 2,000 keeps the per-batch cost of a large launch low."""
    return max(FIRST_QUEUE_BATCH, min(QUEUE_BATCH, queued))


class MemberIds(Sequence[str]):
    """A snapshot's member ids packed 16 bytes each, in order: a million-member audience
    costs the dispatcher 16 MB while its calls are queued, not ~130 MB of strings."""

    def __init__(self, ids: Iterable[str]) -> None:
        # The canonical text form (what the ids are stored as) packs as one hex string:
        # a million ids in ~0.1 s, where UUID(i).bytes each took 3.3 s. Any other
        # spelling of an id is parsed one by one.
        ids = list(ids)
        packed = b""
        if set(map(len, ids)) <= {36}:
            try:
                packed = bytes.fromhex("".join(ids).replace("-", ""))
            except ValueError:
                pass
        if len(packed) != 16 * len(ids):
            packed = b"".join(UUID(i).bytes for i in ids)
        self._packed = packed

    def __len__(self) -> int:
        return len(self._packed) // 16

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return str(UUID(bytes=self._packed[16 * i : 16 * i + 16]))


# Seconds before an execution's time zones are read again when none was found (none pending).
EMPTY_ZONES_TTL = 0.5


class Dispatcher:
    def __init__(
        self,
        campaigns: CampaignsApp,
        calls: CallsApp,
        progress: Any,
        queue: DialQueue,
        clock: Clock,
        lease_seconds: float = 120.0,
        batch: int = 500,
        reconciler: Any = None,
        live_members: Any = None,
        live_every: int = 10,
        zones_ttl: float = 5.0,
        backlog: int | None = None,
        projection_backlog: int | None = PROJECTION_BACKLOG,
    ) -> None:
        self.projection_backlog = projection_backlog
        self.zones_ttl = zones_ttl
        self._zones: dict[str, tuple[float, set[str | None]]] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self.reconciler = reconciler
        self.live_members = live_members
        self.live_every = live_every
        self._ticks = 0
        self._snapshots: dict[str, MemberIds] = {}
        self.campaigns = campaigns
        self.calls = calls
        self.progress = progress
        self.queue = queue
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.batch = batch
        # An execution's calls sent to the dial queue and not yet claimed: at most this many.
        self.backlog = batch if backlog is None else backlog
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> dict[str, int]:
        with audit_context(actor="dispatcher"):
            return self._tick()

    def _tick(self) -> dict[str, int]:
        now = self.clock.now()
        now_key = sortable(now)
        counts = {"started": 0, "queued": 0, "dispatched": 0, "skipped": 0, "completed": 0, "stopped": 0, "paused": 0}
        for eid in self.progress.executions_to_stop(now_key):
            counts["stopped"] += self._change_execution(eid, lambda e: e.stop(now))
        for eid in self.progress.executions_due_to_start(now_key):
            counts["started"] += self._change_execution(eid, lambda e: e.start(now))
        to_queue = self.progress.executions_to_queue()
        room = self._projection_room() if to_queue else 0
        for eid in to_queue:
            if room is not None and room < FIRST_QUEUE_BATCH:
                break
            n = self._queue_calls(eid, room)
            counts["queued"] += n
            room = None if room is None else room - n
        for cid in self.progress.pending_calls_of_ended_executions():
            counts["skipped"] += int(self.calls.update(cid, lambda c: c.skip("execution_ended", now)))
        running = self.progress.running_executions()
        counts["joined"], counts["left"] = self._follow_live_audiences(running, now)
        counts["paused"] = self._auto_pause(running)
        counts["dispatched"] = self._dispatch(running, now)
        if self.reconciler is not None:
            counts["reconciled"] = self.reconciler.tick()
        for eid in self.progress.executions_to_complete():
            counts["completed"] += self._change_execution(eid, lambda e: e.complete(now))
        return counts

    def _projection_room(self) -> int | None:
        """How many calls may be queued now: ``projection_backlog`` less the events of the
        calls log the progress read model has not applied yet (None: no bound)."""
        if self.projection_backlog is None:
            return None
        head = self.calls.recorder.max_notification_id() or 0
        return self.projection_backlog - (head - (self.progress.max_tracking_id(self.calls.name) or 0))

    def _follow_live_audiences(self, running: list[dict[str, Any]], now: datetime) -> tuple[int, int]:
        """A running execution of a live audience follows it: a contact who joins is
        called too (the total grows with it), one who leaves before being called is
        skipped. Checked every ``live_every`` ticks."""
        self._ticks += 1
        if self.live_members is None or self._ticks % self.live_every:
            return 0, 0
        joined = left = 0
        for row in running:
            program = loads(row["program"]) or {}
            if program.get("audienceKind") != "live" or not row.get("calls_queued"):
                continue
            members = set(self.live_members(program["audienceId"]))
            calls = self.progress.calls_by_contact(row["id"])
            new = sorted(members - set(calls))
            if new:
                # The read model may not show calls made a moment ago (a join seen at the
                # last check, the launch's last batch): the calls' own streams say.
                have = self.calls.existing([call_id(row["id"], c) for c in new])
                new = [c for c in new if call_id(row["id"], c) not in have]
            if new:
                execution = self.campaigns.execution(None, row["id"])
                contacts = self.campaigns.contacts_of(execution.organization_id, new)
                if contacts:
                    with audit_context(correlationId=row["id"]):
                        execution.record_joined([str(c.id) for c in contacts])
                        if execution.pending_events:
                            self.campaigns.save(execution)
                        org = self.campaigns.organization(execution.organization_id)
                        zones: set[str | None] = set()
                        self.calls.queue_calls(execution, contacts, now, org.country, org.timezone, zones)
                        self._add_zones(row["id"], zones)
                    joined += len(contacts)
            for contact_id, (cid, bucket) in calls.items():
                if bucket == "pending" and contact_id not in members:
                    left += int(self.calls.update(cid, lambda c: c.skip("left_audience", now)))
        return joined, left

    def _auto_pause(self, running: list[dict[str, Any]]) -> int:
        paused = 0
        for row in running:
            rules = loads(row.get("auto_pause_rules")) if row.get("auto_pause_rules") else None
            if rules is None:
                rules = (loads(row["program"]) or {}).get("autoPauseRules") or []
            if not rules:
                continue
            all_counts = self.progress.node_counts(row["id"], 0)
            epoch_counts = self.progress.node_counts(row["id"], int(row.get("epoch") or 0))
            for rule in rules:
                counts = epoch_counts if rule.get("resetOnResume", True) else all_counts
                n = counts.get(rule["nodeId"], 0)
                if n >= rule["threshold"]:
                    paused += self._change_execution(
                        row["id"], lambda e, r=rule, n=n: e.auto_pause(r["nodeId"], n, r["threshold"])
                    )
                    break
        return paused

    def _dispatch(self, running: list[dict[str, Any]], now: datetime) -> int:
        """Send due calls to the dial queue: only inside the program's windows and the
        contacts' calling hours, and within the organization's and the program's
        concurrency (calls in progress plus those sent and not yet claimed)."""
        now_key, lease_key = sortable(now), sortable(now - self.lease)
        orgs: dict[str, Any] = {}
        org_budget: dict[str, int] = {}
        flights: dict[str, dict[str, tuple[int, int]]] = {}
        total = 0
        for gone in set(self._zones) - {row["id"] for row in running}:
            self._zones.pop(gone, None)
        for row in running:
            org_id = row["organization_id"]
            if org_id not in orgs:
                orgs[org_id] = self.campaigns.organization(UUID(org_id))
                flights[org_id] = self.progress.flights(org_id, lease_key)
                org_budget[org_id] = orgs[org_id].max_concurrent_calls - sum(map(sum, flights[org_id].values()))
            org = orgs[org_id]
            live, sent = flights[org_id].get(row["id"], (0, 0))
            # Every pending call sent (the pending counter counts the snapshot's contacts, so
            # it is never under the pending calls): none due, and no query of the calls at
            # each tick while the last of a run wait to be claimed or are in progress.
            if int(row.get("pending") or 0) <= sent:
                continue
            program = loads(row["program"]) or {}
            windows = PauseWindows.parse(program.get("pauseWindows"))
            if in_pause_window(now, windows, org.timezone):
                continue
            # No more waiting in the dial queue than a batch: more would not dial sooner,
            # and every tick's two queries read each call sent and not yet claimed.
            budget = min(self.batch, org_budget[org_id], self.backlog - sent)
            if program.get("maxConcurrentCalls"):
                budget = min(budget, int(program["maxConcurrentCalls"]) - live - sent)
            paces = [(f"org:{org_id}", org.settings.get("callsPerSecond")), (f"program:{row['id']}", program.get("callsPerSecond"))]
            budget = min(budget, *(self._pace_allows(key, rate) for key, rate in paces))
            if budget <= 0:
                continue
            hours = CallingHours.parse(org.settings.get("callingHours"))
            zones = [
                tz for tz in list(self._zones_of(row["id"]))  # (the queueing thread adds to it)
                if is_allowed(now, PauseWindows(), org.timezone, hours, tz)
            ]
            due = self.progress.due_calls_of(row["id"], now_key, lease_key, budget, zones)
            if not due:
                continue
            self.progress.mark_dispatched(due, now_key)
            self.queue.enqueue_dials(due)
            org_budget[org_id] -= len(due)
            for key, rate in paces:
                self._pace_spend(key, rate, len(due))
            total += len(due)
        return total

    def _pace_allows(self, key: str, per_second: Any) -> int:
        """How many calls the pace (calls per second) allows to send now: a bucket of one
        second's worth, refilled as time passes. The workers' Redis rate limiter is what
        enforces the pace across processes; sending no faster than it spares a paced
        execution's workers from declining (and the dispatcher from resending) the same
        jobs ten times a second."""
        if not per_second:
            return self.batch
        rate = float(per_second)
        tokens, last = self._buckets.get(key, (max(1.0, rate), time.monotonic()))
        now = time.monotonic()
        tokens = min(max(1.0, rate), tokens + (now - last) * rate)
        self._buckets[key] = (tokens, now)
        return int(tokens)

    def _pace_spend(self, key: str, per_second: Any, n: int) -> None:
        if per_second and key in self._buckets:
            tokens, last = self._buckets[key]
            self._buckets[key] = (tokens - n, last)

    def _zones_of(self, eid: str) -> set[str | None]:
        """The time zones of an execution's pending calls (a superset: zones whose calls
        are all done may linger until the next refresh). Read from the progress view at
        most every ``zones_ttl`` seconds: over a million pending calls the query reads
        every row, and a dispatcher ticks ten times a second. Zones of calls this
        dispatcher queues are added at once; another dispatcher's, at the next refresh.
        None pending (before another dispatcher has queued the calls, or at the end of a
        run while the last calls are in progress): read again within half a second, not
        at each tick (the query scans the execution's calls: 10 ms a tick at 20,000)."""
        cached = self._zones.get(eid)
        now = time.monotonic()
        if cached is None or now >= cached[0]:
            zones = set(self.progress.due_timezones(eid, "9999"))  # due or not: all pending
            cached = self._zones[eid] = (now + (self.zones_ttl if zones else min(EMPTY_ZONES_TTL, self.zones_ttl)), zones)
        return cached[1]

    def _add_zones(self, eid: str, zones: set[str | None]) -> None:
        """The time zones of calls this dispatcher has just queued: dialled at once. When
        none were known, all are read again within half a second (another dispatcher's)."""
        if not zones:
            return
        cached = self._zones.get(eid)
        if cached is None or not cached[1]:
            self._zones[eid] = (time.monotonic() + min(EMPTY_ZONES_TTL, self.zones_ttl), set(zones))
        else:
            cached[1].update(zones)

    def _change_execution(self, eid: str, change: Any) -> int:
        execution = self.campaigns.execution(None, eid)
        try:
            change(execution)
            self.campaigns.save(execution)
        except (InvalidStateTransition, IntegrityError):
            return 0
        return 1

    def _queue_calls(self, eid: str, room: int | None = None) -> int:
        """Queue the calls of an execution's snapshot, one batch per tick (so a large
        launch never stalls dispatching), checkpointed on the Execution: a restarted
        dispatcher resumes where the last batch ended, and existing calls are kept.

        A batch is read in bulk: its contacts in one query, its calls in one save."""
        execution = self.campaigns.execution(None, eid)
        if execution.calls_queued:
            return 0
        members = self._members(execution)
        with audit_context(correlationId=eid):
            if execution.snapshot_total is None:
                execution.record_snapshot(len(members))
            start = execution.queued_upto
            size = queue_batch_size(start) if room is None else min(queue_batch_size(start), room)
            batch_ids = members[start : start + size]
            contacts = self.campaigns.contacts_of(execution.organization_id, batch_ids)
            if len(contacts) < len(batch_ids):
                log.warning(
                    "%s contacts of execution %s were deleted before their calls were queued",
                    len(batch_ids) - len(contacts), eid,
                )
            org = self.campaigns.organization(execution.organization_id)
            zones: set[str | None] = set()
            n = self.calls.queue_calls(
                execution, contacts, execution.scheduled_start_at, org.country, org.timezone, zones
            )
            self._add_zones(eid, zones)
            execution.record_queue_progress(start + len(batch_ids), len(batch_ids) - len(contacts))
            if execution.queued_upto >= len(members):
                execution.record_calls_queued(len(members) - execution.missing_contacts)
                self._snapshots.pop(eid, None)
            try:
                self.campaigns.save(execution)
            except IntegrityError:
                pass  # another dispatcher did this batch (its checkpoint wins), or a pause: next tick
        return n

    def _members(self, execution: Any) -> Sequence[str]:
        if execution.audience_ref is None:
            return list(execution.contact_ids)
        key = str(execution.id)
        if key not in self._snapshots:
            ref = execution.audience_ref
            members = self.campaigns.audience_members_at(UUID(ref["audienceId"]), ref["version"])
            self._snapshots[key] = MemberIds(members)
        return self._snapshots[key]

    def run(self, interval: float = 0.1) -> None:
        while not self._stop.is_set():
            try:
                counts = self.tick()
                busy = counts["queued"] > 0
            except Exception:
                log.exception("dispatcher tick failed")
                busy = False
            if not busy:
                self._stop.wait(interval)

    def start(self, interval: float = 0.1) -> Dispatcher:
        self._thread = threading.Thread(target=self.run, args=(interval,), name="dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
