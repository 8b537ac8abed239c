"""Faults during a real execution, with the production processes (api, 2 workers,
dispatcher, projector, sandbox) on PostgreSQL and a Redis server of the test's own, so
that it can be restarted without touching anyone else's.

One 2,000-contact execution goes through: a worker killed with SIGKILL 20 times (and
started again), the projector killed with SIGKILL 3 times, and the Redis server (which
keeps nothing) restarted once. Afterwards:

- every contact is in a final state, the counters add up at every poll;
- no attempt was dialled twice: the sandbox's own call log has one call per number;
- nothing was counted twice or lost by the projector: the live counters equal the ones a
  rebuild of the read model (run while the projector runs) computes from the events, and
  equal what the sandbox saw (every call it completed is counted completed).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import free_port, wait_for
from tests.integration.test_production_topology import Topology, _up

pytestmark = pytest.mark.integration

CONTACTS = 2000
WORKER_KILLS = 20
PROJECTOR_KILLS = 3
COUNTERS = ("contactsCompleted", "contactsFailed", "contactsPending", "contactsInProgress", "contactsSkipped")
FLOW = {
    "name": "Chaos",
    "graph": {
        "startNodeId": "dial",
        "nodes": [
            {"id": "dial", "type": "dial", "config": {"timeout": 30000}, "outputs": {"onAnswer": "hi", "onError": "bye"}},
            {"id": "hi", "type": "say", "config": {"text": "Hello {{ $contact.firstName }}"}, "outputs": {"onComplete": "bye"}},
            {"id": "bye", "type": "hangup", "config": {"reason": "completed"}},
        ],
    },
}


class PrivateRedis:
    """A redis-server of this test only, without persistence (as in production here)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        wait_for(lambda: _ping(redis.Redis(port=self.port)), 10, what="the test's redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def _ping(r: Any) -> bool:
    import redis

    try:
        return bool(r.ping())
    except redis.RedisError:
        return False


@pytest.fixture()
def chaos(tmp_path: Path, postgres_database: str) -> Any:
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    t = Topology(tmp_path, postgres_database, redis_server.url, "chaos")
    t.env["GOMOBILE_SANDBOX_TIME_SCALE"] = "0"
    t.env["GOMOBILE_LOG_LEVEL"] = "WARNING"
    org = json.loads(t.cli("org", "create", "Chaos Org"))
    try:
        _start(t, workers=2)
        yield t, org, redis_server
    except BaseException:
        print(t.logs())
        raise
    finally:
        t.stop()
        redis_server.stop()


def _start(t: Topology, workers: int) -> None:
    """The sandbox, the api, a dispatcher, a projector and ``workers`` workers; until the
    api and the sandbox answer."""
    t.start("sandbox")
    for role in ("api", "dispatcher", "projector"):
        t.start(role)
    for i in range(workers):
        t.start("worker", name=f"worker-{i + 1}")
    wait_for(lambda: _up(f"http://127.0.0.1:{t.api_port}/health") and _up(f"http://127.0.0.1:{t.sandbox_port}/_sandbox/health"),
             30, what="api and sandbox")


def _kill(t: Topology, name: str) -> None:
    proc = t.procs[name]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.timeout(900)
def test_killed_workers_projector_and_a_redis_restart_lose_nothing_and_dial_nothing_twice(chaos: Any) -> None:
    t, org, redis_server = chaos
    base = f"http://127.0.0.1:{t.api_port}"
    with httpx.Client(base_url=base, headers={"x-api-key": org["apiKey"]}, timeout=60) as client:
        # Numbers ending in 4-9: sandbox callees who answer at once.
        phones = [f"+2126{3000000 + i:07d}{4 + i % 6}" for i in range(CONTACTS)]
        ids: list[str] = []
        for i in range(0, CONTACTS, 1000):
            r = client.post("/api/contact/upsert", json={"data": [
                {"primaryPhone": p, "firstName": f"C{i + j}"} for j, p in enumerate(phones[i : i + 1000])]})
            assert r.status_code == 201, r.text
        wait_for(lambda: client.get("/api/contact", params={"limit": 1}).json()["meta"]["total"] == CONTACTS, 60,
                 what="contacts listed")
        page = 1
        while len(ids) < CONTACTS:
            got = client.get("/api/contact", params={"limit": 100, "page": page}).json()["data"]
            assert got, "contacts missing from the list"
            ids += [c["id"] for c in got]
            page += 1
        audience = client.post("/api/audience", json={"name": "Chaos"}).json()
        for i in range(0, CONTACTS, 1000):
            r = client.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": ids[i : i + 1000]})
            assert r.status_code == 200, r.text
        flow = client.post("/api/flows", json=FLOW)
        assert flow.status_code == 201, flow.text
        program = client.post("/api/programs", json={
            "name": "Chaos", "audienceId": audience["id"], "flowId": flow.json()["id"],
            "startAt": "2025-01-20T09:00:00Z", "didPool": ["+212500000001"], "retryStrategy": {"type": "none"},
        })
        assert program.status_code == 201, program.text
        launched = client.post(f"/api/programs/{program.json()['id']}/launch")
        assert launched.status_code == 201, launched.text
        eid = launched.json()["executionId"]

        def poll() -> dict[str, Any]:
            r = client.get(f"/api/program-executions/{eid}")
            for _ in range(10):  # a client honours 503 + Retry-After (an overloaded pool says so)
                if r.status_code != 503:
                    break
                time.sleep(1)
                r = client.get(f"/api/program-executions/{eid}")
            assert r.status_code == 200, r.text
            e = r.json()
            assert sum(e[k] for k in COUNTERS) == e["totalContacts"], f"counters do not add up: {e}"
            return e

        worker_kills = projector_kills = 0
        redis_restarted = False
        started = time.monotonic()
        last_progress, last_done = time.monotonic(), -1
        while True:
            e = poll()
            done = e["contactsCompleted"] + e["contactsFailed"]
            if e["totalContacts"] == CONTACTS and done == CONTACTS and e["status"] == "completed":
                break
            assert time.monotonic() - started < 600, f"not finished after 10 minutes: {e}\n{t.logs()}"
            if done != last_done:
                if done // 200 != max(last_done, 0) // 200:
                    print(f"chaos: {time.monotonic() - started:.0f} s, {done} done, {e['contactsInProgress']} in "
                          f"progress, {worker_kills} worker kills", flush=True)
                last_done, last_progress = done, time.monotonic()
            elif time.monotonic() - last_progress > 5:
                # Stalled (a lost dial job waits for its lease, a claim that never got
                # dialled for the reconciler): move the platform's clock on.
                t.advance(150)
                last_progress = time.monotonic()
            if worker_kills < WORKER_KILLS and done >= (worker_kills + 1) * CONTACTS // (WORKER_KILLS + 2):
                name = f"worker-{1 + worker_kills % 2}"
                _kill(t, name)
                t.start("worker", name=name)
                worker_kills += 1
            if projector_kills < PROJECTOR_KILLS and done >= (projector_kills + 1) * CONTACTS // 5:
                _kill(t, "projector")
                t.start("projector")
                projector_kills += 1
            if not redis_restarted and done >= CONTACTS // 2:
                redis_server.stop()
                time.sleep(1)
                redis_server.start()
                redis_restarted = True
            time.sleep(0.2)
        assert (worker_kills, projector_kills, redis_restarted) == (WORKER_KILLS, PROJECTOR_KILLS, True)

        # No attempt dialled twice: one call per number in the sandbox's own log.
        placed = httpx.get(f"http://127.0.0.1:{t.sandbox_port}/_sandbox/calls", timeout=60).json()
        per_number = collections.Counter(c["to"] for c in placed)
        twice = {n: k for n, k in per_number.items() if k > 1}
        assert not twice, f"dialled more than once: {twice}"
        assert set(per_number) <= set(phones)
        # Every call the sandbox completed is counted completed; the others (claims that
        # died with their worker before the dial) ended failed, each one once.
        final = poll()
        completed_by_sandbox = sum(1 for c in placed if c.get("status") == "completed")
        assert final["contactsCompleted"] == completed_by_sandbox, (final, completed_by_sandbox)
        assert final["contactsFailed"] == CONTACTS - completed_by_sandbox
        print(f"chaos: {len(placed)} calls placed for {CONTACTS} contacts, {completed_by_sandbox} completed, "
              f"{final['contactsFailed']} failed (claimed by a killed worker, never dialled), "
              f"{time.monotonic() - started:.0f} s, {worker_kills} worker kills, {projector_kills} projector kills, "
              "1 Redis restart")

        # The projector, killed three times, counted exactly what a clean replay counts. The
        # replay runs beside the projector (which holds off each read model meanwhile).
        report_before = client.get(f"/api/program-execution/{eid}/report").json()
        t.cli("projections", "rebuild", "progress")
        t.cli("projections", "rebuild", "reports")
        rebuilt = poll()
        assert {k: rebuilt[k] for k in COUNTERS} == {k: final[k] for k in COUNTERS}
        report_after = client.get(f"/api/program-execution/{eid}/report").json()
        assert report_after.get("callMetrics") == report_before.get("callMetrics")
        assert report_after.get("contactMetrics") == report_before.get("contactMetrics")


class PrivatePostgres:
    """A PostgreSQL cluster of this test only (initdb in a temporary directory), so that
    it can be stopped and started without touching the shared server."""

    def __init__(self) -> None:
        import glob
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        assert found, "PostgreSQL's server binaries (pg_ctl, initdb) are needed for this test"
        self.bin = Path(found[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="gomobile-chaos-pg-"))
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self.as_postgres:
            import shutil

            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr.decode() + out.stdout.decode()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-l", str(self.dir / "log"), "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                  "start")

    def crash(self) -> None:
        """Stop at once, as a crash would (no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-m", "immediate", "stop")

    def destroy(self) -> None:
        import shutil

        subprocess.run([*(["runuser", "-u", "postgres", "--"] if self.as_postgres else []),
                        str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture()
def outage(tmp_path: Path, redis_namespace: tuple[str, str]) -> Any:
    pg = PrivatePostgres()
    pg.start()
    t = Topology(tmp_path, pg.url, *redis_namespace)
    t.env["GOMOBILE_SANDBOX_TIME_SCALE"] = "0"
    t.env["GOMOBILE_LOG_LEVEL"] = "WARNING"
    try:
        org = json.loads(t.cli("org", "create", "Outage Org"))
        _start(t, workers=1)
        yield t, org, pg
    except BaseException:
        print(t.logs())
        raise
    finally:
        t.stop()
        pg.destroy()


@pytest.mark.timeout(600)
def test_a_postgres_crash_answers_503_and_the_execution_resumes_by_itself(outage: Any) -> None:
    t, org, pg = outage
    n = 300
    with httpx.Client(base_url=f"http://127.0.0.1:{t.api_port}", headers={"x-api-key": org["apiKey"]}, timeout=60) as client:
        phones = [f"+2126{4000000 + i:07d}{4 + i % 6}" for i in range(n)]
        r = client.post("/api/contact/upsert", json={"data": [{"primaryPhone": p} for p in phones]})
        assert r.status_code == 201, r.text
        ids = [x["id"] for x in r.json()["data"]] if "data" in r.json() else None
        if ids is None:
            wait_for(lambda: client.get("/api/contact", params={"limit": 1}).json()["meta"]["total"] == n, 60, what="contacts")
            ids = [c["id"] for page in (1, 2, 3) for c in client.get("/api/contact", params={"limit": 100, "page": page}).json()["data"]]
        audience = client.post("/api/audience", json={"name": "Outage"}).json()
        assert client.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": ids}).status_code == 200
        flow = client.post("/api/flows", json=FLOW).json()
        program = client.post("/api/programs", json={
            "name": "Outage", "audienceId": audience["id"], "flowId": flow["id"], "startAt": "2025-01-20T09:00:00Z",
            "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}}).json()
        eid = client.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
        wait_for(lambda: client.get(f"/api/program-executions/{eid}").json()["contactsCompleted"] >= n // 4, 120,
                 what="a quarter of the calls done")

        pg.crash()
        # A request that reaches the store in the first instant waits out its retries (see
        # docs/RELIABILITY.md); the API's watch notices the outage within a quarter second.
        time.sleep(1)
        statuses = []
        for _ in range(10):
            down = client.get(f"/api/program-executions/{eid}")
            statuses.append(down.status_code)
            if down.status_code == 503:
                break
            time.sleep(0.3)
        assert statuses[-1] == 503, f"expected 503 while PostgreSQL is down, got {statuses}: {down.text}"
        assert int(down.headers["Retry-After"]) > 0 and down.json()["error"] == "SERVICE_UNAVAILABLE"
        write = client.post("/api/contact", json={"primaryPhone": "+212612999999"})
        assert write.status_code == 503 and "Retry-After" in write.headers, write.text
        time.sleep(3)
        pg.start()

        # Nobody restarts anything: the processes reconnect and the execution finishes.
        started = time.monotonic()
        last_done, last_progress = -1, time.monotonic()
        while True:
            try:
                r = client.get(f"/api/program-executions/{eid}")
            except httpx.TimeoutException:
                continue  # a request caught by the restart itself: the client retries
            if r.status_code == 200:
                e = r.json()
                assert sum(e[k] for k in COUNTERS) == e["totalContacts"], e
                done = e["contactsCompleted"] + e["contactsFailed"]
                if done == n and e["status"] == "completed":
                    break
                if done != last_done:
                    last_done, last_progress = done, time.monotonic()
            assert time.monotonic() - started < 300, f"not finished 5 minutes after the restart: {r.text}\n{t.logs()}"
            if time.monotonic() - last_progress > 5:
                t.advance(150)  # lost callbacks and jobs: the reconciler and the dispatch lease
                last_progress = time.monotonic()
            time.sleep(0.3)
        for role, proc in t.procs.items():
            assert proc.poll() is None, f"{role} died during the outage:\n{t.logs()}"
        placed = httpx.get(f"http://127.0.0.1:{t.sandbox_port}/_sandbox/calls", timeout=60).json()
        twice = {k: v for k, v in collections.Counter(c["to"] for c in placed).items() if v > 1}
        assert not twice, f"dialled more than once: {twice}"
        completed = sum(1 for c in placed if c.get("status") == "completed")
        assert e["contactsCompleted"] == completed, (e, completed)
        print(f"postgres outage: {len(placed)} calls placed for {n} contacts, {completed} completed, "
              f"{e['contactsFailed']} failed, statuses while down {statuses}")
