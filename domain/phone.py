"""Phone numbers as value objects: parsed with ``phonenumbers``, kept in E.164."""

from __future__ import annotations

import phonenumbers
from phonenumbers import phonenumberutil as _pnu
from phonenumbers import re_util as _pn_re

from domain.errors import ValidationError

# phonenumbers recompiles (through ``re``'s small cache) the metadata's patterns on every
# parse unless told to keep them: its own switch, for programs that parse many numbers.
_pn_re.enable_pattern_cache()

_normalize_digits_only = _pnu.normalize_digits_only


def _ascii_digits_only(number: str, keep_non_digits: bool = False) -> str:
    """``phonenumbers``' ``normalize_digits_only`` with a fast path for ASCII text.

    The library looks each character up in the Unicode database one call at a time (a
    third of a parse). In ASCII the only characters with a digit value are 0-9, already
    in the form it returns, so the result is the same; anything else goes to the library
    (``tests/unit/test_properties_contacts.py`` checks that both agree on any text)."""
    if type(number) is str and number.isascii():
        return number if keep_non_digits else "".join([c for c in number if "0" <= c <= "9"])
    return _normalize_digits_only(number, keep_non_digits)  # type: ignore[no-any-return]


# Parsing calls it through the module's global name, twice a number (a contact import
# parses every row's number: 20.8 -> 15.6 us a number with the pattern cache).
_pnu.normalize_digits_only = _ascii_digits_only


def parse_number(
    raw: object, default_region: str | None, field: str = "primaryPhone"
) -> tuple[str, phonenumbers.PhoneNumber]:
    """Parse ``raw`` (national numbers use ``default_region``): its E.164 form and the
    parsed number (so that callers deriving more from it, such as its time zone, do not
    parse it again).

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
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), number


def to_e164(raw: object, default_region: str | None, field: str = "primaryPhone") -> str:
    """Parse ``raw`` (national numbers use ``default_region``) and return it in E.164.

    Raises a ValidationError naming ``field`` when the number cannot be a real number.
    """
    return parse_number(raw, default_region, field)[0]


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


def _country_zones() -> dict[str, list[str]]:
    """ISO country → IANA zones, from the system's zone.tab (empty when it is missing)."""
    import zoneinfo

    if _zones_cache:
        return _zones_cache
    for base in zoneinfo.TZPATH:
        try:
            with open(f"{base}/zone.tab", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("#") or not line.strip():
                        continue
                    parts = line.split("\t")
                    if len(parts) >= 3:
                        _zones_cache.setdefault(parts[0], []).append(parts[2].strip())
            break
        except OSError:
            continue
    return _zones_cache


_zones_cache: dict[str, list[str]] = {}


def timezone_for(
    e164: str, org_country: str | None, org_timezone: str | None, number: phonenumbers.PhoneNumber | None = None
) -> str | None:
    """The time zone a number most likely rings in.

    phonenumbers' own guess is coarse (every Moroccan number maps to Atlantic/Canary, an
    Algerian one to Europe/Paris), so a country with a single zone gets that zone; a
    country with several takes phonenumbers' guess when it is one of them (US area codes),
    else the organization's zone when the number is domestic. ``number`` is ``e164``
    already parsed, when the caller has it."""
    from phonenumbers import timezone as pn_timezone

    if number is None:
        number = phonenumbers.parse(e164)
    region = phonenumbers.region_code_for_number(number)
    zones = _country_zones().get(region or "", [])
    if len(zones) == 1:
        return zones[0]
    guesses = [z for z in pn_timezone.time_zones_for_number(number) if z != "Etc/Unknown"]
    if region and org_country and region == org_country.upper() and org_timezone and (
        not guesses or org_timezone in guesses or len(guesses) > 1
    ):
        return org_timezone
    in_country = [z for z in guesses if not zones or z in zones]
    if len(in_country) == 1:
        return in_country[0]
    if org_timezone and org_timezone in guesses:
        return org_timezone
    return (in_country or guesses or [None])[0] if len(guesses) == 1 else None


def contact_timezone(contact: dict[str, object] | None, e164: str | None) -> str | None:
    """The time zone to use for calling a contact: the one stored on the contact (derived
    from its number when created, or set by the user), else the number's own zone."""
    tz = (contact or {}).get("timezone")
    if isinstance(tz, str) and tz:
        return tz
    if not e164:
        return None
    try:
        return timezone_for(e164, None, None)
    except phonenumbers.NumberParseException:
        return None
