"""Rebuilding a read model from the event log on PostgreSQL, beside the raw sequential
read rate of the same events table measured in the same run.

    .venv/bin/python -m bench.rebuild [--events 1000000] [--views reports,call_history]

1. Seeds a throwaway database through the applications' own ``save`` (batches of 250
   calls): one organization, one execution, and as many Call streams as it takes to
   record ``--events`` events, each through a realistic lifecycle (created, claimed,
   placed, ringing, answered, two flow turns with a keypress, attempt ended, finished;
   three in ten are not answered: created, claimed, placed, ringing, ended, finished).
   Seeding time is printed, not counted.
2. Raw: a server-side cursor reading every row of each events table in order
   (``SELECT * ... ORDER BY notification_id``), rows/s: what PostgreSQL and psycopg
   deliver with no projection code in the way.
3. For each view: drop it and rebuild it from zero with the projection runner (the code
   behind ``gomobile projections rebuild NAME``), events/s over every event of the logs
   it follows, and the ratio to the raw rate; with ``--processes`` 1 and N, in one
   process and shared out among N (the command's default: one per core).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.common import emit, fresh_database, machine

BATCH_CALLS = 250

TURN_GREET = {
    "steps": [{"nodeId": "dial", "nodeType": "dial", "nodeLabel": "Dial", "outputPath": "onAnswer"},
              {"nodeId": "greet", "nodeType": "say", "nodeLabel": "Greeting"},
              {"nodeId": "menu", "nodeType": "dtmf", "nodeLabel": "Menu"}],
    "events": [{"type": "play", "nodeId": "greet", "text": "Hello, press 1 to confirm or 2 to decline."}],
    "instructions": [{"verb": "say", "text": "Hello, press 1 to confirm or 2 to decline."}],
    "state": {"variables": {}, "nodeId": "menu"},
}  # fmt: skip


def _turn_keypress(digit: str) -> dict[str, Any]:
    return {
        "resolved": {"nodeId": "menu", "outputPath": f"branches.{digit}"},
        "steps": [{"nodeId": "thanks", "nodeType": "play", "nodeLabel": "Thanks"},
                  {"nodeId": "done", "nodeType": "hangup", "nodeLabel": "Done"}],
        "events": [{"type": "dtmf_collected", "nodeId": "menu", "digits": digit, "mode": "single_digit"},
                   {"type": "play", "nodeId": "thanks", "text": "Thank you."}],
        "instructions": [{"verb": "say", "text": "Thank you."}, {"verb": "hangup"}],
        "state": {"variables": {"choice": digit}, "nodeId": "done"},
    }  # fmt: skip


def _bench_execution(campaigns: Any) -> tuple[Any, Any, datetime]:
    """The seed's organization and its one running execution, saved."""
    from domain.execution import Execution

    org_id, _ = campaigns.create_organization("Rebuild bench")
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    execution = Execution(
        org_id, uuid.uuid4(), {"name": "Rebuild", "retryStrategy": {"type": "none"}},
        {"flowId": str(uuid.uuid4()), "flowName": "Survey", "flowVersion": 1, "graph": {"nodes": []}},
        [], now, None,
    )  # fmt: skip
    execution.start(now)
    campaigns.save(execution)
    return org_id, execution, now


def seed(env: dict[str, str], events: int) -> dict[str, Any]:
    from application.calls import CallsApp
    from application.campaigns import CampaignsApp

    campaigns, calls = CampaignsApp(env=env), CallsApp(env=env)
    try:
        org_id, execution, now = _bench_execution(campaigns)
        written, n, t0 = 0, 0, time.perf_counter()
        while written < events:
            batch = _calls(n, BATCH_CALLS, execution, org_id, now)
            n += BATCH_CALLS
            written += sum(len(call.pending_events) for call in batch)
            calls.save(*batch)
        seconds = time.perf_counter() - t0
        return {"calls": n, "events": written + len(execution.pending_events) + 3, "seconds": round(seconds, 1),
                "eventsPerSecond": round(written / seconds)}  # fmt: skip
    finally:
        campaigns.close()
        calls.close()


