"""The calls application: the hot Call streams, in their own events table so that call
traffic never waits on the campaigns table's lock. Saves are batched where one
request produces many events."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.app_base import App, mutate_all, select_events_of
from domain.call import Call
from domain.contact import Contact
from domain.execution import Execution

T = TypeVar("T")
QUEUE_BATCH = 2000  # calls per insert
UPDATE_STRIPES = 512  # locks that serialise one process's updates of the same call
# Calls kept in memory after an update, brought forward at the next. Enough for every
# call between its first and last callbacks: a kept call lives as long as its contact's
# key (30 s), 6,000 calls at 200 calls/s, and more when callbacks queue behind the dials
# (4,096 let a 6,000-call run with four workers evict 4,900 calls before their next
# callback, each then read again). About 3.2 KB a call: 52 MB at most.
UPDATED_KEPT = 16384


class CallsApp(App):
    name = "calls"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stripes = [threading.RLock() for _ in range(UPDATE_STRIPES)]
        self._kept: OrderedDict[UUID, tuple[Call, int, float]] = OrderedDict()  # (call, erasures seen, until)
        self._kept_lock = threading.Lock()
        self._kept_erasures = 0

    def queue_calls(
        self,
        execution: Execution,
        contacts: Iterable[Contact],
        not_before: datetime,
        country: str | None = None,
        timezone: str | None = None,
        zones: set[str | None] | None = None,
    ) -> int:
        """Create one Call per contact (idempotent: existing calls are left as they are),
        saved together (one insert for a dispatcher's batch of 2,000).

        The contact's time zone (its own, or the one its number rings in) is frozen on
        the call: calling hours are evaluated in it. ``zones``, if given, receives them."""
        from domain.call import call_id
        from domain.phone import timezone_for

        contacts = list(contacts)
        # Calls already there (a batch resumed after a crash, or done by another
        # dispatcher) are found in one query rather than by a failed insert each.
        existing = self.existing([call_id(execution.id, c.id) for c in contacts])
        calls: list[Call] = []
        for contact in contacts:
            if call_id(execution.id, contact.id) in existing:
                continue
            snapshot = contact.snapshot()
            if not snapshot.get("timezone"):
                snapshot["timezone"] = timezone_for(contact.phone, country, timezone) or timezone
            if zones is not None:
                zones.add(snapshot["timezone"])
            calls.append(
                Call(
                    execution.id,
                    contact.id,
                    execution.organization_id,
                    execution.program_id,
                    contact.phone,
                    snapshot,
                    not_before,
                )
            )
        count = 0
        for i in range(0, len(calls), QUEUE_BATCH):
            count += self._save_new(calls[i : i + QUEUE_BATCH])
        return count

    def existing(self, ids: list[UUID]) -> set[UUID]:
        """Which of these calls are stored (one query)."""
        return {
            s.originator_id if isinstance(s.originator_id, UUID) else UUID(str(s.originator_id))
            for s in select_events_of(self, ids)
        }

    def _save_new(self, calls: list[Call]) -> int:
        # Some may exist already (another dispatcher's batch): then the others one by one.
        return len(self.save_all_or_each(calls))

    def call(self, id_: UUID | str) -> Call:
        c = self.repository.get(UUID(str(id_)))
        assert isinstance(c, Call)
        return c

    def find(self, id_: UUID | str) -> Call | None:
        try:
            return self.call(id_)
        except (AggregateNotFoundError, ValueError):
            return None

    def update(self, id_: UUID | str, change: Callable[[Call], T], attempts: int = 20) -> T:
        """Load, change, save; on a concurrent append (optimistic concurrency) do it again.

        Provider callbacks for one call can arrive at the same moment; each is applied
        to the latest state, and duplicates then find nothing to do. Within a process
        they take turns (a lock per call, striped): a ringing callback and the voice
        request of one call arrive together, and racing to the same version made a third
        of the webhooks load, run and save twice. Other processes' saves still conflict
        and are retried here.

        The Call an update leaves is kept (under that lock, so no two threads ever hold
        it), and the next update of the call starts from it without reading the stream:
        the save is optimistic (the events' unique (stream, version) key), so a save made
        from a kept call that misses another process's events conflicts, and the update
        loads the stream and runs again. Reading the events stored since, to bring it
        forward first, found none in 9,000 of 9,000 updates of the calls benchmark (a
        round trip each, three a call). A change that finds nothing to do on a kept call is
        only trusted once the stream has nothing newer, and one that fails on it runs again
        on the stream as stored. A save that fails otherwise drops the kept call. A kept call holds personal data opened with its contact's key, so
        it is kept no longer than the key store keeps that key, and none is kept once this
        process has seen an erasure since."""
        key = id_ if isinstance(id_, UUID) else UUID(str(id_))
        with self._stripes[hash(key) % UPDATE_STRIPES]:
            return self._update(key, change, attempts)

    def _update(self, id_: UUID, change: Callable[[Call], T], attempts: int) -> T:
        call, current = self._take(id_)
        for n in range(attempts):
            try:
                result = change(call)
            except Exception:
                if current:
                    raise
                call, current = self.call(id_), True  # refused on the kept state: on the stored one?
                continue
            if not call.pending_events:
                if not current:  # nothing to do on the kept state: and on the stored one?
                    current = True
                    newer = list(self.repository.event_store.get(id_, gt=call.version))
                    if newer:
                        call = mutate_all(call, newer)
                        continue
                self._keep(call)
                return result
            try:
                self.save(call)
            except IntegrityError:
                if current:  # a race with another process's save: let it finish
                    time.sleep(0.005 * (n + 1))
                call, current = self.call(id_), True
                continue
            self._keep(call)
            return result
        raise RuntimeError(f"could not append to call {id_} after {attempts} attempts")

    def _take(self, id_: UUID) -> tuple[Call, bool]:
        """The call as this process left it, if it kept it (False: not checked against
        the stream), else as stored (True)."""
        with self._kept_lock:
            kept = self._kept.pop(id_, None)
        if kept is not None:
            call, erasures, until = kept
            keys = getattr(self.mapper, "keystore", None)
            if keys is None or (keys.forgets == erasures and time.monotonic() < until):
                return call, False
        return self.call(id_), True

    def erasures_seen(self) -> int:
        keys = getattr(self.mapper, "keystore", None)
        return keys.forgets if keys is not None else 0

    def hand_over(self, call: Call, erasures_at_load: int) -> None:
        """Keep ``call``, just saved, for the next ``update`` of it (as an update keeps
        the call it leaves): the caller must not touch it again. The dialer hands over
        the claimed call before it dials, so recording the dial reads nothing (or the
        whole stream, if the provider's first callbacks were stored first: the save of
        the dial then conflicts). Not kept if
        this process has seen an erasure since it was loaded (``erasures_seen`` then)."""
        if not call.pending_events and self.erasures_seen() == erasures_at_load:
            with self._stripes[hash(call.id) % UPDATE_STRIPES]:
                self._keep(call)

    def _keep(self, call: Call) -> None:
        keys = getattr(self.mapper, "keystore", None)
        erasures, ttl = (keys.forgets, float(keys.ttl)) if keys is not None else (0, 3600.0)
        with self._kept_lock:
            if erasures != self._kept_erasures:
                self._kept.clear()  # an erasure seen since: nothing opened before it stays
                self._kept_erasures = erasures
            self._kept[call.id] = (call, erasures, time.monotonic() + ttl)
            if len(self._kept) > UPDATED_KEPT:
                self._kept.popitem(last=False)


def snapshot_of(execution: Execution) -> dict[str, Any]:
    return execution.program
