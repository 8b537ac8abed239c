"""The bulk import on PostgreSQL: existing contacts are read in bulk (one query per
thousand streams) and must come back exactly as the repository would rebuild them, a
bad row never touches the contact it names, and a second import records nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from application.contacts import Contacts
from application.imports import ContactImporter
from domain.base import audit_context
from domain.contact import contact_id
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings


@pytest.fixture()
def container(postgres_database: str, tmp_path: Path) -> Any:
    c = Container(Settings(database_url=postgres_database, data_dir=tmp_path / "var"))
    yield c
    c.close()


def _csv(rows: list[str]) -> io.BytesIO:
    return io.BytesIO(("phone,first,city,balance\n" + "\n".join(rows) + "\n").encode())


MAPPING = {"phone": "primaryPhone", "first": "firstName", "city": "city", "balance": "custom.balance"}


def test_bulk_import_on_postgres_matches_the_repository_and_keeps_stored_contacts(container: Any) -> None:
    app = container.campaigns
    org_id, _ = app.create_organization("Bulk")
    contacts = Contacts(app)
    contacts.define_attribute(org_id, {"displayName": "Balance", "type": "number"})
    org = app.organization(org_id)
    with audit_context(actor="test"):
        first = ContactImporter(contacts, org, batch_size=7).run(
            _csv([f"06120{i:05d},F{i},Rabat,{i}" for i in range(30)]), MAPPING)
    assert (first.created, first.rejected) == (30, 0)

    # Change some, delete one, so that the streams have several events of several kinds.
    contacts.update(org, str(contact_id(org_id, "+212612000003")), {"city": "Fes", "customAttributes": {"balance": 99}})
    contacts.delete(org_id, str(contact_id(org_id, "+212612000004")))
    ids = [contact_id(org_id, f"+2126120{i:05d}") for i in range(30)]
    before = {i: app.repository.get(i) for i in ids}
    bulk = app.load_many([*ids, contact_id(org_id, "+212699999999")])
    assert set(bulk) == set(ids)  # an unknown id is simply absent
    for i in ids:
        assert (bulk[i].version, bulk[i].fields, bulk[i].custom_attributes, bulk[i].deleted_at) == (
            before[i].version, before[i].fields, before[i].custom_attributes, before[i].deleted_at)

    # A second file: a bad row naming an existing contact, an update, a restore, a new one.
    mark = app.recorder.max_notification_id()
    with audit_context(actor="test"):
        second = ContactImporter(contacts, org, batch_size=4).run(_csv([
            "0612000001,F1,Rabat,1",            # unchanged
            "0612000002,F2,Rabat,not-a-number",  # rejected: must leave contact 2 as it was
            "0612000003,F3,Rabat,3",            # back to what the first file said
            "0612000004,F4,Rabat,4",            # deleted: restored
            "0612000099,New,Oujda,5",           # created
        ]), MAPPING)
    assert (second.unchanged, second.rejected, second.updated, second.created) == (1, 1, 1, 2)
    after = {i: app.repository.get(i) for i in ids[:5]}
    assert after[ids[2]].version == before[ids[2]].version and after[ids[2]].custom_attributes == {"balance": 2}
    assert after[ids[1]].version == before[ids[1]].version
    assert after[ids[3]].fields["city"] == "Rabat" and after[ids[3]].custom_attributes == {"balance": 3}
    assert after[ids[4]].deleted_at is None
    # Exactly the changes above were recorded: update, restore, create (one event each).
    assert app.recorder.max_notification_id() - mark == 3

    # The same file again records nothing.
    mark = app.recorder.max_notification_id()
    with audit_context(actor="test"):
        third = ContactImporter(contacts, org).run(_csv([f"06120{i:05d},F{i},Rabat,{i}" for i in range(30)]), MAPPING)
    assert third.unchanged == 30 and app.recorder.max_notification_id() == mark
