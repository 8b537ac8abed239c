"""Audio assets: upload (checked by content), details, the bytes, and playback URLs that
the phone network fetches without an API key.

A playback URL is ``{public base}/api/audio-management/audio/{id}?expires=T&signature=S``
with S = HMAC-SHA256(key, "{id}:{T}"): anyone holding it may fetch that one file until T,
nothing else. The TwiML ``<Play>`` of an ``audioFile`` item carries such a URL."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError

from application.campaigns import CampaignsApp
from application.file_store import FileStore
from application.ports import Clock
from domain.audio import AudioFile, check_details, check_limits, probe
from domain.errors import NotFound, ValidationError
from domain.organization import Organization

MAX_EXPIRES_IN = 86_400
TWIML_EXPIRES_IN = 4 * 3600  # a call (and Twilio's media cache) outlives no prompt by more


@dataclass(frozen=True)
class Playback:
    url: str
    expires_in: int
    expires_at: datetime


class MediaSigner:
    def __init__(self, key: bytes, base_url: str, clock: Clock) -> None:
        self.key = key
        self.base = base_url.rstrip("/")
        self.clock = clock

    def _signature(self, audio_id: str, expires: int) -> str:
        return hmac.new(self.key, f"{audio_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def playback(self, audio_id: str, expires_in: int = TWIML_EXPIRES_IN) -> Playback:
        now = self.clock.now()
        # Rounded up to the minute: the URLs of one prompt stay equal within a minute
        # (Twilio caches media by URL).
        expires = (int(now.timestamp()) + expires_in + 59) // 60 * 60
        url = f"{self.base}/api/audio-management/audio/{audio_id}?expires={expires}&signature={self._signature(audio_id, expires)}"
        return Playback(url, expires_in, now + timedelta(seconds=expires_in))

    def valid(self, audio_id: str, expires: str | None, signature: str | None) -> bool:
        if not expires or not signature or not expires.isdigit():
            return False
        if int(expires) < self.clock.now().timestamp():
            return False
        return hmac.compare_digest(self._signature(audio_id, int(expires)), signature)


@dataclass(frozen=True)
class Converted:
    """An upload made playable on the phone network (8 kHz, 16-bit, mono PCM WAV)."""

    data: bytes
    duration_seconds: float
    sample_rate: int
    channels: int
    bit_depth: int
    source_sample_rate: int | None
    source_channels: int | None


class AudioConversionError(Exception):
    """The bytes could not be decoded: the message completes "The file ..."."""


class AudioConverter(Protocol):
    def to_telephony(self, data: bytes) -> Converted:
        """Decode any WAV, MP3 or OGG and re-encode it for telephony; AudioConversionError if not."""
        ...


def check_expires_in(value: Any) -> int:
    try:
        n = int(value) if value is not None else 3600
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= MAX_EXPIRES_IN:
        raise ValidationError.single("expiresIn", f"must be a number of seconds from 1 to {MAX_EXPIRES_IN}")
    return n


class Assets:
    def __init__(
        self, app: CampaignsApp, files: FileStore, signer: MediaSigner, converter: AudioConverter | None = None
    ) -> None:
        self.app = app
        self.files = files
        self.signer = signer
        self.converter = converter

    def upload(
        self, org: Organization, actor: str, data: bytes, file_name: str | None, fields: dict[str, Any]
    ) -> AudioFile:
        """Check the bytes (format by content, plan caps) and the details, convert them for
        telephony, store both the playable file and the original, record."""
        details = check_details(fields, partial=False)
        found = probe(data)
        plan = getattr(org, "plan", None)
        check_limits(found, len(data), plan)
        name = uuid4().hex
        original = {"format": found.format, "contentType": found.content_type, "sampleRate": found.sample_rate,
                    "channels": found.channels, "bitDepth": found.bit_depth, "fileSize": len(data)}  # fmt: skip
        info: dict[str, Any] = {**original, "durationSeconds": found.duration_seconds}
        key = f"audio/{org.id}/{name}.{found.format}"
        if self.converter is not None:
            try:
                playable = self.converter.to_telephony(data)
            except AudioConversionError as exc:
                raise ValidationError.single("file", f"is a {found.format.upper()} file that {exc}") from None
            check_limits(replace(found, duration_seconds=playable.duration_seconds), len(data), plan)
            original.update(sampleRate=playable.source_sample_rate or found.sample_rate,
                            channels=playable.source_channels or found.channels)  # fmt: skip
            original_key = f"audio/{org.id}/{name}.original.{found.format}"
            self.files.put(original_key, data)
            key = f"audio/{org.id}/{name}.wav"
            data = playable.data
            info = {"format": "wav", "contentType": "audio/wav", "durationSeconds": playable.duration_seconds,
                    "sampleRate": playable.sample_rate, "channels": playable.channels, "bitDepth": playable.bit_depth,
                    "playableFileSize": len(data), "original": original, "originalFileKey": original_key}  # fmt: skip
        self.files.put(key, data)
        audio = AudioFile(
            organization_id=org.id, title=details["title"], description=details.get("description"),
            usage_type=details["usage_type"], tags=details.get("tags", []),
            original_file_name=(file_name or f"audio.{found.format}")[:255], file_key=key,
            file_size=int(original["fileSize"]), info=info, uploaded_by=actor,
        )  # fmt: skip
        self.app.save(audio)
        return audio

    def get(self, org_id: UUID | str | None, audio_id: UUID | str) -> AudioFile:
        """An organization's audio (any organization's when ``org_id`` is None)."""
        try:
            audio = self.app.repository.get(UUID(str(audio_id)))
        except (AggregateNotFoundError, ValueError):
            raise NotFound("Audio not found") from None
        if not isinstance(audio, AudioFile) or audio.deleted:
            raise NotFound("Audio not found")
        if org_id is not None and str(audio.organization_id) != str(org_id):
            raise NotFound("Audio not found")
        return audio

    def update(self, org_id: UUID, audio_id: str, actor: str, fields: dict[str, Any]) -> AudioFile:
        audio = self.get(org_id, audio_id)
        changes = {k: v for k, v in check_details(fields, partial=True).items() if getattr(audio, k) != v}
        if changes:
            audio.change_details(changes, actor)
            self.app.save(audio)
        return audio

    def delete(self, org_id: UUID, audio_id: str, actor: str) -> AudioFile:
        audio = self.get(org_id, audio_id)
        audio.delete(actor)
        self.app.save(audio)
        return audio

    def content(self, audio: AudioFile, original: bool = False) -> bytes:
        """The playable file (what the phone network fetches), or the file as uploaded."""
        key = audio.info.get("originalFileKey") if original else None
        try:
            return self.files.get(key or audio.file_key)
        except FileNotFoundError:
            raise NotFound("Audio file content is missing from the file store") from None

    @staticmethod
    def original_content_type(audio: AudioFile) -> str:
        return str((audio.info.get("original") or audio.info).get("contentType") or "application/octet-stream")
