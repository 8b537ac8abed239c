"""Contacts and custom attributes over HTTP: the documented endpoints, bulk upsert and each
contact's change history. HTTP to commands and back, nothing more."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post, put
from litestar.params import Parameter

from application.contacts import Contacts
from domain.contact import Contact
from domain.contact_schema import ContactSchema
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
from projections.directory import CONTACT_COLUMNS

CONTACT_FIELDS = (
    "firstName", "lastName", "fullName", "primaryEmail", "address", "city", "state", "zip",
    "occupation", "preferredChannel", "gender", "timezone",
)


def container(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def contacts_of(c: Any) -> Contacts:
    return Contacts(c.campaigns)


def contact_dto(c: Contact) -> dict[str, Any]:
    fields = {k: c.fields.get(k) for k in CONTACT_FIELDS}
    return {
        "id": str(c.id),
        "organizationId": str(c.organization_id),
        "primaryPhone": c.phone,
        **fields,
        "customAttributes": dict(c.custom_attributes),
        "channels": [],
        "createdAt": iso(c.created_on),
        "updatedAt": iso(c.modified_on),
        "deletedAt": iso(c.deleted_at),
    }


def contact_with_attributes(c: Contact, schema: ContactSchema) -> dict[str, Any]:
    """GET by id: custom attributes as the documented array; values of removed
    definitions can no longer be read."""
    dto = contact_dto(c)
    dto["customAttributes"] = [
        {
            "name": name,
            "displayName": d["displayName"],
            "description": d["description"],
            "type": d["type"],
            "value": c.custom_attributes[name],
            "isLocked": False,
        }
        for name, d in schema.attributes.items()
        if name in c.custom_attributes
    ]
    return dto


def contact_row_dto(r: dict[str, Any]) -> dict[str, Any]:
    data = r["data"] or {}
    fields = {k: data.get(k) for k in CONTACT_FIELDS}
    return {
        "id": r["id"],
        "organizationId": r["organization_id"],
        "primaryPhone": r["primary_phone"],
        **fields,
        "customAttributes": data.get("customAttributes", {}),
        "channels": [],
        "createdAt": r["created_at"],
        "updatedAt": r["updated_at"],
    }


def list_args(
    search: str | None, sort_by: str | None, sort_order: str | None, allowed: tuple[str, ...]
) -> tuple[str | None, str, bool]:
    errors: dict[str, list[str]] = {}
    if search is not None and len(search) > 100:
        errors["search"] = ["must be at most 100 characters"]
    sort = sort_by or "createdAt"
    if sort not in allowed:
        errors["sortBy"] = [f"must be one of {', '.join(allowed)}"]
    order = (sort_order or "desc").lower()
    if order not in ("asc", "desc"):
        errors["sortOrder"] = ["must be 'asc' or 'desc'"]
    if errors:
        raise ValidationError("Invalid list parameters", errors)
    return search or None, sort, order == "desc"


# -- contacts ---------------------------------------------------------------------------


@post("/api/contact", status_code=201)
@in_thread
def create_contact(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return contact_dto(contacts_of(c).create(who.organization, body_object(data)))


@post("/api/contact/upsert", status_code=201)
@in_thread
def upsert_contacts(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        result = contacts_of(c).upsert(who.organization, data)
    ordered = [result.results[i] for i in sorted(result.results)]
    return {
        "message": "Contacts upserted successfully",
        "created": result.count("created") + result.count("restored"),
        "updated": result.count("updated"),
        "unchanged": result.count("unchanged"),
        "data": [{"index": i, "id": w.contact_id, "status": w.status} for i, w in enumerate(ordered)],
    }


@get("/api/contact/{contact_id:str}")
@in_thread
def get_contact(request: Request[Any, Any, Any], contact_id: str) -> dict[str, Any]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    contacts = contacts_of(c)
    return contact_with_attributes(contacts.get(who.organization_id, contact_id), contacts.schema(who.organization_id))


@get("/api/contact/{contact_id:str}/history")
@in_thread
def contact_history(request: Request[Any, Any, Any], contact_id: str) -> dict[str, Any]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    entries = contacts_of(c).history(who.organization_id, contact_id)
    return {"contactId": contact_id, "data": entries}


@put("/api/contact/{contact_id:str}")
@in_thread
def update_contact(request: Request[Any, Any, Any], contact_id: str, data: Any) -> dict[str, Any]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return contact_dto(contacts_of(c).update(who.organization, contact_id, body_object(data)))


@delete("/api/contact/{contact_id:str}", status_code=200)
@in_thread
def delete_contact(request: Request[Any, Any, Any], contact_id: str, erase: bool = False) -> dict[str, Any]:
    """Soft delete; ``?erase=true`` (admin): crypto-shredding, see application/erasure.py."""
    c = container(request)
    who = authenticate(request, c.campaigns)
    if erase:
        from application.erasure import erased_dto
        from interfaces.http.security import require_permission

        require_permission(who, "contacts:erase")
        with acting(who, request):
            contact = c.erasure.erase(who.organization_id, contact_id)
        return erased_dto(contact, contact_dto(contact))
    with acting(who, request):
        return contact_dto(contacts_of(c).delete(who.organization_id, contact_id))


@get("/api/contact")
@in_thread
def list_contacts(
    request: Request[Any, Any, Any],
    page: int | None = None,
    limit: int | None = None,
    search: str | None = None,
    sort_by: str | None = Parameter(query="sortBy", default=None),
    sort_order: str | None = Parameter(query="sortOrder", default=None),
) -> dict[str, Any]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    p, lim = paging(page, limit)
    term, sort, desc = list_args(search, sort_by, sort_order, tuple(CONTACT_COLUMNS))
    rows, total = c.directory.contacts(str(who.organization_id), p, lim, term, sort, desc)
    return envelope([contact_row_dto(r) for r in rows], p, lim, total)


# -- custom attributes ------------------------------------------------------------------------


@get("/api/custom-attributes")
@in_thread
def list_custom_attributes(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    return contacts_of(c).attributes(who.organization_id)


@post("/api/custom-attributes", status_code=201)
@in_thread
def create_custom_attribute(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return contacts_of(c).define_attribute(who.organization_id, data)


@get("/api/custom-attributes/{attribute_id:str}")
@in_thread
def get_custom_attribute(request: Request[Any, Any, Any], attribute_id: str) -> dict[str, Any]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    return contacts_of(c).attribute(who.organization_id, attribute_id)


@put("/api/custom-attributes/{attribute_id:str}")
@in_thread
def update_custom_attribute(request: Request[Any, Any, Any], attribute_id: str, data: Any) -> dict[str, Any]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return contacts_of(c).describe_attribute(who.organization_id, attribute_id, data)


@delete("/api/custom-attributes/{attribute_id:str}", status_code=200)
@in_thread
def delete_custom_attribute(request: Request[Any, Any, Any], attribute_id: str) -> dict[str, Any]:
    c = container(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return contacts_of(c).remove_attribute(who.organization_id, attribute_id)


CONTACT_HANDLERS = [
    list_contacts,
    create_contact,
    upsert_contacts,
    get_contact,
    contact_history,
    update_contact,
    delete_contact,
    list_custom_attributes,
    create_custom_attribute,
    get_custom_attribute,
    update_custom_attribute,
    delete_custom_attribute,
]
