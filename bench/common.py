"""Shared pieces of the benchmarks: a throwaway PostgreSQL database and Redis namespace,
the platform's processes, raw baselines measured in the same run, machine facts."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("GOMOBILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GOMOBILE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ACCOUNT_SID = "AC" + "2" * 32
AUTH_TOKEN = "bench-auth-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"gomobile_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_commit_rate(url: str, seconds: float = 3.0) -> float:
    """Single-row INSERT + COMMIT on one connection: the raw PostgreSQL baseline."""
    with psycopg.connect(url) as c:
        c.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigserial primary key, v text)")
        c.commit()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            c.execute("INSERT INTO bench_raw (v) VALUES (%s)", ("x" * 100,))
            c.commit()
            n += 1
        return n / (time.perf_counter() - t0)


def python_speed(seconds: float = 1.0) -> float:
    """Rounds a second of a fixed pure-Python workload (dicts, strings, JSON) on one core:
    how fast this VM's CPU is at the moment, beside the raw commit rate. The same code has
    measured a third faster or slower on different days here (the host's load, not ours):
    figures from different runs compare through this."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        row = {f"k{i}": (i, str(i) * 3) for i in range(40)}
        text = json.dumps(row)
        assert len(json.loads(text)) == 40 and "k7" in text.upper().lower()
        n += 1
    return n / (time.perf_counter() - t0)


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    import eventsourcing  # noqa: F401

    with psycopg.connect(ADMIN_URL) as c:
        pg = c.execute("SHOW server_version").fetchone()[0]
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        # Which build: a distribution's (optimised) or a default source build (the Makefile says why it matters).
        "pythonExecutable": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        "postgres": pg,
        "eventsourcing": version("eventsourcing"),
        "dramatiq": version("dramatiq"),
        "litestar": version("litestar"),
    }


class Processes:
    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []

    def start(self, *args: str, name: str, env: dict[str, str] | None = None) -> None:
        """Start ``gomobile ARGS`` (``env`` adds to or overrides the shared environment)."""
        self.names.append(name)
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - the child writes to it until it stops
        command = [sys.executable, "-m", "interfaces.cli", *args]
        profile = os.environ.get("GOMOBILE_BENCH_PYSPY")  # a folder: each process sampled by py-spy (raw stacks)
        yappi_dir = os.environ.get("GOMOBILE_BENCH_YAPPI")  # a folder: these roles profiled by yappi (all threads, CPU)
        if yappi_dir and args[0] in os.environ.get("GOMOBILE_BENCH_YAPPI_ROLES", "api").split(","):
            command = [sys.executable, "-m", "bench.yappi_run", *args]
            env = {**(env or {}), "YAPPI_OUT": f"{yappi_dir}/{name}"}
        if profile:
            command = [str(Path(sys.executable).parent / "py-spy"), "record", "-r", "100", "--gil", "--nonblocking", "-f", "raw", "-o", f"{profile}/{name}.txt", "--", *command]
        self.procs.append(
            subprocess.Popen(command, env={**self.env, **(env or {})}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        )

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each process and its children."""
        out: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for name, p in zip(self.names, self.procs):
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[name] = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
            except (OSError, IndexError):
                out[name] = 0.0
        return out

    def stop(self) -> None:
        for p in self.procs:
            if os.environ.get("GOMOBILE_BENCH_PYSPY"):  # stop the sampled process: py-spy then writes its file
                subprocess.run(["pkill", "-TERM", "-P", str(p.pid)], check=False)
            else:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def postgres_cpu_seconds() -> float:
    """CPU time of every PostgreSQL server process (they are not our children), and of
    those that ended since the server started (counted in the postmaster's children's time:
    a backend that exits during a measurement is still counted)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() not in ("postgres", "postmaster"):
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
        except (OSError, IndexError):
            continue
    return total


def emit(name: str, result: dict[str, Any]) -> None:
    """Print the figures and keep them for docs/PERFORMANCE.md."""
    print(json.dumps({"benchmark": name, **result}, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"benchmark": name, **result}, indent=2))


def wait_http(*urls: str, timeout: float = 30.0) -> None:
    """Until every URL answers 200 (the processes are up)."""
    import httpx

    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
            time.sleep(0.2)


def platform_env(db: str, api_port: int, sandbox_port: int, threads: int) -> dict[str, str]:
    """The environment of the platform's processes in a benchmark: PostgreSQL + a Redis
    namespace of its own, the sandbox answering at once, per-key rate limits off."""
    import uuid

    return {
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
        "GOMOBILE_RATE_LIMIT_PER_MINUTE": "0",  # the benchmarks measure the platform, not the per-key limit
    }
