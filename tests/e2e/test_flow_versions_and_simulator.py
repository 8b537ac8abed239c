"""Flow versions (immutable, readable, pinned by executions) and the simulator, through
the API and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.harness import Platform, wait_for
from tests.unit.test_flow_fixtures import FIXTURES, load


def greeting(text: str) -> dict[str, Any]:
    return {"startNodeId": "d", "nodes": {
        "d": {"type": "dial", "config": {"enableAMD": False}, "outputs": {"onAnswer": "s"}},
        "s": {"type": "say", "config": {"text": text, "language": "en"}, "outputs": {"onComplete": "h"}},
        "h": {"type": "hangup"}}}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Any]]:
    platform = Platform(tmp_path_factory.mktemp("versions") / "var")
    _, key = platform.new_org()
    with platform.client(key) as client:
        yield platform, client
    platform.close()


def test_each_change_is_a_new_readable_version(world: tuple[Platform, Any]) -> None:
    _, c = world
    flow = c.post("/api/flows", json={"name": "Versioned", "graph": greeting("one")}).json()
    assert flow["version"] == 1
    assert c.put(f"/api/flows/{flow['id']}", json={"graph": greeting("two")}).json()["version"] == 2
    assert c.put(f"/api/flows/{flow['id']}", json={"description": "no graph change"}).json()["version"] == 2
    got = c.get(f"/api/flows/{flow['id']}").json()
    assert got["version"] == 2 and got["graph"]["nodes"][1]["config"]["text"] == "two"
    listed = c.get(f"/api/flows/{flow['id']}/versions").json()
    assert [v["version"] for v in listed["versions"]] == [1, 2] and listed["latestVersion"] == 2
    v1 = c.get(f"/api/flows/{flow['id']}/versions/1").json()
    assert v1["version"] == 1 and v1["graph"]["nodes"][1]["config"]["text"] == "one"
    missing = c.get(f"/api/flows/{flow['id']}/versions/3")
    assert missing.status_code == 404 and "versions 1 to 2" in missing.json()["message"]


def test_editing_a_flow_never_changes_a_launched_execution(world: tuple[Platform, Any]) -> None:
    platform, c = world
    phone = "+212615000004"
    contact = c.post("/api/contact", json={"primaryPhone": phone}).json()
    audience = c.post("/api/audience", json={"name": "pinned"}).json()
    c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [contact["id"]]})
    flow = c.post("/api/flows", json={"name": "Pinned", "graph": greeting("version one speaking")}).json()
    start = platform.clock.now().timestamp() + 3600
    from datetime import UTC, datetime

    program = c.post("/api/programs", json={
        "name": "pinned", "audienceId": audience["id"], "flowId": flow["id"],
        "startAt": datetime.fromtimestamp(start, UTC).isoformat(), "didPool": ["+212500000001"],
        "retryStrategy": {"type": "none"}}).json()  # fmt: skip
    eid = c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
    # The flow changes after launch and before the first call.
    assert c.put(f"/api/flows/{flow['id']}", json={"graph": greeting("version two speaking")}).json()["version"] == 2
    platform.clock.advance(3700)
    wait_for(lambda: c.get(f"/api/program-executions/{eid}").json()["status"] == "completed", 30, what="the execution")
    heard = [v.get("text") for call in platform.sandbox.calls() if call["to"] == phone for v in call["verbs"] if v["verb"] == "Say"]
    assert heard == ["version one speaking"]
    row = wait_for(lambda: c.get(f"/api/program-execution/{eid}/report/calls").json()["data"], 10)[0]
    report = c.get(f"/api/call-report/call/{row['callId']}").json()
    assert report["flowExecution"]["flowVersion"] == 1


def test_execute_runs_a_saved_version_or_a_graph_and_places_no_call(world: tuple[Platform, Any]) -> None:
    platform, c = world
    before = len(platform.sandbox.calls())
    fixture = load("dtmf_multi_digit")
    run = c.post("/api/flows/execute", json={"graph": fixture["flow"], "callee": fixture["callee"]})
    assert run.status_code == 201, run.text
    assert run.json()["path"] == fixture["expect"]["path"] and run.json()["events"] == fixture["expect"]["events"]
    assert run.json()["placedCall"] is False
    flow = c.post("/api/flows", json={"name": "Sim", "graph": greeting("first")}).json()
    c.put(f"/api/flows/{flow['id']}", json={"graph": greeting("Hello {{ $contact.firstName }}")})
    old = c.post("/api/flows/execute", json={"flowId": flow["id"], "version": 1}).json()
    new = c.post("/api/flows/execute", json={"flowId": flow["id"], "contact": {"firstName": "Amina"}}).json()
    assert (old["flowVersion"], new["flowVersion"]) == (1, 2)
    said = [[e["text"] for e in r["events"] if e["type"] == "play"] for r in (old, new)]
    assert said == [["first"], ["Hello Amina"]]
    bad = c.post("/api/flows/execute", json={"graph": load("error_unknown_variables")["flow"]})
    assert bad.status_code == 400
    assert "graph.nodes.hi.config.text" in bad.json()["fieldErrors"]
    wrong = c.post("/api/flows/execute", json={"graph": fixture["flow"], "callee": {"answeredBy": "robot"}})
    assert wrong.status_code == 400 and "callee.answeredBy" in wrong.json()["fieldErrors"]
    assert len(platform.sandbox.calls()) == before


def test_a_flow_may_only_name_custom_attributes_the_organization_defines(world: tuple[Platform, Any]) -> None:
    platform, _ = world
    _, key = platform.new_org("Attributes")
    graph = {"startNodeId": "d", "nodes": {
        "d": {"type": "dial", "config": {"enableAMD": False}, "outputs": {"onAnswer": "late"}},
        "late": {"type": "condition", "config": {"expression": {"type": "and", "conditions": [
            {"type": "simple", "variable": {"type": "custom_attribute", "name": "days_late"}, "operator": "gt", "value": 3}]}},
            "outputs": {"onTrue": "s", "onFalse": "h"}},
        "s": {"type": "say", "config": {"text": "You owe {{ $contact.customAttributes.amount_due }}.", "language": "en"}, "outputs": {"onComplete": "u"}},
        "u": {"type": "update_contact", "config": {"attributeName": "customAttributes.reminded", "value": "yes"}, "outputs": {"onComplete": "h"}},
        "h": {"type": "hangup"}}}  # fmt: skip
    with platform.client(key) as org:
        checked = org.post("/api/flows/validate", json={"graph": graph}).json()
        assert checked["valid"] is False
        assert {(e["nodeId"], e["field"]) for e in checked["errors"]} == {
            ("late", "config.expression.conditions[0].variable.name"), ("s", "config.text"), ("u", "config.attributeName")}
        assert all("is not a custom attribute of this organization" in e["message"] for e in checked["errors"])
        refused = org.post("/api/flows", json={"name": "Attrs", "graph": graph})
        assert refused.status_code == 400 and "graph.nodes.s.config.text" in refused.json()["fieldErrors"]
        assert org.post("/api/flows/execute", json={"graph": graph}).status_code == 400
        for name, kind in (("days_late", "number"), ("amount_due", "number"), ("reminded", "text")):
            assert org.post("/api/custom-attributes", json={"name": name, "displayName": name, "type": kind}).status_code == 201
        assert org.post("/api/flows/validate", json={"graph": graph}).json() == {"valid": True, "errors": []}
        created = org.post("/api/flows", json={"name": "Attrs", "graph": graph})
        assert created.status_code == 201, created.text
        changed = json.loads(json.dumps(graph).replace("amount_due", "amount_owed"))
        assert org.put(f"/api/flows/{created.json()['id']}", json={"graph": changed}).status_code == 400
        assert org.get(f"/api/flows/{created.json()['id']}").json()["version"] == 1


def test_soft_and_permanent_delete(world: tuple[Platform, Any]) -> None:
    platform, c = world
    soft = c.post("/api/flows", json={"name": "Soft", "graph": greeting("soft")}).json()
    hard = c.post("/api/flows", json={"name": "Hard", "graph": greeting("hard one")}).json()
    c.put(f"/api/flows/{hard['id']}", json={"graph": greeting("hard two")})
    assert c.delete(f"/api/flows/{soft['id']}").status_code == 200
    assert c.get(f"/api/flows/{soft['id']}").status_code == 404
    gone = c.delete(f"/api/flows/{hard['id']}/permanent")
    assert gone.status_code == 200 and gone.json()["id"] == hard["id"]
    for path in ("", "/versions", "/versions/1", "/versions/2"):
        assert c.get(f"/api/flows/{hard['id']}{path}").status_code == 404, path
    assert c.post("/api/flows/execute", json={"flowId": hard["id"]}).status_code == 404
    assert c.delete(f"/api/flows/{hard['id']}/permanent").status_code == 404  # once
    assert c.delete(f"/api/flows/{soft['id']}/permanent").status_code == 200  # a soft-deleted flow too
    flow = platform.container.campaigns.repository.get(UUID(hard["id"]))
    assert flow.versions == [] and flow.deleted
    wait_for(lambda: c.get("/api/flows/latest/Hard").status_code == 404, 10, what="the name to be free")
    # A flow that stays: the list is waited for until it shows it and neither deleted flow.
    mine = c.post("/api/flows", json={"name": "Mine", "graph": greeting("mine")}).json()

    def listed_after_the_deletes() -> list[dict[str, Any]] | None:
        r: list[dict[str, Any]] = c.get("/api/flows", params={"limit": 100}).json()["data"]
        ids = {f["id"] for f in r}
        return r if mine["id"] in ids and not {soft["id"], hard["id"]} & ids else None

    listed = wait_for(listed_after_the_deletes, 10, what="the deleted flows gone from the list")
    assert not {soft["id"], hard["id"]} & {f["id"] for f in listed}
    _, other_key = platform.new_org("Other flows")
    with platform.client(other_key) as other:
        assert other.delete(f"/api/flows/{mine['id']}/permanent").status_code == 404
    assert c.get(f"/api/flows/{mine['id']}").status_code == 200


def test_cli_simulate(tmp_path: Path) -> None:
    def gomobile(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "interfaces.cli", "flows", "simulate", *args], capture_output=True, text=True, timeout=60, check=False)

    ok = gomobile(str(FIXTURES / "dtmf_multi_digit.json"), "--inputs", "12", "-", "123456#")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["path"] == load("dtmf_multi_digit")["expect"]["path"]
    amd = gomobile(str(FIXTURES / "dial_voicemail.json"))  # the fixture's callee: a machine, told apart late
    assert json.loads(amd.stdout)["path"] == load("dial_voicemail")["expect"]["path"]
    at_answer = gomobile(str(FIXTURES / "dial_voicemail.json"), "--amd", "sync")
    assert json.loads(at_answer.stdout)["path"] == ["dial>onVoicemail", "vm>onComplete", "vmdone>-"]
    busy = gomobile(str(FIXTURES / "dial_busy.json"))
    assert json.loads(busy.stdout)["hangupReason"] == "busy"
    bad = gomobile(str(FIXTURES / "error_no_path_to_hangup.json"))
    assert bad.returncode == 2 and "node 'menu' outputs: no path from node 'menu' to a hangup" in bad.stderr
