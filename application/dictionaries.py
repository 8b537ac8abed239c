"""Dictionaries and their entries, and the stitching of a play node's spoken numbers,
dates and words from entry audio (text-to-speech when a piece is missing)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.assets import Assets
from application.campaigns import CampaignsApp
from domain.dictionary import (
    LANGUAGES,
    Dictionary,
    check_dictionary,
    check_key,
    spoken_keys,
    system_dictionary_id,
)
from domain.errors import DomainError, NotFound
from domain.organization import Organization

SPOKEN_ITEMS = ("number", "date", "word")
SYSTEM_IDS = {str(system_dictionary_id(lang)) for lang in LANGUAGES}


class Forbidden(DomainError):
    code = "FORBIDDEN"
    status = 403


class Dictionaries:
    def __init__(self, app: CampaignsApp, assets: Assets, listed: Any = None) -> None:
        self.app = app
        self.assets = assets
        self.listed = listed  # the assets read model (dictionary ids per organization)

    def ensure_system(self) -> None:
        """Create the system dictionaries (one per language) once, when first asked for."""
        for lang in LANGUAGES:
            if self._find(system_dictionary_id(lang)) is None:
                d = Dictionary(None, f"System ({lang})", "Built-in dictionary", lang, True, "system")
                try:
                    self.app.save(d)
                except IntegrityError:
                    pass  # another process created it

    def _find(self, id_: UUID) -> Dictionary | None:
        try:
            d = self.app.repository.get(id_)
        except AggregateNotFoundError:
            return None
        return d if isinstance(d, Dictionary) else None

    def get(self, org_id: UUID | str, id_: UUID | str) -> Dictionary:
        try:
            d = self._find(UUID(str(id_)))
        except ValueError:
            d = None
        if d is None and str(id_) in SYSTEM_IDS:
            self.ensure_system()
            d = self._find(UUID(str(id_)))
        if d is None or d.deleted_at is not None or (not d.is_system and str(d.organization_id) != str(org_id)):
            raise NotFound("Dictionary not found")
        return d

    def all(self, org_id: UUID | str) -> list[Dictionary]:
        self.ensure_system()
        ids = self.listed.dictionary_ids(str(org_id)) if self.listed is not None else []
        system = [str(system_dictionary_id(lang)) for lang in LANGUAGES]
        found = [self._find(UUID(i)) for i in dict.fromkeys(system + ids)]
        return [d for d in found if d is not None and d.deleted_at is None]

    def create(self, org: Organization, actor: str, data: dict[str, Any]) -> Dictionary:
        name, description, language = check_dictionary(data)
        d = Dictionary(org.id, name, description, language, False, actor)
        self.app.save(d)
        return d

    def _writable(self, org_id: UUID, id_: str) -> Dictionary:
        d = self.get(org_id, id_)
        if d.is_system:
            raise Forbidden("System dictionaries cannot be changed or deleted")
        return d

    def delete(self, org_id: UUID, id_: str, actor: str) -> Dictionary:
        d = self._writable(org_id, id_)
        d.delete(actor)
        self.app.save(d)
        return d

    def set_entry(self, org: Organization, id_: str, actor: str, key: Any, data: bytes, file_name: str | None) -> tuple[Dictionary, str]:
        """Upload the audio of ``key`` (replacing any previous one)."""
        d = self._writable(org.id, id_)
        k = check_key(key)
        audio = self.assets.upload(org, actor, data, file_name, {"title": f"{d.name}: {k}", "usageType": "other", "tags": ["dictionary"]})
        d.set_entry(k, str(audio.id), actor)
        self.app.save(d)
        return d, k

    def entry(self, org_id: UUID, id_: str, key: str) -> tuple[Dictionary, dict[str, Any]]:
        d = self.get(org_id, id_)
        found = d.entries.get(key.strip().lower())
        if found is None:
            raise NotFound(f"No entry '{key}' in this dictionary")
        return d, found

    def remove_entry(self, org_id: UUID, id_: str, key: str, actor: str) -> None:
        d = self._writable(org_id, id_)
        k = key.strip().lower()
        if k not in d.entries:
            raise NotFound(f"No entry '{key}' in this dictionary")
        d.remove_entry(k, actor)
        self.app.save(d)

    # -- stitching ------------------------------------------------------------------

    def stitch(self, org_id: UUID | str, instructions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace each spoken number/date/word (a ``say`` with ``item``) by ``play``s of
        its dictionary's entries when they cover it: the item's ``dictionaryId``, else the
        system dictionary of its language. Anything else is left to text-to-speech."""
        out: list[dict[str, Any]] = []
        cache: dict[str, Dictionary | None] = {}
        for ins in instructions:
            if ins.get("verb") != "say" or ins.get("item") not in SPOKEN_ITEMS:
                out.append(ins)
                continue
            language = str(ins.get("language") or "fr").split("-")[0]
            ref = str(ins.get("dictionaryId") or system_dictionary_id(language))
            if ref not in cache:
                found = self._find(UUID(ref)) if _is_uuid(ref) else None
                visible = found is not None and found.deleted_at is None and (found.is_system or str(found.organization_id) == str(org_id))
                cache[ref] = found if visible else None
            d = cache[ref]
            keys = spoken_keys(ins, d.entries.__contains__, d.language) if d is not None and d.entries else None
            if not keys or d is None:
                out.append(ins)
                continue
            extra = {k: v for k, v in ins.items() if k in ("bargeIn", "item")}
            out += [{"verb": "play", "audioId": d.entries[k]["audioId"], "dictionaryId": str(d.id), "key": k, **extra} for k in keys]
        return out


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True
