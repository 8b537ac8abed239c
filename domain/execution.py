"""An execution: one run of a program. Its stream holds the lifecycle only; call outcomes
live on the Call streams and progress is a projection (no hot aggregate)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from domain.base import AuditedAggregate
from domain.errors import InvalidStateTransition

ACTIVE = ("scheduled", "running", "paused", "paused_threshold")
FINAL = ("completed", "stopped", "cancelled")


class Execution(AuditedAggregate):
    """``program`` is a frozen copy of the program, the flow version and the audience
    snapshot taken at launch: editing any of them later never changes this run."""

    def __init__(
        self,
        organization_id: UUID,
        program_id: UUID,
        program: dict[str, Any],
        flow: dict[str, Any],
        contact_ids: list[str],
        scheduled_start_at: datetime,
        scheduled_stop_at: datetime | None,
        audience_ref: dict[str, Any] | None = None,
    ) -> None:
        """``contact_ids`` is the snapshot itself (small or live audiences), or empty
        with ``audience_ref`` = ``{audienceId, version}``: the snapshot is the audience
        as of that version, read in the background (a launch of a million contacts
        answers at once)."""
        self.organization_id = organization_id
        self.program_id = program_id
        self.program = program
        self.flow = flow
        self.contact_ids = contact_ids
        self.audience_ref = audience_ref
        self.snapshot_total: int | None = None if audience_ref else len(contact_ids)
        self.queued_upto = 0
        self.missing_contacts = 0
        self.scheduled_start_at = scheduled_start_at
        self.scheduled_stop_at = scheduled_stop_at
        self.status = "scheduled"
        self.calls_queued = False
        self.actual_start_at: datetime | None = None
        self.actual_end_at: datetime | None = None
        self.auto_pause_rules: list[dict[str, Any]] = list(program.get("autoPauseRules") or [])
        self.rules_epoch = 0
        self.resumed_count = 0
        self.created_at = self.modified_on

    @property
    def total_contacts(self) -> int:
        return (self.snapshot_total or 0) - self.missing_contacts

    @event("SnapshotTaken")
    def record_snapshot(self, total: int) -> None:
        """The audience as of the launch has ``total`` members (counted in the background)."""
        self.snapshot_total = total

    @event("QueueProgress")
    def record_queue_progress(self, upto: int, missing: int) -> None:
        """Calls queued for the snapshot's members up to ``upto``; ``missing`` of them
        were deleted contacts (they leave the total)."""
        self.queued_upto = upto
        self.missing_contacts += missing

    def record_joined(self, contact_ids: list[str]) -> None:
        """Contacts who joined the (live) audience while this execution runs: called too.
        Each is counted once, whatever the number of times the dispatcher sees it join
        before its call shows in the read model."""
        known = getattr(self, "joined_ids", frozenset())
        fresh = [c for c in dict.fromkeys(contact_ids) if c not in known]
        if fresh:
            self._joined(fresh)

    @event("ContactsJoined")
    def _joined(self, contact_ids: list[str]) -> None:
        self.joined = getattr(self, "joined", 0) + len(contact_ids)
        self.joined_ids = getattr(self, "joined_ids", frozenset()) | frozenset(contact_ids)

    @event("CallsQueued")
    def record_calls_queued(self, count: int) -> None:
        self.calls_queued = True

    def start(self, at: datetime) -> None:
        if self.status != "scheduled":
            raise InvalidStateTransition(f"Invalid state transition: {self.status} -> running")
        self._start(at)

    @event("Started")
    def _start(self, at: datetime) -> None:
        self.status = "running"
        self.actual_start_at = at

    def complete(self, at: datetime) -> None:
        if self.status not in ("running",):
            raise InvalidStateTransition(f"Invalid state transition: {self.status} -> completed")
        self._complete(at)

    @event("Completed")
    def _complete(self, at: datetime) -> None:
        self.status = "completed"
        self.actual_end_at = at

    def pause(self) -> None:
        if self.status != "running":
            raise InvalidStateTransition(f"Invalid state transition: {self.status} -> paused")
        self._pause()

    @event("Paused")
    def _pause(self) -> None:
        self.status = "paused"

    def resume(self) -> None:
        if self.status not in ("paused", "paused_threshold"):
            raise InvalidStateTransition(f"Invalid state transition: {self.status} -> running")
        self._resume()

    @event("Resumed")
    def _resume(self) -> None:
        self.status = "running"
        self.resumed_count += 1

    def stop(self, at: datetime) -> None:
        """``stopAt`` reached: the remaining contacts are not called (they are skipped)."""
        if self.status not in ACTIVE:
            raise InvalidStateTransition(f"Invalid state transition: {self.status} -> stopped")
        self._stop(at)

    @event("Stopped")
    def _stop(self, at: datetime) -> None:
        self.status = "stopped"
        self.actual_end_at = at

    def auto_pause(self, node_id: str, count: int, threshold: int) -> None:
        """An auto-pause rule fired: ``node_id`` ran ``count`` times (threshold ``threshold``)."""
        if self.status != "running":
            raise InvalidStateTransition(f"Invalid state transition: {self.status} -> paused_threshold")
        self._auto_pause(node_id, count, threshold)

    @event("AutoPaused")
    def _auto_pause(self, node_id: str, count: int, threshold: int) -> None:
        self.status = "paused_threshold"

    def set_auto_pause_rules(self, rules: list[dict[str, Any]]) -> None:
        self._set_rules(rules)

    @event("AutoPauseRulesSet")
    def _set_rules(self, rules: list[dict[str, Any]]) -> None:
        self.auto_pause_rules = rules
        self.rules_epoch += 1

    def cancel(self, at: datetime) -> None:
        if self.status not in ACTIVE:
            raise InvalidStateTransition(f"Invalid state transition: {self.status} -> cancelled")
        self._cancel(at)

    @event("Cancelled")
    def _cancel(self, at: datetime) -> None:
        self.status = "cancelled"
        self.actual_end_at = at
