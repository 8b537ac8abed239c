"""The dispatcher's upkeep reads at most every so often, not at each of its ten ticks a
second: the reconciler's look for calls whose final callback is late (it reads every call
in progress, thousands while 200 calls a second run), and the pending calls' time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from application.reconciler import Reconciler


class _Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


class _Progress:
    def __init__(self) -> None:
        self.looks: list[str] = []

    def stale_live_calls(self, before_key: str, limit: int = 200) -> list[str]:
        self.looks.append(before_key)
        return []


def _reconciler(stale_after: timedelta) -> tuple[Reconciler, _Clock, _Progress]:
    clock, progress = _Clock(), _Progress()
    none: Any = None
    return Reconciler(none, none, none, progress, clock, stale_after=stale_after), clock, progress


def test_a_look_at_most_every_five_seconds():
    reconciler, clock, progress = _reconciler(timedelta(minutes=2))
    assert reconciler.tick() == 0 and len(progress.looks) == 1
    for _ in range(49):  # five seconds of ticks
        clock.at += timedelta(milliseconds=100)
        reconciler.tick()
    assert len(progress.looks) == 1
    clock.at += timedelta(milliseconds=100)
    reconciler.tick()
    assert len(progress.looks) == 2


def test_a_short_delay_is_looked_at_a_tenth_of_it_apart():
    reconciler, clock, progress = _reconciler(timedelta(seconds=5))
    reconciler.tick()
    clock.at += timedelta(milliseconds=400)
    reconciler.tick()
    assert len(progress.looks) == 1
    clock.at += timedelta(milliseconds=100)
    reconciler.tick()
    assert len(progress.looks) == 2


class _Zones:
    def __init__(self) -> None:
        self.pending: list[str | None] = []
        self.reads = 0

    def due_timezones(self, execution_id: str, now_key: str) -> list[str | None]:
        self.reads += 1
        return list(self.pending)


def test_the_dispatcher_reads_no_pending_zones_again_within_half_a_second(monkeypatch):
    """At the end of a run, while the last calls are in progress, an execution has no
    pending call: the time zones' query (a scan of its calls) ran at each of the
    dispatcher's ten ticks a second. It now runs again within half a second when it found
    none, and within ``zones_ttl`` when it found some."""
    import application.dispatcher as dispatching

    now = [1000.0]
    monkeypatch.setattr(dispatching.time, "monotonic", lambda: now[0])
    zones = _Zones()
    none: Any = None
    dispatcher = dispatching.Dispatcher(none, none, zones, none, none, zones_ttl=5.0)

    def ticks(seconds: float) -> None:
        for _ in range(round(seconds * 10)):
            dispatcher._zones_of("e1")
            now[0] += 0.1

    ticks(1.0)
    assert zones.reads == 2  # none pending: at 0 and at 0.5 s
    zones.pending = ["Africa/Casablanca"]  # another dispatcher queued the calls
    ticks(0.5)
    assert dispatcher._zones_of("e1") == {"Africa/Casablanca"} and zones.reads == 3
    ticks(4.0)
    assert zones.reads == 3  # some pending: kept for zones_ttl
    ticks(1.0)
    assert zones.reads == 4
