"""Audience commands: static audiences (add, remove), live audiences whose membership
follows rules, previews of a rule set, and the refusal to delete a linked audience.

A live audience's rules are kept on the Audience and copied into the organization's
contact schema, so that every contact write re-evaluates them in memory (application/
contacts.py). When the rules are set or changed, the contacts whose verdict changes are
found with the read model and each gets its join or exit event, in batches."""

from __future__ import annotations

import time
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.utils import get_topic

from application.campaigns import CampaignsApp
from application.contacts import Contacts
from domain import rules
from domain.audience import Audience, check_description, check_name
from domain.contact import Contact
from domain.errors import Conflict, ContactNotFoundError, NotFound, ValidationError

BATCH = 500
MAX_SAMPLE = 50
CATCH_UP_WAIT = 1.0  # seconds an audience's creation waits for the directory before reading the log itself
CONTACT_TOPICS = [get_topic(getattr(Contact, e)) for e in (
    "Created", "Updated", "Restored", "Deleted", "JoinedAudience", "ExitedAudience")]


class AudienceQueries(Protocol):
    def preview(self, org: str, tree: dict[str, Any], types: dict[str, str], sample: int) -> tuple[int, list[dict[str, Any]]]: ...

    def matching_contact_ids(self, org: str, tree: dict[str, Any], types: dict[str, str]) -> set[str]: ...

    def audience_member_ids(self, audience_id: str) -> list[str]: ...

    def program_ids(self, org: str) -> list[str]: ...

    def max_tracking_id(self, application_name: str) -> int | None: ...


