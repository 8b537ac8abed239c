"""The erase command's own rules (application/erasure.py); the whole of it runs end to end
in tests/e2e/test_erasure.py and tests/integration/test_erasure_postgres.py."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from application.calls import CallsApp
from application.campaigns import CampaignsApp
from application.erasure import Erasure
from domain.contact import Contact
from domain.errors import Conflict, ContactNotFoundError

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


class Clock:
    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)


class Keys:
    def __init__(self) -> None:
        self.destroyed: list[UUID] = []

    def destroy(self, subject: UUID) -> int:
        self.destroyed.append(subject)
        return 1


def _setup(keys: Keys | None) -> tuple[Erasure, CampaignsApp, Contact]:
    campaigns, calls = CampaignsApp(env=POPO), CallsApp(env=POPO)
    org, _ = campaigns.create_organization("Org")
    contact = Contact(org, "+212612345678", "0612345678", {"firstName": "Amina"})
    campaigns.save(contact)
    return Erasure(campaigns, calls, keys, Clock(), lambda org: []), campaigns, contact


def test_keys_first_then_the_event_once_however_often_it_is_asked() -> None:
    keys = Keys()
    erasure, campaigns, contact = _setup(keys)
    erased = erasure.erase(contact.organization_id, str(contact.id))
    assert erased.erased and erased.phone is None and erased.fields == {} and erased.deleted_at is not None
    again = erasure.erase(contact.organization_id, str(contact.id))
    assert again.version == erased.version  # no second event
    assert keys.destroyed == [contact.id, contact.id]  # but the keys again (finishes a crashed erasure)
    names = [type(e).__name__ for e in campaigns.repository.event_store.get(contact.id)]
    assert names.count("Erased") == 1


def test_unknown_or_another_organizations_contact_is_not_found() -> None:
    erasure, _, contact = _setup(Keys())
    with pytest.raises(ContactNotFoundError):
        erasure.erase(contact.organization_id, str(uuid4()))
    with pytest.raises(ContactNotFoundError):
        erasure.erase(uuid4(), str(contact.id))
    with pytest.raises(ContactNotFoundError):
        erasure.erase(contact.organization_id, "not-a-uuid")


def test_without_encryption_at_rest_there_is_nothing_to_shred() -> None:
    erasure, _, contact = _setup(None)
    with pytest.raises(Conflict, match="GOMOBILE_CONTACT_ENCRYPTION"):
        erasure.erase(contact.organization_id, str(contact.id))
