"""Group commit: the saves that a process's threads make at the same moment share one
transaction.

Every save to an application's events table takes eventsourcing's table lock (it keeps
notification ids in commit order, so that projections never skip an event), notifies and
flushes its commit. Under load the saves of one process queue on that lock one after the
other, each paying the lock, the notification, the commit's flush and its round trips.
Here the first thread to save becomes the leader: while its transaction runs, the saves
of other threads queue; when it is done it hands the queue to the first of them, who
writes them all in one transaction (the leader/follower scheme of databases' own group
commit). Two saves of one stream never share a transaction: the later goes after.
Nothing waits on a timer: a save that finds no transaction running goes at once,
so a lone save costs what it did.

A save keeps its own outcome. When the shared transaction fails (a save conflicts with
one of another process, or anything else), the batch is written again in halves, and so
on, until the wrong save is alone: only it fails, with its own error (``IntegrityError``
for a conflict, which the application turns into a reload and retry as before)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MAX_BATCH = 64  # events in one shared transaction (a save larger than this still goes whole)


class _Save:
    __slots__ = ("done", "error", "items", "lead", "result")

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items
        self.done = threading.Event()
        self.lead = False
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit(Generic[T]):
    """``append(items) -> [one id an item] | None`` writes items in one transaction (None:
    it cannot, the caller takes another way); ``submit`` does the same, sharing the
    transaction with the saves other threads submit meanwhile. ``key(item)``: what two
    saves must not both hold to share a transaction (an event's stream). Figures: docs/PERFORMANCE.md."""

    def __init__(
        self,
        append: Callable[[Sequence[T]], list[int] | None],
        max_batch: int = MAX_BATCH,
        key: Callable[[T], Any] | None = None,
    ) -> None:
        self._append = append
        self._key = key
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Save] = []
        self._busy = False
        self.transactions = 0  # shared transactions committed (for tests and benchmarks)
        self.saves = 0  # saves written through them

    def submit(self, items: Sequence[T]) -> list[int] | None:
        me = _Save(items)
        with self._lock:
            self._queue.append(me)
            if self._busy:
                leader = False
            else:
                self._busy = leader = True
        if not leader:
            me.done.wait()
            if not me.lead:
                return me.outcome()
        # Leading: the queue's head is always the leader, so its own save is in the batch.
        with self._lock:
            batch, size = [], 0
            while self._queue and (not batch or size + len(self._queue[0].items) <= self.max_batch):
                size += len(self._queue[0].items)
                batch.append(self._queue.pop(0))
        try:
            self._run(batch)
        except BaseException as exc:  # interrupted: the saves it did not write fail with it
            for save in batch:
                if save.result is None and save.error is None:
                    save.error = exc
            raise
        finally:
            with self._lock:
                if self._queue:
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.done.set()
                else:
                    self._busy = False
            for save in batch:
                if save is not me:
                    save.done.set()
        return me.outcome()

    def _run(self, batch: list[_Save]) -> None:
        # Saves that touch a key (a stream) already in the batch would conflict with it
        # for certain (two callbacks of one call, both loaded at one version): they go
        # after it, on their own.
        first: list[_Save] = []
        later: list[_Save] = []
        if self._key is None:
            first = batch
        else:
            seen: set[Any] = set()
            for save in batch:
                keys = {self._key(item) for item in save.items}
                if keys.isdisjoint(seen):
                    seen |= keys
                    first.append(save)
                else:
                    later.append(save)
        self._write(first)
        for save in later:
            self._write([save])

    def _write(self, batch: list[_Save]) -> None:
        if len(batch) > 1:
            items = [item for save in batch for item in save.items]
            try:
                ids = self._append(items)
            except Exception:  # noqa: BLE001 - found again below, by the save that caused it
                ids = None
            if ids is None:
                # One save was wrong (a conflict with another process, a stream of an
                # organization unknown here): halves again, so only it fails alone.
                half = len(batch) // 2
                self._write(batch[:half])
                self._write(batch[half:])
                return
            at = 0
            for save in batch:
                save.result = ids[at : at + len(save.items)]
                at += len(save.items)
            self.transactions += 1
            self.saves += len(batch)
            return
        for save in batch:
            try:
                save.result = self._append(save.items)
            except BaseException as exc:  # noqa: BLE001 - handed to the saving thread
                save.error = exc
            else:
                self.transactions += 1
                self.saves += 1
