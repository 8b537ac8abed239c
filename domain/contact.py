"""A contact: one per (organization, E.164 phone number)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import AuditedAggregate
from domain.consent import ConsentEntry
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


@lru_cache(maxsize=4096)  # a batch's ids are worked out when its rows are checked, then again by Contact.create_id
def contact_id(organization_id: UUID, e164: str) -> UUID:
    """Deterministic id: importing the same phone twice touches one Contact."""
    return uuid5(NAMESPACE_URL, f"gomobile:contact:{organization_id}:{e164}")


def check_timezone(value: object) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(value, str) or not value or len(value) > 64 or ".." in value:
        raise ValidationError.single("timezone", "must be an IANA time zone such as 'Africa/Casablanca'")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError.single("timezone", f"'{value}' is not an IANA time zone") from None
    return value


def clean_fields(data: dict[str, Any]) -> dict[str, Any]:
    """The standard fields of a create/update body, type-checked (custom attribute values
    are only checked to be an object here; their types are checked against the schema)."""
    fields: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name in STANDARD_FIELDS:
        if name in data:
            value = data[name]
            if value is not None and not isinstance(value, str):
                errors[name] = ["must be a string"]
            elif isinstance(value, str) and len(value) > 256:
                errors[name] = ["must be at most 256 characters"]
            elif isinstance(value, str) and "\x00" in value:
                errors[name] = ["must not contain the NUL character (U+0000)"]
            elif name == "gender" and value not in (None, "male", "female"):
                errors[name] = ["must be 'male' or 'female'"]
            else:
                fields[name] = value
    if "timezone" in data and data["timezone"] is not None:
        try:
            fields["timezone"] = check_timezone(data["timezone"])
        except ValidationError as exc:
            errors.update(exc.field_errors)
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
        self.live_audiences: set[str] = set()
        self._apply(fields)
        self.deleted_at: Any = None
        self.created_at = self.modified_on
        self.consents: list[ConsentEntry] = []  # in recording order (domain/consent.py)
        self.opted_out = False

    def _apply(self, fields: dict[str, Any]) -> None:
        for k, v in fields.items():
            if k == "customAttributes":
                for name, value in v.items():
                    if value is None:  # null clears the value
                        self.custom_attributes.pop(name, None)
                    else:
                        self.custom_attributes[name] = value
            else:
                self.fields[k] = v

    def changes(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The part of ``fields`` that would change this contact (empty: nothing to record)."""
        out: dict[str, Any] = {}
        for k, v in fields.items():
            if k == "customAttributes":
                attrs = {n: x for n, x in v.items() if self.custom_attributes.get(n) != x or
                         (x is not None and type(self.custom_attributes.get(n)) is not type(x))}
                if attrs:
                    out[k] = attrs
            elif self.fields.get(k) != v:
                out[k] = v
        return out

    def document(self) -> dict[str, Any]:
        """The contact as live-audience rules see it."""
        return {"primaryPhone": self.phone, **self.fields, "customAttributes": self.custom_attributes}

    @event("JoinedAudience")
    def join_audience(self, audience_id: str) -> None:
        """The contact now matches the rules of live audience ``audience_id``."""
        self.live_audiences.add(audience_id)

    @event("ExitedAudience")
    def exit_audience(self, audience_id: str) -> None:
        """The contact no longer matches (or was deleted, or the audience went away)."""
        self.live_audiences.discard(audience_id)

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

    @event("ConsentRecorded")
    def record_consent(
        self, scope: str, source: str, obtained_at: datetime, evidence: str, expires_at: datetime | None
    ) -> None:
        """The contact agreed to be contacted for ``scope`` (``evidence`` proves it)."""
        self.consents.append(ConsentEntry("recorded", scope, source, obtained_at, len(self.consents),
                                          evidence=evidence, expires_at=expires_at))  # fmt: skip

    @event("ConsentWithdrawn")
    def withdraw_consent(self, scope: str, source: str, at: datetime, reason: str | None) -> None:
        """The contact's consent for ``scope`` ends at ``at``."""
        self.consents.append(ConsentEntry("withdrawn", scope, source, at, len(self.consents), reason=reason))

    @event("OptedOut")
    def opt_out(self, source: str, reason: str | None, phone: str) -> None:
        """The contact asked not to be called again: ``phone`` went on the do-not-call list
        and every consent was withdrawn, in the same save (application/consent.py)."""
        self.opted_out = True

    @event("Erased")
    def erase(self) -> None:
        """Crypto-shredding (issue 7): the contact's keys are destroyed; what it said of the
        person is forgotten here too. Nothing personal is recorded in this event."""
        self.phone = None
        self.phone_input = None
        self.fields = {}
        self.custom_attributes = {}
        self.deleted_at = self.deleted_at or self.modified_on
        self.erased_at = self.modified_on

    @event("Recreated")
    def recreate(self, organization_id: UUID, phone: str, phone_input: str, fields: dict[str, Any]) -> None:
        """The same number again after an erasure: a new life, under a new key."""
        self.phone = phone
        self.phone_input = phone_input
        self.fields = {}
        self.custom_attributes = {}
        self._apply(fields)
        self.deleted_at = None
        self.erased_at = None

    @property
    def erased(self) -> bool:
        return getattr(self, "erased_at", None) is not None

    def snapshot(self) -> dict[str, Any]:
        """What a call needs to know of the contact (frozen at launch)."""
        return {
            "id": str(self.id),
            "phone": self.phone,
            **{k: v for k, v in self.fields.items()},
            "customAttributes": dict(self.custom_attributes),
        }
