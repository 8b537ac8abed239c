"""Read-model storage on either backend, built on eventsourcing's tracking recorders so
that a view's rows and its tracking position are written in one transaction (each
event applied exactly once, and any view can be dropped and rebuilt from zero).

SQL is written once with ``?`` placeholders and portable types; on PostgreSQL the
placeholders become ``%s``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from eventsourcing.persistence import InfrastructureFactory, Tracking, TrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment

# PostgreSQL advisory lock class of a read model held by its rebuild (7420003: the parts).
REBUILD_LOCK = 7420004

# Seconds between two looks of a view at its tables' statistics (``keep_statistics``).
STATISTICS_EVERY = 10.0
_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)", re.IGNORECASE)


class HeldOff(Exception):
    """A live runner's batch was not applied, and nothing of it was written: a rebuild holds
    the read model, or the view's position moved since the batch was read (a rebuild ran
    meanwhile). The next round reads again from the position as it stands."""


class ViewMixin:
    """Methods shared by every read model, mixed into the backend's tracking recorder."""

    TABLES: Sequence[str] = ()
    DROP: Sequence[str] = ()
    datastore: Any

    @property
    def is_postgres(self) -> bool:
        return isinstance(self, PostgresTrackingRecorder)

    def q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.is_postgres else sql

    @contextmanager
    def transaction(self, commit: bool = True) -> Iterator[Any]:
        guard = self._take_guard() if commit else None
        if guard is None:
            with self.datastore.transaction(commit=commit) as c:
                yield c
            return
        with self._shared_hold(), self.datastore.transaction(commit=True) as c:
            self._check_guard(c, *guard)
            yield c

    # -- a rebuild against the live runners ------------------------------------------------
    #
    # A rebuild drops the read model and applies every event again, in many transactions
    # (and maybe several processes). A live runner of the same read model (the projector,
    # in this process or another) must not write in between: it would apply events to the
    # emptied tables that the rebuild then applies again, or move the position past what
    # the rebuild has not applied yet. So the rebuild holds the read model exclusively for
    # its whole run (``held_for_rebuild``), and each live batch's transaction first takes
    # it shared, without waiting, and checks that the position is still the one the batch
    # was read from (``live_guard``): otherwise the batch is refused (``HeldOff``) and
    # nothing of it is written. The rebuild waits for a live batch in progress to commit.
    # On PostgreSQL the hold is an advisory lock (released with its session, however the
    # rebuild ends); on a SQLite file, a lock on a file beside it (released with the
    # process). An in-memory SQLite store belongs to one process: nothing to hold.

    def _hold_name(self) -> str:
        return getattr(self, "tracking_table_name", "tracking")

    def _lock_path(self) -> str | None:
        pool = getattr(self.datastore, "pool", None)
        if self.is_postgres or pool is None or getattr(pool, "is_sqlite_memory_mode", True):
            return None
        return f"{pool.db_name}.{self._hold_name()}.rebuild-lock"

    @contextmanager
    def held_for_rebuild(self) -> Iterator[None]:
        """Hold this read model for a rebuild: live runners of it (any process) apply
        nothing until the block ends. Waits for a live batch in progress to commit."""
        name = self._hold_name()
        if self.is_postgres:
            with self.datastore.get_connection() as conn:
                conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (REBUILD_LOCK, name))
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (REBUILD_LOCK, name))
                    conn.commit()
            return
        path = self._lock_path()
        if path is None:
            yield
            return
        with open(path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def rebuilding(self) -> bool:
        """Whether a rebuild holds this read model now (``gomobile projections status``)."""
        if self.is_postgres:
            row = self.one(
                "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND mode = 'ExclusiveLock' AND classid = ?::oid AND objid = hashtext(?)::oid AND objsubid = 2",
                (REBUILD_LOCK, self._hold_name()),
            )
            return bool(row and row["n"])
        path = self._lock_path()
        if path is None:
            return False
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    @contextmanager
    def live_guard(self, name: str | None, after: int | None) -> Iterator[None]:
        """The next transaction that commits, on this thread, is a live runner's batch:
        refused (``HeldOff``) while a rebuild holds the read model, or if the position
        tracked under ``name`` is no longer ``after`` (``name`` None: no position check)."""
        local = self.__dict__.get("_guard_local")
        if local is None:
            local = self.__dict__.setdefault("_guard_local", threading.local())
        local.guard = (name, after)
        try:
            yield
        finally:
            local.guard = None

    def _take_guard(self) -> tuple[str | None, int | None] | None:
        local = self.__dict__.get("_guard_local")
        guard = getattr(local, "guard", None) if local is not None else None
        if guard is not None:
            local.guard = None  # one batch, one transaction (after_batch's upkeep is not checked)
        return guard

    @contextmanager
    def _shared_hold(self) -> Iterator[None]:
        path = self._lock_path()
        if path is None:  # PostgreSQL: taken inside the transaction (_check_guard)
            yield
            return
        f: IO[str] | None = self.__dict__.get("_lock_file")
        if f is None:
            f = self.__dict__["_lock_file"] = open(path, "a+")  # noqa: SIM115 (kept open: one a view)
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HeldOff(f"{self._hold_name()}: a rebuild holds this read model") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

    def _check_guard(self, c: Any, name: str | None, after: int | None) -> None:
        if self.is_postgres:
            c.execute("SELECT pg_try_advisory_xact_lock_shared(%s, hashtext(%s)) AS held", (REBUILD_LOCK, self._hold_name()))
            row = c.fetchone()
            if not (row["held"] if isinstance(row, dict) else row[0]):
                raise HeldOff(f"{self._hold_name()}: a rebuild holds this read model")
        if name is not None:
            # Read after the hold is taken (a statement of its own: a fresh snapshot).
            table = self._hold_name()
            c.execute(self.q(f"SELECT MAX(notification_id) AS pos FROM {table} WHERE application_name = ?"), (name,))
            row = c.fetchone()
            pos = (row["pos"] if isinstance(row, dict) else row[0]) or 0
            if pos != (after or 0):
                raise HeldOff(f"{self._hold_name()}: {name} moved from {after} to {pos} since the batch was read")

    def ex(self, c: Any, sql: str, params: Sequence[Any] = ()) -> None:
        c.execute(self.q(sql), tuple(params))

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.transaction(commit=False) as c:
            c.execute(self.q(sql), tuple(params))
            return [dict(r) for r in c.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def fetch(self, c: Any, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        c.execute(self.q(sql), tuple(params))
        return [dict(r) for r in c.fetchall()]

    def select_in(self, c: Any, sql: str, keys: list[str]) -> list[dict[str, Any]]:
        """``sql`` with ``IN (?*)`` over ``keys``, read in one query: on PostgreSQL one array
        parameter (``= ANY``, so the statement text never changes), on SQLite chunks of 500
        placeholders. For a batch's reads up front (the reports, progress and call-history
        views)."""
        if not keys:
            return []
        if self.is_postgres:
            return self.fetch(c, sql.replace("IN (?*)", "= ANY(?)"), (keys,))
        rows: list[dict[str, Any]] = []
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows += self.fetch(c, sql.replace("?*", ", ".join("?" for _ in chunk)), chunk)
        return rows

    def create_view_tables(self) -> None:
        """Create the tables; if their definition changed since they were built, drop
        them and the tracking positions so that the runner rebuilds them from the events
        (a read model is disposable, the event log is the truth)."""
        version = hashlib.sha256("\n".join(self.TABLES).encode()).hexdigest()[:16]
        name = type(self).__name__.split("On")[0]
        table = getattr(self, "tracking_table_name", "tracking")
        with self.transaction() as c:
            c.execute("CREATE TABLE IF NOT EXISTS view_schema (name TEXT PRIMARY KEY, version TEXT NOT NULL)")
            found = self.fetch(c, "SELECT version FROM view_schema WHERE name = ?", (name,))
            if found and found[0]["version"] != version:
                for stmt in self.DROP:
                    c.execute(stmt)
                c.execute(f"DELETE FROM {table} WHERE application_name <> '__migration__'")
            for ddl in self.TABLES:
                c.execute(ddl)
            self.ex(
                c,
                "INSERT INTO view_schema (name, version) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                (name, version),
            )

    def apply_batch(
        self, items: Sequence[tuple[Any, Tracking]], handle: Callable[[Any, Any], None], last: Tracking | None = None
    ) -> None:
        """Apply events and advance the tracking position (to ``last`` when the batch read
        further than its last wanted event) in one transaction."""
        if not items and last is None:
            return
        with self.transaction() as c:
            run: list[Any] = []
            bulk: Callable[[Any, list[Any]], None] | None = None
            for event, _ in items:
                name = "_" + type(event).__qualname__.replace(".", "_")
                found = getattr(self, "bulk" + name, None)
                if run and found != bulk:
                    bulk(c, run)  # type: ignore[misc]
                    run = []
                if found is not None:
                    bulk = found
                    run.append(event)
                else:
                    handle(c, event)
            if run:
                bulk(c, run)  # type: ignore[misc]
            self._insert_tracking(c, last or items[-1][1])  # type: ignore[attr-defined]
        self.after_batch()

    # A view may handle a run of consecutive events of one type at once by defining
    # ``bulk_<Aggregate>_<Event>(cursor, events)`` beside ``on_<Aggregate>_<Event>``: a
    # launch records its calls as runs of thousands of ``Call.Created``, which then cost a
    # pipelined ``executemany`` each instead of round trips per call. The events of a run
    # are consecutive in the log, so the order of everything else is kept.

    def after_batch(self) -> None:
        """Called once a batch is committed (a view may do upkeep there)."""
        self.keep_statistics()

    _statistics_due = 0.0
    # Tables the view analyzes itself, on its own rule (the progress view's, at launch).
    ANALYZED_BY_VIEW: frozenset[str] = frozenset()

    def keep_statistics(self) -> None:
        """PostgreSQL: analyze this view's tables that have changed by as many rows as they
        hold (at least 1,000) since their last analysis, looking at most every
        ``STATISTICS_EVERY`` seconds.

        With autovacuum off (this project's CI server) or behind, a table created empty is
        never analyzed, and a prepared statement's generic plan made while it was small is
        kept for good: the reports view read a batch's visited nodes by a sequential scan
        of ``report_visits`` (24 ms a batch at 5,000 rows, the largest of PostgreSQL's
        costs in a run of 20,000 calls). An ANALYZE makes the cached plans be made again.
        A growing table is analyzed each time it doubles: enough for a plan's choice of
        index or scan. Autovacuum's own rule (a tenth changed) analyzed the call history's
        tables every ten seconds of such a run, 70 to 170 ms each, more than it saved."""
        if not self.is_postgres:
            return
        now = time.monotonic()
        if now < self._statistics_due:
            return
        self._statistics_due = now + STATISTICS_EVERY
        tables = [m.group(1).lower() for ddl in self.TABLES for m in [_TABLE.search(ddl)] if m]
        tables.append(getattr(self, "tracking_table_name", "tracking").lower())
        tables = [t for t in tables if t not in self.ANALYZED_BY_VIEW]
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class k ON k.oid = s.relid "
                "WHERE s.schemaname = current_schema() AND s.relname = ANY(%s) "
                "AND s.n_mod_since_analyze >= GREATEST(1000, k.reltuples) ORDER BY s.relname",
                (tables,),
            )
            stale = [r["relname"] if isinstance(r, dict) else r[0] for r in c.fetchall()]
            for table in stale:
                c.execute(f'ANALYZE "{table}"')

    # Views that only react through ``on_<Aggregate>_<Event>`` methods set this, so that the
    # runner does not decode the events they would ignore (most of the log, for most views).
    DISPATCH_BY_METHOD = False
    _wanted: dict[str, bool]

    def wants(self, topic: str) -> bool:
        """Whether an event of ``topic`` ("module:Class.Event") can change this view."""
        if not self.DISPATCH_BY_METHOD:
            return True
        cache = self.__dict__.setdefault("_wanted", {})
        found = cache.get(topic)
        if found is None:
            found = cache[topic] = hasattr(self, "on_" + topic.rsplit(":", 1)[-1].replace(".", "_"))
        return found

    # -- the parts of a rebuild in several processes (projections.runner) ------------------

    # Set by a view whose changes from different streams of its last log commute (counters
    # that add, rows that belong to one stream), and whose rows shared by several streams
    # are written in key order (two parts' transactions then never wait on each other in a
    # cycle): it may be rebuilt by several processes at once.
    PARTITIONED_REBUILD = False

    # The event topics whose personal fields (sealed under contacts' keys,
    # infrastructure/privacy.py) this view reads; None: any. A catch-up leaves the others
    # out of the events it decodes (no key lookup, no decryption, no parse): a third of a
    # progress rebuild's decoding. tests/integration/test_rebuild_in_parts.py holds each
    # view's rows equal to what it makes from events opened whole.
    PERSONAL: frozenset[str] | None = None

    def tracked_names(self, prefix: str) -> list[str]:
        """The tracked application names that start with ``prefix``."""
        table = getattr(self, "tracking_table_name", "tracking")
        rows = self.rows(f"SELECT DISTINCT application_name FROM {table} WHERE application_name LIKE ?", (prefix + "%",))
        return [r["application_name"] for r in rows if r["application_name"].startswith(prefix)]

    def start_partitions(self, trackings: Sequence[Tracking]) -> None:
        with self.transaction() as c:
            for tracking in trackings:
                self._insert_tracking(c, tracking)  # type: ignore[attr-defined]

    def merge_partitions(self, names: Sequence[str], tracking: Tracking) -> None:
        """The parts' positions become ``tracking``, in one transaction."""
        table = getattr(self, "tracking_table_name", "tracking")
        with self.transaction() as c:
            c.execute(self.q(f"DELETE FROM {table} WHERE application_name IN ({', '.join('?' for _ in names)})"), tuple(names))
            self._insert_tracking(c, tracking)  # type: ignore[attr-defined]

    @contextmanager
    def partition_lock(self, name: str, wait: bool = True) -> Iterator[bool]:
        """Hold the right to apply part ``name`` (a PostgreSQL advisory lock, released when
        its holder ends, however it ends); yields False when another process holds it and
        ``wait`` is False."""
        if not self.is_postgres:
            yield True
            return
        # Parts of different read models have the same names (those of the log's ranges):
        # the key is the read model's tracking table's and the part's.
        name = f"{getattr(self, 'tracking_table_name', '')}:{name}"
        with self.datastore.get_connection() as conn:
            fn = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
            row = conn.execute(f"SELECT {fn}(7420003, hashtext(%s)) AS held", (name,)).fetchone()
            held = wait or bool(row["held"] if isinstance(row, dict) else row[0])  # type: ignore[index]
            conn.commit()
            try:
                yield held
            finally:
                if held:
                    conn.execute("SELECT pg_advisory_unlock(7420003, hashtext(%s))", (name,))
                    conn.commit()

    def track_only(self, tracking: Tracking) -> None:
        with self.transaction() as c:
            self._insert_tracking(c, tracking)  # type: ignore[attr-defined]

    def reset(self) -> None:
        """Drop this view's rows and its tracking positions (for a rebuild)."""
        table = getattr(self, "tracking_table_name", "tracking")
        with self.transaction() as c:
            for stmt in self.DROP:
                c.execute(stmt)
            c.execute(f"DELETE FROM {table} WHERE application_name <> '__migration__'")
        self.create_view_tables()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


_classes: dict[tuple[type, type], type] = {}


def make_view(mixin: type, name: str, env: dict[str, str], create: bool = True) -> Any:
    """Construct a view of ``mixin`` on the backend named by ``env`` (PERSISTENCE_MODULE),
    and its tables unless ``create`` is False (a process that another one started, which
    made them: creating them again takes locks that can deadlock with its writes)."""
    full_env = {**os.environ, **env}
    factory = InfrastructureFactory[TrackingRecorder].construct(env=Environment(name, full_env))
    base: type = (
        PostgresTrackingRecorder
        if "postgres" in full_env.get("PERSISTENCE_MODULE", "")
        else SQLiteTrackingRecorder
    )
    cls = _classes.get((mixin, base))
    if cls is None:
        cls = type(f"{mixin.__name__}On{base.__name__}", (mixin, base), {})
        _classes[(mixin, base)] = cls
    view = factory.tracking_recorder(cls)  # type: ignore[arg-type]
    view.factory = factory
    if create:
        view.create_view_tables()
    return view
