"""Erasing a contact (issue 7, crypto-shredding): ``DELETE /api/contact/{id}?erase=true``.

The stored events are never rewritten (the audit chain would name them altered): the
contact's keys are destroyed, so that every event's personal fields read empty from
then on (infrastructure/privacy.py), in this process at once and in every other one
within the key cache's bound. Then ``Contact.Erased`` is recorded (audited like every
command: actor, request id, source address; nothing personal in it), on which every
read model drops what it kept of the person; the contact's calls still pending are
skipped (reason ``erased``) and its recordings' fetched audio is deleted.

Order: keys first. A crash after it and before the event leaves the data unreadable
and the command unfinished; erasing again finishes it (the command is idempotent: an
erased contact is erased again with no new event, and answers the same).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol
from uuid import UUID

from application.app_base import select_events_of
from application.calls import CallsApp
from application.campaigns import CampaignsApp
from application.file_store import FileStore
from application.ports import Clock
from domain.call import call_id
from domain.contact import Contact
from domain.errors import Conflict, ContactNotFoundError


class KeyShredder(Protocol):
    def destroy(self, subject: UUID) -> int:
        """Destroy every key of ``subject``; how many were live."""
        ...


class Erasure:
    def __init__(
        self,
        campaigns: CampaignsApp,
        calls: CallsApp,
        keys: KeyShredder | None,
        clock: Clock,
        executions_of: Callable[[UUID], Sequence[str]],
        recordings_of: Callable[[UUID, Sequence[str]], Sequence[str]] | None = None,
        files: FileStore | None = None,
    ) -> None:
        self.campaigns = campaigns
        self.calls = calls
        self.keys = keys
        self.clock = clock
        self.executions_of = executions_of
        self.recordings_of = recordings_of
        self.files = files

    def erase(self, org_id: UUID, id_: str) -> Contact:
        from application.contacts import Contacts

        if self.keys is None:
            raise Conflict("Erasure needs contacts' data encrypted at rest (GOMOBILE_CONTACT_ENCRYPTION is off)")
        contact = self.campaigns._get(Contact, id_, org_id, ContactNotFoundError, "Contact")
        self.keys.destroy(contact.id)
        if not contact.erased:
            contact.erase()
            contacts = Contacts(self.campaigns)
            contacts.reconcile(contact, contacts.schema(org_id))  # leaves its live audiences
            self.campaigns.save(contact)
        jobs = self._skip_pending_calls(org_id, contact.id)
        if self.recordings_of is not None and self.files is not None:
            for key in self.recordings_of(org_id, jobs):
                self.files.delete(key)
        return contact

    def _skip_pending_calls(self, org_id: UUID, contact_id: UUID) -> list[str]:
        """Every call of the contact, across executions; those not dialled yet are skipped."""
        ids = [call_id(UUID(x), contact_id) for x in self.executions_of(org_id)]
        found = list(dict.fromkeys(str(s.originator_id) for s in select_events_of(self.calls, ids)))
        now = self.clock.now()
        for cid in found:
            self.calls.update(cid, lambda c: c.skip("erased", now))
        return found


def erased_dto(contact: Contact, dto: dict[str, Any]) -> dict[str, Any]:
    """The erase command's answer: the contact as it now reads (nothing personal left)."""
    return {**dto, "erasedAt": _iso(getattr(contact, "erased_at", None))}


def _iso(value: Any) -> str | None:
    from domain.timeparse import format_instant

    return format_instant(value) if value is not None else None
