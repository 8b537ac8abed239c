"""Recordings made by ``record`` and ``collect_audio`` nodes (DOMAIN.md §8.3).

Their metadata comes from the call history read model (a ``record_stop`` event on the
Call names the provider's RecordingUrl). The audio stays with the phone network until
someone asks for it: the first stream or download fetches ``RecordingUrl`` + ``.wav``
(with the account's credentials, as Twilio requires) into the file store, and every later
one is served from there. Deleting is soft: a deletion stream per recording; the row and
the file stay, and the API answers 404."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.campaigns import CampaignsApp
from application.file_store import FileStore
from domain.errors import DomainError, NotFound
from domain.recording import RecordingDeletion, deletion_id


class RecordingMediaError(DomainError):
    code = "RecordingUnavailable"
    status = 502


class RecordingMedia(Protocol):
    def fetch(self, url: str) -> bytes:
        """The WAV audio of the provider recording at ``url``. Raises RecordingMediaError."""
        ...


class Recordings:
    def __init__(self, app: CampaignsApp, history: Any, assets_view: Any, files: FileStore, media: RecordingMedia) -> None:
        self.app = app
        self.history = history
        self.assets_view = assets_view
        self.files = files
        self.media = media

    def _deleted(self, recording_id: str) -> RecordingDeletion | None:
        try:
            d = self.app.repository.get(deletion_id(recording_id))
        except AggregateNotFoundError:
            return None
        return d if isinstance(d, RecordingDeletion) else None

    def list(self, org_id: UUID | str, limit: int, offset: int, call_id: str | None = None) -> list[dict[str, Any]]:
        """Newest last (the read model's order), deleted ones left out."""
        deleted = self.assets_view.deleted_recordings(str(org_id))
        rows = self.history.recordings(str(org_id), offset + limit + len(deleted), 0, call_id)
        return [r for r in rows if r["id"] not in deleted][offset : offset + limit]

    def get(self, org_id: UUID | str, recording_id: str) -> dict[str, Any]:
        row = self.history.recording(str(org_id), recording_id)
        if row is None or self._deleted(recording_id) is not None:
            raise NotFound("Recording not found")
        return row

    def file_key(self, row: dict[str, Any]) -> str:
        return f"recordings/{row['organization_id']}/{row['id']}.wav"

    def content(self, org_id: UUID | str, recording_id: str) -> tuple[dict[str, Any], bytes]:
        row = self.get(org_id, recording_id)
        key = self.file_key(row)
        try:
            return row, self.files.get(key)
        except FileNotFoundError:
            pass
        if not row.get("url"):
            raise RecordingMediaError("The phone network gave no URL for this recording")
        data = self.media.fetch(row["url"])
        self.files.put(key, data)
        return row, data

    def size(self, row: dict[str, Any]) -> int | None:
        key = self.file_key(row)
        return len(self.files.get(key)) if self.files.exists(key) else None

    def delete(self, org_id: UUID, recording_id: str, actor: str) -> None:
        self.get(org_id, recording_id)
        try:
            self.app.save(RecordingDeletion(recording_id, org_id, actor))
        except IntegrityError:
            raise NotFound("Recording not found") from None
