"""Custom attributes: typed values an organization adds to its contacts (DOMAIN.md §3.5).

A definition has a ``name`` slug made from its display name ("Account Balance" →
``account_balance``), unique per organization, and an immutable ``type``. Values are
checked against the type whenever a contact is written; values coming from a CSV file
are text and are converted first (``from_text=True``).
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any
from urllib.parse import urlparse

from domain.errors import ValidationError
from domain.phone import to_e164

TYPES = ("text", "number", "boolean", "date", "phone_number", "email", "url")
MAX_ATTRIBUTES = 100
MAX_TEXT = 1024
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TRUE_TEXT = {"true", "yes", "y", "1", "oui"}
FALSE_TEXT = {"false", "no", "n", "0", "non"}


def slug_of(display_name: str) -> str:
    """The attribute ``name`` for a display name: lower case, words joined by ``_``."""
    slug = re.sub(r"[^a-z0-9]+", "_", display_name.strip().lower()).strip("_")
    if slug and not slug[0].isalpha():
        slug = "attr_" + slug
    return slug[:64]


def check_type(value: object) -> str:
    if value not in TYPES:
        raise ValidationError.single("type", f"must be one of {', '.join(TYPES)}")
    return str(value)


def coerce(type_: str, value: Any, *, from_text: bool = False, region: str | None = None) -> Any:
    """``value`` as stored for an attribute of ``type_``; None clears the value.

    Raises ValueError with a message the user can act on."""
    if value is None:
        return None
    if from_text:
        if not isinstance(value, str):
            raise ValueError("must be text")
        value = value.strip()
        if value == "":
            return None
    if type_ == "number":
        if from_text:
            try:
                num = float(value.replace(",", ".")) if re.search(r"[.,eE]", value) else int(value)
            except ValueError:
                raise ValueError(f"'{value}' is not a number") from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        else:
            num = value
        if isinstance(num, float) and not math.isfinite(num):
            raise ValueError("must be a finite number")
        if isinstance(num, float) and num.is_integer() and abs(num) < 2**53:
            return int(num)
        return num
    if type_ == "boolean":
        if from_text:
            low = value.lower()
            if low in TRUE_TEXT:
                return True
            if low in FALSE_TEXT:
                return False
            raise ValueError(f"'{value}' is not a boolean (true/false, yes/no, 1/0)")
        if not isinstance(value, bool):
            raise ValueError("must be a boolean")
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")  # noqa: TRY004 - a value's validation message (400), not a programming error
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    text = value.strip()
    if type_ == "text":
        if len(value) > MAX_TEXT:
            raise ValueError(f"must be at most {MAX_TEXT} characters")
        return value
    if type_ == "date":
        try:
            return date.fromisoformat(text[:10] if len(text) > 10 and text[10] == "T" else text).isoformat()
        except ValueError:
            raise ValueError(f"'{value}' is not a date (YYYY-MM-DD)") from None
    if type_ == "phone_number":
        try:
            return to_e164(text, region)
        except ValidationError as exc:
            raise ValueError(exc.message.split(": ", 1)[-1]) from None
    if type_ == "email":
        if len(text) > 254 or not EMAIL_RE.match(text):
            raise ValueError(f"'{value}' is not an email address")
        return text
    if type_ == "url":
        parsed = urlparse(text)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or len(text) > 2048:
            raise ValueError(f"'{value}' is not an http(s) URL")
        return text
    raise ValueError(f"unknown attribute type '{type_}'")
