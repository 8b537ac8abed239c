"""Crypto-shredding at the persistence boundary (infrastructure/privacy.py): personal
fields are sealed under a key per contact, read back while the key lives, read empty once
it is destroyed (never an exception), and events stored before sealing still read."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from domain.call import Call
from domain.contact import Contact
from infrastructure.privacy import (
    ENVELOPE,
    KeyStore,
    PersonalDataMapper,
    bind,
    keystore_for,
    mapper_topic,
)

PHONE = "+212612345678"


def _env(tmp_path: Path, encrypted: bool = True, ttl: float = 30.0) -> dict[str, str]:
    keys = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "CONTACT_KEYS_SQLITE_DBNAME": str(tmp_path / "keys.sqlite")}
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "events.sqlite")}
    if encrypted:
        env["MAPPER_TOPIC"] = mapper_topic(keys, ttl)
    return env


def _app(tmp_path: Path, **kw: Any) -> Application[Any]:
    app: Application[Any] = Application(env=_env(tmp_path, **kw))
    bind(app)
    return app


def _contact() -> Contact:
    return Contact(uuid4(), PHONE, "0612345678", {"firstName": "Amina", "lastName": "Alaoui",
                                                  "customAttributes": {"balance": 1500}, "timezone": "Africa/Casablanca"})


def _call(contact: Contact) -> Call:
    call = Call(uuid4(), contact.id, contact.organization_id, uuid4(), contact.phone, contact.snapshot(), contact.created_on)
    call.claim(1, contact.created_on, "w")
    call.record_answered(1, "human")
    call.record_turn(
        1, {"type": "input", "digits": "1234", "recordingUrl": "https://api.twilio.com/rec/RE1"},
        {"steps": [{"nodeId": "play-1", "nodeType": "play", "nodeLabel": "Hello", "outputPath": None}],
         "instructions": [{"verb": "say", "text": "Bonjour Amina"}], "state": {"variables": {"code": "1234"}},
         "resolved": {"nodeId": "gather-1", "outputPath": "branches.1"}, "input": None,
         "events": [{"type": "play", "nodeId": "play-1", "text": "Bonjour Amina"}], "request": None, "at": "t"},
    )  # fmt: skip
    return call


def _raw(app: Application[Any]) -> bytes:
    return b"".join(bytes(n.state) for n in app.recorder.select_notifications(start=1, limit=1000))


def test_personal_fields_are_sealed_and_read_back(tmp_path):
    app = _app(tmp_path)
    contact = _contact()
    call = _call(contact)
    app.save(contact, call)
    raw = _raw(app)
    # short values are looked for with what surrounds them in clear: random hex ids and ciphertext hold any four digits now and then
    for secret in (b"+212612345678", b"Amina", b"Alaoui", b"0612345678", b":1500", b'"1234"', b"rec/RE1"):
        assert secret not in raw, secret
    # what stays in clear: ids, organization (the audit chain reads it), time zone, node path
    assert b'"organization_id":{"_type_":"uuid_hex","_data_":"' + contact.organization_id.hex.encode() in raw
    assert b"Africa/Casablanca" in raw and b"play-1" in raw and b"branches.1" in raw

    again = app.repository.get(contact.id)
    assert (again.phone, again.phone_input, again.fields, again.custom_attributes) == (
        contact.phone, contact.phone_input, contact.fields, contact.custom_attributes)  # fmt: skip
    c2 = app.repository.get(call.id)
    assert c2.to == PHONE and c2.contact == call.contact and c2.turns == call.turns
    events = list(app.events.get(call.id))
    assert all(ENVELOPE not in vars(e) for e in events)


def test_a_destroyed_key_reads_as_empty_fields_never_an_error(tmp_path):
    app = _app(tmp_path)
    contact = _contact()
    call = _call(contact)
    app.save(contact, call)
    store: KeyStore = app.mapper.keystore  # type: ignore[attr-defined]
    assert store.destroy(contact.id) == 1
    assert store.destroy(contact.id) == 0  # idempotent

    gone = app.repository.get(contact.id)
    assert (gone.phone, gone.phone_input, gone.fields, gone.custom_attributes) == ("", "", {}, {})
    assert gone.organization_id == contact.organization_id and gone.created_on == contact.created_on
    c2 = app.repository.get(call.id)
    assert c2.to == ""
    assert c2.contact == {"id": str(contact.id), "timezone": "Africa/Casablanca", "phone": "",
                          "firstName": "", "lastName": "", "customAttributes": {}}
    turn = c2.turns[0]
    assert turn["steps"][0]["nodeId"] == "play-1" and turn["resolved"]["outputPath"] == "branches.1"
    assert turn["instructions"] == [] and turn["events"] == [] and turn["state"] == {}
    assert turn["trigger"] == {"type": "input", "digits": "", "recordingUrl": ""}
    assert (c2.status, c2.answered_by) == ("in_progress", "human")  # the non-personal facts stay

    # a new process (empty cache) reads the same
    fresh = _app(tmp_path)
    assert fresh.repository.get(call.id).to == ""


def test_other_processes_forget_an_erased_key_within_the_cache_bound(tmp_path):
    writer = _app(tmp_path, ttl=0.2)
    contact = _contact()
    writer.save(contact)
    # another process: its own key store, its own cache (as another OS process would have)
    other_store = KeyStore(dict(writer.mapper.keystore.env), ttl=0.2)  # type: ignore[attr-defined]
    other = _app(tmp_path, ttl=0.2)
    other.mapper.keystore = other_store  # type: ignore[attr-defined]
    assert other.repository.get(contact.id).phone == PHONE
    writer.mapper.keystore.destroy(contact.id)  # type: ignore[attr-defined]
    assert writer.repository.get(contact.id).phone == ""  # at once where it was destroyed
    import time

    time.sleep(0.25)
    assert other.repository.get(contact.id).phone == ""  # and within the bound elsewhere


def test_events_stored_before_sealing_still_read(tmp_path):
    plain = _app(tmp_path, encrypted=False)
    contact = _contact()
    call = _call(contact)
    plain.save(contact, call)
    assert b"Amina" in _raw(plain)

    app = _app(tmp_path)
    assert app.repository.get(contact.id).fields["firstName"] == "Amina"
    loaded = app.repository.get(call.id)
    assert loaded.to == PHONE
    # new events of a legacy call are sealed under the contact's (new) key
    loaded.record_turn(1, {"type": "input", "digits": "9876"}, {"steps": [], "instructions": [], "state": {}, "events": []})
    app.save(loaded)
    # quoted: the stored ids are random hex, so four bare digits may well turn up in them
    assert b'"9876"' not in _raw(app)
    assert app.repository.get(call.id).turns[-1]["trigger"]["digits"] == "9876"
    app.mapper.keystore.destroy(contact.id)  # type: ignore[attr-defined]
    assert app.repository.get(call.id).turns[-1]["trigger"]["digits"] == ""


def test_a_contact_recreated_after_erasure_gets_a_new_key(tmp_path):
    app = _app(tmp_path)
    contact = _contact()
    app.save(contact)
    store = app.mapper.keystore  # type: ignore[attr-defined]
    store.destroy(contact.id)
    erased = app.repository.get(contact.id)
    erased.erase()
    app.save(erased)
    # written about an erased contact (a call still in progress, say): not kept
    later = app.repository.get(contact.id)
    later.update({"firstName": "Late"})
    app.save(later)
    assert app.repository.get(contact.id).fields == {}

    again = app.repository.get(contact.id)
    again.recreate(contact.organization_id, PHONE, PHONE, {"firstName": "Nadia"})
    app.save(again)
    back = app.repository.get(contact.id)
    assert (back.phone, back.fields, back.erased) == (PHONE, {"firstName": "Nadia"}, False)
    assert store.current([contact.id])[contact.id][0] == 2
    raw = _raw(app)
    assert b"Nadia" not in raw and b"Amina" not in raw and b'"Late"' not in raw
    assert b'"firstName":"Late"' not in raw


def test_altered_ciphertext_reads_as_erased(tmp_path):
    app = _app(tmp_path)
    contact = _contact()
    app.save(contact)
    stored = app.recorder.select_events(contact.id)[0]
    state = bytearray(stored.state)
    i = state.index(b'"c":"') + 10
    state[i] = ord("A") if state[i] != ord("A") else ord("B")
    mapper: PersonalDataMapper = app.mapper  # type: ignore[assignment]
    event = mapper.to_domain_event(StoredEvent(stored.originator_id, stored.originator_version, stored.topic, bytes(state)))
    assert event.phone == "" and event.fields == {}


def test_a_save_fetches_its_keys_in_one_query(tmp_path):
    app = _app(tmp_path)
    contacts = [Contact(uuid4(), f"+2126123456{i:02d}", "x", {"firstName": f"N{i}"}) for i in range(50)]
    store: KeyStore = app.mapper.keystore  # type: ignore[attr-defined]
    before = store.lookups
    app.save(*contacts)
    assert store.lookups - before <= 2  # select, insert, select again
    calls = [Call(uuid4(), c.id, c.organization_id, uuid4(), c.phone, c.snapshot(), c.created_on) for c in contacts]
    before = store.lookups
    app.save(*calls)
    assert store.lookups == before  # cached
    fresh = _app(tmp_path)
    fstore = fresh.mapper.keystore  # type: ignore[attr-defined]
    fstore._keys.clear()
    fstore._current.clear()
    before = fstore.lookups
    fresh.mapper.prefetch(fresh.recorder.select_notifications(start=1, limit=500))  # type: ignore[attr-defined]
    assert fstore.lookups - before == 1
    notes = fresh.recorder.select_notifications(start=1, limit=500)
    assert {fresh.mapper.to_domain_event(n).originator_id for n in notes} >= {c.id for c in contacts}
    assert fstore.lookups - before == 1


def test_the_key_store_is_shared_by_the_applications_of_a_process(tmp_path):
    env = _env(tmp_path)
    a, b = Application(env=env), Application(env=env)
    assert a.mapper.keystore is b.mapper.keystore  # type: ignore[attr-defined]
    assert keystore_for(a.mapper.keystore.env) is a.mapper.keystore  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [None, 0, True, 1.5, "x", [1], {"a": 1}])
def test_every_kind_of_value_round_trips(tmp_path, value):
    app = _app(tmp_path)
    contact = Contact(uuid4(), PHONE, "x", {"customAttributes": {"v": value}} if value is not None else {})
    app.save(contact)
    assert app.repository.get(contact.id).fields == contact.fields


def test_a_text_sent_to_the_contact_is_sealed_under_its_key(tmp_path):
    from domain.sms import SmsMessage

    app = _app(tmp_path)
    contact = _contact()
    call = _call(contact)
    sms = SmsMessage(call_id=call.id, attempt=1, turn=0, index=0, node_id="text", organization_id=contact.organization_id,
                     contact_id=contact.id, to=PHONE, body="Hello Amina, your code is 4321", sender_id=None)  # fmt: skip
    app.save(contact, call, sms)
    # the text, not its four digits alone: the stored ids are random hex and hold "4321" once in a few hundred runs
    assert b"your code is 4321" not in _raw(app) and PHONE.encode() not in _raw(app)
    assert app.repository.get(sms.id).body == "Hello Amina, your code is 4321"
    app.mapper.keystore.destroy(contact.id)  # type: ignore[attr-defined]
    assert (app.repository.get(sms.id).to, app.repository.get(sms.id).body) == ("", "")


def _two_apps(tmp_path: Path, store: KeyStore | None = None) -> tuple[Application[Any], Application[Any]]:
    """A contacts and a calls application, as in one process (``store``: its own key cache)."""
    made = []
    for name in ("contacts", "calls"):
        env = {**_env(tmp_path), "SQLITE_DBNAME": str(tmp_path / f"{name}.sqlite")}
        app: Application[Any] = Application(env=env)
        app.name = name
        bind(app)
        if store is not None:
            app.mapper.keystore = store  # type: ignore[attr-defined]
        made.append(app)
    return made[0], made[1]


class _View:
    """A read model that keeps what it is given."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.positions: dict[str, int] = {}

    def handle(self, c: Any, e: Any) -> None:
        self.seen.append(e)

    def apply_batch(self, items: Any, handle: Any, last: Any = None) -> None:
        for e, _ in items:
            handle(None, e)
        t = last or items[-1][1]
        self.positions[t.application_name] = t.notification_id

    def max_tracking_id(self, name: str) -> int | None:
        return self.positions.get(name)


