"""The caller's organization and its dialling policy (``org:settings``: admin keys)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, patch

from domain.organization import Organization
from interfaces.http.common import acting, authenticate, body_object, in_thread, iso


def organization_dto(org: Organization) -> dict[str, Any]:
    return {
        "id": str(org.id),
        "name": org.name,
        "slug": org.slug,
        "country": org.country,
        "timezone": org.timezone,
        "type": org.type,
        "plan": org.plan,
        "status": org.status,
        "settings": {"maxConcurrentCalls": org.max_concurrent_calls, **org.settings},
        "createdAt": iso(org.created_on),
        "updatedAt": iso(org.modified_on),
    }


@get("/api/organization")
@in_thread
def get_organization(request: Request[Any, Any, Any]) -> dict[str, Any]:
    c = request.app.state.container
    who = authenticate(request, c.campaigns)
    return organization_dto(who.organization)


@patch("/api/organization")
@in_thread
def update_organization(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    """``{callingHours: {start, end} | null, maxConcurrentCalls, callsPerSecond,
    maxCallsPerContactPerDay, timezone, plan}``"""
    c = request.app.state.container
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return organization_dto(c.campaigns.update_organization_settings(who.organization_id, body_object(data)))


ORGANIZATION_HANDLERS = [get_organization, update_organization]
