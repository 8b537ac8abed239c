"""What this platform's event-sourced applications share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Any
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent, Recording, Repository
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import StoredEvent


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

        statement = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::bigint[]) AS s(id, v) JOIN {schema}.{table} e "
            "ON e.originator_id = s.id AND e.originator_version > s.v ORDER BY e.originator_id, e.originator_version"
        ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(table))
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, ([i for i, _ in after], [v for _, v in after]), prepare=True)
            return [
                StoredEvent(r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
                for r in curs.fetchall()
            ]
    return [e for i, v in after for e in recorder.select_events(i, gt=v or None)]
