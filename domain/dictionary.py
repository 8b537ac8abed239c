"""Dictionaries: audio for the words a ``play`` node speaks (numbers, dates, words), one
entry per key (``"7"``, ``"100"``, ``"thousand"``, ``"and"``, ``"dirham"`` ...). A spoken
value is stitched from entries only when every piece of it has one; otherwise the phone
network's text-to-speech says it (see ``spoken_keys``).

System dictionaries (one per language, ``organizationId`` null) are shared by every
organization and cannot be deleted or changed through the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import event

from domain.base import AuditedAggregate
from domain.errors import ValidationError

LANGUAGES = ("ar", "fr")


def system_dictionary_id(language: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"gomobile:dictionary:system:{language}")


def entry_id(dictionary_id: UUID | str, key: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"gomobile:dictionary-entry:{dictionary_id}:{key}")


def check_dictionary(data: dict[str, Any]) -> tuple[str, str | None, str]:
    errors: dict[str, list[str]] = {}
    name, description, language = data.get("name"), data.get("description"), data.get("language")
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        errors["name"] = ["is required: a text of 1 to 256 characters"]
    if description is not None and (not isinstance(description, str) or len(description) > 2000):
        errors["description"] = ["must be a text of at most 2000 characters"]
    if language not in LANGUAGES:
        errors["language"] = [f"must be one of {', '.join(LANGUAGES)}"]
    if errors:
        first = next(iter(errors))
        raise ValidationError(f"{first}: {errors[first][0]}", errors)
    return str(name).strip(), description or None, str(language)


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > 256:
        raise ValidationError.single("key", "is required: a text of 1 to 256 characters (e.g. \"100\", \"and\")")
    return key.strip().lower()


class Dictionary(AuditedAggregate):
    @staticmethod
    def create_id(organization_id: UUID | None, name: str, description: str | None, language: str, is_system: bool, created_by: str) -> UUID:
        return system_dictionary_id(language) if is_system else uuid4()

    def __init__(
        self, organization_id: UUID | None, name: str, description: str | None, language: str, is_system: bool, created_by: str
    ) -> None:
        self.organization_id = organization_id
        self.name = name
        self.description = description
        self.language = language
        self.is_system = is_system
        self.created_by = created_by
        self.updated_by = created_by
        self.entries: dict[str, dict[str, Any]] = {}
        self.deleted_by: str | None = None
        self.deleted_at: Any = None

    @event("EntrySet")
    def set_entry(self, key: str, audio_id: str, by: str) -> None:
        """``key`` is now spoken with the uploaded audio ``audio_id``."""
        self.entries[key] = {"audioId": audio_id, "createdAt": self.modified_on}
        self.updated_by = by

    @event("EntryRemoved")
    def remove_entry(self, key: str, by: str) -> None:
        self.entries.pop(key, None)
        self.updated_by = by

    def delete(self, by: str) -> None:
        self._delete(by)

    @event("Deleted")
    def _delete(self, by: str) -> None:
        self.deleted_by = by
        self.deleted_at = self.modified_on


# -- what a value sounds like, as dictionary keys -------------------------------------

MONTH_KEYS = {
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"),
    "ar": ("يناير", "فبراير", "مارس", "أبريل", "ماي", "يونيو", "يوليوز", "غشت", "شتنبر", "أكتوبر", "نونبر", "دجنبر"),
}  # fmt: skip


def _join(parts: list[list[str]], has: Callable[[str], bool], language: str) -> list[str]:
    """Groups of a number, with "and" between them in Arabic when the dictionary has it."""
    out: list[str] = []
    for part in parts:
        if out and language == "ar" and has("and"):
            out.append("and")
        out += part
    return out


def number_keys(n: int, has: Callable[[str], bool], language: str) -> list[str] | None:
    """The keys that say the whole number ``n`` ("full" mode); None if one is missing."""
    if n < 0:
        rest = number_keys(-n, has, language)
        return ["minus", *rest] if rest is not None and has("minus") else None
    if has(str(n)):
        return [str(n)]
    for unit, word in ((1_000_000_000, "billion"), (1_000_000, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= unit:
            count, rest = divmod(n, unit)
            if has(str(count * unit)):
                head = [str(count * unit)]
            else:
                counted = number_keys(count, has, language)
                if counted is None or not (has(word) or has(str(unit))):
                    return None
                head = counted + [word if has(word) else str(unit)]
            if rest == 0:
                return head
            tail = number_keys(rest, has, language)
            return None if tail is None else _join([head, tail], has, language)
    if n >= 20:
        tens, units = divmod(n, 10)
        if not has(str(tens * 10)) or not has(str(units)):
            return None
        if language == "ar":  # Arabic says the units first: "four and thirty"
            return _join([[str(units)], [str(tens * 10)]], has, language)
        return [str(tens * 10), str(units)]
    return None


def spoken_keys(instruction: dict[str, Any], has: Callable[[str], bool], language: str) -> list[str] | None:
    """Dictionary keys for a ``say`` instruction of a play node's number/date/word item
    (its ``text`` is what text-to-speech would read); None: say it with TTS."""
    text, item = str(instruction.get("text") or "").strip(), instruction.get("item")
    if not text:
        return None
    if item == "word":
        return [text.lower()] if has(text.lower()) else None
    parts = text.split()
    if item == "number":
        if "." in parts:  # twoByTwo with a fraction: "12 34 . 5"
            cut = parts.index(".")
            whole, frac = parts[:cut], parts[cut + 1 :]
        else:
            whole, frac = parts, []
        if len(whole) == 1 and "." in whole[0]:  # full: "12.5"
            whole, frac_text = [whole[0].split(".")[0]], whole[0].split(".")[1]
            frac = [frac_text]
        keys: list[str] = []
        for group in whole:
            sign = group.startswith("-")
            digits = group.lstrip("-")
            if not digits.isdigit():
                return None
            if len(digits) > 1 and digits.startswith("0"):  # "05" in twoByTwo: "zero five"
                said = [k for d in digits for k in (number_keys(int(d), has, language) or ["\0"])]
            else:
                said = number_keys(int(digits), has, language) or ["\0"]
            if sign:
                said = ["minus", *said]
            keys += said
        if frac:
            keys.append("point")
            keys += [k for d in "".join(frac) for k in (number_keys(int(d), has, language) or ["\0"]) if d.isdigit()]
        return keys if all(has(k) for k in keys) else None
    if item == "date" and len(parts) == 3:
        day, month, year = parts
        keys = (number_keys(int(day), has, language) or ["\0"]) if day.isdigit() else ["\0"]
        if month.isdigit():
            keys += number_keys(int(month), has, language) or ["\0"]
        else:
            keys.append(month.lower())
        keys += (number_keys(int(year), has, language) or ["\0"]) if year.isdigit() else ["\0"]
        return keys if all(has(k) for k in keys) else None
    return None
