"""Uploaded audio (flow prompts, dictionary entries): one stream per file, holding what the
file is (format, duration, sample rate ...), what it is for, and who uploaded it.

Formats are recognised by content, never by name or declared type: a RIFF/WAVE file with
PCM samples (read with the stdlib ``wave`` module), an MP3 (an ID3 tag or an MPEG audio
frame header) or an Ogg stream (Vorbis or Opus). The bytes themselves live in a file
store; the stream keeps its key."""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from domain.base import AuditedAggregate
from domain.errors import ValidationError

USAGE_TYPES = ("welcome", "goodbye", "question", "prompt", "hold_music", "notification", "other")
SORT_FIELDS = ("createdAt", "title", "durationSeconds")
# DOMAIN.md §5.7: per-plan caps (bytes, seconds); plans without one get the largest.
PLAN_LIMITS = {
    "trial": (5_000_000, 60),
    "free": (10_000_000, 120),
    "basic": (25_000_000, 300),
    "advanced": (50_000_000, 600),
}
DEFAULT_LIMITS = PLAN_LIMITS["advanced"]
MAX_UPLOAD_BYTES = DEFAULT_LIMITS[0]


@dataclass(frozen=True)
class AudioInfo:
    format: str  # wav | mp3 | ogg
    content_type: str
    duration_seconds: float
    sample_rate: int | None
    channels: int | None
    bit_depth: int | None


def _bad(message: str) -> ValidationError:
    return ValidationError.single("file", message)


def _wav(data: bytes) -> AudioInfo:
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, frames = w.getframerate(), w.getnframes()
            channels, width = w.getnchannels(), w.getsampwidth()
    except (wave.Error, EOFError, struct.error) as exc:
        raise _bad(f"is a WAV file we cannot read ({exc}); upload PCM WAV, MP3 or OGG") from exc
    if rate <= 0 or frames <= 0:
        raise _bad("is a WAV file with no audio")
    return AudioInfo("wav", "audio/wav", round(frames / rate, 3), rate, channels, width * 8)


