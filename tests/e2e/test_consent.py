"""Consent records and opt-outs through the real stack (API, dial worker, sandbox): records
over HTTP with their audit trail; a program that requires consent dials only the contacts
holding it at dial time; a withdrawal or an opt-out (API or in-call) stored before a dial
prevents it, in any execution. The dispatcher is driven by hand (no background ticks), so
each dial happens exactly when the test says."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.dispatcher import Dispatcher
from application.suppression import Suppressions
from domain.call import call_id
from domain.timeparse import format_instant
from tests.harness import Platform, wait_for

PLAIN = {"startNodeId": "dial", "nodes": {
    "dial": {"type": "dial", "config": {"enableAMD": False}, "outputs": {"onAnswer": "hi"}},
    "hi": {"type": "say", "config": {"text": "Hello"}, "outputs": {"onComplete": "bye"}},
    "bye": {"type": "hangup"}}}  # fmt: skip
OPT_OUT = {"startNodeId": "dial", "nodes": {
    "dial": {"type": "dial", "config": {"enableAMD": False}, "outputs": {"onAnswer": "stop"}},
    "stop": {"type": "opt_out", "config": {"language": "en", "reason": "pressed 9"}}}}  # fmt: skip


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(Path(tmp_path_factory.mktemp("consent")) / "var", start_dispatcher=False)
    yield p
    p.close()


def iso(platform: Platform, delta: timedelta = timedelta(0)) -> str:
    return format_instant(platform.clock.now() + delta) or ""


def consent(platform: Platform, scope: str = "calls", **extra: Any) -> dict[str, Any]:
    return {"scope": scope, "source": "web_form", "obtainedAt": iso(platform, -timedelta(days=1)),
            "evidence": "https://forms.example/submissions/81", **extra}  # fmt: skip


def new_contact(c: Any, phone: str) -> str:
    r = c.post("/api/contact", json={"primaryPhone": phone})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def launch(platform: Platform, c: Any, contacts: list[str], graph: dict[str, Any] = PLAIN, **program: Any) -> str:
    """A running execution whose calls are queued (not dispatched)."""
    audience = c.post("/api/audience", json={"name": f"consent {len(contacts)} {program}"}).json()
    assert c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": contacts}).status_code == 200
    flow = c.post("/api/flows", json={"name": "consent", "graph": graph}).json()
    r = c.post("/api/programs", json={"name": "consent", "audienceId": audience["id"], "flowId": flow["id"],
                                      "startAt": "2025-01-01T00:00:00Z", "didPool": ["+212500000001"],
                                      "retryStrategy": {"type": "none"}, **program})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["requireConsent"] == program.get("requireConsent")
    eid = str(c.post(f"/api/programs/{r.json()['id']}/launch").json()["executionId"])
    container = platform.container
    Dispatcher(container.campaigns, container.calls, container.progress, container.queue, platform.clock)._queue_calls(eid)
    return eid


def dialled(platform: Platform, phone: str) -> int:
    return sum(1 for call in platform.sandbox.calls() if call["to"] == phone)


def call_events(platform: Platform, eid: str, contact: str) -> list[str]:
    job = call_id(eid, contact)
    return [type(e).__name__ for e in platform.container.calls.repository.event_store.get(job)]


def test_consent_records_over_http(platform: Platform) -> None:
    _, key = platform.new_org("Consent records")
    with platform.client(key) as c:
        cid = new_contact(c, "+212612400001")
        url = f"/api/contact/{cid}/consents"
        assert c.get(url).json()["consents"] == []

        # Every bad field is named; unknown fields are refused; nothing is recorded.
        bad = c.post(url, json={"scope": "Calls", "source": "fax", "obtainedAt": iso(platform, timedelta(days=1))})
        assert bad.status_code == 400
        assert set(bad.json()["fieldErrors"]) == {"scope", "source", "obtainedAt", "evidence"}, bad.json()
        later = c.post(url, json=consent(platform, expiresAt=iso(platform, -timedelta(days=2))))
        assert later.status_code == 400 and list(later.json()["fieldErrors"]) == ["expiresAt"]
        unknown = c.post(url, json=consent(platform, channel="voice"))
        assert unknown.status_code == 400 and "channel" in unknown.json()["fieldErrors"]
        assert c.get(url).json()["history"] == []

        # Recorded once for one Idempotency-Key.
        body = consent(platform, expiresAt=iso(platform, timedelta(days=365)))
        first = c.post(url, json=body, headers={"Idempotency-Key": "consent-1", "X-Request-Id": "req-consent-1"})
        assert first.status_code == 201, first.text
        again = c.post(url, json=body, headers={"Idempotency-Key": "consent-1"})
        assert again.status_code == 201 and again.json() == first.json()
        [state] = first.json()["consents"]
        assert state["scope"] == "calls" and state["status"] == "valid" and state["evidence"] == body["evidence"]
        [recorded] = first.json()["history"]
        assert recorded["type"] == "ConsentRecorded" and recorded["requestId"] == "req-consent-1"
        assert recorded["actor"].startswith("apikey:") and recorded["source"] == "web_form"

        # Withdraw with If-Match (412 when stale), then once more: nothing new.
        etag = c.get(url).headers["etag"]
        assert c.delete(f"{url}/calls", headers={"If-Match": '"1"'}).status_code == 412
        withdrawn = c.delete(f"{url}/calls", params={"reason": "asked by email", "source": "email"}, headers={"If-Match": etag})
        assert withdrawn.status_code == 200, withdrawn.text
        [state] = withdrawn.json()["consents"]
        assert (state["status"], state["withdrawalReason"], state["withdrawalSource"]) == ("withdrawn", "asked by email", "email")
        assert c.delete(f"{url}/calls").json()["history"] == withdrawn.json()["history"]
        assert c.delete(f"{url}/marketing").status_code == 404  # never recorded
        assert c.delete(f"{url}/calls", params={"source": "fax"}).status_code == 400

        # A new consent obtained after the withdrawal re-grants; one dated before it does not.
        old = c.post(url, json=consent(platform, obtainedAt=iso(platform, -timedelta(days=30))))
        assert old.json()["consents"][0]["status"] == "withdrawn"
        regrant = c.post(url, json=consent(platform, obtainedAt=iso(platform)))
        assert regrant.json()["consents"][0]["status"] == "valid"
        assert [h["type"] for h in regrant.json()["history"]] == ["ConsentRecorded", "ConsentWithdrawn", "ConsentRecorded", "ConsentRecorded"]

        # The contact's own history shows them too, with their fields.
        history = c.get(f"/api/contact/{cid}/history").json()["data"]
        assert [h["type"] for h in history][-4:] == ["ConsentRecorded", "ConsentWithdrawn", "ConsentRecorded", "ConsentRecorded"]
        assert history[-3]["changes"]["reason"] == "asked by email"

    _, other = platform.new_org("Consent stranger")
    with platform.client(other) as o:
        assert o.get(f"/api/contact/{cid}/consents").status_code == 404
        assert o.post(f"/api/contact/{cid}/consents", json=consent(platform)).status_code == 404
        assert o.delete(f"/api/contact/{cid}/consents/calls").status_code == 404
        assert o.post(f"/api/contact/{cid}/opt-out", json={}).status_code == 404


def test_a_program_requiring_consent_dials_only_contacts_holding_it_at_dial_time(platform: Platform) -> None:
    _, key = platform.new_org("Consent dialing")
    phones = {"consents": "+212612400014", "none": "+212612400024", "marketing": "+212612400034",
              "expired": "+212612400044", "withdrawn": "+212612400054", "race": "+212612400064"}  # fmt: skip
    with platform.client(key) as c:
        ids = {name: new_contact(c, phone) for name, phone in phones.items()}
        for name in ("consents", "withdrawn", "race"):
            assert c.post(f"/api/contact/{ids[name]}/consents", json=consent(platform)).status_code == 201
        c.post(f"/api/contact/{ids['marketing']}/consents", json=consent(platform, "marketing"))
        c.post(f"/api/contact/{ids['expired']}/consents", json=consent(platform, expiresAt=iso(platform, -timedelta(hours=1))))
        eid = launch(platform, c, list(ids.values()), requireConsent="calls")
        # The execution froze the program: a change now is for the next launch only.
        program = f"/api/programs/{c.get(f'/api/program-executions/{eid}').json()['programId']}"
        bad = c.patch(program, json={"requireConsent": "Calls!"})
        assert bad.status_code == 400 and list(bad.json()["fieldErrors"]) == ["requireConsent"]
        assert c.patch(program, json={"requireConsent": None}).json()["requireConsent"] is None
        assert c.get(f"/api/program-executions/{eid}").json()["requireConsent"] == "calls"

        # Withdrawn after the calls were queued, before the dial.
        assert c.delete(f"/api/contact/{ids['withdrawn']}/consents/calls").status_code == 200
        dialer = platform.container.dialer
        results = {name: dialer.dial(str(call_id(eid, ids[name])), 1).status for name in ("consents", "none", "marketing", "expired", "withdrawn")}
        assert results == {"consents": "placed", "none": "no_consent", "marketing": "no_consent", "expired": "no_consent", "withdrawn": "no_consent"}

        # Withdrawn between the dialer's check and its claim: the claim is given back, no dial.
        checks = dialer._may_dial

        def withdraw_then_claim(*args: Any) -> Any:
            verdict = checks(*args)
            assert c.delete(f"/api/contact/{ids['race']}/consents/calls").status_code == 200
            return verdict

        dialer._may_dial = withdraw_then_claim  # type: ignore[method-assign]
        try:
            assert dialer.dial(str(call_id(eid, ids["race"])), 1).status == "no_consent"
        finally:
            dialer._may_dial = checks  # type: ignore[method-assign]
        assert call_events(platform, eid, ids["race"]) == ["Created", "DialClaimed", "ClaimReleased", "Skipped"]

        assert [name for name, phone in phones.items() if dialled(platform, phone)] == ["consents"]
        def counted() -> dict[str, Any] | None:
            e: dict[str, Any] = c.get(f"/api/program-executions/{eid}").json()
            return e if e["contactsSkipped"] == 5 and e["contactsCompleted"] == 1 else None

        def reported() -> list[dict[str, Any]] | None:
            d: list[dict[str, Any]] = c.get(f"/api/program-execution/{eid}/report/calls").json()["data"]
            return d if len(d) == 6 and all(r["status"] != "pending" for r in d) else None

        done = wait_for(counted, 30, what="five skipped, one completed")
        assert done["totalContacts"] == 6
        rows = wait_for(reported, 30, what="the call rows")
        assert sorted(r["outcomeReason"] for r in rows if r["status"] == "skipped") == ["no_consent"] * 5

        # A program without the requirement dials a contact without consent.
        other = launch(platform, c, [ids["none"]])
        assert dialer.dial(str(call_id(other, ids["none"])), 1).status == "placed"


def test_an_api_opt_out_prevents_the_next_dial_in_another_execution(platform: Platform) -> None:
    org_id, key = platform.new_org("API opt-out")
    phone = "+212612400074"
    with platform.client(key) as c:
        cid = new_contact(c, phone)
        for scope in ("calls", "marketing"):
            c.post(f"/api/contact/{cid}/consents", json=consent(platform, scope))
        first, second = launch(platform, c, [cid]), launch(platform, c, [cid], requireConsent="calls")
        assert c.post(f"/api/contact/{cid}/opt-out", json={"reason": "angry", "channel": "x"}).status_code == 400
        r = c.post(f"/api/contact/{cid}/opt-out", json={"reason": "asked on the phone to an agent"})
        assert r.status_code == 201, r.text
        assert r.json()["withdrawnScopes"] == ["calls", "marketing"] and r.json()["suppression"]["active"]
        assert c.post(f"/api/contact/{cid}/opt-out", json={}).json()["recorded"] is False  # once is enough

        dialer = platform.container.dialer
        assert dialer.dial(str(call_id(first, cid)), 1).status == "suppressed"
        assert dialer.dial(str(call_id(second, cid)), 1).status == "suppressed"
        assert dialled(platform, phone) == 0
        assert Suppressions(platform.container.campaigns).is_suppressed(UUID(org_id), phone)
        assert c.get(f"/api/suppressions/{phone}").json()["source"] == "opt_out"
        view = c.get(f"/api/contact/{cid}/consents").json()
        assert view["optedOut"] and view["doNotCall"] and {s["status"] for s in view["consents"]} == {"withdrawn"}
        history = c.get(f"/api/contact/{cid}/history").json()["data"]
        assert [h["type"] for h in history][-3:] == ["ConsentWithdrawn", "ConsentWithdrawn", "OptedOut"]
        assert history[-1]["changes"] == {"source": "api", "reason": "asked on the phone to an agent", "phone": phone}
        assert len({h["meta"]["requestId"] for h in history[-3:]}) == 1  # one command, one save
        # Lifting the opt-out is removing the number from the do-not-call list (a manager's).
        assert c.delete(f"/api/suppressions/{phone}").status_code == 200
        assert c.get(f"/api/contact/{cid}/consents").json()["doNotCall"] is False
        assert c.post(f"/api/contact/{cid}/opt-out", json={}).json()["recorded"] is True  # on the list again


def test_an_in_call_opt_out_prevents_the_next_dial_in_another_execution(platform: Platform) -> None:
    _, key = platform.new_org("In-call opt-out")
    phone = "+212612400084"  # a person: answers
    container = platform.container
    # The flow effects' outbox, stopped: only the call itself can opt out.
    [outbox] = [r for r in container.runners if type(r.view).__name__.startswith("FlowEffectsOutbox")]
    outbox.stop()
    try:
        with platform.client(key) as c:
            cid = new_contact(c, phone)
            c.post(f"/api/contact/{cid}/consents", json=consent(platform))
            calling, waiting = launch(platform, c, [cid], OPT_OUT), launch(platform, c, [cid])
            assert container.dialer.dial(str(call_id(calling, cid)), 1).status == "placed"
            job = call_id(calling, cid)
            wait_for(lambda: any(t.get("events") and any(e["type"] == "opt_out_requested" for e in t["events"])
                                 for t in container.calls.call(job).turns), 20, what="the opt-out turn")  # fmt: skip
            # As soon as the turn is saved (the callback answered), the next dial is refused.
            assert container.dialer.dial(str(call_id(waiting, cid)), 1).status == "suppressed"
            assert dialled(platform, phone) == 1
            view = c.get(f"/api/contact/{cid}/consents").json()
            assert view["optedOut"] and view["consents"][0]["status"] == "withdrawn"
            assert view["history"][-1]["type"] == "OptedOut" and view["history"][-1]["source"] == "ivr"
            assert view["history"][-1]["reason"] == "pressed 9"
    finally:
        outbox._stop.clear()
        outbox.start()
    # The durable path runs later and finds it done: nothing recorded twice.
    wait_for(lambda: container.flow_effects.done(job, max(
        e.originator_version for e in container.calls.repository.event_store.get(job) if type(e).__name__ == "FlowAdvanced")), 20,
        what="the outbox's run")  # fmt: skip
    contact_events = [type(e).__name__ for e in container.campaigns.repository.event_store.get(UUID(cid))]
    assert contact_events.count("OptedOut") == 1 and contact_events.count("ConsentWithdrawn") == 1


def test_concurrent_consents_on_one_contact_all_take_effect(platform: Platform) -> None:
    """Consents recorded at the same moment on one contact (one stream) are each retried on
    the contact's new version: none lost, no 5xx."""
    from concurrent.futures import ThreadPoolExecutor

    _, key = platform.new_org("Consent concurrency")
    with platform.client(key) as c:
        cid = new_contact(c, "+212612400094")

        def post(i: int) -> int:
            with platform.client(key) as own:
                return int(own.post(f"/api/contact/{cid}/consents", json=consent(platform, f"scope-{i}")).status_code)

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(post, range(16)))
        assert statuses == [201] * 16, statuses
        assert sorted(s["scope"] for s in c.get(f"/api/contact/{cid}/consents").json()["consents"]) == sorted(
            f"scope-{i}" for i in range(16))
