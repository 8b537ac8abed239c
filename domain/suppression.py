"""Do-not-call: one short stream per (organization, number), so that the dialer checks a
number with one read of current state and a list of 100,000 numbers is not one huge stream."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import AuditedAggregate
from domain.errors import ValidationError

SOURCES = ("api", "import", "opt_out", "erasure")


def suppression_id(organization_id: UUID | str, e164: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"gomobile:suppression:{organization_id}:{e164}")


def check_reason(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise ValidationError.single("reason", "must be a string of at most 256 characters")
    return value


def check_source(value: object) -> str:
    if value not in SOURCES:
        raise ValidationError.single("source", f"must be one of {', '.join(SOURCES)}")
    return str(value)


class Suppression(AuditedAggregate):
    """A number the organization must not call (while ``active``)."""

    @staticmethod
    def create_id(organization_id: UUID, phone: str, reason: str | None, source: str) -> UUID:
        return suppression_id(organization_id, phone)

    def __init__(self, organization_id: UUID, phone: str, reason: str | None, source: str) -> None:
        self.organization_id = organization_id
        self.phone = phone
        self.reason = reason
        self.source = source
        self.active = True

    @event("Readded")
    def readd(self, reason: str | None, source: str) -> None:
        """Suppressed again after a removal."""
        self.active = True
        self.reason = reason
        self.source = source

    @event("Removed")
    def remove(self, reason: str | None) -> None:
        """The number may be called again."""
        self.active = False
