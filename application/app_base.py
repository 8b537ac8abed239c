"""What this platform's event-sourced applications share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Any
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent, Recording, Repository
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import IntegrityError, StoredEvent


class _Collected(ProcessingEvent[UUID]):
    """eventsourcing's ProcessingEvent, telling aggregates from events by their class.

    The library tells them apart with ``isinstance`` against two runtime-checkable
    Protocols, which Python 3.11 answers by walking each Protocol's attributes: about
    15 us an aggregate, 4% of a contact import's time. Everything that is not one of
    eventsourcing's aggregates still goes through the library's own checks."""

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        others = []
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            elif obj is not None:
                others.append(obj)
        super().collect_events(*others, **kwargs)


def mutate_all(aggregate: Any, domain_events: Iterable[Any]) -> Any:
    """eventsourcing's ``project_aggregate`` without its ``assert isinstance(event,
    CanMutateProtocol)`` on each event: a runtime-checkable Protocol, which Python 3.11
    answers by walking the Protocol's attributes. It was 9% of the API process's CPU
    under the calls benchmark (yappi), every webhook loading its Call."""
    for domain_event in domain_events:
        aggregate = domain_event.mutate(aggregate)
    return aggregate


class _Repository(Repository[UUID]):
    """eventsourcing's Repository, projecting with ``mutate_all`` unless told otherwise."""

    def get(  # type: ignore[override]
        self,
        aggregate_id: UUID,
        *,
        version: int | None = None,
        projector_func: Any = mutate_all,
        fastforward_skipping: bool = False,
        deepcopy_from_cache: bool = True,
    ) -> Any:
        return super().get(
            aggregate_id, version=version, projector_func=projector_func,
            fastforward_skipping=fastforward_skipping, deepcopy_from_cache=deepcopy_from_cache,
        )


class App(Application[UUID]):
    LATEST_CACHE_SIZE = 4096

    def construct_repository(self) -> Repository[UUID]:
        """As the library's (same settings), projecting with ``mutate_all``."""
        base = super().construct_repository()
        repository = _Repository(event_store=base.event_store, snapshot_store=base.snapshot_store)
        repository.__dict__.update(base.__dict__)  # the cache and its settings as the library made them
        return repository

    @cached_property
    def latest(self) -> Repository[UUID]:
        """Aggregates as they stand now, for reads that change nothing (the checks made
        at dial time, several times a call): each is kept in memory once read and brought
        up to date by one query for the events stored after it (eventsourcing's cache
        with fast-forward), instead of replaying its whole stream. Never copied out of
        the cache: callers read, never change, what it returns."""
        return _Repository(event_store=self.events, cache_maxsize=self.LATEST_CACHE_SIZE, fastforward=True,
                           deepcopy_from_cache=False)

    def current(self, *ids: UUID) -> list[Any]:
        """Several aggregates as they stand now, as ``latest.get`` gives each (read-only,
        from the same cache), with one query for all of them: the events stored after
        each cached version, every event of a stream not cached yet. None for a stream
        with no events. The dialer's checks read an execution, its organization and a
        number's do-not-call entry this way: one query where there were three."""
        repo = self.latest
        cached: dict[UUID, Any] = {}
        for i in ids:
            try:
                cached[i] = repo.cache.get(i)  # type: ignore[union-attr]
            except KeyError:
                pass
        stored = select_events_after(self, [(i, cached[i].version if i in cached else 0) for i in ids])
        by_stream: dict[UUID, list[StoredEvent]] = {}
        for e in stored:
            oid = e.originator_id if isinstance(e.originator_id, UUID) else UUID(str(e.originator_id))
            by_stream.setdefault(oid, []).append(e)
        out: list[Any] = []
        for i in ids:
            aggregate, new = cached.get(i), by_stream.get(i)
            if new:
                # The cache's own lock for this stream (as its fast-forward takes): a thread
                # that brought it further meanwhile is not repeated.
                lock = repo._use_fastforward_lock(i)
                try:
                    with lock:
                        try:
                            aggregate = repo.cache.get(i)  # type: ignore[union-attr]
                        except KeyError:  # not yet, or evicted meanwhile
                            aggregate = cached.get(i)
                        done = aggregate.version if aggregate is not None else 0
                        events = [self.mapper.to_domain_event(e) for e in new if e.originator_version > done]
                        if events:
                            aggregate = mutate_all(aggregate, events)
                        repo.cache.put(i, aggregate)  # type: ignore[union-attr]
                finally:
                    repo._disuse_fastforward_lock(i)
            out.append(aggregate)
        return out

    def load_many(self, ids: list[UUID]) -> dict[UUID, Any]:
        """Many aggregates at once: one query for all their stored events instead of one
        per aggregate (a million-contact launch reads its contacts 2,000 at a time, a dial batch its calls).
        Missing ids are absent from the result."""
        out: dict[UUID, Any] = {}
        to_domain_event = self.mapper.to_domain_event
        stored = select_events_of(self, ids)
        prefetch = getattr(self.mapper, "prefetch", None)
        if prefetch is not None:  # the contacts' keys (crypto-shredding) in one query
            prefetch(stored)
        for s in stored:
            # Events come in stream order; mutate() directly (eventsourcing's
            # project_aggregate checks a typing Protocol per event: a third of the time).
            key = s.originator_id if isinstance(s.originator_id, UUID) else UUID(str(s.originator_id))
            out[key] = to_domain_event(s).mutate(out.get(key))
        return out

    def save_all_or_each(self, aggregates: Sequence[Any]) -> set[UUID]:
        """Save ``aggregates`` in one transaction; if that fails on a conflict (one of
        them lost a race, or exists already), each alone. Returns the ids of those whose
        events are stored. A failed save has already taken the aggregates' pending events
        (eventsourcing collects them first), so they are put back for the second try."""
        pending = [list(a.pending_events) for a in aggregates]
        try:
            self.save(*aggregates)
            return {a.id for a in aggregates}
        except IntegrityError:
            pass
        stored: set[UUID] = set()
        for aggregate, events in zip(aggregates, pending):
            aggregate.pending_events[:] = events
            try:
                self.save(aggregate)
            except IntegrityError:
                continue
            if events:
                stored.add(aggregate.id)
        return stored

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """As ``Application.save`` (same steps, same order), with the cheaper collection."""
        processing_event = _Collected()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # deprecated in eventsourcing, kept as it calls it
        return recordings


