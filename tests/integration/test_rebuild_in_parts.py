"""A rebuild shared out among processes (``ProjectionRunner.catch_up(processes=N)``) must
leave every table of the read model row for row as the one-process rebuild does, on the
real event store (sealed personal fields and all), for each read model that allows it;
and a part whose process died is finished by the next round, never applied twice nor
skipped, while a part another process holds is left to it."""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import re
from collections.abc import Iterator
from typing import Any

import pytest

from domain import base
from projections import runner as runner_module
from projections.runner import ProjectionRunner, partition_range
from tests.integration.test_progress_batches import _scenario

VIEWS = ("reports", "progress", "call_history")
# Rows no event of the scenario makes: commands by people, the dispatcher's own, recordings.
ALWAYS_EMPTY = {"report_activity", "dispatch_log", "history_recordings"}


@pytest.fixture()
def stores(postgres_database: str) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    from application.calls import CallsApp
    from application.campaigns import CampaignsApp
    from infrastructure.privacy import bind
    from infrastructure.settings import Settings

    previous = base._clock[0]
    env = Settings(database_url=postgres_database).persistence_env()
    apps = {"campaigns": CampaignsApp(env=env), "calls": CallsApp(env=env)}
    for app in apps.values():
        bind(app)
    try:
        for seed in (11, 12, 13):
            s = _scenario(seed)
            for app, events in ((apps["campaigns"], s.campaigns), (apps["calls"], s.calls_log)):
                seen: set[tuple[Any, int]] = set()
                unique = []  # the scenario appends a few duplicates: the store refuses them
                for e in events:
                    if (e.originator_id, e.originator_version) not in seen:
                        seen.add((e.originator_id, e.originator_version))
                        unique.append(_as_the_engine_records(e))
                for i in range(0, len(unique), 100):
                    app.events.put(unique[i : i + 100])
        yield env, apps
    finally:
        base.set_clock(previous)
        for app in apps.values():
            app.close()


def _as_the_engine_records(e: Any) -> Any:
    """The scenario's flow turns with what the flow engine also records (its events, among
    them the keypress, and its instructions), as the reports and the call history read them."""
    if type(e).__qualname__ != "Call.FlowAdvanced":
        return e
    if e.trigger.get("kind") == "gather":
        digits = str(e.originator_id.int % 3 + 1)
        events = [{"type": "dtmf_collected", "nodeId": "menu", "digits": digits, "mode": "single_digit"},
                  {"type": "play", "nodeId": "thanks", "text": "Thank you."}]  # fmt: skip
    else:
        events = [{"type": "play", "nodeId": "greet", "text": "Hello, press 1 or 2."}]
    instructions = [{"verb": "say", "text": ev["text"]} for ev in events if ev["type"] == "play"]
    return dataclasses.replace(e, turn={**e.turn, "events": events, "instructions": instructions})


def _snapshot(view: Any) -> dict[str, list[str]]:
    tables = [re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl) for ddl in view.TABLES]
    return {m[1]: sorted(repr(sorted(r.items())) for r in view.rows(f"SELECT * FROM {m[1]}")) for m in tables if m}


def _rebuilt(r: ProjectionRunner, processes: int = 1) -> dict[str, list[str]]:
    """Every table of ``r``'s read model, dropped and rebuilt from every event of the logs."""
    r.view.reset()
    assert r.catch_up(batch_size=40, processes=processes) == sum(
        app.recorder.max_notification_id() for app in r.upstreams
    )
    return _snapshot(r.view)


def _runner(name: str, env: dict[str, str], apps: dict[str, Any]) -> ProjectionRunner:
    from infrastructure.bootstrap import PROJECTIONS, UPSTREAMS, rebuild_spawner
    from projections.store import make_view

    view = make_view(PROJECTIONS[name], name, env)
    r = ProjectionRunner(name, view, [apps[a] for a in UPSTREAMS[name]], batch_size=40)
    r.spawn_partition = rebuild_spawner(name, env)
    return r


