"""Phone numbers as value objects: parsed with ``phonenumbers``, kept in E.164."""

from __future__ import annotations

import phonenumbers

from domain.errors import ValidationError


def to_e164(raw: object, default_region: str | None, field: str = "primaryPhone") -> str:
    """Parse ``raw`` (national numbers use ``default_region``) and return it in E.164.

    Raises a ValidationError naming ``field`` when the number cannot be a real number.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError.single(field, "must be a non-empty phone number string")
    text = raw.strip()
    if len(text) > 32:
        raise ValidationError.single(field, "is too long to be a phone number")
    try:
        number = phonenumbers.parse(text, (default_region or "").upper() or None)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError.single(field, f"'{text}' is not a phone number ({exc})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError.single(field, f"'{text}' is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def region_of(e164: str) -> str | None:
    return phonenumbers.region_code_for_number(phonenumbers.parse(e164))


def to_caller_id(raw: object, default_region: str | None, field: str) -> str:
    """A caller id (DID) only needs to be a possible number: pools hold service numbers."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationError.single(field, "must be a phone number string")
    try:
        number = phonenumbers.parse(raw.strip(), (default_region or "").upper() or None)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError.single(field, f"'{raw}' is not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise ValidationError.single(field, f"'{raw}' is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
