"""The dispatcher (process manager of executions): starts scheduled executions when their
time comes, queues their calls, sends due calls to the dial queue, skips what is left of
cancelled executions, and completes executions whose every contact reached a result.

Safe to run in several processes: starting/completing is guarded by the Execution's
optimistic concurrency, dial jobs by the claim on each Call, and the dispatch log only
avoids sending the same attempt twice within a lease."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from eventsourcing.persistence import IntegrityError

from application.calls import CallsApp
from application.campaigns import CampaignsApp
from application.ports import Clock, DialQueue
from domain.base import audit_context
from domain.errors import ContactNotFoundError, InvalidStateTransition
from domain.timeparse import sortable

log = logging.getLogger("gomobile.dispatcher")


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
    ) -> None:
        self.campaigns = campaigns
        self.calls = calls
        self.progress = progress
        self.queue = queue
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> dict[str, int]:
        with audit_context(actor="dispatcher"):
            return self._tick()

    def _tick(self) -> dict[str, int]:
        now = self.clock.now()
        counts = {"started": 0, "queued": 0, "dispatched": 0, "skipped": 0, "completed": 0}
        for eid in self.progress.executions_due_to_start(sortable(now)):
            counts["started"] += self._change_execution(eid, lambda e: e.start(now))
        for eid in self.progress.executions_to_queue():
            counts["queued"] += self._queue_calls(eid)
        for call_id in self.progress.pending_calls_of_ended_executions():
            counts["skipped"] += int(self.calls.update(call_id, lambda c: c.skip("execution_ended", now)))
        due = self.progress.due_calls(sortable(now), sortable(now - self.lease), self.batch)
        if due:
            self.progress.mark_dispatched(due, sortable(now))
            for call_id, attempt in due:
                self.queue.enqueue_dial(call_id, attempt)
            counts["dispatched"] = len(due)
        for eid in self.progress.executions_to_complete():
            counts["completed"] += self._change_execution(eid, lambda e: e.complete(now))
        return counts

    def _change_execution(self, eid: str, change: Any) -> int:
        execution = self.campaigns.execution(None, eid)
        try:
            change(execution)
            self.campaigns.save(execution)
        except (InvalidStateTransition, IntegrityError):
            return 0
        return 1

    def _queue_calls(self, eid: str) -> int:
        execution = self.campaigns.execution(None, eid)
        if execution.calls_queued:
            return 0
        contacts = []
        for cid in execution.contact_ids:
            try:
                contacts.append(self.campaigns.contact(execution.organization_id, cid))
            except ContactNotFoundError:
                log.warning("contact %s of execution %s was erased before queueing", cid, eid)
        not_before = execution.scheduled_start_at
        with audit_context(correlationId=eid):
            n = self.calls.queue_calls(execution, contacts, not_before)
            execution.record_calls_queued(len(contacts))
            try:
                self.campaigns.save(execution)
            except IntegrityError:
                pass
        return n

    def run(self, interval: float = 0.1) -> None:
        while not self._stop.is_set():
            try:
                counts = self.tick()
                busy = counts["dispatched"] >= self.batch or counts["queued"]
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