def select_events_after(app: Application[UUID], after: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
    """The stored events of each stream after a version, ``[(stream id, version)]``, in
    stream order: one query on PostgreSQL, one a stream elsewhere (SQLite in the same
    process, or memory)."""
    recorder: Any = app.recorder
    if not after:
        return []
    table = getattr(recorder, "events_table_name", None)
    if table is not None and hasattr(recorder.datastore, "schema"):  # PostgreSQL
        from psycopg.sql import SQL, Identifier

        # A lateral subquery: one index lookup a stream whatever the planner believes
        # (its ORDER BY keeps PostgreSQL from flattening it back into a join). As a join,
        # on a table of a million streams not yet analysed (just imported), it merged the
        # whole primary key instead: 10 s for 2,000 streams, not 0.1 s.
        statement = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::bigint[]) WITH ORDINALITY AS s(id, v, n) CROSS JOIN LATERAL ("
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = s.id AND originator_version > s.v ORDER BY originator_version) e "
            "ORDER BY s.n, e.originator_version"
        ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(table))
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, ([i for i, _ in after], [v for _, v in after]), prepare=True)
            found = [
                StoredEvent(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
                for r in curs.fetchall()
            ]
        _learn_origins(recorder, found)
        return found
    return [e for i, v in after for e in recorder.select_events(i, gt=v or None)]


def _learn_origins(recorder: Any, stored_events: list[StoredEvent]) -> None:
    """Tell the audit recorder which organization each stream read from its start
    belongs to (its later saves then name it: ``AuditChainMixin.learn_origins``). The
    recorder's own ``select_events`` does this for reads that go through it."""
    learn = getattr(recorder, "learn_origins", None)
    if learn is not None:
        learn(stored_events)


def select_events_of(app: Application[UUID], ids: list[UUID]) -> list[StoredEvent]:
    """The stored events of many aggregates in one query, in stream order (PostgreSQL
    or SQLite; one query per aggregate in memory)."""
    if not ids:
        return []
    recorder: Any = app.recorder
    table = getattr(recorder, "events_table_name", None)
    if table is None:  # in memory: no query to save
        return [e for i in ids for e in recorder.select_events(i)]
    if hasattr(recorder.datastore, "schema"):  # PostgreSQL
        from psycopg.sql import SQL, Identifier

        statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s::uuid[]) ORDER BY originator_id, originator_version"
        ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(table))
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (list(ids),))
            found = [
                StoredEvent(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
                for r in curs.fetchall()
            ]
        _learn_origins(recorder, found)
        return found
    out: list[StoredEvent] = []
    for i in range(0, len(ids), 500):  # SQLite: a bounded number of parameters per query
        chunk = [u.hex for u in ids[i : i + 500]]
        marks = ",".join("?" * len(chunk))
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT originator_id, originator_version, topic, state FROM {table} "
                f"WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version",
                chunk,
            )
            out += [
                StoredEvent(recorder.convert_originator_id(r["originator_id"]), r["originator_version"], r["topic"], r["state"])
                for r in c.fetchall()
            ]
    _learn_origins(recorder, out)
    return out
