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
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    REDIS_URL,
    Processes,
    emit,
    free_port,
    fresh_database,
    machine,
    postgres_cpu_seconds,
    raw_commit_rate,
)

FLOW = {
    "startNodeId": "dial",
    "nodes": [
        {"id": "dial", "type": "dial", "config": {"timeout": 30000, "enableAMD": False}, "outputs": {"onAnswer": "hi"}},
        {"id": "hi", "type": "say", "config": {"text": "Hello"}, "outputs": {"onComplete": "bye"}},
        {"id": "bye", "type": "hangup", "config": {"reason": "completed"}},
    ],
}


def run_once(contacts: int, workers: int, threads: int, api_workers: int = 1) -> dict[str, Any]:
    with fresh_database() as db, tempfile.TemporaryDirectory() as tmp:
        raw = raw_commit_rate(db)
        api_port, sandbox_port = free_port(), free_port()
        env = {
            **os.environ,
            "GOMOBILE_DATABASE_URL": db,
            "GOMOBILE_REDIS_URL": REDIS_URL,
            "GOMOBILE_REDIS_NAMESPACE": f"gomobile-bench-{uuid.uuid4().hex[:8]}",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "GOMOBILE_PORT": str(api_port),
            "GOMOBILE_PUBLIC_BASE_URL": f"http://127.0.0.1:{api_port}",
            "GOMOBILE_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
            "GOMOBILE_SANDBOX_PORT": str(sandbox_port),
            "GOMOBILE_SANDBOX_TIME_SCALE": "0",
            "GOMOBILE_WORKER_THREADS": str(threads),
            "GOMOBILE_LOG_LEVEL": "ERROR",
        }
        os.environ.update({k: env[k] for k in ("GOMOBILE_DATABASE_URL",)})
        from infrastructure.bootstrap import Container
        from infrastructure.settings import Settings

        container = Container(Settings(database_url=db, twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN))
        procs = Processes(env, Path(tmp))
        try:
            org_id, _ = container.campaigns.create_organization("Bench")
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
            })
            procs.start("sandbox", name="sandbox")
            procs.start("api", "--workers", str(api_workers), name="api")
            procs.start("dispatcher", name="dispatcher")
            procs.start("projector", name="projector")
            for w in range(workers):
                procs.start("worker", name=f"worker{w}")
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{api_port}/health").status_code == 200 and httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("processes did not start")
                time.sleep(0.2)
            time.sleep(2)  # let workers connect to Redis
            cpu_before, pg_before = procs.cpu_seconds(), postgres_cpu_seconds()
            t_launch = time.perf_counter()
            execution = container.campaigns.launch_program(org, str(program.id), container.clock.now())
            first_dial = None
            while True:
                row = container.progress.execution(str(execution.id))
                if row and first_dial is None and (row["in_progress"] or row["completed"]):
                    first_dial = time.perf_counter()
                if row and row["completed"] + row["failed"] == contacts:
                    t_end = time.perf_counter()
                    break
                if time.perf_counter() - t_launch > 600:
                    raise TimeoutError(f"not finished: {row}")
                time.sleep(0.05)
            assert row["completed"] == contacts, row
            placed = httpx.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/calls", timeout=60).json()
            assert len(placed) == contacts, len(placed)
            elapsed = t_end - (first_dial or t_launch)
            cpu_after, pg_after = procs.cpu_seconds(), postgres_cpu_seconds()
            cpu = {k: round((cpu_after[k] - cpu_before.get(k, 0)) * 1000 / contacts, 1) for k in cpu_after}
            cpu["postgres"] = round((pg_after - pg_before) * 1000 / contacts, 1)
            return {
                "workers": workers,
                "apiProcesses": api_workers,
                "threadsPerWorker": threads,
                "contacts": contacts,
                "secondsFirstDialToAllCounted": round(elapsed, 2),
                "completedCallsPerSecond": round(contacts / elapsed, 1),
                "rawPostgresCommitsPerSecond": round(raw, 0),
                "ratioToRawCommits": round(contacts / elapsed / raw, 4),
                # CPU milliseconds each completed call cost, per process: the ceiling on
                # 2 cores is about 2000 / sum(...) calls per second.
                "cpuMsPerCall": cpu,
                "cpuMsPerCallTotal": round(sum(cpu.values()), 1),
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
    args = ap.parse_args()
    runs = [run_once(args.contacts, int(w), args.threads, args.api) for w in args.workers.split(",")]
    emit("calls_e2e", {"machine": machine(), "runs": runs})


if __name__ == "__main__":
    main()
