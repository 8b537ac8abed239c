"""Launching a large execution on PostgreSQL + Redis, with the real processes.

    .venv/bin/python -m bench.launch_1m [--contacts 1000000] [--workers 1]

1. Seeds a throwaway database: N contacts written as their ``Created`` events through
   the campaigns application's own ``save`` in batches of 5,000 (the same events an API
   create or a CSV import records, without the HTTP, validation and import bookkeeping),
   and one static audience of N members added 10,000 per event (N/10,000 versions, so it
   is launched by reference). Seeding time is printed, not counted in the figures.
2. Starts ``gomobile sandbox``, ``api``, ``dispatcher``, ``projector`` and the workers
   (bench/common.py), and waits until the read models have caught up with the seed (the
   projector reads the campaigns log in order: it must pass the N contacts before it can
   see the launch).
3. Launches the program over HTTP and measures: the launch request's latency; the first
   call placed (the sandbox counts a call created by a worker); all calls queued (the
   Execution records ``CallsQueued``: every Call stream is stored); all calls in the
   dispatcher's index (the progress read model lists every call: they can be dialled);
   and the peak RSS (the kernel's VmHWM) of every process and its children.
   The counters invariant (total = completed + failed + pending + inProgress + skipped)
   is checked on every poll of the execution while the calls are being queued.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.calls_e2e import FLOW
from bench.common import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    Processes,
    emit,
    free_port,
    fresh_database,
    machine,
    platform_env,
    postgres_cpu_seconds,
)


def tree_peak_rss_mb(pid: int) -> float:
    """Largest VmHWM (peak resident set) of a process and its descendants, in MB."""
    children: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except (OSError, IndexError):
                continue
    peak, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            continue
    return round(peak, 1)


def seed(container: Any, contacts: int, calls_per_second: float | None = None) -> tuple[Any, str, float]:
    from domain.audience import Audience
    from domain.contact import Contact

    t0 = time.perf_counter()
    org_id, key = container.campaigns.create_organization("Launch bench")
    if calls_per_second:
        container.campaigns.update_organization_settings(org_id, {"callsPerSecond": calls_per_second})
    org = container.campaigns.organization(org_id)
    audience = Audience(org.id, "A million", None)
    container.campaigns.save(audience)
    batch = 5000
    for start in range(0, contacts, batch):
        # Numbers ending in 4-9: the sandbox's callees who answer at once.
        people = [
            # The zone is stored on the contact, as the API and imports do for every number.
            Contact(org.id, f"+2126{1000000 + i:07d}{4 + i % 6}", "",
                    {"firstName": f"P{i}", "city": "Rabat", "timezone": "Africa/Casablanca"})
            for i in range(start, min(contacts, start + batch))
        ]
        container.campaigns.save(*people)
        ids = [str(p.id) for p in people]
        for j in range(0, len(ids), 10000):
            audience.add_members(ids[j : j + 10000])
        if len(audience.pending_events) >= 1 or start + batch >= contacts:
            container.campaigns.save(audience)
    flow = container.campaigns.create_flow(org.id, {"name": "Bench", "graph": FLOW})
    program = container.campaigns.create_program(org, {
        "name": "Launch", "audienceId": str(audience.id), "flowId": str(flow.id), "startAt": "2025-01-01T00:00:00Z",
        "didPool": ["+212500000001"], "retryStrategy": {"type": "none"},
    })
    return program, key, time.perf_counter() - t0


def wait_caught_up(container: Any, timeout: float) -> float:
    t0 = time.perf_counter()
    names = ("progress", "call_history", "directory", "reports")
    while True:
        lag = {n: sum(container.runner(n).lag().values()) for n in names}
        if not any(lag.values()):
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"read models still behind: {lag}")
        time.sleep(2)


def run(contacts: int, workers: int, threads: int, calls_per_second: float | None, timeout: float = 1800) -> dict[str, Any]:
    with fresh_database() as db, tempfile.TemporaryDirectory() as tmp:
        api_port, sandbox_port = free_port(), free_port()
        env = platform_env(db, api_port, sandbox_port, threads)
        from infrastructure.bootstrap import Container
        from infrastructure.settings import Settings

        container = Container(Settings(database_url=db, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN))
        procs = Processes(env, Path(tmp))
        try:
            program, key, seed_s = seed(container, contacts, calls_per_second)
            print(f"seeded {contacts} contacts in {seed_s:.1f} s", flush=True)
            procs.start("sandbox", name="sandbox")
            procs.start("api", name="api")
            procs.start("projector", name="projector")
            catch_up_s = wait_caught_up(container, 3600)
            print(f"read models caught up with the seed in {catch_up_s:.1f} s", flush=True)
            procs.start("dispatcher", name="dispatcher")
            for w in range(workers):
                procs.start("worker", name=f"worker{w}")
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{api_port}/health").status_code == 200 and httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("processes did not start")
                time.sleep(0.2)
            time.sleep(3)  # let workers connect to Redis and the dispatcher tick idle
            api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"x-api-key": key}, timeout=60)
            cpu0, pg0 = procs.cpu_seconds(), postgres_cpu_seconds()
            load_at_launch = os.getloadavg()[0]
            cpu_queued: dict[str, float] = {}
            t0 = time.perf_counter()
            r = api.post(f"/api/programs/{program.id}/launch")
            launch_s = time.perf_counter() - t0
            assert r.status_code in (200, 201), r.text
            eid = r.json()["executionId"]
            print(f"launch answered in {launch_s:.3f} s", flush=True)
            first_call = all_queued = all_indexed = None
            polls = violations = 0
            last: dict[str, Any] = {}
            progress: list[dict[str, Any]] = []  # every 30 s: calls stored and dialable so far
            timed_out = False
            next_report = 30.0
            while all_indexed is None or first_call is None:
                now = time.perf_counter()
                if now - t0 > timeout:
                    timed_out = True
                    break
                if first_call is None and httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/health").json()["calls"] > 0:
                    first_call = now - t0
                    print(f"first call placed at {first_call:.2f} s", flush=True)
                e = api.get(f"/api/program-executions/{eid}").json()
                polls += 1
                s = e["contactsCompleted"] + e["contactsFailed"] + e["contactsPending"] + e["contactsInProgress"] + e["contactsSkipped"]
                violations += int(s != e["totalContacts"])
                last = e
                if all_queued is None and container.campaigns.execution(None, eid).calls_queued:
                    all_queued = time.perf_counter() - t0
                    cpu1 = procs.cpu_seconds()
                    cpu_queued = {k: round(cpu1[k] - cpu0.get(k, 0), 1) for k in cpu1}
                    cpu_queued["postgres (every database)"] = round(postgres_cpu_seconds() - pg0, 1)
                    print(f"all calls queued at {all_queued:.1f} s", flush=True)
                if now - t0 >= next_report or (all_queued is not None and all_indexed is None):
                    n = container.progress.rows("SELECT count(*) AS n FROM progress_calls WHERE execution_id = ?", (eid,))[0]["n"]
                    if all_queued is not None and n >= contacts:
                        all_indexed = time.perf_counter() - t0
                    if now - t0 >= next_report:
                        next_report += 30.0
                        stored = container.campaigns.execution(None, eid).queued_upto
                        progress.append({"seconds": round(now - t0), "callsStored": stored, "callsDialable": n,
                                         "loadAverage": round(os.getloadavg()[0], 1)})
                        print(f"{progress[-1]}", flush=True)
                time.sleep(0.05 if first_call is None else 1.0)
            rss = {name: tree_peak_rss_mb(p.pid) for name, p in zip(procs.names, procs.procs)}
            placed = httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/health").json()["calls"]
            api.delete(f"/api/program-executions/{eid}")
            return {
                "contacts": contacts,
                "workers": workers,
                "threadsPerWorker": threads,
                "organizationCallsPerSecond": calls_per_second,
                "seedSeconds": round(seed_s, 1),
                "readModelsCatchUpSeconds": round(catch_up_s, 1),
                "launchRequestSeconds": round(launch_s, 3),
                "firstCallSeconds": round(first_call, 2) if first_call is not None else None,
                "allCallsQueuedSeconds": round(all_queued, 1) if all_queued is not None else None,
                "allCallsDialableSeconds": round(all_indexed, 1) if all_indexed is not None else None,
                "callsPlacedMeanwhile": placed,
                "timedOut": timed_out,
                "progressEvery30s": progress,
                "countersPolls": polls,
                "countersInvariantViolations": violations,
                "lastCounters": {k: last.get(k) for k in ("totalContacts", "contactsPending", "contactsInProgress", "contactsCompleted", "contactsFailed", "contactsSkipped")},
                # CPU seconds each process used from the launch to all calls queued (2 cores
                # shared with other work on this machine: wall time x 2 is the ceiling).
                "cpuSecondsUntilAllQueued": cpu_queued,
                # The machine's 1-minute load average (2 cores; other sessions' work included).
                "loadAverage": {"atLaunch": round(load_at_launch, 1), "atEnd": round(os.getloadavg()[0], 1)},
                "peakRssMB": rss,
            }
        finally:
            procs.stop()
            container.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--calls-per-second", type=float, default=None,
                    help="the organization's pace (unset: as fast as the sandbox answers, ~18 calls/s on 2 cores)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for every call to be queued")
    args = ap.parse_args()
    result = run(args.contacts, args.workers, args.threads, args.calls_per_second, args.timeout)
    emit("launch_1m", {"machine": machine(), **result})


if __name__ == "__main__":
    main()
