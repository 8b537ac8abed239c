"""Raw baselines, measured in the same run as the benchmarks they put in proportion:
what PostgreSQL and Redis do on this machine with no platform code in the way.

- PostgreSQL single-row INSERT + COMMIT on one connection (rate and latency percentiles);
- PostgreSQL batched inserts (executemany of 500 rows per commit) and ``COPY``;
- PostgreSQL sequential read of a 1,000,000-row table (rows/s);
- Redis queue throughput: LPUSH then BRPOP of small messages on one connection pair
  (the pattern of Dramatiq's Redis broker, without Dramatiq).

    .venv/bin/python -m bench.baselines [--rows 1000000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import psycopg

from bench.common import REDIS_URL, emit, fresh_database, machine


def histogram() -> Any:
    from hdrh.histogram import HdrHistogram

    return HdrHistogram(1, 60_000_000, 3)  # microseconds, up to a minute, 3 significant digits


def percentiles(h: Any) -> dict[str, float]:
    return {f"p{p}": round(h.get_value_at_percentile(p) / 1000, 3) for p in (50, 90, 99, 99.9)} | {
        "max": round(h.get_max_value() / 1000, 3), "count": h.get_total_count()}


def postgres_commits(url: str, seconds: float) -> dict[str, Any]:
    h = histogram()
    with psycopg.connect(url) as c:
        c.execute("CREATE TABLE raw_commits (id bigserial PRIMARY KEY, v text)")
        c.commit()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            s = time.perf_counter()
            c.execute("INSERT INTO raw_commits (v) VALUES (%s)", ("x" * 100,))
            c.commit()
            h.record_value(max(1, int((time.perf_counter() - s) * 1e6)))
            n += 1
        rate = n / (time.perf_counter() - t0)
    return {"commitsPerSecond": round(rate), "commitLatencyMs": percentiles(h)}


def postgres_batches(url: str, rows: int) -> dict[str, Any]:
    payload = [(f"{i:012d}", "x" * 200) for i in range(rows)]
    with psycopg.connect(url) as c:
        c.execute("CREATE TABLE raw_batch (k text PRIMARY KEY, v text)")
        c.execute("CREATE TABLE raw_copy (k text PRIMARY KEY, v text)")
        c.commit()
        t0 = time.perf_counter()
        with c.cursor() as cur:
            for i in range(0, rows, 500):
                cur.executemany("INSERT INTO raw_batch (k, v) VALUES (%s, %s)", payload[i : i + 500])
                c.commit()
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with c.cursor().copy("COPY raw_copy (k, v) FROM STDIN") as cp:
            for row in payload:
                cp.write_row(row)
        c.commit()
        copy_s = time.perf_counter() - t0
    return {"batchedInsertRowsPerSecond": round(rows / batch_s), "copyRowsPerSecond": round(rows / copy_s)}


def postgres_sequential_read(url: str, rows: int) -> dict[str, Any]:
    with psycopg.connect(url) as c:
        c.execute("CREATE TABLE raw_read AS SELECT g AS id, repeat('x', 300)::bytea AS state FROM generate_series(1, %s) g",
                  (rows,))
        c.execute("ALTER TABLE raw_read ADD PRIMARY KEY (id)")
        c.commit()
        t0 = time.perf_counter()
        n = 0
        last = 0
        while True:  # the same paging the projections use: by id, in pages of 500
            got = c.execute("SELECT id, state FROM raw_read WHERE id > %s ORDER BY id LIMIT 500", (last,)).fetchall()
            if not got:
                break
            n += len(got)
            last = got[-1][0]
        paged_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with c.cursor(name="scan") as cur:
            cur.itersize = 10_000
            scanned = sum(1 for _ in cur.execute("SELECT id, state FROM raw_read ORDER BY id"))
        scan_s = time.perf_counter() - t0
        c.commit()
    return {"sequentialReadRowsPerSecond": round(scanned / scan_s), "pagedReadRowsPerSecond": round(n / paged_s)}


def redis_queue(seconds: float) -> dict[str, Any]:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    key = f"gomobile-bench-raw-{os.getpid()}"
    r.delete(key)
    message = b'{"queue_name":"default","actor_name":"dial","args":["00000000-0000-0000-0000-000000000000"]}'
    n, t0 = 0, time.perf_counter()
    pipe_size = 100
    while time.perf_counter() - t0 < seconds:
        p = r.pipeline(transaction=False)
        for _ in range(pipe_size):
            p.lpush(key, message)
        p.execute()
        for _ in range(pipe_size):
            r.brpop([key], timeout=1)
        n += pipe_size
    rate = n / (time.perf_counter() - t0)
    r.delete(key)
    return {"queueMessagesPerSecond": round(rate)}


def measure(rows: int = 1_000_000, seconds: float = 3.0) -> dict[str, Any]:
    with fresh_database() as url:
        out: dict[str, Any] = {}
        out.update(postgres_commits(url, seconds))
        out.update(postgres_batches(url, min(rows, 200_000)))
        out.update(postgres_sequential_read(url, rows))
    out.update(redis_queue(seconds))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    emit("baselines", {"machine": machine(), **measure(args.rows, args.seconds)})


if __name__ == "__main__":
    main()
