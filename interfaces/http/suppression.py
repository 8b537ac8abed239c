"""The do-not-call (suppression) list over HTTP: list, add, remove, check, CSV import."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body

from application.csv_source import read_rows
from application.suppression import Suppressions
from domain.errors import ValidationError
from domain.suppression import Suppression
from interfaces.http.common import (
    acting,
    authenticate,
    body_object,
    envelope,
    in_thread,
    iso,
    paging,
)


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def entry_dto(s: Suppression) -> dict[str, Any]:
    return {
        "id": str(s.id),
        "organizationId": str(s.organization_id),
        "phone": s.phone,
        "reason": s.reason,
        "source": s.source,
        "active": s.active,
        "createdAt": iso(s.created_on),
        "updatedAt": iso(s.modified_on),
    }


@get("/api/suppressions")
@in_thread
def list_suppressions(
    request: Request[Any, Any, Any], page: int | None = None, limit: int | None = None, search: str | None = None
) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    p, lim = paging(page, limit)
    rows, total = c.directory.suppressions(str(who.organization_id), p, lim, search)
    data = [
        {"id": r["id"], "organizationId": r["organization_id"], "phone": r["phone"], "reason": r["reason"],
         "source": r["source"], "active": bool(r["active"]), "createdAt": r["created_at"], "updatedAt": r["updated_at"]}
        for r in rows
    ]
    return envelope(data, p, lim, total)


@post("/api/suppressions", status_code=201)
@in_thread
def add_suppression(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    """``{"phone": "+212...", "reason": "...", "source": "api"}``."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    body = body_object(data)
    with acting(who, request):
        s = Suppressions(c.campaigns).add(who.organization, body.get("phone"), body.get("reason"), body.get("source", "api"))
    return entry_dto(s)


@get("/api/suppressions/{phone:str}")
@in_thread
def get_suppression(request: Request[Any, Any, Any], phone: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return entry_dto(Suppressions(c.campaigns).entry(who.organization, phone))


@delete("/api/suppressions/{phone:str}", status_code=200)
@in_thread
def remove_suppression(request: Request[Any, Any, Any], phone: str, reason: str | None = None) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return entry_dto(Suppressions(c.campaigns).remove(who.organization, phone, reason))


@post("/api/suppressions/import", status_code=201)
@in_thread
def import_suppressions(
    request: Request[Any, Any, Any], data: dict[str, Any] = Body(media_type=RequestEncodingType.MULTI_PART)
) -> dict[str, Any]:
    """A CSV file (multipart field ``data``) with a ``phone`` column and an optional
    ``reason`` column; without a recognised header the first column is the number."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    upload = data.get("data") if isinstance(data, dict) else None
    if not isinstance(upload, UploadFile):  # a text field, or no file at all
        raise ValidationError.single("data", "must be a file, sent as the multipart/form-data field 'data'")
    rows = read_rows(upload.file)
    first = next(rows, None)
    if first is None or first.cells is None:
        raise ValidationError.single("data", "the file is empty" if first is None else f"line 1: {first.error}")
    header = [h.strip().lower() for h in first.cells]
    phone_col = next((i for i, h in enumerate(header) if h in ("phone", "primaryphone", "number", "msisdn")), None)
    reason_col = header.index("reason") if "reason" in header else None
    rejected: list[dict[str, Any]] = []

    def numbers() -> Any:
        if phone_col is None:
            yield first.line, first.cells[0], None
        for r in rows:
            if r.cells is None:
                rejected.append({"line": r.line, "value": None, "reason": r.error})
                continue
            col = phone_col or 0
            if len(r.cells) <= col:
                rejected.append({"line": r.line, "value": None, "reason": "missing the phone column"})
                continue
            yield r.line, r.cells[col], r.cells[reason_col] if reason_col is not None and reason_col < len(r.cells) else None

    with acting(who, request):
        report = Suppressions(c.campaigns).import_numbers(who.organization, numbers())
    rejected = sorted([*rejected, *report.rejected], key=lambda x: x["line"])
    return {"added": report.added, "unchanged": report.unchanged, "rejected": rejected}


SUPPRESSION_HANDLERS = [list_suppressions, add_suppression, import_suppressions, get_suppression, remove_suppression]
