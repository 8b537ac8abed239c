"""Audiences over HTTP: static and live audiences, add and remove contacts, members,
rule previews. HTTP to commands and back, nothing more."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post, put
from litestar.params import Parameter

from application.audiences import Audiences
from domain.audience import Audience
from domain.errors import NotFound
from interfaces.http.common import (
    acting,
    authenticate,
    body_object,
    envelope,
    in_thread,
    iso,
    paging,
)
from interfaces.http.contacts import contact_dto, contact_row_dto, list_args
from projections.directory import AUDIENCE_SORT


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def audiences_of(c: Any) -> Audiences:
    return Audiences(c.campaigns, c.directory)


def audience_dto(a: Audience, c: Any) -> dict[str, Any]:
    count = a.member_count if a.kind == "static" else c.directory.audience_member_count(str(a.id))
    return {
        "id": str(a.id),
        "organizationId": str(a.organization_id),
        "name": a.name,
        "description": a.description,
        "type": a.kind,
        "rules": a.rules,
        "contactCount": count,
        "linkedCampaignsCount": c.directory.linked_campaigns_count(str(a.id)),
        "createdAt": iso(a.created_on),
        "updatedAt": iso(a.modified_on),
    }


@post("/api/audience", status_code=201)
@in_thread
def create_audience(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return audience_dto(audiences_of(c).create(who.organization_id, body_object(data)), c)


@post("/api/audience/preview", status_code=200)
@in_thread
def preview_audience(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    """``{"rules": {...}, "sampleSize": 10}``: count (and sample) the matches; saves nothing."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    total, rows = audiences_of(c).preview(who.organization_id, body_object(data))
    return {"contactCount": total, "sample": [contact_row_dto(r) for r in rows]}


@get("/api/audience/{audience_id:str}")
@in_thread
def get_audience(request: Request[Any, Any, Any], audience_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return audience_dto(audiences_of(c).get(who.organization_id, audience_id), c)


@put("/api/audience/{audience_id:str}")
@in_thread
def update_audience(request: Request[Any, Any, Any], audience_id: str, data: Any) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return audience_dto(audiences_of(c).update(who.organization_id, audience_id, body_object(data)), c)


@delete("/api/audience/{audience_id:str}", status_code=200)
@in_thread
def delete_audience(request: Request[Any, Any, Any], audience_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return audience_dto(audiences_of(c).delete(who.organization_id, audience_id), c)


@post("/api/audience/{audience_id:str}/add-contacts", status_code=200)
@in_thread
def add_contacts(request: Request[Any, Any, Any], audience_id: str, data: Any) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        added = audiences_of(c).add_contacts(who.organization_id, audience_id, body_object(data).get("contacts"))
    return {"message": "Contacts added successfully", "added": added}


@post("/api/audience/{audience_id:str}/remove-contacts", status_code=200)
@in_thread
def remove_contacts(request: Request[Any, Any, Any], audience_id: str, data: Any) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        removed = audiences_of(c).remove_contacts(who.organization_id, audience_id, body_object(data).get("contacts"))
    return {"message": "Contacts removed successfully", "removed": removed}


@get("/api/audience/{audience_id:str}/contacts")
@in_thread
def audience_contacts(
    request: Request[Any, Any, Any], audience_id: str, page: int | None = None, limit: int | None = None
) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    p, lim = paging(page, limit)
    audience = audiences_of(c).get(who.organization_id, audience_id)
    if audience.kind == "live":
        rows, total = c.directory.audience_contacts(str(audience.id), p, lim)
        return envelope([contact_row_dto(r) for r in rows], p, lim, total)
    ids = audience.members_slice((p - 1) * lim, p * lim)
    items = []
    for cid in ids:
        try:
            items.append(contact_dto(c.campaigns.contact(who.organization_id, cid)))
        except NotFound:
            continue
    return envelope(items, p, lim, audience.member_count)


@get("/api/audience")
@in_thread
def list_audiences(
    request: Request[Any, Any, Any],
    page: int | None = None,
    limit: int | None = None,
    search: str | None = None,
    sort_by: str | None = Parameter(query="sortBy", default=None),
    sort_order: str | None = Parameter(query="sortOrder", default=None),
) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    p, lim = paging(page, limit)
    term, sort, desc = list_args(search, sort_by, sort_order, tuple(AUDIENCE_SORT))
    rows, total = c.directory.audiences(str(who.organization_id), p, lim, term, sort, desc)
    # The same fields as GET /api/audience/{id} (DOMAIN.md §4.2), from the directory.
    data = [
        {"id": r["id"], "organizationId": r["organization_id"], "name": r["name"], "description": r["description"],
         "type": r["kind"], "rules": r["rules"], "contactCount": r["contact_count"],
         "linkedCampaignsCount": r["linked_campaigns"], "createdAt": r["created_at"], "updatedAt": r["updated_at"]}
        for r in rows
    ]
    return envelope(data, p, lim, total)


AUDIENCE_HANDLERS = [
    list_audiences, create_audience, preview_audience, get_audience, update_audience, delete_audience,
    add_contacts, remove_contacts, audience_contacts,
]