def _calls(n0: int, count: int, execution: Any, org_id: Any, now: datetime) -> list[Any]:
    """Calls ``n0 + 1 .. n0 + count`` through the lifecycle ``seed`` gives them."""
    from domain.call import Call
    from domain.retry import RetryStrategy

    strategy = RetryStrategy.parse({"type": "none"})
    out = []
    for n in range(n0 + 1, n0 + count + 1):
        at = now + timedelta(milliseconds=n)
        call = Call(execution.id, uuid.uuid4(), org_id, execution.program_id, f"+2126{n:08d}", {}, now)
        call.claim(1, at, "bench")
        call.record_placed(1, f"CA{n:032x}", "+212500000001")
        call.record_ringing(1)
        if n % 10 < 7:
            call.record_answered(1, "human")
            call.record_turn(1, {"kind": "answer"}, TURN_GREET)
            call.record_turn(1, {"kind": "gather", "digits": "1"}, _turn_keypress("1" if n % 3 else "2"))
            call.end_attempt(1, "completed", None, 20_000 + n % 5000, at, strategy)
        else:
            call.end_attempt(1, "no_answer", "no answer", None, at, strategy)
        out.append(call)
    return out


def _bulk_part(args: tuple[None, str, int, int, Any, Any, Any, datetime]) -> int:
    """One process of ``seed_bulk``: calls encoded by the calls application's own mapper
    (sealing, keys and all) and loaded with COPY."""
    _, url, first, calls_n, execution_id, program_id, org_id, now = args
    from types import SimpleNamespace

    from application.calls import CallsApp
    from infrastructure.settings import Settings

    # The environment is made again here: its mapper's topic names a class made at run time.
    # The tables exist (seed_bulk made them): two processes creating them at once race in
    # PostgreSQL's catalog ("tuple concurrently updated"; it stopped a 10^7 run).
    app = CallsApp(env={**Settings(database_url=url).persistence_env(), "CREATE_TABLE": "no"})
    execution = SimpleNamespace(id=execution_id, program_id=program_id)
    written = 0
    try:
        with psycopg.connect(url) as conn:
            for start in range(first, first + calls_n, 2000):
                batch = _calls(start, min(2000, first + calls_n - start), execution, org_id, now)
                events = [e for call in batch for e in call.collect_events()]
                app.mapper.prepare(events)  # type: ignore[attr-defined]
                stored = [app.mapper.to_stored_event(e) for e in events]
                with conn.cursor() as cur, cur.copy(
                    "COPY calls_events (originator_id, originator_version, topic, state) FROM STDIN"
                ) as copy:
                    for s in stored:
                        copy.write_row((s.originator_id, s.originator_version, s.topic, s.state))
                conn.commit()
                written += len(stored)
    finally:
        app.close()
    return written


