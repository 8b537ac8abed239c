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

_audit: ContextVar[dict[str, str]] = ContextVar("audit", default={"actor": "system"})
_clock: list[Callable[[], datetime]] = [lambda: datetime.now(UTC)]


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


class AuditedAggregate(Aggregate):
    class Event(Aggregate.Event):
        meta: dict[str, str]

    class Created(Event, Aggregate.Created):
        pass

    @classmethod
    def _create(cls, event_class: Any, *, id: Any = None, **kwargs: Any) -> Any:  # noqa: A002
        kwargs.setdefault("meta", current_audit())
        kwargs.setdefault("timestamp", now())
        return super()._create(event_class, id=id, **kwargs)

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        kwargs.setdefault("meta", current_audit())
        kwargs.setdefault("timestamp", now())
        super().trigger_event(event_class, **kwargs)
