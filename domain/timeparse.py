"""ISO 8601 instants as the API shows them: UTC with milliseconds, e.g. 2025-01-15T10:30:00.000Z."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.errors import ValidationError


def parse_instant(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise ValidationError.single(field, "must be an ISO 8601 date-time string")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValidationError.single(field, f"'{value}' is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise ValidationError.single(field, f"'{value}' needs a time zone (e.g. Z or +01:00)")
    return parsed.astimezone(UTC)


def format_instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # "...+00:00" made by isoformat (C) is a fifth of strftime's cost; every read model formats
    # a few instants per event
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"


def sortable(value: datetime) -> str:
    """A fixed-width UTC text that sorts like the instant (used as a read-model key)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
