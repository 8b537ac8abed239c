"""API command latency at fixed request rates, on PostgreSQL, with `gomobile api` as its
own process.

Open loop: request i is due at t0 + i / rate whatever happened to the others, and its
latency is counted from when it was due (so a stalled server is not hidden by a client
that waits for it: no coordinated omission). Latencies go into an HDR histogram and are
reported as percentiles. Two commands and one read:

- ``POST /api/contact`` (a new contact: validation, one event, one commit);
- ``PUT /api/contact/{id}`` (load the stream, one event);
- ``GET /api/contact/{id}`` (a read).

Beside them, the raw PostgreSQL INSERT + COMMIT latency measured in the same run.

    .venv/bin/python -m bench.api_latency [--rates 25,50,100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.baselines import histogram, percentiles, postgres_commits
from bench.common import Processes, emit, free_port, fresh_database, machine, wait_http

PHONES = itertools.count()  # every created contact gets a new number, across runs


async def _drive(base: str, key: str, rate: float, seconds: float, kind: str, ids: list[str]) -> dict[str, Any]:
    h = histogram()
    errors: dict[int, int] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, headers={"x-api-key": key}, timeout=60, limits=limits) as client:

        async def one(i: int, due: float) -> None:
            if kind == "create":
                number = f"+2126{20000000 + next(PHONES):08d}"
                r = await client.post("/api/contact", json={"primaryPhone": number, "firstName": f"Bench {i}"})
            elif kind == "update":
                r = await client.put(f"/api/contact/{ids[i % len(ids)]}", json={"city": f"City {i}"})
            else:
                r = await client.get(f"/api/contact/{ids[i % len(ids)]}")
            h.record_value(max(1, int((time.perf_counter() - due) * 1e6)))
            if r.status_code >= 300:
                errors[r.status_code] = errors.get(r.status_code, 0) + 1

        tasks = []
        t0 = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    return {"kind": kind, "rate": rate, "requests": total, "errors": errors, "latencyMs": percentiles(h)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="25,50,100")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with fresh_database() as db, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "GOMOBILE_DATABASE_URL": db, "GOMOBILE_PORT": str(port), "GOMOBILE_LOG_LEVEL": "ERROR",
               "GOMOBILE_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "GOMOBILE_DATA_DIR": str(Path(tmp) / "var"),
               # The benchmark measures the server, not the per-key rate limit.
               "GOMOBILE_RATE_LIMIT_PER_MINUTE": "100000000", "GOMOBILE_RATE_LIMIT_BURST": "100000000"}
        env.pop("GOMOBILE_REDIS_URL", None)
        from infrastructure.bootstrap import Container
        from infrastructure.settings import Settings

        container = Container(Settings(database_url=db, data_dir=Path(tmp) / "var"))
        procs = Processes(env, Path(tmp))
        try:
            _, key = container.campaigns.create_organization("Bench")
            raw = postgres_commits(db, 3.0)
            procs.start("api", name="api")
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/health")
            with httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=30) as c:
                ids = [c.post("/api/contact", json={"primaryPhone": f"+2126{10000000 + i:08d}"}).json()["id"] for i in range(200)]
            runs = []
            for kind in ("create", "update", "read"):
                for rate in rates:
                    run = asyncio.run(_drive(base, key, rate, args.seconds, kind, ids))
                    run["p50RatioToRawCommit"] = round(run["latencyMs"]["p50"] / max(raw["commitLatencyMs"]["p50"], 1e-3), 1)
                    runs.append(run)
                    print(kind, rate, run["latencyMs"], run["errors"], flush=True)
        finally:
            procs.stop()
            container.close()
    emit("api_latency", {"machine": machine(), "rawPostgres": raw, "runs": runs})


if __name__ == "__main__":
    main()
