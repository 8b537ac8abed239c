"""Asynchronous answering-machine detection through the real stack (API, dial worker, the
real Twilio adapter, the sandbox, signed webhooks): the flow starts at once for whoever
answers; a machine's verdict, posted to its own webhook while the greeting plays, turns
the live call to the dial node's onVoicemail (a call update with new TwiML), a person's
changes nothing. Late, duplicate, reordered or forged callbacks change nothing either."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest
from twilio.request_validator import RequestValidator

from domain.call import call_id
from tests.harness import AUTH_TOKEN, Platform, wait_for

GRAPH = {"startNodeId": "dial", "nodes": {
    "dial": {"type": "dial", "config": {"timeout": 30000, "enableAMD": True},
             "outputs": {"onAnswer": "greet", "onVoicemail": "vm", "onBusy": "bye"}},
    "greet": {"type": "say", "config": {"text": "Hello, this is your bank calling about your card, press 1 to talk to us.",
              "language": "en"}, "outputs": {"onComplete": "menu"}},
    "menu": {"type": "dtmf", "config": {"mode": "single_digit", "variable": "choice", "timeout": 10000,
             "singleDigitConfig": {"allowedDigits": ["1"]}}, "outputs": {"branches": {"1": "thanks"}, "onTimeout": "bye"}},
    "thanks": {"type": "say", "config": {"text": "Thank you.", "language": "en"}, "outputs": {"onComplete": "bye"}},
    "vm": {"type": "say", "config": {"text": "Sorry we missed you, please call us back.", "language": "en"},
           "outputs": {"onComplete": "bye-vm"}},
    "bye-vm": {"type": "hangup", "config": {"reason": "voicemail", "hangupType": "voicemail"}},
    "bye": {"type": "hangup"}}}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Any]]:
    platform = Platform(tmp_path_factory.mktemp("amd") / "var")
    _, key = platform.new_org()
    with platform.client(key) as client:
        yield platform, client
    platform.close()


def launch(c: Any, phones: list[str], graph: dict[str, Any]) -> tuple[str, dict[str, str]]:
    contacts = {p: c.post("/api/contact", json={"primaryPhone": p}).json()["id"] for p in phones}
    audience = c.post("/api/audience", json={"name": f"amd {phones[0]}"}).json()
    c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": list(contacts.values())})
    flow = c.post("/api/flows", json={"name": f"amd {phones[0]}", "graph": graph})
    assert flow.status_code == 201, flow.text
    program = c.post("/api/programs", json={
        "name": f"amd {phones[0]}", "audienceId": audience["id"], "flowId": flow.json()["id"],
        "startAt": datetime.now(UTC).isoformat(), "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}}).json()  # fmt: skip
    eid = c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
    wait_for(lambda: c.get(f"/api/program-executions/{eid}").json()["status"] == "completed", 30, what="the execution")
    return eid, contacts


def event_names(platform: Platform, job: UUID) -> list[str]:
    return [type(e).__name__ for e in platform.container.calls.repository.event_store.get(job)]


def test_a_machine_is_turned_to_voicemail_a_person_goes_on(world: tuple[Platform, Any]) -> None:
    platform, c = world
    machine, person = "+212617000002", "+212617000007"  # sandbox: 2 is a machine, 7 a person
    eid, contacts = launch(c, [machine, person], GRAPH)

    dialled = {call["to"]: call for call in platform.sandbox.calls() if call["to"] in (machine, person)}
    assert dialled[machine]["machine_detection"] == "Enable"
    kinds = [w["kind"] for w in dialled[machine]["webhooks"]]
    assert kinds.index("voice") < kinds.index("amd-callback")  # the flow did not wait for the verdict
    assert "AnsweredBy" not in next(w for w in dialled[machine]["webhooks"] if w["kind"] == "voice")["params"]
    said = [v.get("text") for v in dialled[machine]["verbs"] if v["verb"] == "Say"]
    assert said[-1] == "Sorry we missed you, please call us back."  # the redirect was honoured

    job = call_id(eid, contacts[machine])
    call = platform.container.calls.call(job)
    assert call.machine_detected == "machine" and call.answered_by == "machine"
    assert [t["trigger"]["type"] for t in call.turns] == ["answer", "amd"]
    assert call.turns[1]["trigger"]["answeredBy"] == "machine_start"
    names = event_names(platform, job)
    assert names.index("Answered") < names.index("FlowAdvanced") < names.index("MachineDetected") < names.index("AttemptEnded")

    rows = wait_for(lambda: c.get(f"/api/program-execution/{eid}/report/calls").json()["data"], 10)
    by_to = {r["to"]: r for r in rows}
    assert wait_for(lambda: c.get(f"/api/call-report/{by_to[machine]['jobId']}").json()["finalOutcome"] == "voicemail", 10)

    def ended_report() -> dict[str, Any] | None:
        r = c.get(f"/api/call-report/call/{by_to[machine]['callId']}").json()
        return r if any(e["type"] == "hangup" for e in r["events"]) else None

    report = wait_for(ended_report, 10)
    path = [f"{s['nodeId']}>{s['outputPath'] or '-'}" for s in report["flowExecution"]["executionPath"]]
    assert path == ["dial>onAnswer", "greet>onComplete", "menu>-", "dial>onVoicemail", "vm>onComplete", "bye-vm>-"]
    assert any(e["type"] == "machine_detected" and e.get("nodeId") == "dial" for e in report["events"])

    # The call report says a machine answered (the verdict came after the answer).
    assert wait_for(lambda: {r["to"]: r for r in c.get(f"/api/program-execution/{eid}/report/calls").json()["data"]}
                    [machine]["answeredBy"] == "machine", 10)

    human = platform.container.calls.call(call_id(eid, contacts[person]))
    assert human.machine_detected == "human" and human.answered_by == "human"
    assert [t["trigger"]["type"] for t in human.turns] == ["answer", "input"]
    assert c.get(f"/api/call-report/{by_to[person]['jobId']}").json()["finalOutcome"] == "completed"


def test_without_amd_no_detection_is_asked(world: tuple[Platform, Any]) -> None:
    platform, c = world
    graph = {**GRAPH, "nodes": {**GRAPH["nodes"], "dial": {**GRAPH["nodes"]["dial"], "config": {"enableAMD": False}}}}
    phone = "+212617000012"
    launch(c, [phone], graph)
    [dialled] = [call for call in platform.sandbox.calls() if call["to"] == phone]
    assert dialled["machine_detection"] is None
    assert not [w for w in dialled["webhooks"] if w["kind"] == "amd-callback"]


def test_late_duplicate_reordered_or_forged_callbacks_change_nothing(world: tuple[Platform, Any]) -> None:
    platform, c = world
    phone = "+212617000022"
    eid, contacts = launch(c, [phone], GRAPH)
    job = call_id(eid, contacts[phone])
    wait_for(lambda: platform.container.calls.call(job).status == "finished", 10, what="the call's end")
    before = event_names(platform, job)
    base = platform.settings.public_base_url
    signer = RequestValidator(AUTH_TOKEN)

    def post(path: str, params: dict[str, str], forged: bool = False) -> int:
        url = f"{base}{path}"
        signature = "forged" if forged else signer.compute_signature(url, params)
        return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}).status_code

    sid = platform.container.calls.call(job).provider_call_id or ""
    common = {"CallSid": sid, "AccountSid": platform.settings.twilio_account_sid}
    assert post(f"/twilio/amd/{job}/1", {**common, "AnsweredBy": "human"}, forged=True) == 403
    assert post(f"/twilio/status/{job}/1", {**common, "CallStatus": "busy"}, forged=True) == 403
    assert post(f"/twilio/voice/{job}/1/input/1", {**common, "Digits": "1"}, forged=True) == 403
    assert post(f"/twilio/voice/{job}/1", {**common, "CallStatus": "in-progress"}, forged=True) == 403
    assert post(f"/twilio/amd/{job}/1", {**common, "AnsweredBy": "human"}) == 204  # a second verdict
    assert post(f"/twilio/status/{job}/1", {**common, "CallStatus": "ringing"}) == 204  # out of order
    assert post(f"/twilio/status/{job}/1", {**common, "CallStatus": "in-progress"}) == 204
    assert post(f"/twilio/status/{job}/1", {**common, "CallStatus": "no-answer"}) == 204  # another final status
    assert post(f"/twilio/status/{job}/1", {**common, "CallStatus": "completed", "CallDuration": "99"}) == 204
    assert event_names(platform, job) == before
    assert c.get(f"/api/call-report/{job}").json()["finalOutcome"] == "voicemail"


def test_a_lost_redirect_heals_at_the_calls_next_webhook(world: tuple[Platform, Any]) -> None:
    """The verdict's turn is saved before the redirect is asked for; if the redirect is
    lost (Twilio's API unreachable, the process gone), the call's next request, the menu
    timing out, is answered with that turn: the machine still hears the voicemail branch."""
    from application.ports import TelephonyError

    platform, c = world
    telephony = platform.container.telephony
    asked: list[str] = []

    def unreachable(provider_call_id: str, twiml: str) -> None:
        asked.append(provider_call_id)
        raise TelephonyError("Twilio's API cannot be reached")

    telephony.redirect = unreachable  # type: ignore[method-assign]
    try:
        phone = "+212617000032"
        eid, contacts = launch(c, [phone], GRAPH)
    finally:
        del telephony.redirect  # the class's own again
    [dialled] = [call for call in platform.sandbox.calls() if call["to"] == phone]
    assert asked == [dialled["sid"]]
    said = [v.get("text") for v in dialled["verbs"] if v["verb"] == "Say"]
    assert said[-1] == "Sorry we missed you, please call us back."
    job = call_id(eid, contacts[phone])
    assert c.get(f"/api/call-report/{job}").json()["finalOutcome"] == "voicemail"
    assert [t["trigger"]["type"] for t in platform.container.calls.call(job).turns] == ["answer", "amd"]
