"""The production topology on PostgreSQL + Redis: api, worker (Dramatiq, Redis broker),
dispatcher and projector as separate processes, configured only by environment
variables, plus the sandbox phone network; the same 100-contact campaign."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.scenario import FLOW, check_call_records, check_counters, run_campaign
from tests.harness import ACCOUNT_SID, AUTH_TOKEN, free_port, wait_for

pytestmark = pytest.mark.integration
GOMOBILE = [sys.executable, "-m", "interfaces.cli"]
ROOT = Path(__file__).resolve().parents[2]


class Topology:
    def __init__(self, tmp: Path, database_url: str, redis_url: str, namespace: str) -> None:
        self.tmp = tmp
        self.clock_file = tmp / "clock-offset"
        self.clock_file.write_text("0")
        self.api_port = free_port()
        self.sandbox_port = free_port()
        self.env = {
            **os.environ,
            "GOMOBILE_DATABASE_URL": database_url,
            "GOMOBILE_REDIS_URL": redis_url,
            "GOMOBILE_REDIS_NAMESPACE": namespace,
            "GOMOBILE_TELEPHONY": "sandbox",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "GOMOBILE_PORT": str(self.api_port),
            "GOMOBILE_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "GOMOBILE_SANDBOX_URL": f"http://127.0.0.1:{self.sandbox_port}",
            "GOMOBILE_SANDBOX_PORT": str(self.sandbox_port),
            "GOMOBILE_SANDBOX_TIME_SCALE": "0.01",
            "GOMOBILE_CLOCK_OFFSET_FILE": str(self.clock_file),
            "GOMOBILE_DISPATCH_INTERVAL": "0.05",
            "GOMOBILE_PROJECTION_INTERVAL": "0.02",
            "GOMOBILE_RECONCILE_AFTER": "10",
            "GOMOBILE_DATA_DIR": str(tmp / "var"),
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, role: str, *args: str, name: str | None = None) -> None:
        name = name or role
        with open(self.tmp / f"{name}.log", "wb") as log:  # the process keeps its own copy of the descriptor
            self.procs[name] = subprocess.Popen([*GOMOBILE, role, *args], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def cli(self, *args: str) -> str:
        out = subprocess.run([*GOMOBILE, *args], env=self.env, cwd=ROOT, capture_output=True, timeout=120, check=False)
        assert out.returncode == 0, out.stderr.decode()
        return out.stdout.decode()

    def advance(self, seconds: float) -> None:
        self.clock_file.write_text(str(float(self.clock_file.read_text()) + seconds))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.tmp.glob("*.log"))

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture()
def topology(tmp_path: Path, postgres_database: str, redis_namespace: tuple[str, str]) -> Any:
    t = Topology(tmp_path, postgres_database, *redis_namespace)
    # Create the schema once, before the processes race to create it.
    org = json.loads(t.cli("org", "create", "Topology Org"))
    t.start("sandbox")
    for role in ("api", "worker", "dispatcher", "projector"):
        t.start(role)
    # Two dispatchers and two workers at once: still never one attempt dialled twice.
    t.start("dispatcher", name="dispatcher-2")
    t.start("worker", name="worker-2")
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{t.api_port}/health") and _up(f"http://127.0.0.1:{t.sandbox_port}/_sandbox/health"), 30, what="api and sandbox")
        yield t, org
    except BaseException:
        print(t.logs())
        raise
    finally:
        t.stop()


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_hundred_contact_campaign_across_processes(topology: Any) -> None:
    t, org = topology
    assert set(org) == {"organizationId", "apiKey"}
    for role, proc in t.procs.items():
        assert proc.poll() is None, f"{role} exited early:\n{t.logs()}"
    with httpx.Client(base_url=f"http://127.0.0.1:{t.api_port}", headers={"Authorization": f"Bearer {org['apiKey']}"}, timeout=30) as client:
        try:
            result = run_campaign(client, t.advance, timeout=120)
            check_call_records(client, result)
        except BaseException:
            print(t.logs())
            raise
        calls = httpx.get(f"http://127.0.0.1:{t.sandbox_port}/_sandbox/calls", timeout=10).json()
        assert len(calls) == 130  # 100 first attempts + 30 retries, never a duplicate dial

        # Rebuilding a read model from the events gives the same answers.
        before = client.get(f"/api/program-execution/{result['executionId']}/report/calls", params={"limit": 100}).json()
        t.procs["projector"].terminate()
        t.procs["projector"].wait(timeout=15)
        out = json.loads(t.cli("projections", "rebuild", "call_history").strip().splitlines()[-1])
        assert out["projection"] == "call_history"
        json.loads(t.cli("projections", "rebuild", "progress").strip().splitlines()[-1])
        after = client.get(f"/api/program-execution/{result['executionId']}/report/calls", params={"limit": 100}).json()
        assert after == before
        assert client.get(f"/api/program-executions/{result['executionId']}").json() == result["final"] | {
            "updatedAt": client.get(f"/api/program-executions/{result['executionId']}").json()["updatedAt"]
        }
        status = json.loads(t.cli("projections", "status"))
        from infrastructure.bootstrap import PROJECTIONS

        assert {s["projection"] for s in status} == set(PROJECTIONS)
        assert all(v == 0 for s in status for v in s["lag"].values())
        history = next(s for s in status if s["projection"] == "call_history")
        # Notification ids can skip values (a rolled-back insert still uses its sequence value).
        assert 900 < out["eventsApplied"] <= sum(history["positions"].values())


def test_pause_resume_and_cancel_while_two_dispatchers_and_two_workers_run(topology: Any) -> None:
    """Pause: no new call starts (calls in progress finish); resume: calling goes on;
    cancel: every contact not yet called is skipped and nobody is dialled after. Across
    it all, on two dispatchers and two workers, no attempt is dialled twice, the counters
    add up on every read, and each contact ends in exactly one final state."""
    t, org = topology
    sandbox = f"http://127.0.0.1:{t.sandbox_port}"
    n = 60
    phones = [f"+21261255{i:03d}{4 + i % 6}" for i in range(n)]  # callees who answer at once
    seen: list[dict[str, Any]] = []

    def execution(c: httpx.Client, eid: str) -> dict[str, Any]:
        e = c.get(f"/api/program-executions/{eid}").json()
        check_counters(e)
        seen.append(e)
        return e

    def dialled() -> list[str]:
        return [call["to"] for call in httpx.get(f"{sandbox}/_sandbox/calls", timeout=10).json() if call["to"] in phones]

    with httpx.Client(base_url=f"http://127.0.0.1:{t.api_port}", headers={"Authorization": f"Bearer {org['apiKey']}"}, timeout=30) as c:
        try:
            # Slow enough to be caught in the middle: two calls at a time, five a second.
            assert c.patch("/api/organization", json={"maxConcurrentCalls": 2, "callsPerSecond": 5}).status_code == 200
            ids = [c.post("/api/contact", json={"primaryPhone": p}).json()["id"] for p in phones]
            audience = c.post("/api/audience", json={"name": "Pause and cancel"}).json()
            assert c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": ids}).status_code == 200
            flow = c.post("/api/flows", json=FLOW).json()
            program = c.post("/api/programs", json={
                "name": "Pause and cancel", "audienceId": audience["id"], "flowId": flow["id"],
                "startAt": "2025-01-01T00:00:00Z", "didPool": ["+212500000001"], "retryStrategy": {"type": "none"},
            })
            assert program.status_code == 201, program.text
            eid = c.post(f"/api/programs/{program.json()['id']}/launch").json()["executionId"]
            wait_for(lambda: execution(c, eid)["contactsCompleted"] >= 5, 60, what="five calls completed")

            paused = c.patch(f"/api/program-executions/{eid}/pause")
            assert paused.status_code == 200 and paused.json()["status"] == "paused", paused.text
            # Status and counters come from one row of the progress view: once it shows the
            # pause, it has applied every claim stored before it (a later claim is given back).
            wait_for(
                lambda: execution(c, eid),
                30,
                what="the pause applied and calls in progress finished", until=lambda e: e["status"] == "paused" and e["contactsInProgress"] == 0)
            before = len(dialled())
            time.sleep(1.5)  # dozens of ticks of each dispatcher
            assert len(dialled()) == before, "a call started while paused"
            e = execution(c, eid)
            assert e["status"] == "paused" and e["contactsPending"] > 0
            assert c.patch(f"/api/program-executions/{eid}/pause").status_code == 400

            assert c.patch(f"/api/program-executions/{eid}/resume").json()["status"] == "running"
            wait_for(lambda: len(dialled()) >= before + 5, 60, what="calls after resume")

            assert c.delete(f"/api/program-executions/{eid}").status_code == 204

            def settled() -> dict[str, Any] | None:
                e = execution(c, eid)
                return e if e["contactsPending"] == 0 and e["contactsInProgress"] == 0 else None

            done = wait_for(settled, 60, what="remaining contacts skipped")
            after = len(dialled())
            time.sleep(1.5)
            assert len(dialled()) == after, "a call started after cancel"
            assert c.patch(f"/api/program-executions/{eid}/resume").status_code == 400  # cancelled for good
        except BaseException:
            print(t.logs())
            raise
        calls = dialled()
        assert len(calls) == len(set(calls)), "an attempt was dialled twice"
        assert done["status"] == "cancelled" and done["totalContacts"] == n
        assert done["contactsSkipped"] > 0 and done["contactsCompleted"] + done["contactsFailed"] == len(calls)
        assert done["contactsSkipped"] + len(calls) == n
        assert all(e["totalContacts"] == n for e in seen)
        # Each contact once in the report, in one final state: dialled ones completed, the rest skipped.
        # The call history is its own read model: it catches up with the counters, it does not move with them.
        moving = {"queued", "dialing", "ringing", "in_progress"}
        rows = wait_for(
            lambda: c.get(f"/api/program-execution/{eid}/report/calls", params={"limit": 100}).json()["data"], 20,
            what="call history of every contact in a final state",
            until=lambda d: len(d) == n and not any(r["status"] in moving for r in d))
        assert sorted(r["contactId"] for r in rows) == sorted(ids)
        skipped = {r["contactId"] for r in rows if r["status"] == "skipped"}
        assert len(skipped) == done["contactsSkipped"]
