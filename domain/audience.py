"""An audience: a named set of contacts, either static (members added and removed by
hand) or live (members are the contacts matching its rules; each join or exit is an
event on the contact, see domain.contact)."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import AuditedAggregate
from domain.errors import ValidationError


def check_name(name: object, field: str = "name") -> str:
    if not isinstance(name, str) or not 3 <= len(name.strip()) <= 64:
        raise ValidationError.single(field, "must be a string of 3 to 64 characters")
    return name.strip()


def check_description(description: object) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str) or len(description) > 256:
        raise ValidationError.single("description", "must be a string of at most 256 characters")
    return description


class Audience(AuditedAggregate):
    def __init__(self, organization_id: UUID, name: str, description: str | None) -> None:
        self.organization_id = organization_id
        self.name = name
        self.description = description
        self.members: list[str] = []
        self._member_set: set[str] = set()
        self.deleted = False
        self.kind = "static"
        self.rules: dict[str, object] | None = None
        self.created_at = self.modified_on

    @event("Renamed")
    def rename(self, name: str, description: str | None) -> None:
        self.name = name
        self.description = description

    @event("MembersAdded")
    def add_members(self, contact_ids: list[str]) -> None:
        for c in contact_ids:
            if c not in self._member_set:
                self._member_set.add(c)
                self.members.append(c)

    @event("MembersRemoved")
    def remove_members(self, contact_ids: list[str]) -> None:
        gone = set(contact_ids) & self._member_set
        self._member_set -= gone
        self.members = [m for m in self.members if m not in gone]

    @event("RulesSet")
    def set_rules(self, rules: dict[str, object]) -> None:
        """Live audiences only: set when created, and each time the rules change."""
        self.kind = "live"
        self.rules = rules

    @event("Deleted")
    def delete(self) -> None:
        self.deleted = True

    def new_members(self, contact_ids: list[str]) -> list[str]:
        seen: set[str] = set()
        out = []
        for c in contact_ids:
            if c not in self._member_set and c not in seen:
                seen.add(c)
                out.append(c)
        return out
