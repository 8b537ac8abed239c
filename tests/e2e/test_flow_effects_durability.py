"""A flow turn's effects survive a crash: the process that saved the turn dies before doing
them, and the next start does them, exactly once, however often the work is delivered.

Real components throughout (the embedded store, the Dramatiq worker, the outbox that
follows the calls log); only the SMS gateway, a true edge, is a counter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.suppression import Suppressions
from domain.call import Call
from domain.flow_effect import TurnEffects, turn_effects_id
from domain.sms import SmsMessage, sms_id
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from tests.harness import wait_for

PHONE = "+212618000004"


class Gateway:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, *, to: str, body: str, sender_id: str | None, message_id: str) -> str:
        self.sent.append({"to": to, "body": body, "id": message_id})
        return f"gw-{len(self.sent)}"


STORES: dict[str, dict[str, str]] = {}  # the test's backend: the embedded store, or PostgreSQL + Redis


def container(data_dir: Path, gateway: Gateway) -> Container:
    c = Container(Settings(data_dir=data_dir, projection_interval=0.02, worker_threads=2, **STORES.get(str(data_dir), {})))
    c.flow_effects.sms = gateway
    return c


def save_turn(c: Container) -> tuple[Any, UUID, UUID, int]:
    """What a voice webhook does: one save of the Call holding the turn and its requests."""
    org_id, _ = c.campaigns.create_organization("Durable")
    org = c.campaigns.organization(org_id)
    contact = c.campaigns.create_contact(org, {"primaryPhone": PHONE, "firstName": "Amina", "lastName": "Before"})
    call = Call(uuid4(), contact.id, org_id, uuid4(), PHONE, contact.snapshot(), datetime.now(UTC))
    call.claim(1, datetime.now(UTC), "test")
    call.record_answered(1, "human")
    events = [
        {"type": "contact_update_requested", "nodeId": "rename", "attributeName": "lastName", "kind": "contactField", "value": "After"},
        {"type": "play", "nodeId": "say", "text": "bye"},
        {"type": "sms_requested", "nodeId": "text", "to": PHONE, "body": "Your code is 42", "senderId": "ACME"},
        {"type": "opt_out_requested", "nodeId": "stop", "phone": PHONE, "reason": "pressed 9"},
    ]
    call.record_turn(1, {"type": "answer"}, {"steps": [], "instructions": [], "state": {}, "events": events})
    c.calls.save(call)
    return org, call.id, contact.id, call.version


def effects_done(c: Container, call: UUID, version: int) -> TurnEffects | None:
    return c.flow_effects.done(call, version)


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.integration)])
def data_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "var"
    if request.param == "postgres":
        redis_url, namespace = request.getfixturevalue("redis_namespace")
        STORES[str(path)] = {"database_url": request.getfixturevalue("postgres_database"), "redis_url": redis_url, "redis_namespace": namespace}
    yield path
    STORES.pop(str(path), None)


def test_effects_of_a_turn_saved_just_before_a_crash_happen_once_after_restart(data_dir: Path) -> None:
    gateway = Gateway()
    crashed = container(data_dir, gateway)  # an API process: saves turns, runs no outbox or worker
    org, call, contact, version = save_turn(crashed)
    crashed.close()  # dies before any effect
    assert gateway.sent == []

    restarted = container(data_dir, gateway)
    try:
        assert restarted.campaigns.contact(org.id, contact).fields["lastName"] == "Before"
        restarted.start_worker()
        restarted.runners.append(restarted.effects_outbox().start())
        done = wait_for(lambda: effects_done(restarted, call, version), 20, what="the turn's effects")
        assert [r["status"] for r in done.results] == ["done", "sent", "done"]
        assert [r["index"] for r in done.results] == [0, 2, 3]
        assert restarted.campaigns.contact(org.id, contact).fields["lastName"] == "After"
        assert Suppressions(restarted.campaigns).is_suppressed(org.id, PHONE)
        message = restarted.campaigns.repository.get(sms_id(call, 1, 0, 2))
        assert isinstance(message, SmsMessage) and message.status == "sent"
        assert [m["body"] for m in gateway.sent] == ["Your code is 42"]
    finally:
        restarted.close()

    again = container(data_dir, gateway)  # another restart: the outbox has moved past the turn
    try:
        again.start_worker()
        again.runners.append(again.effects_outbox().start())
        time.sleep(0.5)
        assert len(gateway.sent) == 1
        assert len(list(again.campaigns.repository.event_store.get(turn_effects_id(call, version)))) == 1
    finally:
        again.close()


def test_a_job_delivered_twice_or_an_effect_redone_after_a_crash_changes_nothing(data_dir: Path) -> None:
    gateway = Gateway()
    c = container(data_dir, gateway)
    try:
        org, call, contact, version = save_turn(c)
        # The worker died after sending the SMS and updating the contact, before recording
        # the turn as done: those effects are done again by the next delivery.
        found = c.flow_effects._turn(call, version)
        assert found is not None
        c.flow_effects.apply(*found)
        assert len(gateway.sent) == 1 and effects_done(c, call, version) is None
        contact_version = c.campaigns.contact(org.id, contact).version

        assert c.flow_effects.run(str(call), version) == "applied"
        assert c.flow_effects.run(str(call), version) == "already_done"  # a redelivered job
        c.start_worker()
        for _ in range(3):  # the outbox crashed after sending, before its position committed
            c.effects_queue.send(str(call), version)
        c.runners.append(c.effects_outbox().start())
        wait_for(lambda: c.runners[-1].lag()["calls"] == 0, 10, what="the outbox")
        c.broker.join("flow_effects", timeout=10_000)
        assert len(gateway.sent) == 1
        assert c.campaigns.contact(org.id, contact).version == contact_version  # an unchanged contact records nothing
        assert len(list(c.campaigns.repository.event_store.get(turn_effects_id(call, version)))) == 1
    finally:
        c.close()
