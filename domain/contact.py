"""A contact: one per (organization, E.164 phone number)."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import AuditedAggregate
from domain.errors import ValidationError

STANDARD_FIELDS = (
    "firstName",
    "lastName",
    "fullName",
    "primaryEmail",
    "address",
    "city",
    "state",
    "zip",
    "occupation",
    "preferredChannel",
    "gender",
)


def contact_id(organization_id: UUID, e164: str) -> UUID:
    """Deterministic id: importing the same phone twice touches one Contact."""
    return uuid5(NAMESPACE_URL, f"gomobile:contact:{organization_id}:{e164}")


def clean_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The standard fields of a create/update body, type-checked."""
    fields: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name in STANDARD_FIELDS:
        if name in data:
            value = data[name]
            if value is not None and not isinstance(value, str):
                errors[name] = ["must be a string"]
            elif isinstance(value, str) and len(value) > 256:
                errors[name] = ["must be at most 256 characters"]
            elif name == "gender" and value not in (None, "male", "female"):
                errors[name] = ["must be 'male' or 'female'"]
            else:
                fields[name] = value
    if "customAttributes" in data:
        attrs = data["customAttributes"]
        if not isinstance(attrs, dict):
            errors["customAttributes"] = ["must be an object of {name: value}"]
        else:
            fields["customAttributes"] = attrs
    if errors:
        raise ValidationError("Invalid contact fields", errors)
    return fields


class Contact(AuditedAggregate):
    @staticmethod
    def create_id(organization_id: UUID, phone: str) -> UUID:
        return contact_id(organization_id, phone)

    def __init__(
        self, organization_id: UUID, phone: str, phone_input: str, fields: dict[str, Any]
    ) -> None:
        self.organization_id = organization_id
        self.phone = phone
        self.phone_input = phone_input
        self.fields: dict[str, Any] = {}
        self.custom_attributes: dict[str, Any] = {}
        self._apply(fields)
        self.deleted_at: Any = None
        self.created_at = self.modified_on

    def _apply(self, fields: dict[str, Any]) -> None:
        for k, v in fields.items():
            if k == "customAttributes":
                self.custom_attributes.update(v)
            else:
                self.fields[k] = v

    @event("Updated")
    def update(self, fields: dict[str, Any]) -> None:
        self._apply(fields)

    @event("Deleted")
    def delete(self) -> None:
        self.deleted_at = self.modified_on

    @event("Restored")
    def restore(self, fields: dict[str, Any]) -> None:
        self.deleted_at = None
        self._apply(fields)

    def snapshot(self) -> dict[str, Any]:
        """What a call needs to know of the contact (frozen at launch)."""
        return {
            "id": str(self.id),
            "phone": self.phone,
            **{k: v for k, v in self.fields.items()},
            "customAttributes": dict(self.custom_attributes),
        }