def test_a_projection_reads_a_call_event_after_the_erasure_it_has_seen_as_erased(tmp_path):
    """A projector that still holds the key (another process, within the cache bound)
    reads a page of the calls log, then the contacts log with the erasure: the call events
    of that page are decoded after it, so they read erased, never in clear after the read
    models dropped the contact."""
    from projections.runner import ProjectionRunner

    def apps(store: KeyStore | None = None) -> tuple[Application[Any], Application[Any]]:
        return _two_apps(tmp_path, store)

    contacts, calls = apps()
    contact = _contact()
    call = _call(contact)
    contacts.save(contact)
    calls.save(call)

    view = _View()
    p_contacts, p_calls = apps(KeyStore(dict(contacts.mapper.keystore.env)))  # type: ignore[attr-defined]
    runner = ProjectionRunner("v", view, [p_contacts, p_calls])
    runner.run_once()
    assert [e.to for e in view.seen if type(e).__qualname__ == "Call.Created"] == [PHONE]  # read with the key
    # the projector's process now holds the key; a turn is recorded, then the contact erased
    later = calls.repository.get(call.id)
    later.record_turn(1, {"type": "input", "digits": "5555"}, {"steps": [], "instructions": [], "state": {}, "events": []})
    calls.save(later)
    contacts.mapper.keystore.destroy(contact.id)  # type: ignore[attr-defined]
    erased = contacts.repository.get(contact.id)
    erased.erase()
    contacts.save(erased)
    view.seen.clear()
    runner.run_once()
    names = [type(e).__qualname__ for e in view.seen]
    assert names == ["Contact.Erased", "Call.FlowAdvanced"], names
    assert view.seen[-1].trigger == {"type": "input", "digits": ""}


