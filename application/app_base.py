"""What this platform's event-sourced applications share."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import Any
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent, Recording, Repository
from eventsourcing.domain import BaseAggregate


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

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """As ``Application.save`` (same steps, same order), with the cheaper collection."""
        processing_event = _Collected()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # deprecated in eventsourcing, kept as it calls it
        return recordings
