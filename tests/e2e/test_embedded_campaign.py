"""End to end on the embedded default (SQLite + in-process Dramatiq + the sandbox)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.scenario import check_call_records, run_campaign
from tests.harness import Platform, wait_for


@pytest.fixture()
def platform(tmp_path: Path) -> Any:
    p = Platform(tmp_path / "var")
    yield p
    p.close()


def _rows(view: Any, tables: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for t in tables:
        rows = view.rows(f"SELECT * FROM {t}")
        out[t] = sorted((tuple(sorted(r.items())) for r in rows), key=repr)
    return out


def test_hundred_contact_campaign_with_every_callee_behaviour(platform: Platform) -> None:
    _org, key = platform.new_org()
    with platform.client(key) as client:
        result = run_campaign(client, platform.clock.advance)
        check_call_records(client, result)

    # Busy/no-answer/failed contacts were dialled exactly twice, the others once.
    calls = platform.sandbox.calls()
    per_number: dict[str, int] = {}
    for call in calls:
        per_number[call["to"]] = per_number.get(call["to"], 0) + 1
    for phone in result["phones"]:
        assert per_number[phone] == (2 if phone[-1] in "013" else 1), phone

    # A read model dropped and rebuilt from the events gives the same rows.
    for r in platform.container.runners:
        r.stop()
    tables = {
        "progress": ["progress_executions", "progress_calls"],
        "call_history": ["history_executions", "history_jobs", "history_attempts", "history_steps", "history_events"],
        "directory": ["dir_contacts", "dir_audiences", "dir_flows", "dir_programs"],
    }
    for name, names in tables.items():
        view = platform.container.views[name]
        before = _rows(view, names)
        assert all(before[t] for t in names)
        view.reset()
        assert not any(_rows(view, names).values())
        platform.container.runner(name).catch_up()
        assert _rows(view, names) == before, name


def test_first_call_walkthrough(platform: Platform) -> None:
    """DOMAIN.md §9, as written (the older node shape of its flow included)."""
    _org, key = platform.new_org()
    with platform.client(key) as c:
        contact = c.post("/api/contact", json={"firstName": "Test", "lastName": "User", "primaryPhone": "+212612345678"})
        assert contact.status_code == 201
        assert contact.json()["createdAt"].endswith("Z") and len(contact.json()["createdAt"]) == 24
        audience = c.post("/api/audience", json={"name": "Test Audience", "description": "For testing my first call"})
        assert audience.status_code == 201
        added = c.post(f"/api/audience/{audience.json()['id']}/add-contacts", json={"contacts": [contact.json()["id"]]})
        assert added.status_code == 200
        flow = c.post(
            "/api/flows",
            json={
                "name": "Simple Greeting Flow",
                "description": "A basic flow that plays a welcome message",
                "graph": {
                    "startNodeId": "dial-1",
                    "nodes": [
                        {"id": "dial-1", "type": "dial", "label": "Dial Contact", "config": {"timeout": 30000, "enableAMD": False},
                         "outputs": {"onAnswer": "play-1", "onNoAnswer": "hangup-1", "onBusy": "hangup-1"}},
                        {"id": "play-1", "type": "play", "label": "Play Greeting", "config": {"audioId": "AUDIO_ID"}, "outputs": {"onEnd": "hangup-1"}},
                        {"id": "hangup-1", "type": "hangup", "label": "End Call", "config": {"reason": "Call completed", "hangupType": "normal"}},
                    ],
                },
            },
        )
        assert flow.status_code == 201, flow.text
        program = c.post(
            "/api/programs",
            json={
                "name": "My First Campaign",
                "audienceId": audience.json()["id"],
                "flowId": flow.json()["id"],
                "startAt": "2025-01-20T10:00:00Z",
                "didPool": ["+212500000001"],
                "retryStrategy": {"type": "none"},
            },
        )
        assert program.status_code == 201, program.text
        assert program.json()["status"] == "draft"
        assert program.json()["startAt"] == "2025-01-20T10:00:00.000Z"
        launch = c.post(f"/api/programs/{program.json()['id']}/launch")
        assert launch.status_code == 201
        eid = launch.json()["executionId"]
        first = c.get(f"/api/program-executions/{eid}").json()
        assert first["status"] == "running"
        assert first["totalContacts"] == 1
        assert first["contactsCompleted"] + first["contactsFailed"] + first["contactsPending"] + first["contactsInProgress"] == 1
        done = wait_for(lambda: c.get(f"/api/program-executions/{eid}").json(), 20, until=lambda e: e["status"] == "completed")
        assert done["contactsCompleted"] == 1 and done["contactsPending"] == 0
        assert c.get(f"/api/programs/{program.json()['id']}").json()["status"] == "active"
        # Bearer authentication works the same; a wrong key does not.
        bearer = c.get(f"/api/program-executions/{eid}", headers={"x-api-key": "", "Authorization": f"Bearer {key}"})
        assert bearer.status_code == 200
        assert c.get(f"/api/program-executions/{eid}", headers={"x-api-key": key[:-2] + "xx"}).status_code == 401


def _one_contact_launch(c: Any, phone: str) -> tuple[dict[str, Any], str]:
    """One contact in an audience, a hang-up flow, a program over them launched: the
    contact and the execution id."""
    contact = c.post("/api/contact", json={"primaryPhone": phone}).json()
    audience = c.post("/api/audience", json={"name": "One"}).json()
    c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [contact["id"]]})
    flow = c.post("/api/flows", json={"name": "f", "graph": {"startNodeId": "h", "nodes": [{"id": "h", "type": "hangup"}]}}).json()
    program = c.post("/api/programs", json={"name": "p", "audienceId": audience["id"], "flowId": flow["id"],
                                            "startAt": "2025-01-01T00:00:00Z", "didPool": ["+212500000001"],
                                            "retryStrategy": {"type": "none"}}).json()  # fmt: skip
    return contact, c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]


def test_dial_job_delivered_twice_places_one_call(tmp_path: Path) -> None:
    platform = Platform(tmp_path / "var", start_dispatcher=False)
    try:
        _org, key = platform.new_org()
        with platform.client(key) as c:
            contact, eid = _one_contact_launch(c, "+212612345679")
        container = platform.container
        execution = container.campaigns.execution(None, eid)
        from application.dispatcher import Dispatcher

        Dispatcher(container.campaigns, container.calls, container.progress, container.queue, platform.clock)._queue_calls(eid)
        from domain.call import call_id

        cid = str(call_id(execution.id, contact["id"]))
        # The same message delivered twice through the broker, and two workers racing directly.
        container.queue.enqueue_dial(cid, 1)
        container.queue.enqueue_dial(cid, 1)
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(container.dialer.dial(cid, 1))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: container.calls.call(cid).status == "finished", 20, what="the call to finish")
        placed = [call for call in platform.sandbox.calls() if call["to"] == "+212612345679"]
        assert len(placed) == 1, placed
        events = list(container.calls.repository.event_store.get(container.calls.call(cid).id))
        claims = [e for e in events if type(e).__name__ == "DialClaimed"]
        assert len(claims) == 1
        assert claims[0].meta["actor"].startswith("worker:")
    finally:
        platform.close()


def test_a_pause_between_the_check_and_the_claim_gives_the_claim_back(tmp_path: Path) -> None:
    """The worker checks the execution, the operator pauses it, then the worker claims:
    the claim is checked again once stored, given back undialled, and the contact is
    called after the resume, once."""
    platform = Platform(tmp_path / "var", start_dispatcher=False)
    phone = "+212612345674"
    try:
        _org, key = platform.new_org()
        with platform.client(key) as c:
            contact, eid = _one_contact_launch(c, phone)
            container = platform.container
            from application.dispatcher import Dispatcher
            from domain.call import call_id

            Dispatcher(container.campaigns, container.calls, container.progress, container.queue, platform.clock)._queue_calls(eid)
            cid = str(call_id(container.campaigns.execution(None, eid).id, contact["id"]))
            dialer = container.dialer
            checks = dialer._may_dial

            def pause_then_check(*args: Any) -> Any:
                assert c.patch(f"/api/program-executions/{eid}/pause").json()["status"] == "paused"
                return checks(*args)

            dialer._may_dial = pause_then_check  # type: ignore[method-assign]
            try:
                assert dialer.dial(cid, 1).status == "not_running"
            finally:
                dialer._may_dial = checks  # type: ignore[method-assign]
            assert [call for call in platform.sandbox.calls() if call["to"] == phone] == []
            events = [type(e).__name__ for e in container.calls.repository.event_store.get(container.calls.call(cid).id)]
            assert events == ["Created", "DialClaimed", "ClaimReleased"]
            assert container.calls.call(cid).status == "pending"
            wait_for(lambda: c.get(f"/api/program-executions/{eid}").json(), 20, what="the released claim counted pending again", until=lambda e: e["status"] == "paused" and e["contactsInProgress"] == 0 and e["contactsPending"] == 1)
            # The report is its own read model: it may trail the counters by a batch.
            reports = container.runner("reports")
            wait_for(lambda: not any(reports.lag().values()), 20, what="the reports read model to catch up")
            report = c.get(f"/api/program-execution/{eid}/report").json()
            assert report["callMetrics"]["totalCalls"] == 0, report["callMetrics"]

            assert c.patch(f"/api/program-executions/{eid}/resume").json()["status"] == "running"
            assert dialer.dial(cid, 1).status == "placed"
            wait_for(lambda: container.calls.call(cid).status == "finished", 20, what="the call to finish")
            assert len([call for call in platform.sandbox.calls() if call["to"] == phone]) == 1
    finally:
        platform.close()