def _dies(part: str, batch_size: int) -> Any:
    process = multiprocessing.get_context("spawn").Process(target=_exit_3)
    process.start()
    return process


def _exit_3() -> None:
    raise SystemExit(3)


def test_partition_ranges_cover_every_id_once() -> None:
    for n in (1, 2, 3, 7):
        ranges = [partition_range(k, n) for k in range(n)]
        assert ranges[0][0].int == 0 and ranges[-1][1].int == (1 << 128) - 1
        for (_, hi), (lo, _) in itertools.pairwise(ranges):
            assert lo.int == hi.int + 1
    with pytest.raises(ValueError, match="no partition 2 of 2"):
        partition_range(2, 2)


def test_a_rebuild_in_parts_equals_the_rebuild_in_one_process(
    stores: tuple[dict[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, apps = stores
    head = apps["calls"].recorder.max_notification_id()
    assert head > 1000
    monkeypatch.setattr(runner_module, "PARALLEL_MIN_EVENTS", 0)
    for name in VIEWS:
        r = _runner(name, env, apps)
        try:
            expected = _rebuilt(r)
            assert all(rows for t, rows in expected.items() if t not in ALWAYS_EMPTY), {t: len(v) for t, v in expected.items()}
            for processes in (2, 3):
                got = _rebuilt(r, processes)
                assert r.partitions() == []
                assert r.position(apps["calls"]) == head
                assert got == expected, (name, processes)
        finally:
            r.view.datastore.close()


def test_a_part_whose_process_died_is_finished_by_the_next_round(
    stores: tuple[dict[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, apps = stores
    head = apps["calls"].recorder.max_notification_id()
    monkeypatch.setattr(runner_module, "PARALLEL_MIN_EVENTS", 0)
    for name in VIEWS:
        r = _runner(name, env, apps)
        try:
            expected = _rebuilt(r)

            r.view.reset()
            r.spawn_partition = _dies
            with pytest.raises(RuntimeError, match=r"the processes of calls#1/2:0-\d+, calls#2/3|the processes of"):
                r.catch_up(batch_size=40, processes=3)
            parts = r.partitions()
            assert len(parts) == 3, parts  # part 0 done here, parts 1 and 2 never applied
            assert r.view.max_tracking_id(parts[0]) == head
            assert r.position(apps["calls"]) == 0  # the log's own position waits for every part

            # A live round while another process holds a part: the calls log is left alone.
            live = _runner(name, env, apps)
            try:
                other = _runner(VIEWS[(VIEWS.index(name) + 1) % len(VIEWS)], env, apps)
                with r.view.partition_lock(parts[1]):
                    live.run_once(40)
                    assert live.position(apps["calls"]) == 0
                    assert r.partitions() == parts
                    # The same part's name in another read model is another lock.
                    with other.view.partition_lock(parts[1], wait=False) as held:
                        assert held
                    with live.view.partition_lock(parts[1], wait=False) as held:
                        assert not held
                other.view.datastore.close()
                # Then the next round finishes the parts left and merges them.
                while live.run_once(40):
                    pass
                assert r.partitions() == []
                assert live.position(apps["calls"]) == head
                assert _snapshot(live.view) == expected, name
            finally:
                live.view.datastore.close()
        finally:
            r.view.datastore.close()


def test_a_rebuild_opens_only_the_personal_fields_its_view_reads_and_makes_the_same_rows(
    stores: tuple[dict[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, apps = stores
    declared = {}
    for name in VIEWS:
        r = _runner(name, env, apps)
        try:
            declared[name] = r.view.PERSONAL
            got = _rebuilt(r)
            monkeypatch.setattr(type(r.view), "PERSONAL", None)  # every sealed field opened
            assert got == _rebuilt(r), name
        finally:
            r.view.datastore.close()
    assert declared["progress"] == frozenset() and declared["reports"], declared  # the test compares something