def seed_bulk(env: dict[str, str], url: str, events: int, processes: int = 2) -> dict[str, Any]:
    """As ``seed``, for 10^7 events in minutes instead of an hour: the same calls, encoded
    by the platform's own mapper (their personal fields sealed under their contacts' keys)
    in ``processes`` processes, and written with COPY instead of the recorder's inserts.
    The events table holds exactly what the recorder would have written; only the audit
    chain's rows are missing (a rebuild does not read them)."""
    import multiprocessing

    from application.calls import CallsApp
    from application.campaigns import CampaignsApp

    campaigns, calls = CampaignsApp(env=env), CallsApp(env=env)  # creates the tables
    try:
        org_id, execution, now = _bench_execution(campaigns)
    finally:
        campaigns.close()
        calls.close()
    per_call = 8.1  # events a call, on average, in this lifecycle
    total_calls = int(events / per_call) + 1
    share = -(-total_calls // processes)
    parts = [(None, url, i * share, min(share, total_calls - i * share), execution.id, execution.program_id, org_id, now)
             for i in range(processes) if total_calls > i * share]  # fmt: skip
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(len(parts)) as pool:
        written = sum(pool.map(_bulk_part, parts))
    seconds = time.perf_counter() - t0
    return {"calls": total_calls, "events": written + 4, "seconds": round(seconds, 1),
            "eventsPerSecond": round(written / seconds), "method": f"mapper + COPY, {processes} processes"}  # fmt: skip


def raw_read(url: str) -> dict[str, Any]:
    """Every row of every events table, in order, through a server-side cursor."""
    out: dict[str, Any] = {}
    total, seconds = 0, 0.0
    with psycopg.connect(url) as c:
        tables = [r[0] for r in c.execute(  # the applications' event logs
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name IN ('notification_id', 'state') GROUP BY 1 HAVING COUNT(*) = 2 ORDER BY 1")]  # fmt: skip
        for table in tables:
            with c.cursor(name=f"raw_{table}") as cur:
                cur.itersize = 10_000
                t0 = time.perf_counter()
                cur.execute(f"SELECT notification_id, originator_id, originator_version, topic, state FROM {table} "
                            "ORDER BY notification_id")  # fmt: skip
                rows = size = 0
                while chunk := cur.fetchmany(10_000):
                    rows += len(chunk)
                    size += sum(len(r[-1]) if isinstance(r[-1], (bytes, memoryview)) else 0 for r in chunk)
                dt = time.perf_counter() - t0
            out[table] = {"rows": rows, "seconds": round(dt, 2), "rowsPerSecond": round(rows / dt) if dt else None,
                          "stateBytesPerRow": round(size / rows) if rows else 0}  # fmt: skip
            total += rows
            seconds += dt
    out["all"] = {"rows": total, "seconds": round(seconds, 2), "rowsPerSecond": round(total / seconds)}
    return out


def rebuild(env: dict[str, str], name: str, batch_size: int, processes: int = 1) -> dict[str, Any]:
    """What ``gomobile projections rebuild NAME`` does, in this process (its collector
    tuned as the command's is: infrastructure/gc_tuning.py)."""
    from application.calls import CallsApp
    from infrastructure.gc_tuning import tune_gc

    tune_gc()
    from application.campaigns import CampaignsApp
    from infrastructure.bootstrap import PROJECTIONS, UPSTREAMS, rebuild_spawner
    from projections.runner import ProjectionRunner
    from projections.store import make_view

    apps = {"campaigns": CampaignsApp(env=env), "calls": CallsApp(env=env)}
    view = make_view(PROJECTIONS[name], name, env)
    try:
        view.reset()
        runner = ProjectionRunner(name, view, [apps[a] for a in UPSTREAMS[name]], batch_size=batch_size)
        runner.spawn_partition = rebuild_spawner(name, env)
        t0 = time.perf_counter()
        total = runner.catch_up(batch_size=batch_size, processes=processes)
        dt = time.perf_counter() - t0
        assert not any(runner.lag().values())
        assert not runner.partitions()
        import resource

        rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        return {"events": total, "seconds": round(dt, 1), "eventsPerSecond": round(total / dt), "batchSize": batch_size,
                "processes": processes, "peakRssMbAnyProcess": round(rss / 1024)}  # fmt: skip
    finally:
        view.datastore.close()
        for app in apps.values():
            app.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--views", default="reports")
    p.add_argument("--batch-size", default="500", help="events per transaction, or several: 500,2000 (500: live runner, 5000: catch-up)")
    p.add_argument("--processes", default=str(os.cpu_count() or 1),
                   help="processes sharing the replay, or several: 1,2 (default: one per core, as the command)")  # fmt: skip
    p.add_argument("--database-url", default="", help="an already seeded database (skips seeding)")
    p.add_argument("--bulk-seed", action="store_true",
                   help="seed with the platform's mapper and COPY in two processes (10^7 events in minutes)")
    args = p.parse_args()
    from infrastructure.settings import Settings

    def run(url: str, seeded: dict[str, Any] | None) -> None:
        env = Settings(database_url=url).persistence_env()
        result: dict[str, Any] = {"machine": machine(), "seed": seeded}
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("VACUUM ANALYZE")
        result["raw"] = raw_read(url)
        before = result["raw"]["all"]["rowsPerSecond"]
        for name in args.views.split(","):
            for size, processes in [(s, n) for s in args.batch_size.split(",") for n in args.processes.split(",")]:
                load = os.getloadavg()[0]
                r = rebuild(env, name, int(size), int(processes))
                after = raw_read(url)["all"]["rowsPerSecond"]
                # The 2 cores are shared: the raw rate is read just before and just after
                # each rebuild, and the rebuild put against their mean.
                raw = (before + after) / 2
                r.update({"rawRowsPerSecond": round(raw), "rawBefore": before, "rawAfter": after,
                          "ratioToRaw": round(r["eventsPerSecond"] / raw, 3),
                          "loadAverage": [round(load, 1), round(os.getloadavg()[0], 1)]})  # fmt: skip
                result[f"{name}@{size}x{processes}"] = r
                print({"view": name, **r}, flush=True)
                before = after
        emit("rebuild", result)

    if args.database_url:
        run(args.database_url, None)
        return
    with fresh_database() as url:
        env = Settings(database_url=url).persistence_env()
        seeded = seed_bulk(env, url, args.events) if args.bulk_seed else seed(env, args.events)
        print({"seeded": seeded}, flush=True)
        run(url, seeded)


if __name__ == "__main__":
    main()
