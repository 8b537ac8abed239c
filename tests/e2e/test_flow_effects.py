"""Flow nodes that act on the platform, through the real stack (API, dial worker, sandbox,
signed webhooks): ``update_contact`` changes the Contact, ``sms`` records and sends a message
through the SMS port, ``opt_out`` puts the number on the do-not-call list. These effects run
after the turn is saved, from the calls log (tests/e2e/test_flow_effects_durability.py shows
they survive a crash): the tests wait for them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from application.suppression import Suppressions
from domain.call import call_id
from domain.flow_effect import requested_effects
from domain.sms import SmsMessage, sms_id
from tests.harness import Platform, wait_for


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Any, str]]:
    platform = Platform(tmp_path_factory.mktemp("effects") / "var")
    org_id, key = platform.new_org()
    with platform.client(key) as client:
        yield platform, client, org_id
    platform.close()


def launch(
    platform: Platform, c: Any, phone: str, graph: dict[str, Any], contact_id: str | None = None, before_launch: Any = None
) -> tuple[str, str]:
    contact = {"id": contact_id} if contact_id else c.post("/api/contact", json={"primaryPhone": phone, "firstName": "Amina"}).json()
    audience = c.post("/api/audience", json={"name": f"effects {phone}"}).json()
    c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [contact["id"]]})
    flow = c.post("/api/flows", json={"name": f"effects {phone}", "graph": graph})
    assert flow.status_code == 201, flow.text
    program = c.post("/api/programs", json={
        "name": f"effects {phone}", "audienceId": audience["id"], "flowId": flow.json()["id"],
        "startAt": datetime.now(UTC).isoformat(), "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}}).json()  # fmt: skip
    if before_launch is not None:
        before_launch()
    eid = c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
    wait_for(lambda: c.get(f"/api/program-executions/{eid}").json()["status"] == "completed", 30, what="the execution")
    return eid, contact["id"]


def settle(platform: Platform, job: UUID) -> None:
    """Wait until every turn of the call that asked for effects has had them carried out."""
    asked = [e.originator_version for e in platform.container.calls.repository.event_store.get(job)
             if type(e).__name__ == "FlowAdvanced" and requested_effects(e.turn)]  # fmt: skip
    assert asked, "the flow asked for no effects"
    wait_for(lambda: all(platform.container.flow_effects.done(job, v) for v in asked), 10, what="the flow's effects")


GRAPH = {"startNodeId": "dial", "nodes": {
    "dial": {"type": "dial", "config": {"enableAMD": False}, "outputs": {"onAnswer": "rename"}},
    "rename": {"type": "update_contact", "config": {"attributeName": "lastName", "value": "{{ $variables.choice }}-pressed"},
               "outputs": {"onComplete": "tier"}},
    "tier": {"type": "update_contact", "config": {"attributeName": "customAttributes.tier", "value": "gold"},
             "outputs": {"onComplete": "ask"}},
    "ask": {"type": "dtmf", "config": {"mode": "single_digit", "variable": "choice", "timeout": 5000,
            "singleDigitConfig": {"allowedDigits": ["1", "2"]}},
            "outputs": {"branches": {"1": "text", "2": "bye"}, "onTimeout": "bye"}},
    "text": {"type": "sms", "config": {"messageTemplate": "Hello {{ $contact.firstName }}, you pressed {{ $variables.choice }}",
             "senderId": "ACME"}, "outputs": {"onComplete": "stop"}},
    "stop": {"type": "opt_out", "config": {"language": "en", "reason": "pressed 1"}},
    "bye": {"type": "hangup"}}}  # fmt: skip


def test_update_contact_sms_and_opt_out_take_effect(world: tuple[Platform, Any, str]) -> None:
    platform, c, org_id = world
    assert c.post("/api/custom-attributes", json={"displayName": "Tier", "type": "text"}).status_code == 201
    phone = "+212616000004"  # the sandbox callee presses 1
    eid, contact_id = launch(platform, c, phone, GRAPH)

    settle(platform, call_id(eid, contact_id))
    contact = c.get(f"/api/contact/{contact_id}").json()
    assert contact["lastName"] == "-pressed"  # the variable was not set yet when the node ran
    assert {a["name"]: a["value"] for a in contact["customAttributes"]}["tier"] == "gold"
    assert Suppressions(platform.container.campaigns).is_suppressed(UUID(org_id), phone)
    listed = c.get(f"/api/suppressions/{phone}").json()
    assert listed["source"] == "opt_out" and listed["reason"] == "pressed 1"

    job = call_id(eid, contact_id)
    turns = platform.container.calls.call(job).turns
    [(seq, index)] = [(t, i) for t, turn in enumerate(turns) for i, e in enumerate(turn["events"]) if e["type"] == "sms_requested"]
    message = platform.container.campaigns.repository.get(sms_id(job, 1, seq, index))
    assert isinstance(message, SmsMessage)
    assert (message.to, message.body, message.sender_id) == (phone, "Hello Amina, you pressed 1", "ACME")
    assert message.status == "sent" and message.gateway_id

    # The number is never dialled again by a later campaign: the dialer skips it.
    eid2, _ = launch(platform, c, phone, GRAPH, contact_id)
    assert sum(1 for call in platform.sandbox.calls() if call["to"] == phone) == 1
    assert c.get(f"/api/program-executions/{eid2}").json()["contactsSkipped"] == 1


def test_a_failed_update_does_not_stop_the_call(world: tuple[Platform, Any, str]) -> None:
    platform, c, _ = world
    graph = {"startNodeId": "dial", "nodes": {
        "dial": {"type": "dial", "config": {"enableAMD": False}, "outputs": {"onAnswer": "bad"}},
        "bad": {"type": "update_contact", "config": {"attributeName": "customAttributes.undefined_thing", "value": 1},
                "outputs": {"onComplete": "say"}},
        "say": {"type": "say", "config": {"text": "still here", "language": "en"}, "outputs": {"onComplete": "bye"}},
        "bye": {"type": "hangup"}}}  # fmt: skip
    phone = "+212616000005"
    # A flow may only name attributes the organization defines; one removed after the
    # flow was saved makes the update fail when the call runs.
    refused = c.post("/api/flows", json={"name": "undefined attribute", "graph": graph})
    assert refused.status_code == 400 and "graph.nodes.bad.config.attributeName" in refused.json()["fieldErrors"]
    attribute = c.post("/api/custom-attributes", json={"name": "undefined_thing", "displayName": "Soon gone", "type": "number"})
    assert attribute.status_code == 201, attribute.text
    contact = c.post("/api/contact", json={"primaryPhone": phone}).json()
    flow_graph = graph

    def remove_attribute() -> None:
        assert c.delete(f"/api/custom-attributes/{attribute.json()['id']}").status_code == 200

    eid, contact_id = launch(platform, c, phone, flow_graph, contact["id"], before_launch=remove_attribute)
    heard = [v.get("text") for call in platform.sandbox.calls() if call["to"] == phone for v in call["verbs"] if v["verb"] == "Say"]
    assert heard == ["still here"]
    assert c.get(f"/api/program-executions/{eid}").json()["contactsCompleted"] == 1
    job = call_id(eid, contact_id)
    settle(platform, job)
    [turn] = [e for e in platform.container.calls.repository.event_store.get(job) if type(e).__name__ == "FlowAdvanced"]
    [result] = platform.container.flow_effects.done(job, turn.originator_version).results  # type: ignore[union-attr]
    assert result["status"] == "failed" and "undefined_thing" in result["error"]  # recorded, with why
    attributes = c.get(f"/api/contact/{contact_id}").json().get("customAttributes") or []
    assert "undefined_thing" not in {a["name"] for a in attributes}
