"""Flow assets over HTTP: audio files (``/api/audio-management/...``) and dictionaries
(``/api/dictionaries``), DOMAIN.md §5.7."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, post, put
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from application.assets import check_expires_in
from domain.audio import MAX_UPLOAD_BYTES, SORT_FIELDS, USAGE_TYPES, AudioFile
from domain.dictionary import Dictionary, entry_id
from domain.errors import ValidationError
from interfaces.http.common import (
    acting,
    authenticate,
    body_object,
    envelope,
    in_thread,
    iso,
    paging,
)

UPLOAD_BODY_LIMIT = MAX_UPLOAD_BYTES + 1_000_000  # the file plus the other form fields


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def file_dto(audio_id: str, name: str, info: dict[str, Any], size: int) -> dict[str, Any]:
    """The file as uploaded; ``playable``: the phone network plays it (as the 8 kHz mono WAV
    it was converted to, described by ``playback``)."""
    original = info.get("original") or info
    out = {"id": audio_id, "name": name, "contentType": original.get("contentType"), "fileSize": size, "playable": True}
    if info.get("original"):
        out["playback"] = {"contentType": info.get("contentType"), "fileSize": info.get("playableFileSize"),
                           "sampleRate": info.get("sampleRate"), "channels": info.get("channels"), "bitDepth": info.get("bitDepth")}  # fmt: skip
    return out


def original_dto(info: dict[str, Any]) -> dict[str, Any] | None:
    o = info.get("original")
    return None if not o else {k: o.get(k) for k in ("format", "contentType", "sampleRate", "channels", "bitDepth", "fileSize")}


def audio_dto(a: AudioFile) -> dict[str, Any]:
    return {
        "id": str(a.id), "title": a.title, "description": a.description, "usageType": a.usage_type, "tags": a.tags,
        "durationSeconds": a.info.get("durationSeconds"), "sampleRate": a.info.get("sampleRate"),
        "channels": a.info.get("channels"), "bitDepth": a.info.get("bitDepth"), "format": a.info.get("format"),
        "organizationId": str(a.organization_id) if a.organization_id else None, "originalFileName": a.original_file_name,
        "uploadedBy": a.uploaded_by, "createdAt": iso(a.created_on), "updatedAt": iso(a.modified_on),
        "file": file_dto(str(a.id), a.original_file_name, a.info, a.file_size), "original": original_dto(a.info),
    }  # fmt: skip


def row_dto(r: dict[str, Any]) -> dict[str, Any]:
    info = r["info"]
    return {
        "id": r["id"], "title": r["title"], "description": r["description"], "usageType": r["usage_type"], "tags": r["tags"],
        "durationSeconds": info.get("durationSeconds"), "sampleRate": info.get("sampleRate"), "channels": info.get("channels"),
        "bitDepth": info.get("bitDepth"), "format": info.get("format"), "organizationId": r["organization_id"],
        "originalFileName": r["original_file_name"], "uploadedBy": r["uploaded_by"], "createdAt": r["created_at"],
        "updatedAt": r["updated_at"], "file": file_dto(r["id"], r["original_file_name"], info, r["file_size"]),
        "original": original_dto(info),
    }  # fmt: skip


@post("/api/audio-management/upload", status_code=201, request_max_body_size=UPLOAD_BODY_LIMIT)
@in_thread
def upload_audio(
    request: Request[Any, Any, Any], data: dict[str, Any] = Body(media_type=RequestEncodingType.MULTI_PART)
) -> dict[str, Any]:
    """Multipart: ``file`` (WAV, MP3 or OGG, recognised by content), ``title``,
    ``description``, ``usageType``, ``tags`` (comma-separated or a JSON array)."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    upload = data.get("file")
    if not isinstance(upload, UploadFile):
        raise ValidationError.single("file", "is required: the audio file as a multipart file field")
    content = upload.file.read(MAX_UPLOAD_BYTES + 1)
    fields = {k: v for k, v in data.items() if k != "file"}
    with acting(who, request):
        audio = c.assets.upload(who.organization, who.actor, content, upload.filename, fields)
    return audio_dto(audio)


