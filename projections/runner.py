"""Runs a projection by polling the notification logs of the applications it follows.

Polling (with the library's ``select_notifications`` and tracking) works the same on the
embedded SQLite store, which has no subscriptions, and on PostgreSQL, where it cannot
hang on a dead LISTEN connection. When a projection follows several applications,
each round reads the later application's batch first and then catches up fully on the
earlier ones, so a Call event is never applied before the Execution event it follows.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, Protocol, Self
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Notification, Tracking
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from projections.store import HeldOff

log = logging.getLogger("gomobile.projections")

IDLE_ROUND = 1.0  # seconds: a runner with nothing new still makes a round this often
CATCH_UP_BATCH = 5000  # events per transaction when catching up with a whole log
# A rebuild shares out the last log among processes when it has at least this many events
# to read (below it, starting the processes costs more than they save).
PARALLEL_MIN_EVENTS = 50_000
_PARTITION = re.compile(r"^(?P<app>.+)#(?P<k>\d+)/(?P<n>\d+):(?P<start>\d+)-(?P<stop>\d+)$")


class View(Protocol):
    """A read model: applies one event inside a transaction (see projections.store)."""

    def handle(self, c: Any, event: Any) -> None: ...

    def apply_batch(
        self, items: Sequence[tuple[Any, Tracking]], handle: Callable[[Any, Any], None], last: Tracking | None = None
    ) -> None: ...

    def max_tracking_id(self, application_name: str) -> int | None: ...


class DecodeCache:
    """Events decoded by one runner, kept a few seconds for the others of the process.

    Each runner reads the logs on its own, and several views want the same events (the
    directory and the reports view both apply every contact event): without this, each
    decodes (and on the contacts log decrypts) every one of them again. Entries are keyed
    by notification id and live ``ttl`` seconds. They are all dropped when the process's
    contact keys forget one (a runner read past an erasure): what is decoded after that is
    decoded again, and reads erased. Views must not change the events they are given
    (none does: an event is a fact)."""

    def __init__(self, size: int = 20_000, ttl: float = 10.0) -> None:
        self.size = size
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[int, tuple[float, Any]] = {}
        self._epoch = 0
        self.hits = 0

    def decode(self, app: Application[Any], notes: list[Any]) -> list[Any]:
        keystore = getattr(app.mapper, "keystore", None)
        epoch = keystore.forgets if keystore is not None else 0
        now = time.monotonic()
        entries = self._entries
        if epoch != self._epoch:
            with self._lock:
                self._entries = entries = {}
                self._epoch = epoch
        out: list[Any] = []
        made: list[tuple[int, Any]] = []
        to_domain_event = app.mapper.to_domain_event
        for n in notes:
            found = entries.get(n.id)
            if found is not None and found[0] > now:
                out.append(found[1])
                self.hits += 1
            else:
                event = to_domain_event(n)
                out.append(event)
                made.append((n.id, event))
        if made:
            with self._lock:
                if (keystore.forgets if keystore is not None else 0) == self._epoch == epoch:
                    if len(self._entries) + len(made) > self.size:
                        self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                        if len(self._entries) + len(made) > self.size:
                            self._entries = {}
                    expires = now + self.ttl
                    self._entries.update((i, (expires, e)) for i, e in made)
        return out


def known_topics() -> list[str]:
    """The topics of every domain event class of this platform (module ``domain.*``)."""
    from eventsourcing.domain import DomainEvent
    from eventsourcing.utils import get_topic

    seen: set[type] = set()
    out: set[str] = set()
    stack = [DomainEvent]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
                if sub.__module__.startswith("domain."):
                    out.add(get_topic(sub))
    return sorted(out)


def select_notifications(
    recorder: Any,
    start: int,
    limit: int,
    stop: int | None = None,
    topics: Sequence[str] = (),
    part: tuple[int, int] | None = None,
) -> list[Notification]:
    """The recorder's ``select_notifications``; on PostgreSQL the same query read as tuples
    in binary: the library's rows are dicts made in Python (with every value loaded as
    text), which was a quarter of a rebuild's time (150,000 rows/s against 267,000).

    ``part`` (k, n), PostgreSQL only: only the streams of partition k of n, the k-th of n
    equal ranges of ids (uuid4 or uuid5: uniform). A range, rather than a hash of the id
    modulo n: the planner estimates it from the column's statistics, where it took a hash
    to keep a row in 200 and planned each page as a parallel query (17 ms, against 7)."""
    if not isinstance(recorder, PostgresApplicationRecorder):
        if part is not None:
            raise NotImplementedError("reading a partition of a log needs PostgreSQL")
        return list(recorder.select_notifications(start=start, limit=limit, stop=stop, topics=topics))
    shape = (recorder.datastore.schema, recorder.events_table_name, stop is not None, bool(topics), part is not None)
    sql = _SELECT_SQL.get(shape)
    if sql is None:
        sql = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} "
            "WHERE notification_id >= %s" + (" AND notification_id <= %s" if stop is not None else "")
            + (" AND topic = ANY(%s)" if topics else "")
            + (" AND originator_id >= %s AND originator_id <= %s" if part is not None else "")
            + " ORDER BY notification_id LIMIT %s"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        _SELECT_SQL[shape] = sql
    params: list[Any] = [start]
    if stop is not None:
        params.append(stop)
    if topics:
        params.append(list(topics))
    if part is not None:
        params += partition_range(*part)
    params.append(limit)
    with recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row, binary=True) as c:
        c.execute(sql, params, prepare=True)
        return [Notification(r[1], r[2], r[3], r[4], r[0]) for r in c.fetchall()]


_SELECT_SQL: dict[tuple[str, str, bool, bool, bool], Composed] = {}


def partition_range(k: int, n: int) -> tuple[UUID, UUID]:
    """The first and last stream id of partition ``k`` of ``n``."""
    if not 0 <= k < n:
        raise ValueError(f"no partition {k} of {n}")
    return UUID(int=(k << 128) // n), UUID(int=(((k + 1) << 128) // n) - 1)


def decode_cache(app: Application[Any]) -> DecodeCache:
    """The DecodeCache of ``app`` (one per application object, shared by its runners)."""
    cache = app.__dict__.get("_decode_cache")
    if cache is None:
        cache = app.__dict__.setdefault("_decode_cache", DecodeCache())
    return cache


_heads_changed = threading.Condition()  # notified when a HeadWatch sees its log grow


class HeadWatch:
    """The head (last notification id) of one application's log, read every ``interval``
    by one thread for all the runners of the process. An idle runner sleeps until a log
    it follows grows, instead of reading its position and each log's head every round:
    that was four queries a round, twenty rounds a second, for each of a projector's
    runners (122 ms of CPU a second with nothing to do). The thread runs while a runner
    uses it (``watch_heads``), and stops before the last one returns: never after the
    application's store is closed."""

    def __init__(self, app: Application[Any], interval: float) -> None:
        self.app = app
        self.head = 0
        self.users = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), name=f"head-{app.name}", daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        recorder = self.app.recorder
        while True:
            try:
                head = recorder.max_notification_id() or 0
            except Exception:  # the runners' own rounds report the database's failures
                log.debug("reading the head of a log failed", exc_info=True)
                head = self.head
            if head != self.head:
                with _heads_changed:
                    self.head = head
                    _heads_changed.notify_all()
            if self._stop.wait(interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@contextmanager
def watch_heads(apps: Sequence[Application[Any]], interval: float) -> Iterator[list[HeadWatch]]:
    """The HeadWatch of each of ``apps`` (one per application object, shared by its
    runners), for as long as the caller runs."""
    with _heads_changed:
        watches = []
        for app in apps:
            watch = app.__dict__.get("_head_watch")
            if watch is None:
                watch = app.__dict__["_head_watch"] = HeadWatch(app, interval)
            watch.users += 1
            watches.append(watch)
    try:
        yield watches
    finally:
        last = []
        with _heads_changed:
            for watch in watches:
                watch.users -= 1
                if watch.users == 0:
                    del watch.app.__dict__["_head_watch"]
                    last.append(watch)
        for watch in last:
            watch.stop()


class _CollectPerBatch:
    """The cyclic garbage collector during a catch-up: run between batches, not within.

    Left automatic, it ran every 50,000 allocations (``tune_gc``), that is several times
    within each batch, and each time went over the batch's objects, all alive then (a page
    of events, their rows): 8% of a rebuild's CPU. Here it is off while a batch is applied;
    after each one the young generation is collected (what the batch left: a few cache
    entries), and the whole heap every 20 batches. Nested uses keep the outer's state."""

    def __enter__(self) -> Self:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._batches = 0
        return self

    def batch_done(self) -> None:
        self._batches += 1
        gc.collect(2 if self._batches % 20 == 0 else 0)

    def __exit__(self, *exc: object) -> None:
        if self._was_enabled:
            gc.enable()


class ProjectionRunner:
    def __init__(
        self,
        name: str,
        view: View,
        upstreams: Sequence[Application[Any]],
        batch_size: int = 500,
        poll_interval: float = 0.05,
    ) -> None:
        self.name = name
        self.view = view
        self.upstreams = list(upstreams)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._topics: list[str] | None | bool = False  # False: not worked out yet
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._share_decodes = True
        self._partitions_checked = False
        # Starts another process applying one partition of a rebuild (its name, batch
        # size) and returns it (``join``, ``exitcode``); set where the runner can be made
        # again in another process (infrastructure.bootstrap.rebuild_spawner).
        self.spawn_partition: Callable[[str, int], Any] | None = None
        # A live runner (the projector's loop) gives way to a rebuild of its read model,
        # in any process: each batch it applies is guarded (ViewMixin.live_guard).
        self.live = False

    def position(self, app: Application[Any]) -> int:
        return self.view.max_tracking_id(app.name) or 0

    def _read(
        self, app: Application[Any], after: int, limit: int, until: int | None = None, decode: bool = True,
        part: tuple[int, int] | None = None,
    ) -> tuple[list[Any], Tracking | None]:
        """The next events after ``after`` that the view wants, decoded (or, ``decode``
        False, their notifications), and the tracking of the last notification read
        (events of other topics are skipped undecoded, but the position still moves past them);
        with ``part``, only those of that partition's streams (``select_notifications``)."""
        topics = self.topics()
        if topics is None and part is None:
            notes = select_notifications(app.recorder, after + 1, limit)
            if until is not None:
                notes = [n for n in notes if n.id <= until]
            if not notes:
                return [], None
            last = notes[-1].id
        else:
            # Only the topics the view wants (the streams of ``part``) are read. The log's
            # head is read first: ids are committed in order (inserts hold the table's lock),
            # so once fewer than ``limit`` come back, everything up to the head has been seen.
            head = app.recorder.max_notification_id() or 0
            stop = head if until is None else min(head, until)
            if stop <= after:
                return [], None
            wanted_any = topics is None or bool(topics)
            notes = select_notifications(app.recorder, after + 1, limit, stop, topics or (), part) if wanted_any else []
            last = notes[-1].id if len(notes) >= limit else stop
        wants = getattr(self.view, "wants", None)
        wanted = notes if wants is None else [n for n in notes if wants(n.topic)]
        prefetch = getattr(app.mapper, "prefetch", None)
        if prefetch is not None:  # contact keys (crypto-shredding): the page's in one query
            prefetch(self._opened(wanted), notes)
        return (self._decode(app, wanted) if decode else wanted), Tracking(app.name, last)

    def _personal(self) -> frozenset[str] | None:
        """The topics whose personal fields this runner opens (None: all). Only when its
        decodes are its own (a catch-up): the shared DecodeCache's events must be whole."""
        return None if self._share_decodes else getattr(self.view, "PERSONAL", None)

    def _opened(self, notes: list[Any]) -> list[Any]:
        personal = self._personal()
        return notes if personal is None else [n for n in notes if n.topic in personal]

    def topics(self) -> list[str] | None:
        """The topics to read (None: all): those of the platform's events that the view
        wants, when it wants fewer than all. Most views want few of the contacts log's
        events, and a large import is 100,000 of them."""
        if self._topics is False:
            wants = getattr(self.view, "wants", None)
            topics = None
            if wants is not None:
                known = known_topics()
                wanted = [t for t in known if wants(t)]
                topics = wanted if len(wanted) < len(known) else None
            self._topics = topics
        return self._topics  # type: ignore[return-value]

    def _decode(self, app: Application[Any], notes: list[Any]) -> list[tuple[Any, Tracking]]:
        if self._share_decodes:
            events = decode_cache(app).decode(app, notes)
        else:  # a catch-up (a rebuild) reads far ahead of every other runner: nothing to share
            to_domain_event = app.mapper.to_domain_event
            personal = self._personal()
            if personal is None or not hasattr(app.mapper, "keystore"):
                events = [to_domain_event(n) for n in notes]
            else:  # personal fields opened only where the view reads them
                events = [to_domain_event(n, n.topic in personal) for n in notes]
        name = app.name
        return [(e, Tracking(name, n.id)) for e, n in zip(events, notes, strict=True)]

    def _guarded(self, name: str | None, after: int | None) -> Any:
        """A live runner's batch read from position ``after`` of ``name``: applied only if no
        rebuild holds the read model and the position has not moved (else ``HeldOff``)."""
        guard = getattr(self.view, "live_guard", None)
        return guard(name, after) if self.live and guard is not None else nullcontext()

    def _apply(self, items: list[tuple[Any, Tracking]], last: Tracking, after: int) -> None:
        with self._guarded(last.application_name, after):
            if items and items[-1][1].notification_id == last.notification_id:
                self.view.apply_batch(items, self.view.handle)
            else:
                self.view.apply_batch(items, self.view.handle, last)

    def rebuild(self, progress: Callable[[int], None] | None = None, processes: int = 1) -> int:
        """Drop the read model and apply every event again (``catch_up``), holding it
        against its live runners in every process meanwhile: they apply nothing until the
        rebuild is done, then go on from where it left the read model."""
        with self.view.held_for_rebuild():  # type: ignore[attr-defined]
            self.view.reset()  # type: ignore[attr-defined]
            return self.catch_up(progress, processes=processes)

    def _catch_up(self, app: Application[Any], until: int | None = None, batch_size: int | None = None) -> int:
        done = 0
        while True:
            pos = self.position(app)
            if until is not None and pos >= until:
                return done
            batch, last = self._read(app, pos, batch_size or self.batch_size, until)
            if last is None:
                return done
            self._apply(batch, last, pos)
            done += last.notification_id - pos

    def run_once(self, batch_size: int | None = None) -> int:
        """One round over every upstream; returns the number of events read (applied or skipped)."""
        done = 0
        last_app = self.upstreams[-1]
        if not self._partitions_checked:  # a rebuild in several processes that did not end
            done += self.finish_partitions(batch_size or CATCH_UP_BATCH)
            if self._partitions_checked is not True:
                return done  # another process is applying a part: the last log waits
        pos = self.position(last_app)
        pending, last = self._read(last_app, pos, batch_size or self.batch_size, decode=False)
        for app in self.upstreams[:-1]:
            done += self._catch_up(app, batch_size=batch_size)
        if last is not None:
            # Decoded after the earlier logs: a contact erased meanwhile reads erased here.
            self._apply(self._decode(last_app, pending), last, pos)
            done += last.notification_id - pos
        return done

    def catch_up(
        self, progress: Callable[[int], None] | None = None, batch_size: int = CATCH_UP_BATCH, processes: int = 1
    ) -> int:
        """Apply everything recorded so far (a rebuild reads the whole log: in fewer,
        larger transactions than the live loop's, 1.6 times faster on 1,000,000 events).
        With ``processes`` > 1, the last log is shared out among that many processes
        (``catch_up_in_partitions``)."""
        total = 0
        self._share_decodes = False
        try:
            self._partitions_checked = False
            total += self.finish_partitions(batch_size)
            if processes > 1:
                total += self.catch_up_in_partitions(processes, batch_size, progress)
            with _CollectPerBatch() as collector:
                while True:
                    n = self.run_once(max(batch_size, self.batch_size))
                    collector.batch_done()
                    total += n
                    if progress and n:
                        progress(total)
                    if n == 0:
                        return total
        finally:
            self._share_decodes = True

    # -- a rebuild in several processes --------------------------------------------------
    #
    # A read model whose changes from different streams of its last log commute (counters
    # that add, rows of one stream: ``PARTITIONED_REBUILD`` on the view) is rebuilt by
    # several processes at once, each applying the streams of one partition of the log
    # between two positions, in its own transactions, each tracked under its own name
    # ``<application>#<k>/<n>:<start>-<stop>``. The earlier logs (an Execution's events)
    # are caught up first, as the one-process rebuild does before its first batch of calls.
    # When every part has reached ``stop``, the parts' positions become the log's own
    # position, in one transaction. A part that stopped (a process killed) is finished by
    # the next catch-up or the next live round, in its own process: until then the live
    # runner does not read the last log past ``start`` (what the view holds of it is partial).

    def catch_up_in_partitions(
        self, processes: int, batch_size: int = CATCH_UP_BATCH, progress: Callable[[int], None] | None = None
    ) -> int:
        last_app = self.upstreams[-1]
        if (
            self.spawn_partition is None
            or not getattr(self.view, "PARTITIONED_REBUILD", False)
            or not isinstance(last_app.recorder, PostgresApplicationRecorder)
        ):
            return 0
        start = self.position(last_app)
        stop = last_app.recorder.max_notification_id() or 0
        if stop - start < PARALLEL_MIN_EVENTS:
            return 0
        done = 0
        for app in self.upstreams[:-1]:  # an Execution's events before its calls'
            done += self._catch_up(app, batch_size=batch_size)
        names = [f"{last_app.name}#{k}/{processes}:{start}-{stop}" for k in range(processes)]
        self.view.start_partitions([Tracking(name, start) for name in names])
        children = [self.spawn_partition(name, batch_size) for name in names[1:]]
        try:
            # Each part reads the whole range of positions (the events of its streams): how far
            # this one got is how far the rebuild got, all parts going at about one pace.
            report = None if progress is None else (lambda n: progress(done + n))
            self.catch_up_partition(names[0], batch_size, report)
        finally:
            for child in children:
                child.join()
        failed = [name for name, child in zip(names[1:], children, strict=True) if child.exitcode != 0]
        if failed:
            raise RuntimeError(f"rebuild of {self.name}: the processes of {', '.join(failed)} failed "
                               "(the next catch-up or live round finishes their parts)")  # fmt: skip
        self.view.merge_partitions(names, Tracking(last_app.name, stop))
        return done + stop - start

    def partitions(self) -> list[str]:
        """The parts of a rebuild of the last log not merged yet."""
        if not getattr(self.view, "PARTITIONED_REBUILD", False):
            return []  # never rebuilt in parts
        prefix = f"{self.upstreams[-1].name}#"
        return sorted(n for n in self.view.tracked_names(prefix) if _PARTITION.match(n))

    def finish_partitions(self, batch_size: int = CATCH_UP_BATCH) -> int:
        """Apply what the parts of an unfinished rebuild have left, in this process, and
        merge them. Parts another process is applying are left to it: then the last log
        must not be read yet, and ``_partitions_checked`` stays False."""
        names = self.partitions()
        done = 0
        if names:
            busy = False
            for name in names:
                n = self.catch_up_partition(name, batch_size, wait=False)
                if n is None:
                    busy = True
                else:
                    done += n
            if busy:
                return done
            m = _PARTITION.match(names[0])
            assert m is not None
            with self._guarded(None, None):
                self.view.merge_partitions(names, Tracking(self.upstreams[-1].name, int(m["stop"])))
        self._partitions_checked = True
        return done

    def catch_up_partition(
        self, name: str, batch_size: int = CATCH_UP_BATCH, progress: Callable[[int], None] | None = None,
        wait: bool = True,
    ) -> int | None:
        """Apply part ``name`` of a rebuild up to its ``stop``; returns the events read (None
        when ``wait`` is False and another process holds the part)."""
        m = _PARTITION.match(name)
        if m is None or m["app"] != self.upstreams[-1].name:
            raise ValueError(f"not a part of a rebuild of {self.upstreams[-1].name}: {name!r}")
        app = self.upstreams[-1]
        part, stop = (int(m["k"]), int(m["n"])), int(m["stop"])
        with self.view.partition_lock(name, wait) as held, _CollectPerBatch() as collector:
            if not held:
                return None
            pos = self.view.max_tracking_id(name) or int(m["start"])
            done = 0
            sharing, self._share_decodes = self._share_decodes, False
            try:
                while pos < stop:
                    items, read = self._read(app, pos, batch_size, stop, part=part)
                    last = read.notification_id if read is not None else stop
                    with self._guarded(name, pos):
                        self.view.apply_batch(items, self.view.handle, Tracking(name, last))
                    collector.batch_done()
                    done += last - pos
                    pos = last
                    if progress is not None:
                        progress(done)
            finally:
                self._share_decodes = sharing
            return done

    def lag(self) -> dict[str, int]:
        return {app.name: (app.recorder.max_notification_id() or 0) - self.position(app) for app in self.upstreams}

    def _loop(self) -> None:
        self.live = True
        with watch_heads(self.upstreams, self.poll_interval) as watches:
            self._rounds(watches)

    def _rounds(self, watches: list[HeadWatch]) -> None:
        failures = 0
        while not self._stop.is_set():
            seen = [w.head for w in watches]  # at most the heads this round reads up to
            try:
                n = self.run_once()
                failures = 0
            except HeldOff as exc:  # a rebuild of this read model runs: wait for it
                log.info("projection %s waits: %s", self.name, exc)
                self._partitions_checked = False  # parts a rebuild that dies leaves: finished first
                self._stop.wait(IDLE_ROUND)
                continue
            except Exception as exc:  # keep the read side alive; the next round retries
                failures += 1
                self.error = exc
                log.exception("projection %s failed (attempt %s)", self.name, failures)
                n = 0
                time.sleep(min(5.0, 0.1 * failures))
            if n < self.batch_size:  # all caught up: until a log grows past what was read
                with _heads_changed:
                    _heads_changed.wait_for(
                        lambda seen=seen: self._stop.is_set() or any(w.head > h for w, h in zip(watches, seen, strict=True)),
                        timeout=IDLE_ROUND,
                    )

    def start(self) -> ProjectionRunner:
        self._thread = threading.Thread(target=self._loop, name=f"projection-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with _heads_changed:
            _heads_changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