def test_runners_of_a_process_share_their_decodes_but_never_across_an_erasure(tmp_path):
    """Two read models of one process read the same page: the second is given the events
    the first decoded. Once a runner has read past an erasure, nothing decoded before it
    is given again: the calls the first runner decoded in clear read erased for the second."""
    from projections.runner import ProjectionRunner, decode_cache

    contacts, calls = _two_apps(tmp_path)
    contact = _contact()
    contacts.save(contact)
    calls.save(_call(contact))
    p_contacts, p_calls = _two_apps(tmp_path, KeyStore(dict(contacts.mapper.keystore.env)))  # type: ignore[attr-defined]
    first, second, third = _View(), _View(), _View()
    ProjectionRunner("first", first, [p_contacts, p_calls]).run_once()
    ProjectionRunner("second", second, [p_contacts, p_calls]).run_once()
    assert decode_cache(p_calls).hits == 4 and decode_cache(p_contacts).hits == 1
    assert [e.to for e in second.seen if type(e).__qualname__ == "Call.Created"] == [PHONE]
    # The contact is erased; a third read model, still before the calls, reads past it.
    contacts.mapper.keystore.destroy(contact.id)  # type: ignore[attr-defined]
    erased = contacts.repository.get(contact.id)
    erased.erase()
    contacts.save(erased)
    ProjectionRunner("third", third, [p_contacts, p_calls]).run_once()
    created = [e for e in third.seen if type(e).__qualname__ == "Call.Created"]
    assert [e.to for e in created] == [""], "a decode made before the erasure was given after it"
    assert PHONE not in repr(third.seen)