def _list(c: Any, who: Any, page: Any, limit: Any, search: Any, sort_by: Any, sort_order: Any, usage_type: Any, tags: Any) -> dict[str, Any]:
    p, lim = paging(page, limit)
    errors: dict[str, list[str]] = {}
    if sort_by is not None and sort_by not in SORT_FIELDS:
        errors["sortBy"] = [f"must be one of {', '.join(SORT_FIELDS)}"]
    if sort_order is not None and sort_order not in ("asc", "desc"):
        errors["sortOrder"] = ["must be asc or desc"]
    if usage_type is not None and usage_type not in USAGE_TYPES:
        errors["usageType"] = [f"must be one of {', '.join(USAGE_TYPES)}"]
    if search is not None and len(search) > 100:
        errors["search"] = ["must be at most 100 characters"]
    if errors:
        raise ValidationError("Invalid query", errors)
    tag_list = [t.strip() for t in (tags or "").split(",") if t.strip()]
    rows, total = c.views["assets"].audio_page(
        str(who.organization_id), p, lim, search, sort_by or "createdAt", sort_order or "desc", usage_type, tag_list
    )
    return envelope([row_dto(r) for r in rows], p, lim, total)


@get("/api/audio-management/audios")
@in_thread
def list_audios(
    request: Request[Any, Any, Any], page: int | None = None, limit: int | None = None, search: str | None = None,
    sortBy: str | None = None, sortOrder: str | None = None,
    usageType: str | None = None, tags: str | None = None, organizationId: str | None = None,
) -> dict[str, Any]:
    """``{data, meta}``; lists only the caller's organization (``organizationId`` is ignored)."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return _list(c, who, page, limit, search, sortBy, sortOrder, usageType, tags)


@get("/api/audio-management/audios/usage/{usage_type:str}")
@in_thread
def list_audios_by_usage(
    request: Request[Any, Any, Any], usage_type: str, page: int | None = None, limit: int | None = None
) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return _list(c, who, page, limit, None, None, None, usage_type, None)


@get("/api/audio-management/audio/{audio_id:str}")
@in_thread
def stream_audio(
    request: Request[Any, Any, Any], audio_id: str, expires: str | None = None, signature: str | None = None
) -> Response[bytes]:
    """The file. With an API key, or with the ``expires`` and ``signature`` of a playback
    URL instead (that is how the phone network fetches prompts)."""
    c = _c(request)
    if signature is not None or expires is not None:
        if not c.signer.valid(audio_id, expires, signature):
            return Response(b"invalid or expired playback URL", status_code=403, media_type="text/plain")
        audio = c.assets.get(None, audio_id)
    else:
        who = authenticate(request, c.campaigns)
        audio = c.assets.get(who.organization_id, audio_id)
    return Response(
        c.assets.content(audio),
        media_type=audio.info["contentType"],
        headers={"Cache-Control": "private, max-age=3600", "Content-Disposition": f'inline; filename="{audio.original_file_name}"'},
    )


@get("/api/audio-management/audio/{audio_id:str}/original")
@in_thread
def download_original(request: Request[Any, Any, Any], audio_id: str) -> Response[bytes]:
    """The file exactly as it was uploaded (the stream serves the telephony version)."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    audio = c.assets.get(who.organization_id, audio_id)
    return Response(
        c.assets.content(audio, original=True),
        media_type=c.assets.original_content_type(audio),
        headers={"Content-Disposition": f'attachment; filename="{audio.original_file_name}"'},
    )


@put("/api/audio-management/audio/{audio_id:str}")
@in_thread
def update_audio(request: Request[Any, Any, Any], audio_id: str, data: Any) -> dict[str, Any]:
    """JSON ``{title?, description?, usageType?, tags?}``."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return audio_dto(c.assets.update(who.organization_id, audio_id, who.actor, body_object(data)))


@delete("/api/audio-management/audio/{audio_id:str}", status_code=200)
@in_thread
def delete_audio(request: Request[Any, Any, Any], audio_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        c.assets.delete(who.organization_id, audio_id, who.actor)
    return {"message": "Audio deleted", "id": audio_id}


@get("/api/audio-management/audio/{audio_id:str}/metadata")
@in_thread
def audio_metadata(request: Request[Any, Any, Any], audio_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return audio_dto(c.assets.get(who.organization_id, audio_id))


@get("/api/audio-management/audio/{audio_id:str}/details")
@in_thread
def audio_details(request: Request[Any, Any, Any], audio_id: str) -> dict[str, Any]:
    """The audio with its relations: the dictionaries whose entries use it."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    audio = c.assets.get(who.organization_id, audio_id)
    used = [
        {"dictionaryId": str(d.id), "key": key}
        for d in c.dictionaries.all(who.organization_id)
        for key, aid in d.entries.items()
        if aid["audioId"] == audio_id
    ]
    return {**audio_dto(audio), "dictionaryEntries": used, "updatedBy": audio.updated_by}