class Audiences:
    def __init__(self, app: CampaignsApp, queries: AudienceQueries) -> None:
        self.app = app
        self.queries = queries
        self.contacts = Contacts(app)

    def get(self, org_id: UUID, id_: str) -> Audience:
        return self.app.audience(org_id, id_)

    def create(self, org_id: UUID, data: dict[str, Any]) -> Audience:
        kind = data.get("type", "static")
        if kind not in ("static", "live"):
            raise ValidationError.single("type", "must be 'static' or 'live'")
        audience = Audience(org_id, check_name(data.get("name")), check_description(data.get("description")))
        if kind == "static":
            if data.get("rules") is not None:
                raise ValidationError.single("rules", "only a live audience has rules")
            self.app.save(audience)
            return audience
        schema = self.contacts.schema(org_id)
        tree = rules.parse(data.get("rules"), schema.types())
        audience.set_rules(tree)
        schema.set_segment(str(audience.id), tree)
        self.app.save(audience, schema)
        self.refresh_membership(org_id, audience)
        return audience

    def update(self, org_id: UUID, id_: str, data: dict[str, Any]) -> Audience:
        audience = self.get(org_id, id_)
        if "type" in data and data["type"] != audience.kind:
            raise ValidationError.single("type", "cannot change after creation")
        name = check_name(data["name"]) if "name" in data else audience.name
        desc = check_description(data["description"]) if "description" in data else audience.description
        if (name, desc) != (audience.name, audience.description):
            audience.rename(name, desc)
        if "rules" in data:
            if audience.kind != "live":
                raise ValidationError.single("rules", "only a live audience has rules")
            schema = self.contacts.schema(org_id)
            tree = rules.parse(data["rules"], schema.types())
            if tree != audience.rules:
                audience.set_rules(tree)
                schema.set_segment(str(audience.id), tree)
                self.app.save(audience, schema)
                self.refresh_membership(org_id, audience)
                return audience
        self.app.save(audience)
        return audience

    def linked_programs(self, org_id: UUID, audience_id: str) -> list[str]:
        linked = []
        for pid in self.queries.program_ids(str(org_id)):
            try:
                program = self.app.program(org_id, pid)
            except NotFound:
                continue
            if program.settings.get("audienceId") == audience_id:
                linked.append(pid)
        return linked

    def delete(self, org_id: UUID, id_: str) -> Audience:
        audience = self.get(org_id, id_)
        linked = self.linked_programs(org_id, str(audience.id))
        if linked:
            raise Conflict(f"Audience is used by {len(linked)} program(s); delete or re-target them first",
                           programIds=linked)
        audience.delete()
        if audience.kind == "live":
            schema = self.contacts.schema(org_id)
            schema.drop_segment(str(audience.id))
            self.app.save(audience, schema)
        else:
            self.app.save(audience)
        return audience

    def remove_contacts(self, org_id: UUID, id_: str, contacts: Any) -> int:
        audience = self.get(org_id, id_)
        if audience.kind != "static":
            raise ValidationError.single("contacts", "a live audience's members follow its rules")
        ids = _ids(contacts)
        present = [c for c in dict.fromkeys(ids) if audience.has_member(c)]
        if present:
            audience.remove_members(present)
            self.app.save(audience)
        return len(present)

    def add_contacts(self, org_id: UUID, id_: str, contacts: Any) -> int:
        audience = self.get(org_id, id_)
        if audience.kind != "static":
            raise ValidationError.single("contacts", "a live audience's members follow its rules")
        return self.app.add_audience_contacts(org_id, id_, contacts)

    def preview(self, org_id: UUID, data: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        sample = data.get("sampleSize", 10)
        if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample <= MAX_SAMPLE:
            raise ValidationError.single("sampleSize", f"must be an integer from 0 to {MAX_SAMPLE}")
        types = self.contacts.schema(org_id).types()
        tree = rules.parse(data.get("rules"), types)
        return self.queries.preview(str(org_id), tree, types, sample)

    def member_ids(self, audience: Audience) -> list[str]:
        if audience.kind == "static":
            return audience.members
        return self.queries.audience_member_ids(str(audience.id))

    def refresh_membership(self, org_id: UUID, audience: Audience) -> int:
        """Record the joins and exits the new rules cause; returns how many contacts changed.

        Called after the rules were saved into the contact schema: from then on every
        contact write evaluates them itself. The contacts written before are found with
        the directory read model, which may lag behind the event log (a contact created
        100 ms earlier may not be listed yet). So the candidates are the read model's
        verdicts (the contacts matching, and the current members) plus every contact with
        an event the read model had not applied when asked, up to the end of the log as
        it was after the rules were saved. Each candidate is then decided again on its
        own stream, the truth: nothing is missed, and nothing wrong is recorded."""
        schema = self.contacts.schema(org_id)
        assert audience.rules is not None
        until = self.app.recorder.max_notification_id() or 0
        seen = self._directory_position(until)
        matching = self.queries.matching_contact_ids(str(org_id), audience.rules, schema.types())
        members = set(self.queries.audience_member_ids(str(audience.id)))
        candidates = sorted((matching ^ members) | self._contacts_written(seen, until))
        changed = 0
        for i in range(0, len(candidates), BATCH):
            batch: list[Contact] = []
            # Each candidate's stream, read in one query per batch (a missing one is skipped).
            for contact in self.app.load_many([UUID(cid) for cid in candidates[i : i + BATCH]]).values():
                if not isinstance(contact, Contact) or contact.organization_id != org_id:
                    continue  # the log's tail holds every organization's contacts
                self.contacts.reconcile(contact, schema)
                if getattr(contact, "_pending_events", None):
                    batch.append(contact)
            if batch:
                self.app.save(*batch)
                changed += len(batch)
        return changed

    def _directory_position(self, until: int) -> int:
        """How far the read model has applied the log, after giving it a moment to reach
        ``until`` (its projection usually runs 20-50 ms behind); the rest is read here."""
        deadline = time.monotonic() + CATCH_UP_WAIT
        while True:
            seen = self.queries.max_tracking_id(self.app.name) or 0
            if seen >= until or time.monotonic() >= deadline:
                return seen
            time.sleep(0.02)

    def _contacts_written(self, after: int, until: int) -> set[str]:
        """The contacts with an event in the log's notifications ``(after, until]``."""
        out: set[str] = set()
        while after < until:
            notes = self.app.recorder.select_notifications(start=after + 1, limit=1000, stop=until,
                                                           topics=CONTACT_TOPICS)
            if not notes:
                break
            out.update(str(n.originator_id) for n in notes)
            after = notes[-1].id
        return out


def _ids(contacts: Any) -> list[str]:
    if not isinstance(contacts, list) or not contacts or len(contacts) > 10000:
        raise ValidationError.single("contacts", "must be a list of 1 to 10000 contact ids")
    out = []
    for i, c in enumerate(contacts):
        try:
            out.append(str(UUID(str(c))))
        except ValueError:
            raise ValidationError.single(f"contacts[{i}]", f"'{c}' is not a UUID") from None
    return out


__all__ = ["Audiences", "ContactNotFoundError"]
