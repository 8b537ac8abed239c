"""Recordings over HTTP (``/api/recordings...``, DOMAIN.md §8.3)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get

from domain.errors import NotFound, ValidationError
from interfaces.http.common import acting, authenticate, in_thread


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def recording_dto(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"], "callId": r["call_id"], "jobId": r["job_id"], "fileId": r["id"],
        "recordingType": r["recording_type"], "nodeId": r["node_id"], "durationMs": r["duration_ms"],
        "createdAt": r["created_at"], "updatedAt": r["created_at"],
    }  # fmt: skip


def _window(limit: Any, offset: Any) -> tuple[int, int]:
    try:
        lim = int(limit) if limit is not None else 20
        off = int(offset) if offset is not None else 0
    except ValueError:
        lim, off = -1, -1
    if not 1 <= lim <= 100 or off < 0:
        raise ValidationError("Invalid pagination", {"limit": ["must be 1 to 100"], "offset": ["must be 0 or more"]})
    return lim, off


@get("/api/recordings")
@in_thread
def list_recordings(request: Request[Any, Any, Any], limit: str | None = None, offset: str | None = None) -> list[dict[str, Any]]:
    """A plain array, oldest first; ``limit`` (1-100, 20) and ``offset``."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    lim, off = _window(limit, offset)
    return [recording_dto(r) for r in c.recordings.list(who.organization_id, lim, off)]


@get("/api/recordings/call/{call_id:str}")
@in_thread
def call_recordings(request: Request[Any, Any, Any], call_id: str) -> list[dict[str, Any]]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    rows = c.recordings.list(who.organization_id, 100, 0, call_id)
    if not rows:  # another organization's call (or none) is a 404, not an empty list
        call = c.history.attempt(call_id)
        if call is None or call["organization_id"] != str(who.organization_id):
            raise NotFound("Call not found")
    return [recording_dto(r) for r in rows]


def _audio(request: Request[Any, Any, Any], recording_id: str, disposition: str) -> Response[bytes]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    row, data = c.recordings.content(who.organization_id, recording_id)
    return Response(
        data,
        media_type="audio/wav",
        headers={"Cache-Control": "public, max-age=3600", "Content-Disposition": f'{disposition}; filename="recording-{row["id"]}.wav"'},
    )


@get("/api/recordings/{recording_id:str}")
@in_thread
def stream_recording(request: Request[Any, Any, Any], recording_id: str) -> Response[bytes]:
    return _audio(request, recording_id, "inline")


@get("/api/recordings/{recording_id:str}/download")
@in_thread
def download_recording(request: Request[Any, Any, Any], recording_id: str) -> Response[bytes]:
    return _audio(request, recording_id, "attachment")


@get("/api/recordings/{recording_id:str}/metadata")
@in_thread
def recording_metadata(request: Request[Any, Any, Any], recording_id: str) -> dict[str, Any]:
    """The recording and its file (``fileSize`` is known once the audio was fetched)."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    row = c.recordings.get(who.organization_id, recording_id)
    return {
        **recording_dto(row), "providerRecordingSid": row["provider_sid"],
        "file": {"id": row["id"], "name": f"recording-{row['id']}.wav", "contentType": "audio/wav", "fileSize": c.recordings.size(row)},
    }  # fmt: skip


@delete("/api/recordings/{recording_id:str}", status_code=200)
@in_thread
def delete_recording(request: Request[Any, Any, Any], recording_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        c.recordings.delete(who.organization_id, recording_id, who.actor)
    return {"message": "Recording deleted"}


RECORDING_HANDLERS = [list_recordings, call_recordings, stream_recording, download_recording, recording_metadata, delete_recording]