@get("/api/audio-management/audio/{audio_id:str}/playback-url")
@in_thread
def playback_url(request: Request[Any, Any, Any], audio_id: str, expiresIn: str | None = None) -> dict[str, Any]:
    """``{id, playbackUrl, expiresIn, expiresAt}``: a URL that needs no API key until it expires."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    seconds = check_expires_in(expiresIn)
    audio = c.assets.get(who.organization_id, audio_id)
    p = c.signer.playback(str(audio.id), seconds)
    return {"id": str(audio.id), "playbackUrl": p.url, "expiresIn": p.expires_in, "expiresAt": iso(p.expires_at)}


# -- dictionaries (DOMAIN.md §5.7) --------------------------------------------------


def dictionary_dto(d: Dictionary) -> dict[str, Any]:
    return {
        "id": str(d.id), "name": d.name, "description": d.description, "language": d.language,
        "organizationId": str(d.organization_id) if d.organization_id else None, "isSystem": d.is_system,
        "entryCount": len(d.entries), "createdAt": iso(d.created_on), "updatedAt": iso(d.modified_on),
        "deletedAt": iso(d.deleted_at), "createdBy": d.created_by, "updatedBy": d.updated_by, "deletedBy": d.deleted_by,
    }  # fmt: skip


def entry_dto(d: Dictionary, key: str, entry: dict[str, Any]) -> dict[str, Any]:
    return {"id": str(entry_id(d.id, key)), "dictionaryId": str(d.id), "key": key, "audioId": entry["audioId"],
            "createdAt": iso(entry.get("createdAt"))}  # fmt: skip


@post("/api/dictionaries", status_code=201)
@in_thread
def create_dictionary(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    """``{name, description?, language: "ar" | "fr"}``."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return dictionary_dto(c.dictionaries.create(who.organization, who.actor, body_object(data)))


@get("/api/dictionaries")
@in_thread
def list_dictionaries(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    """The system dictionaries and the organization's own (a plain array)."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return [dictionary_dto(d) for d in c.dictionaries.all(who.organization_id)]


@get("/api/dictionaries/{dictionary_id:str}")
@in_thread
def get_dictionary(request: Request[Any, Any, Any], dictionary_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    d = c.dictionaries.get(who.organization_id, dictionary_id)
    return {**dictionary_dto(d), "entries": [entry_dto(d, k, e) for k, e in sorted(d.entries.items())]}


@delete("/api/dictionaries/{dictionary_id:str}", status_code=200)
@in_thread
def delete_dictionary(request: Request[Any, Any, Any], dictionary_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return dictionary_dto(c.dictionaries.delete(who.organization_id, dictionary_id, who.actor))


@post("/api/dictionaries/{dictionary_id:str}/entries", status_code=201, request_max_body_size=UPLOAD_BODY_LIMIT)
@in_thread
def add_dictionary_entry(
    request: Request[Any, Any, Any], dictionary_id: str, data: dict[str, Any] = Body(media_type=RequestEncodingType.MULTI_PART)
) -> dict[str, Any]:
    """Multipart ``file`` (the audio of the key) and ``key`` (e.g. "100", "and", "thousand")."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    upload = data.get("file")
    if not isinstance(upload, UploadFile):
        raise ValidationError.single("file", "is required: the audio of the key as a multipart file field")
    content = upload.file.read(MAX_UPLOAD_BYTES + 1)
    with acting(who, request):
        d, key = c.dictionaries.set_entry(who.organization, dictionary_id, who.actor, data.get("key"), content, upload.filename)
    return entry_dto(d, key, d.entries[key])


@get("/api/dictionaries/{dictionary_id:str}/entries/{key:str}")
@in_thread
def get_dictionary_entry(request: Request[Any, Any, Any], dictionary_id: str, key: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    d, entry = c.dictionaries.entry(who.organization_id, dictionary_id, key)
    return entry_dto(d, key.strip().lower(), entry)


@delete("/api/dictionaries/{dictionary_id:str}/entries/{key:str}", status_code=200)
@in_thread
def delete_dictionary_entry(request: Request[Any, Any, Any], dictionary_id: str, key: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        c.dictionaries.remove_entry(who.organization_id, dictionary_id, key, who.actor)
    return {"message": "Entry deleted", "key": key}


ASSET_HANDLERS = [
    upload_audio, list_audios, list_audios_by_usage, stream_audio, download_original, update_audio, delete_audio,
    audio_metadata, audio_details, playback_url,
    create_dictionary, list_dictionaries, get_dictionary, delete_dictionary,
    add_dictionary_entry, get_dictionary_entry, delete_dictionary_entry,
]  # fmt: skip
