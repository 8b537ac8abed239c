"""End-to-end calls per second on PostgreSQL + Redis with the sandbox answering at once.

For 1, 2 and 4 worker processes: launch an execution of N contacts and time from the
first dial to the moment the read models count every contact completed (dial job →
provider → webhooks → outcome events → projections). Beside it, the raw PostgreSQL
single-row commit rate measured in the same run.

    python -m bench.calls_e2e [--contacts 2000] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

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
    python_speed,
    raw_commit_rate,
    wait_http,
)

FLOW = {
    "startNodeId": "dial",
    "nodes": [
        {"id": "dial", "type": "dial", "config": {"timeout": 30000, "enableAMD": False}, "outputs": {"onAnswer": "hi"}},
        {"id": "hi", "type": "say", "config": {"text": "Hello"}, "outputs": {"onComplete": "bye"}},
        {"id": "bye", "type": "hangup", "config": {"reason": "completed"}},
    ],
}


class DuringRun:
    """While the execution runs: how far behind the read models are (seconds from an
    event's commit to the projection having applied it, sampled every 100 ms from the
    outside), and how fast report and dashboard reads answer (a few per second, HDR
    percentiles)."""

    def __init__(self, container: Any, base: str, key: str, execution_id: str, reads_per_second: float = 4.0) -> None:
        import threading

        from bench.baselines import histogram

        self.container, self.base, self.key, self.eid = container, base, key, execution_id
        self.rate = reads_per_second
        self.lag = histogram()
        self.reads: dict[str, Any] = {}
        self.errors: dict[str, int] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._lag, daemon=True), threading.Thread(target=self._read, daemon=True)]
        self.histogram = histogram

    def start(self) -> DuringRun:
        for t in self.threads:
            t.start()
        return self

    def finish(self) -> dict[str, Any]:
        from bench.baselines import percentiles

        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        during = {k: percentiles(h) for k, h in self.reads.items()}
        # The same reads once the run is over, on the same (now complete) execution: what
        # a read costs by itself, against what it costs beside the run.
        self.reads = {}
        self.stop.clear()
        idle = __import__("threading").Thread(target=self._read, daemon=True)
        idle.start()
        time.sleep(5)
        self.stop.set()
        idle.join(timeout=30)
        return {"projectionLagMs": percentiles(self.lag), "readLatencyMs": during,
                "readLatencyIdleMs": {k: percentiles(h) for k, h in self.reads.items()}, "readErrors": self.errors}

    def _lag(self) -> None:
        calls = self.container.calls.recorder
        view = self.container.views["progress"]
        pending: list[tuple[float, int]] = []  # (when the head was seen, the head)
        while not self.stop.is_set():
            now = time.perf_counter()
            head = calls.max_notification_id() or 0
            pending.append((now, head))
            position = view.max_tracking_id("calls") or 0
            while pending and pending[0][1] <= position:
                seen, _ = pending.pop(0)
                self.lag.record_value(max(1, int((now - seen) * 1e6)))
            self.stop.wait(0.1)

    def _read(self) -> None:
        paths = {
            "report": f"/api/program-execution/{self.eid}/report",
            "reportCalls": f"/api/program-execution/{self.eid}/report/calls?limit=50",
            "nodeStats": f"/api/program-execution/{self.eid}/report/node-stats",
            "dashboardExecution": f"/dashboard/executions/{self.eid}",
        }
        if self.rate <= 0:
            return
        with httpx.Client(base_url=self.base, headers={"x-api-key": self.key}, cookies={"gm_dashboard_key": self.key},
                          timeout=30) as client:
            i = 0
            while not self.stop.is_set():
                for name, path in paths.items():
                    t = time.perf_counter()
                    r = client.get(path)
                    self.reads.setdefault(name, self.histogram()).record_value(max(1, int((time.perf_counter() - t) * 1e6)))
                    if r.status_code != 200:
                        self.errors[f"{name} {r.status_code}"] = self.errors.get(f"{name} {r.status_code}", 0) + 1
                i += 1
                self.stop.wait(1 / self.rate)


def per_second(counted: list[tuple[float, int]], start: float) -> list[int]:
    """Calls counted done in each second from ``start`` (where the rate sagged, if it did)."""
    totals: dict[int, int] = {}
    for t, n in counted:
        totals[int(t - start)] = n
    out, last = [], 0
    for second in range(max(totals, default=-1) + 1):
        last = max(last, totals.get(second, last))
        out.append(last)
    return [b - a for a, b in zip([0, *out], out)]


def dialled_each_second(placed: list[dict[str, Any]]) -> list[int]:
    """Calls the sandbox created in each wall-clock second, from the first."""
    import email.utils

    seconds = [int(email.utils.parsedate_to_datetime(c["date_created"]).timestamp()) for c in placed if c.get("date_created")]
    if not seconds:
        return []
    first = min(seconds)
    out = [0] * (max(seconds) - first + 1)
    for s in seconds:
        out[s - first] += 1
    return out


def run_once(contacts: int, workers: int, threads: int, api_workers: int = 1, read_api: bool = False,
             pace: float | None = None, reads: float = 4.0, concurrency: int | None = None) -> dict[str, Any]:
    """One execution over ``contacts`` callees. ``read_api``: the reads go to an API process
    of their own while the webhooks go to the other (a deployment serving its clients and
    Twilio from separate processes). ``pace``: the program's calls per second (a real
    account's pace instead of flat out). ``reads``: rounds of the four report and dashboard
    reads a second while the calls run (issue 6's read latency); 0 measures the calls alone.
    ``concurrency``: the organization's maxConcurrentCalls (None: its plan's)."""
    with fresh_database() as db, tempfile.TemporaryDirectory() as tmp:
        raw, speed = raw_commit_rate(db), python_speed()
        api_port, sandbox_port = free_port(), free_port()
        env = platform_env(db, api_port, sandbox_port, threads)
        os.environ.update({k: env[k] for k in ("GOMOBILE_DATABASE_URL",)})
        from infrastructure.bootstrap import Container
        from infrastructure.settings import Settings

        container = Container(Settings(database_url=db, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN))
        procs = Processes(env, Path(tmp))
        try:
            org_id, api_key = container.campaigns.create_organization("Bench")
            if concurrency:
                container.campaigns.update_organization_settings(org_id, {"maxConcurrentCalls": concurrency})
            org = container.campaigns.organization(org_id)
            from domain.audience import Audience
            from domain.contact import Contact

            # Numbers ending in 4-9: the sandbox's callees who answer at once.
            people = [Contact(org.id, f"+2126{1000000 + i:07d}{4 + i % 6}", "", {"firstName": f"P{i}"}) for i in range(contacts)]
            for i in range(0, contacts, 500):
                container.campaigns.save(*people[i : i + 500])
            audience = Audience(org.id, "Bench audience", None)
            audience.add_members([str(p.id) for p in people])
            container.campaigns.save(audience)
            flow = container.campaigns.create_flow(org.id, {"name": "Bench", "graph": FLOW})
            program = container.campaigns.create_program(org, {
                "name": "Bench", "audienceId": str(audience.id), "flowId": str(flow.id), "startAt": "2025-01-01T00:00:00Z",
                "didPool": ["+212500000001"], "retryStrategy": {"type": "none"},
                **({"callsPerSecond": pace} if pace else {}),
            })
            procs.start("sandbox", name="sandbox")
            procs.start("api", "--workers", str(api_workers), name="api")
            read_port = free_port() if read_api else api_port
            if read_api:
                procs.start("api", name="readapi", env={"GOMOBILE_PORT": str(read_port)})
            procs.start("dispatcher", name="dispatcher")
            procs.start("projector", name="projector")
            for w in range(workers):
                procs.start("worker", name=f"worker{w}")
            wait_http(f"http://127.0.0.1:{api_port}/health", f"http://127.0.0.1:{read_port}/health",
                      f"http://127.0.0.1:{sandbox_port}/_sandbox/health")
            time.sleep(2)  # let workers connect to Redis
            cpu_before, pg_before = procs.cpu_seconds(), postgres_cpu_seconds()
            t_launch = time.perf_counter()
            execution = container.campaigns.launch_program(org, str(program.id), container.clock.now())
            during = DuringRun(container, f"http://127.0.0.1:{read_port}", api_key, str(execution.id), reads).start()
            first_dial = None
            counted: list[tuple[float, int]] = []  # (when, calls counted done) each poll
            while True:
                row = container.progress.execution(str(execution.id))
                if row and first_dial is None and (row["in_progress"] or row["completed"]):
                    first_dial = time.perf_counter()
                if row:
                    counted.append((time.perf_counter(), row["completed"] + row["failed"]))
                if row and row["completed"] + row["failed"] == contacts:
                    t_end = time.perf_counter()
                    break
                if time.perf_counter() - t_launch > 600:
                    raise TimeoutError(f"not finished: {row}")
                time.sleep(0.05)
            observed = during.finish()
            assert row["completed"] == contacts, row
            placed = httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/calls", timeout=60).json()
            assert len(placed) == contacts, len(placed)
            elapsed = t_end - (first_dial or t_launch)
            cpu_after, pg_after = procs.cpu_seconds(), postgres_cpu_seconds()
            cpu = {k: round((cpu_after[k] - cpu_before.get(k, 0)) * 1000 / contacts, 1) for k in cpu_after}
            cpu["postgres"] = round((pg_after - pg_before) * 1000 / contacts, 1)
            cores = os.cpu_count() or 1
            return {
                "workers": workers,
                "apiProcesses": api_workers,
                "readApiProcess": read_api,
                "callsPerSecondPace": pace,
                "orgMaxConcurrentCalls": org.max_concurrent_calls,
                "readRoundsPerSecond": reads,
                "threadsPerWorker": threads,
                "contacts": contacts,
                "secondsFirstDialToAllCounted": round(elapsed, 2),
                "completedCallsPerSecond": round(contacts / elapsed, 1),
                # Where the time went: calls the progress view counted done, and calls the
                # sandbox was asked to place, in each second of the run. Dials outrun the
                # callbacks when nothing bounds the calls in flight (--concurrency).
                "countedEachSecond": per_second(counted, first_dial or t_launch),
                "dialledEachSecond": dialled_each_second(placed),
                "rawPostgresCommitsPerSecond": round(raw, 0),
                "ratioToRawCommits": round(contacts / elapsed / raw, 4),
                "pythonRoundsPerSecond": round(speed),
                # CPU milliseconds each completed call cost, per process: the ceiling on
                # 2 cores is about 2000 / sum(...) calls per second.
                "cpuMsPerCall": cpu,
                "cpuMsPerCallTotal": round(sum(cpu.values()), 1),
                # The ceiling CPU sets on this machine: every core busy, at this CPU a call;
                # and without the sandbox (Twilio's stand-in, not ours to run in production).
                "ceilingCallsPerSecond": {
                    "allProcesses": round(1000 * cores / sum(cpu.values()), 1),
                    "platformOnly": round(1000 * cores / (sum(cpu.values()) - cpu.get("sandbox", 0)), 1),
                    "cores": cores,
                    "coresBusy": round(sum(cpu.values()) * contacts / 1000 / elapsed, 2),
                },
                # Issue 6: read models' lag and read latency while the execution runs.
                **observed,
            }
        finally:
            procs.stop()
            container.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=2000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--api", type=int, default=1, help="API server processes")
    ap.add_argument("--read-api", action="store_true", help="serve the reads from an API process of their own")
    ap.add_argument("--pace", type=float, default=None, help="the program's callsPerSecond (default: flat out)")
    ap.add_argument("--reads", type=float, default=4.0,
                    help="rounds of report and dashboard reads a second during the run (0: none, the calls alone)")
    # The organization's concurrent calls limit. Its plan's (100) would measure the limit,
    # not the platform: calls in flight / calls per second = the time a call holds its slot
    # (here about half a second from dispatch to the progress view counting it done, as the
    # sandbox answers at once), so 100 slots cap the rate near 180/s whatever the CPU. An
    # organization that places 200 real calls a second (each some 30 s long) has a custom
    # limit of thousands; 0 keeps the plan's.
    ap.add_argument("--concurrency", type=int, default=10000,
                    help="the organization's maxConcurrentCalls (default 10000, a custom limit; 0: its plan's, 100)")
    args = ap.parse_args()
    runs = [run_once(args.contacts, int(w), args.threads, args.api, args.read_api, args.pace, args.reads, args.concurrency)
            for w in args.workers.split(",")]
    emit("calls_e2e", {"machine": machine(), "runs": runs})


if __name__ == "__main__":
    main()
