"""The 100-contact campaign that mixes every sandbox behaviour, driven through the public
API exactly as a client would; shared by the embedded and the PostgreSQL + Redis runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.harness import wait_for

RETRY_DELAY_MINUTES = 5

FLOW = {
    "name": "Survey",
    "description": "Greets by name and asks for a keypress",
    "graph": {
        "startNodeId": "dial",
        "nodes": [
            {"id": "dial", "type": "dial", "label": "Dial", "config": {"timeout": 30000, "enableAMD": True},
             "outputs": {"onAnswer": "greet", "onVoicemail": "vm", "onNoAnswer": "bye-na", "onBusy": "bye-busy", "onError": "bye-err"}},
            {"id": "greet", "type": "say", "label": "Greeting",
             "config": {"text": "Hello {{ $contact.firstName }}, press 1 to confirm or 2 to decline.", "language": "en"},
             "outputs": {"onComplete": "menu"}},
            {"id": "menu", "type": "dtmf", "label": "Menu",
             "config": {"mode": "single_digit", "variable": "choice", "timeout": 5000, "singleDigitConfig": {"allowedDigits": ["1", "2"]}},
             "outputs": {"branches": {"1": "thanks", "2": "bye"}, "onTimeout": "bye"}},
            {"id": "thanks", "type": "play", "label": "Thanks",
             "config": {"audioItems": [{"type": "tts", "text": "Thank you."}, {"type": "url", "url": "https://example.org/thanks.wav"}]},
             "outputs": {"onComplete": "done"}},
            {"id": "vm", "type": "play", "label": "Voicemail message", "config": {"audioId": "vm-audio"}, "outputs": {"onEnd": "bye"}},
            {"id": "done", "type": "hangup", "label": "Done", "config": {"reason": "completed", "hangupType": "normal"}},
            {"id": "bye", "type": "hangup", "label": "Bye", "config": {"reason": "declined", "hangupType": "normal"}},
            {"id": "bye-na", "type": "hangup", "config": {"reason": "no_answer", "hangupType": "no_answer"}},
            {"id": "bye-busy", "type": "hangup", "config": {"reason": "busy", "hangupType": "busy"}},
            {"id": "bye-err", "type": "hangup", "config": {"reason": "error", "hangupType": "normal"}},
        ],
    },
}

# What each sandbox callee (last digit of the number) must end as, with fixed_delay maxRetries 1.
EXPECTED = {
    "0": ("completed", ["busy", "completed"]),
    "1": ("failed", ["no_answer", "no_answer"]),
    "2": ("failed", ["voicemail"]),
    "3": ("failed", ["failed", "failed"]),
    **{d: ("completed", ["completed"]) for d in "456789"},
}

COUNTERS = ("contactsCompleted", "contactsFailed", "contactsPending", "contactsInProgress", "contactsSkipped")


def check_counters(execution: dict[str, Any]) -> None:
    total = sum(execution[k] for k in COUNTERS)
    assert total == execution["totalContacts"], f"counters do not sum to the total: {execution}"


def run_campaign(
    client: httpx.Client, advance_clock: Callable[[float], None], n: int = 100, timeout: float = 90
) -> dict[str, Any]:
    phones = [f"+2126120000{i:02d}" for i in range(n)]
    contact_ids = {}
    for i, phone in enumerate(phones):
        r = client.post("/api/contact", json={"firstName": f"C{i}", "lastName": "Test", "primaryPhone": phone})
        assert r.status_code == 201, r.text
        contact_ids[r.json()["id"]] = phone
    audience = client.post("/api/audience", json={"name": "Hundred", "description": "every behaviour"}).json()
    r = client.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": list(contact_ids)})
    assert r.status_code == 200, r.text
    flow = client.post("/api/flows", json=FLOW)
    assert flow.status_code == 201, flow.text
    program = client.post(
        "/api/programs",
        json={
            "name": "Hundred calls",
            "audienceId": audience["id"],
            "flowId": flow.json()["id"],
            "startAt": "2025-01-20T09:00:00Z",
            "didPool": ["+212500000001", "+212500000002"],
            "retryStrategy": {"type": "fixed_delay", "delayMinutes": RETRY_DELAY_MINUTES, "maxRetries": 1},
        },
    )
    assert program.status_code == 201, program.text
    launched = client.post(f"/api/programs/{program.json()['id']}/launch")
    assert launched.status_code == 201, launched.text
    eid = launched.json()["executionId"]
    polls = []

    def poll() -> dict[str, Any]:
        r = client.get(f"/api/program-executions/{eid}")
        assert r.status_code == 200, r.text
        e = r.json()
        assert e["totalContacts"] == n
        check_counters(e)
        polls.append(e)
        return e

    # First attempts: everyone but the 30 contacts due for a retry reaches a result.
    retrying = sum(1 for p in phones if p[-1] in "013")
    wait_for(
        lambda: poll(),
        timeout=timeout, what="first attempts to end", until=lambda e: e["contactsPending"] == retrying and e["contactsInProgress"] == 0 and e["contactsCompleted"] + e["contactsFailed"] == n - retrying)
    # Nothing is redialled before the retry delay...
    before = poll()
    assert before["status"] == "running"
    # ...and once the (injected) clock passes it, the retries run.
    advance_clock(RETRY_DELAY_MINUTES * 60 + 1)
    final = wait_for(lambda: poll(), timeout=timeout, what="completion", until=lambda e: e["status"] == "completed")
    assert final["contactsPending"] == 0 and final["contactsInProgress"] == 0
    assert len(polls) > 3
    return {"executionId": eid, "final": final, "contacts": contact_ids, "phones": phones}


ACTIVE = ("queued", "dialing", "ringing", "in_progress")


def call_rows(client: httpx.Client, eid: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        r = client.get(f"/api/program-execution/{eid}/report/calls", params={"page": page, "limit": 100})
        assert r.status_code == 200, r.text
        body = r.json()
        rows.extend(body["data"])
        if not body["meta"]["hasNextPage"]:
            return rows
        page += 1


def check_call_records(client: httpx.Client, result: dict[str, Any]) -> None:
    eid = result["executionId"]
    # The call history is its own read model: it may trail the counters by a moment.
    rows = wait_for(
        lambda: call_rows(client, eid),
        timeout=20, what="the call history to catch up", until=lambda rs: rs and not any(r["status"] in ACTIVE for r in rs))
    by_contact: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_contact.setdefault(row["contactId"], []).append(row)
    assert set(by_contact) == set(result["contacts"]), "every contact has its call record"
    completed = failed = 0
    for contact_id, phone in result["contacts"].items():
        attempts = sorted(by_contact[contact_id], key=lambda r: r["attempt"])
        want_result, want_outcomes = EXPECTED[phone[-1]]
        assert [a["outcome"] for a in attempts] == want_outcomes, (phone, attempts)
        assert [a["attempt"] for a in attempts] == list(range(1, len(want_outcomes) + 1))
        job = client.get(f"/api/call-report/{attempts[0]['jobId']}").json()
        assert job["status"] == want_result, (phone, job["status"])
        assert job["finalOutcome"] == want_outcomes[-1]
        completed += want_result == "completed"
        failed += want_result == "failed"
        last = client.get(f"/api/call-report/call/{attempts[-1]['callId']}")
        assert last.status_code == 200
        report = last.json()
        path = [(s["nodeId"], s["outputPath"]) for s in report["flowExecution"]["executionPath"]]
        if want_outcomes[-1] == "completed":
            assert path == [("dial", "onAnswer"), ("greet", "onComplete"), ("menu", "branches.1"), ("thanks", "onComplete"), ("done", None)], path
            assert report["flowExecution"]["finalVariables"]["choice"] == "1"
            assert any(e["type"] == "dtmf_collected" and e["digits"] == "1" for e in report["events"])
            says = [e for e in report["events"] if e["type"] == "play" and "text" in e]
            assert says[0]["text"].startswith(f"Hello C{result['phones'].index(phone)},")
        elif want_outcomes[-1] == "voicemail":
            # AMD is asynchronous: the flow starts as for a person, and the verdict, heard
            # during the greeting, turns the call waiting at the menu to onVoicemail.
            assert path == [("dial", "onAnswer"), ("greet", "onComplete"), ("menu", None), ("dial", "onVoicemail"), ("vm", "onComplete"), ("bye", None)], path
        elif want_outcomes[-1] == "no_answer":
            assert path == [("dial", "onNoAnswer"), ("bye-na", None)], path
        elif want_outcomes[-1] == "failed":
            assert path == [("dial", "onError"), ("bye-err", None)], path
        assert report["flowExecution"]["flowName"] == "Survey"
        assert report["flowExecution"]["flowVersion"] == 1
    assert result["final"]["contactsCompleted"] == completed
    assert result["final"]["contactsFailed"] == failed
