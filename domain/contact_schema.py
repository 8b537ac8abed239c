"""An organization's contact schema: its custom attribute definitions and the rules of its
live audiences.

Both are needed every time a contact is written (values are checked against the
attribute types; live-audience membership is re-evaluated in the same save), so they
live in one short stream per organization, loaded once per command or import batch.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import AuditedAggregate


def schema_id(organization_id: UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"gomobile:contact-schema:{organization_id}")


def attribute_id(organization_id: UUID, name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"gomobile:custom-attribute:{organization_id}:{name}")


class ContactSchema(AuditedAggregate):
    @staticmethod
    def create_id(organization_id: UUID) -> UUID:
        return schema_id(organization_id)

    def __init__(self, organization_id: UUID) -> None:
        self.organization_id = organization_id
        self.attributes: dict[str, dict[str, Any]] = {}
        self.segments: dict[str, dict[str, Any]] = {}

    @event("AttributeDefined")
    def define_attribute(
        self, name: str, display_name: str, description: str | None, type: str, at: str
    ) -> None:
        """A new custom attribute ``name`` of ``type`` (``at``: ISO instant, for the API)."""
        self.attributes[name] = {
            "id": str(attribute_id(self.organization_id, name)),
            "name": name,
            "displayName": display_name,
            "description": description,
            "type": type,
            "createdAt": at,
            "updatedAt": at,
        }

    @event("AttributeDescribed")
    def describe_attribute(self, name: str, description: str | None, at: str) -> None:
        self.attributes[name]["description"] = description
        self.attributes[name]["updatedAt"] = at

    @event("AttributeRemoved")
    def remove_attribute(self, name: str) -> None:
        """Values stay on contacts but can no longer be read."""
        del self.attributes[name]

    @event("SegmentSet")
    def set_segment(self, audience_id: str, rules: dict[str, Any]) -> None:
        """The rules of live audience ``audience_id`` (created or changed)."""
        self.segments[audience_id] = rules

    @event("SegmentDropped")
    def drop_segment(self, audience_id: str) -> None:
        self.segments.pop(audience_id, None)

    def types(self) -> dict[str, str]:
        return {n: str(a["type"]) for n, a in self.attributes.items()}

    def by_id(self, id_: str) -> dict[str, Any] | None:
        for a in self.attributes.values():
            if a["id"] == id_:
                return a
        return None
