"""The golden flow fixtures of tests/fixtures/flows, run for real: each flow is created
through the API and launched against one contact; the sandbox plays the fixture's
callee (keys, speech, recordings, transfer outcomes, AMD, busy) through the real Twilio
adapter and signed webhooks; a local HTTP server plays the CRM of webhook nodes. The
call report must show the fixture's path, events and variables."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from domain.flows.graph import custom_attributes_named, require_graph
from domain.flows.nodes.recording import records_audio
from domain.flows.simulator import context_for, simulate
from tests.harness import Platform, wait_for
from tests.unit.test_flow_fixtures import load, names

CRM = "https://crm.example.org"
RUN = [n for n in names() if "callee" in load(n)]
# Report events that come from the call itself rather than from the flow engine.
CALL_EVENTS = {"dial", "answer", "hangup"}


class Crm:
    """The external endpoint webhook nodes call: answers from a per-path script."""

    def __init__(self) -> None:
        self.answers: dict[str, list[dict[str, Any]]] = {}
        self.received: list[dict[str, Any]] = []
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                key = self.path.split("/")[1]
                crm.received.append({"path": self.path, "body": json.loads(body or b"null"), "headers": dict(self.headers)})
                answer = crm.answers.get(key, []).pop(0) if crm.answers.get(key) else {"status": 200, "json": {}}
                if answer.get("error") == "timeout":
                    time.sleep(3.5)
                    answer = {"status": 504, "json": None}
                payload = json.dumps(answer.get("json")).encode()
                self.send_response(answer["status"])
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def sandbox_script(fixture: dict[str, Any]) -> dict[str, Any]:
    """The fixture's callee as a sandbox script: each scripted input goes to the list of
    the TwiML verb that the waiting node becomes."""
    callee = fixture["callee"]
    if callee.get("outcome"):
        return {"attempts": [{"behaviour": callee["outcome"]}]}
    graph = require_graph(fixture["flow"])
    run = simulate(graph, callee, context_for(fixture.get("contact")))
    step: dict[str, Any] = {"behaviour": "machine" if callee.get("answeredBy") == "machine" else "human",
                            "digits": [], "speech": [], "recordings": [], "transfers": []}
    inputs = [e for e in run["events"] if e["type"] == "trigger" and e["kind"] == "input"]
    for entry, event in zip(callee.get("inputs") or [], inputs, strict=False):
        kind = graph.node(event["nodeId"])["type"]
        if kind in ("dtmf", "play"):  # a play node waits only to be barged in on
            step["digits"].append(entry or "")
        elif kind == "collect_audio" and not records_audio(graph.node(event["nodeId"]).get("config") or {}):
            step["speech"].append(entry or "")
        elif kind in ("record", "collect_audio"):
            step["recordings"].append(entry or 0)
        elif kind == "transfer":
            step["transfers"].append(entry or "completed")
    # A human callee presses nothing more once the script is used up.
    step["hangupAfterVerbs"] = 60
    return {"attempts": [step]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, str, Crm]]:
    platform = Platform(tmp_path_factory.mktemp("flows") / "var")
    crm = Crm()
    _, key = platform.new_org()
    yield platform, key, crm
    crm.close()
    platform.close()


@pytest.fixture(scope="module")
def reports(world: tuple[Platform, str, Crm]) -> dict[str, dict[str, Any]]:
    """Launch every fixture at once (one program each), then collect each call report."""
    platform, key, crm = world
    launched: dict[str, str] = {}
    with platform.client(key) as c, httpx.Client(base_url=platform.sandbox.base_url) as sandbox:
        # The organization defines every custom attribute its flows name (typed as the
        # fixtures' contacts hold them; text where no contact holds one).
        attributes: dict[str, Any] = {a: "" for n in RUN for _, _, a in custom_attributes_named(require_graph(load(n)["flow"]))}
        attributes.update({k: v for n in RUN for k, v in ((load(n).get("contact") or {}).get("customAttributes") or {}).items()})
        for attr, value in attributes.items():
            kind = "number" if isinstance(value, (int, float)) else "text"
            r = c.post("/api/custom-attributes", json={"name": attr, "displayName": attr, "type": kind})
            assert r.status_code == 201, r.text
        for i, name in enumerate(RUN):
            fixture = load(name)
            flow = json.loads(json.dumps(fixture["flow"]).replace(CRM, f"{crm.url}/{name}"))
            crm.answers[name] = list(fixture["callee"].get("webhooks") or [])
            phone = f"+2126140{i:05d}"
            assert sandbox.put(f"/_sandbox/scripts/{phone}", json=sandbox_script(fixture)).status_code == 200
            contact = c.post("/api/contact", json={**(fixture.get("contact") or {}), "primaryPhone": phone})
            assert contact.status_code == 201, contact.text
            audience = c.post("/api/audience", json={"name": name}).json()
            c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [contact.json()["id"]]})
            created = c.post("/api/flows", json={"name": name, "graph": flow})
            assert created.status_code == 201, created.text
            program = c.post("/api/programs", json={
                "name": name, "audienceId": audience["id"], "flowId": created.json()["id"],
                "startAt": "2025-01-01T00:00:00Z", "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}})
            assert program.status_code == 201, program.text
            launched[name] = c.post(f"/api/programs/{program.json()['id']}/launch").json()["executionId"]
        out = {}
        for name, eid in launched.items():
            wait_for(lambda eid=eid: c.get(f"/api/program-executions/{eid}").json()["status"] == "completed", 60, what=name)
            rows = wait_for(lambda eid=eid: c.get(f"/api/program-execution/{eid}/report/calls").json()["data"], 10)

            def report(call_id: str = rows[0]["callId"]) -> dict[str, Any] | None:
                r = c.get(f"/api/call-report/call/{call_id}").json()
                return r if any(e["type"] == "hangup" for e in r["events"]) else None

            out[name] = {**wait_for(report, 10, what=f"the report of {name}"), "_dialled": f"+2126140{RUN.index(name):05d}"}
    return out


PROVIDER_FIELDS = ("recordId", "recordingSid", "recordingUrl", "confidence")
SIMULATED_PHONE = "+212600000000"  # the simulator's callee (tests.unit: context_for)


def normalise(event: dict[str, Any], events: list[dict[str, Any]], phone: str, crm: str) -> dict[str, Any]:
    """An event as the fixture states it: the number dialled and the CRM's address as the
    fixture names them, and what the phone network alone decides (its recording ids and a
    variable holding one, the recogniser's confidence, the other leg of a transfer's
    length) masked."""
    recordings = {e.get("recordId") for e in events if e["type"] == "record_stop" and e.get("recordId")}
    out: dict[str, Any] = {}
    for k, v in event.items():
        if k == "timestamp":
            continue
        if (k in PROVIDER_FIELDS or (k == "durationMs" and event["type"] == "transfer_ended")) and v is not None:
            v = "<provider>"
        elif isinstance(v, str):
            v = v.replace(phone, SIMULATED_PHONE).replace(crm, CRM)
        out[k] = v
    if event["type"] == "variable_set" and event.get("value") in recordings:
        out["value"] = "<recording id>"
    return out


@pytest.mark.parametrize("name", RUN)
def test_fixture_over_twilio(name: str, reports: dict[str, dict[str, Any]], world: tuple[Platform, str, Crm]) -> None:
    expect = load(name)["expect"]
    report = reports[name]
    path = [f"{s['nodeId']}>{s['outputPath'] or '-'}" for s in report["flowExecution"]["executionPath"]]
    assert path == expect["path"]
    flow_events = [e for e in report["events"] if e["type"] not in CALL_EVENTS]
    want = [e for e in expect["events"] if e["type"] != "trigger"]
    assert [(e["type"], e.get("nodeId")) for e in flow_events] == [(e["type"], e.get("nodeId")) for e in want]
    # The same events, field by field, but for what the phone network itself decides: its
    # ids for a recording (and so a variable holding one) and the recogniser's confidence.
    _, _, crm = world
    got = [normalise(e, flow_events, report["_dialled"], f"{crm.url}/{name}") for e in flow_events]
    assert got == [normalise(e, want, SIMULATED_PHONE, CRM) for e in want]
    variables = report["flowExecution"]["finalVariables"]
    assert set(variables) == set(expect["variables"])
    for k, v in expect["variables"].items():
        if not any(e["type"] == "record_stop" and e.get("recordId") == v for e in want):  # recording ids differ
            assert variables[k] == v, k


def test_webhook_request_carries_the_rendered_template(reports: dict[str, dict[str, Any]], world: tuple[Platform, str, Crm]) -> None:
    _, _, crm = world
    sent = next(r for r in crm.received if r["path"].startswith("/webhook/") or r["path"].startswith("/webhook?"))
    assert sent["path"] == "/webhook/lookup?name=Amina"
    assert sent["body"] == {"phone": sent["body"]["phone"], "source": "ivr"} and sent["body"]["phone"].startswith("+2126140")
    assert len(sent["headers"]["X-Call"]) == 36  # the call id


def test_recording_is_saved_with_the_call(reports: dict[str, dict[str, Any]], world: tuple[Platform, str, Crm]) -> None:
    platform, _, _ = world
    stop = next(e for e in reports["record"]["events"] if e["type"] == "record_stop")
    assert stop["durationMs"] == 4000 and stop["recordingUrl"].startswith(platform.sandbox.base_url)
    history = platform.container.history
    org = history.attempt(reports["record"]["callId"])["organization_id"]
    rows = history.recordings(org, 10, 0, call_id=reports["record"]["callId"])
    assert [(r["id"], r["recording_type"]) for r in rows] == [(stop["recordId"], "segment")]
    # collect_audio without transcription saves the callee's answer the same way.
    for name, seconds in (("collect_audio_recording", 6000), ("collect_audio_max_duration", 10000)):
        [saved] = [e for e in reports[name]["events"] if e["type"] == "record_stop" and e.get("recordId")]
        rows = history.recordings(org, 10, 0, call_id=reports[name]["callId"])
        assert [(r["id"], r["recording_type"], r["duration_ms"]) for r in rows] == [(saved["recordId"], "collect_audio", seconds)]
        assert reports[name]["flowExecution"]["finalVariables"]["reason"] == saved["recordId"]
