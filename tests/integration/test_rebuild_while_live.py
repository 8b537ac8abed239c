"""A read model rebuilt while its live runner (the projector's) goes on and events keep
arriving ends row for row as a rebuild with nothing else running leaves it: the live
runner applies nothing while the rebuild holds the read model, and a batch it read before
the rebuild is refused rather than applied on top of it. Before this hold, a rebuild run
beside the projector applied events twice (the live runner wrote into the emptied tables)
or moved the position past what the rebuild had not applied yet."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from domain import base
from projections import runner as runner_module
from projections.store import HeldOff
from tests.integration.test_progress_batches import _scenario
from tests.integration.test_rebuild_in_parts import (
    _as_the_engine_records,
    _rebuilt,
    _runner,
    _snapshot,
)

pytestmark = pytest.mark.integration


def _events(seed: int) -> tuple[list[Any], list[Any]]:
    """A scenario's campaigns and calls events, each stored once, as the engine records them."""
    s = _scenario(seed)
    out: tuple[list[Any], list[Any]] = ([], [])
    for i, events in enumerate((s.campaigns, s.calls_log)):
        seen: set[tuple[Any, int]] = set()
        for e in events:
            if (e.originator_id, e.originator_version) not in seen:
                seen.add((e.originator_id, e.originator_version))
                out[i].append(_as_the_engine_records(e))
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    from application.calls import CallsApp
    from application.campaigns import CampaignsApp
    from infrastructure.privacy import bind
    from infrastructure.settings import Settings

    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else None
    previous = base._clock[0]
    env = Settings(data_dir=tmp_path / "var", database_url=url).persistence_env()
    apps = {"campaigns": CampaignsApp(env=env), "calls": CallsApp(env=env)}
    for app in apps.values():
        bind(app)
    try:
        yield env, apps
    finally:
        base.set_clock(previous)
        for app in apps.values():
            app.close()


def _put(apps: dict[str, Any], events: tuple[list[Any], list[Any]], pause: float = 0.0) -> None:
    for app, stream in zip((apps["campaigns"], apps["calls"]), events, strict=True):
        for i in range(0, len(stream), 50):
            app.events.put(stream[i : i + 50])
            time.sleep(pause)


def _drain(r: Any) -> None:
    while r.run_once(40):
        pass


def test_a_live_runner_applies_nothing_while_a_rebuild_holds_its_read_model(
    stores: tuple[dict[str, str], dict[str, Any]],
) -> None:
    env, apps = stores
    _put(apps, _events(11))
    live = _runner("reports", env, apps)
    rebuilder = _runner("reports", env, apps)
    try:
        live.live = True
        _drain(live)
        head = apps["calls"].recorder.max_notification_id()
        assert live.position(apps["calls"]) == head
        _put(apps, _events(12))
        assert not live.view.rebuilding()
        with rebuilder.view.held_for_rebuild():
            assert live.view.rebuilding()  # as `gomobile projections status` shows it
            with pytest.raises(HeldOff, match="a rebuild holds this read model"):
                live.run_once(40)
            assert live.position(apps["calls"]) == head  # nothing written
            # The rebuild itself (not live) is not held off by its own hold.
            rebuilder.view.reset()
            rebuilder.catch_up(batch_size=40)
        assert not live.view.rebuilding()
        new_head = apps["calls"].recorder.max_notification_id()
        assert rebuilder.position(apps["calls"]) == new_head
        assert live.run_once(40) == 0  # nothing left: the rebuild applied it all, once

        # A batch read before a rebuild moved the position is refused, not applied again.
        pos = live.position(apps["calls"])
        with live.view.live_guard("calls", pos - 1), pytest.raises(HeldOff, match="moved"):
            live.view.apply_batch([], live.view.handle, Tracking("calls", pos + 1))
        assert live.position(apps["calls"]) == pos
    finally:
        live.view.datastore.close()
        rebuilder.view.datastore.close()


@pytest.mark.parametrize("name", ["reports", "progress"])
def test_rebuilds_while_the_projector_runs_and_events_arrive_leave_what_a_quiet_rebuild_leaves(
    stores: tuple[dict[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    env, apps = stores
    monkeypatch.setattr(runner_module, "PARALLEL_MIN_EVENTS", 0)  # the rebuild in parts too (PostgreSQL)
    _put(apps, _events(11))
    live = _runner(name, env, apps)
    live.batch_size = 40
    live.poll_interval = 0.01
    rebuilder = _runner(name, env, apps)
    later = [_events(12), _events(13)]
    writer = threading.Thread(target=lambda: [_put(apps, e, pause=0.005) for e in later])
    try:
        live.start()
        writer.start()
        rebuilds = 0
        while writer.is_alive() or rebuilds < 3:
            rebuilder.rebuild(processes=1 + rebuilds % 2)
            rebuilds += 1
        writer.join()
        heads = {a: apps[a].recorder.max_notification_id() for a in ("campaigns", "calls")}
        deadline = time.monotonic() + 60
        while any(live.position(apps[a]) < h for a, h in heads.items()) or live.partitions():
            assert time.monotonic() < deadline, f"the live runner did not catch up: {live.lag()}, {live.error!r}"
            time.sleep(0.05)
        live.stop()
        got = _snapshot(live.view)
        assert {a: live.position(apps[a]) for a in heads} == heads
    finally:
        live.stop()
        writer.join()
        live.view.datastore.close()
    try:
        assert got == _rebuilt(rebuilder), f"{name}: the read model differs from a rebuild with nothing else running"
    finally:
        rebuilder.view.datastore.close()