_MP3_BITRATES = {  # kbit/s by version group (1 = MPEG-1, 2 = MPEG-2/2.5), layer III
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3(data: bytes) -> AudioInfo:
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # skip the tag (syncsafe size)
        size = (data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F)
        start = 10 + size
    for i in range(start, min(len(data) - 4, start + 8192)):
        if data[i] != 0xFF or data[i + 1] & 0xE0 != 0xE0:
            continue
        version, layer = (data[i + 1] >> 3) & 3, (data[i + 1] >> 1) & 3
        bitrate_index, rate_index = data[i + 2] >> 4, (data[i + 2] >> 2) & 3
        if version == 1 or layer == 0 or bitrate_index in (0, 15) or rate_index == 3:
            continue  # reserved values: not a frame header
        kbps = _MP3_BITRATES[1 if version == 3 else 2][bitrate_index]
        rate = _MP3_RATES[version][rate_index]
        channels = 1 if data[i + 3] >> 6 == 3 else 2
        duration = (len(data) - i) * 8 / (kbps * 1000)  # constant bit rate estimate
        return AudioInfo("mp3", "audio/mpeg", round(duration, 3), rate, channels, None)
    raise _bad("looks like MP3 but has no MPEG audio frame")


def _ogg(data: bytes) -> AudioInfo:
    head = data[:512]
    if (v := head.find(b"\x01vorbis")) >= 0 and len(head) >= v + 16:
        channels, rate = head[v + 11], struct.unpack_from("<I", head, v + 12)[0]
        clock = rate
    elif (o := head.find(b"OpusHead")) >= 0 and len(head) >= o + 16:
        channels, rate = head[o + 9], struct.unpack_from("<I", head, o + 12)[0]
        clock = 48000  # Opus granule positions count 48 kHz samples
    else:
        raise _bad("is an Ogg file without Vorbis or Opus audio")
    last = data.rfind(b"OggS")
    granule = struct.unpack_from("<q", data, last + 6)[0] if last >= 0 and len(data) >= last + 14 else 0
    if clock <= 0 or granule <= 0:
        raise _bad("is an Ogg file with no audio")
    return AudioInfo("ogg", "audio/ogg", round(granule / clock, 3), rate or None, channels, None)


def probe(data: bytes) -> AudioInfo:
    """What the uploaded bytes are; a ValidationError (field ``file``) for anything else."""
    if not data:
        raise _bad("is empty")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _wav(data)
    if data[:4] == b"OggS":
        return _ogg(data)
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return _mp3(data)
    raise _bad("is not a WAV, MP3 or OGG audio file (recognised by content)")


def check_limits(info: AudioInfo, size: int, plan: str | None) -> None:
    max_bytes, max_seconds = PLAN_LIMITS.get(plan or "", DEFAULT_LIMITS)
    if size > max_bytes:
        raise _bad(f"is {size} bytes; the {plan or 'current'} plan allows {max_bytes}")
    if info.duration_seconds > max_seconds:
        raise _bad(f"lasts {info.duration_seconds:.0f} s; the {plan or 'current'} plan allows {max_seconds} s")


def check_details(data: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """Title, description, usage type and tags of an upload or an update."""
    errors: dict[str, list[str]] = {}
    out: dict[str, Any] = {}
    if "title" in data or not partial:
        title = data.get("title")
        if not isinstance(title, str) or not title.strip() or len(title) > 255:
            errors["title"] = ["is required: a text of 1 to 255 characters"]
        else:
            out["title"] = title.strip()
    if "description" in data:
        d = data["description"]
        if d is not None and (not isinstance(d, str) or len(d) > 2000):
            errors["description"] = ["must be a text of at most 2000 characters"]
        else:
            out["description"] = d or None
    if "usageType" in data or not partial:
        u = data.get("usageType") or ("other" if not partial else None)
        if u not in USAGE_TYPES:
            errors["usageType"] = [f"must be one of {', '.join(USAGE_TYPES)}"]
        else:
            out["usage_type"] = u
    if "tags" in data:
        tags = data["tags"]
        if isinstance(tags, str):  # multipart: "a,b" or a JSON array
            import json

            try:
                tags = json.loads(tags) if tags.strip().startswith("[") else [t for t in tags.split(",")]
            except ValueError:
                tags = None
        if tags is None:
            tags = []
        if not isinstance(tags, list) or not all(isinstance(t, str) and len(t.strip()) <= 64 for t in tags) or len(tags) > 20:
            errors["tags"] = ["must be at most 20 texts of at most 64 characters"]
        else:
            out["tags"] = [t.strip() for t in tags if t.strip()]
    if errors:
        first = next(iter(errors))
        raise ValidationError(f"{first}: {errors[first][0]}", errors)
    return out


class AudioFile(AuditedAggregate):
    """An uploaded audio file of an organization (``None`` for the platform's own)."""

    def __init__(
        self,
        organization_id: UUID | None,
        title: str,
        description: str | None,
        usage_type: str,
        tags: list[str],
        original_file_name: str,
        file_key: str,
        file_size: int,
        info: dict[str, Any],
        uploaded_by: str,
    ) -> None:
        self.organization_id = organization_id
        self.title = title
        self.description = description
        self.usage_type = usage_type
        self.tags = tags
        self.original_file_name = original_file_name
        self.file_key = file_key
        self.file_size = file_size
        self.info = info
        self.uploaded_by = uploaded_by
        self.updated_by = uploaded_by
        self.deleted = False

    @event("DetailsChanged")
    def change_details(self, changes: dict[str, Any], by: str) -> None:
        """Title, description, usage type or tags edited."""
        for key, value in changes.items():
            setattr(self, key, value)
        self.updated_by = by

    @event("Deleted")
    def delete(self, by: str) -> None:
        """No longer listed, streamed or playable (the stream keeps the history)."""
        self.deleted = True
        self.updated_by = by
