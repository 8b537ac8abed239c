"""The base of every aggregate: events that say who did it, why, and when.

Every event carries ``meta`` (the acting API key or system process, the request
id and the correlation id) taken from the ambient audit context, and a
timestamp taken from the injected clock, so that tests can move time without
sleeping and compliance officers can trace each fact to a command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from eventsourcing.domain import Aggregate

_audit: ContextVar[dict[str, str]] = ContextVar("audit", default={"actor": "system"})  # noqa: B039 - read, never changed in place
_clock: list[Callable[[], datetime]] = [lambda: datetime.now(UTC)]
# Aggregate id -> the version a command's If-Match promised (interfaces/http/security.py).
_expected_versions: ContextVar[dict[Any, int] | None] = ContextVar("expected_versions", default=None)


def set_clock(now: Callable[[], datetime]) -> None:
    """Install the clock that stamps every new event (the composition root does this)."""
    _clock[0] = now


def now() -> datetime:
    return _clock[0]()


def current_audit() -> dict[str, str]:
    return dict(_audit.get())


@contextmanager
def audit_context(**meta: str | None) -> Iterator[dict[str, str]]:
    """Run commands on behalf of an actor: every event appended inside carries ``meta``."""
    merged = {**_audit.get(), **{k: v for k, v in meta.items() if v is not None}}
    token = _audit.set(merged)
    try:
        yield merged
    finally:
        _audit.reset(token)


@contextmanager
def expecting_versions(versions: dict[Any, int]) -> Iterator[None]:
    """Commands inside may change these aggregates only from these versions: the first
    event each triggers checks it (PreconditionFailed otherwise), and the event store's
    unique (id, version) refuses a writer that got in between that check and the save."""
    token = _expected_versions.set(versions or None)
    try:
        yield
    finally:
        _expected_versions.reset(token)


def version_expected(aggregate_id: Any) -> bool:
    """Did the command's If-Match name a version of this aggregate? (Then a concurrent
    append is a 412 for the client to resolve, not a conflict to retry.)"""
    return aggregate_id in (_expected_versions.get() or {})


class AuditedAggregate(Aggregate):
    class Event(Aggregate.Event):
        meta: dict[str, str]

    class Created(Event, Aggregate.Created):
        pass

    @classmethod
    def _create(cls, event_class: Any, *, id: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("meta", current_audit())
        kwargs.setdefault("timestamp", now())
        return super()._create(event_class, id=id, **kwargs)

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        expected = _expected_versions.get()
        if expected and self.id in expected:
            version = expected.pop(self.id)
            if self.version != version:
                from domain.errors import PreconditionFailed

                raise PreconditionFailed(f"The resource changed since it was read (version {self.version}, If-Match named {version})")
        kwargs.setdefault("meta", current_audit())
        kwargs.setdefault("timestamp", now())
        super().trigger_event(event_class, **kwargs)
