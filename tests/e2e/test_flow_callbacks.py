"""The phone network misbehaving as it does in production, through the real stack: status
callbacks delivered twice, a ringing callback that arrives after the final status, callbacks
that lag behind the call, a callee who hangs up mid-flow. Each Call ends once, with the
right outcome, and no late or repeated callback changes it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from domain.call import call_id
from tests.harness import Platform, wait_for

GRAPH = {"startNodeId": "dial", "nodes": {
    "dial": {"type": "dial", "config": {"timeout": 20000, "enableAMD": False},
             "outputs": {"onAnswer": "greet", "onNoAnswer": "bye", "onBusy": "bye"}},
    "greet": {"type": "say", "config": {"text": "Hello, press 1.", "language": "en"}, "outputs": {"onComplete": "menu"}},
    "menu": {"type": "dtmf", "config": {"mode": "single_digit", "variable": "choice", "timeout": 5000},
             "outputs": {"branches": {"1": "thanks"}, "onTimeout": "bye"}},
    "thanks": {"type": "say", "config": {"text": "Thank you.", "language": "en"}, "outputs": {"onComplete": "bye"}},
    "bye": {"type": "hangup"}}}  # fmt: skip

SCRIPTS = {  # phone -> (sandbox script, outcome the Call must end with)
    "+212619000004": ({"attempts": [{"behaviour": "human"}], "duplicateCallbacks": True}, "completed"),
    "+212619000005": ({"attempts": [{"behaviour": "human"}], "outOfOrderCallbacks": True}, "completed"),
    "+212619000006": ({"attempts": [{"behaviour": "human", "callbackLatencyMs": 4000}]}, "completed"),
    "+212619000007": ({"attempts": [{"behaviour": "human", "hangupAfterVerbs": 1}]}, "incomplete"),
    "+212619000008": ({"attempts": [{"behaviour": "no_answer"}], "duplicateCallbacks": True, "outOfOrderCallbacks": True}, "no_answer"),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Any, str, dict[str, str]]]:
    platform = Platform(tmp_path_factory.mktemp("callbacks") / "var")
    _, key = platform.new_org()
    with platform.client(key) as c:
        for phone, (script, _) in SCRIPTS.items():
            httpx.put(f"{platform.sandbox.base_url}/_sandbox/scripts/{phone}", json=script).raise_for_status()
        contacts = {p: c.post("/api/contact", json={"primaryPhone": p}).json()["id"] for p in SCRIPTS}
        audience = c.post("/api/audience", json={"name": "unruly network"}).json()
        c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": list(contacts.values())})
        flow = c.post("/api/flows", json={"name": "unruly", "graph": GRAPH}).json()
        program = c.post("/api/programs", json={
            "name": "unruly", "audienceId": audience["id"], "flowId": flow["id"], "startAt": datetime.now(UTC).isoformat(),
            "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}}).json()  # fmt: skip
        eid = c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
        wait_for(lambda: c.get(f"/api/program-executions/{eid}").json()["status"] == "completed", 30, what="the execution")
        # Every callback the network sends has arrived (the lagging and held-back ones too).
        wait_for(lambda: all(call["finished"] for call in platform.sandbox.calls()), 10, what="the sandbox's callbacks")
        yield platform, c, eid, contacts
    platform.close()


def names(platform: Platform, job: Any) -> list[str]:
    return [type(e).__name__ for e in platform.container.calls.repository.event_store.get(job)]


@pytest.mark.parametrize("phone", list(SCRIPTS))
def test_each_call_ends_once_with_its_outcome(run: tuple[Platform, Any, str, dict[str, str]], phone: str) -> None:
    platform, c, eid, contacts = run
    job = call_id(eid, contacts[phone])
    events = names(platform, job)
    assert events.count("AttemptEnded") == 1 and events.count("Finished") == 1, events
    assert events[-1] == "Finished", events  # nothing after the end
    if "Answered" in events and "Ringing" in events:
        assert events.index("Ringing") < events.index("Answered"), events
    assert c.get(f"/api/call-report/{job}").json()["finalOutcome"] == SCRIPTS[phone][1]


def test_the_network_did_misbehave(run: tuple[Platform, Any, str, dict[str, str]]) -> None:
    platform, _, _, _ = run
    calls = {call["to"]: call for call in platform.sandbox.calls()}

    def statuses(phone: str) -> list[tuple[str, str]]:
        return [(w["params"]["CallStatus"], w["params"]["SequenceNumber"]) for w in calls[phone]["webhooks"] if w["kind"] == "status-callback"]

    duplicated = statuses("+212619000004")
    assert len(duplicated) == 2 * len(set(duplicated)) and ("completed", duplicated[-1][1]) == duplicated[-2]
    assert [s for s, _ in statuses("+212619000005")][-1] == "ringing"  # held back until after the final one
    assert [s for s, _ in statuses("+212619000008")] == ["no-answer", "no-answer", "ringing", "ringing"]
    assert all(w["http_status"] == 204 for call in calls.values() for w in call["webhooks"] if w["kind"] == "status-callback")
    hung_up = calls["+212619000007"]
    assert [v["verb"] for v in hung_up["verbs"]] == ["Say"] and hung_up["end_reason"] != "application-error"


def test_counters_add_up(run: tuple[Platform, Any, str, dict[str, str]]) -> None:
    _, c, eid, _ = run
    e = c.get(f"/api/program-executions/{eid}").json()
    assert (e["contactsCompleted"], e["contactsFailed"], e["contactsPending"], e["contactsInProgress"]) == (3, 2, 0, 0)
