"""Flows and programs: HTTP to commands and back, nothing more (contacts and audiences:
interfaces/http/contacts.py and audiences.py)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, get, patch, post, put
from litestar.params import Parameter

from domain.errors import NotFound
from domain.flow import Flow
from domain.flows.graph import parse_graph
from domain.program import Program
from interfaces.http.common import (
    acting,
    authenticate,
    body_object,
    envelope,
    in_thread,
    iso,
    paging,
)
from interfaces.http.contacts import list_args as _list_args
from interfaces.http.flows import attribute_issues, require_known_attributes
from projections.directory import FLOW_SORT


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def flow_dto(f: Flow) -> dict[str, Any]:
    return {
        "id": str(f.id),
        "organizationId": str(f.organization_id),
        "name": f.name,
        "description": f.description,
        "version": f.latest_version,
        "graph": f.graph,
        "createdAt": iso(f.created_on),
        "updatedAt": iso(f.modified_on),
    }


def program_dto(p: Program) -> dict[str, Any]:
    s = p.settings
    return {
        "id": str(p.id),
        "name": s.get("name"),
        "organizationId": str(p.organization_id),
        "audienceId": s.get("audienceId"),
        "flowId": s.get("flowId"),
        "status": p.status,
        "startAt": s.get("startAt"),
        "stopAt": s.get("stopAt"),
        "didPool": s.get("didPool"),
        "retryStrategy": s.get("retryStrategy"),
        "pauseWindows": s.get("pauseWindows"),
        "requireConsent": s.get("requireConsent"),
        "createdAt": iso(p.created_on),
        "updatedAt": iso(p.modified_on),
    }


# -- flows --------------------------------------------------------------------------------


@post("/api/flows", status_code=201)
@in_thread
def create_flow(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    body = body_object(data)
    require_known_attributes(c, who.organization_id, body.get("graph"))
    with acting(who, request):
        return flow_dto(c.campaigns.create_flow(who.organization_id, body))


@post("/api/flows/validate", status_code=201)
@in_thread
def validate_flow(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    body = body_object(data)
    _, issues = parse_graph(body.get("graph"))
    issues += attribute_issues(c, who.organization_id, body.get("graph"))
    return {"valid": not issues, "errors": [i.as_dict() for i in issues]}


@get("/api/flows/{flow_id:str}")
@in_thread
def get_flow(request: Request[Any, Any, Any], flow_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return flow_dto(c.campaigns.flow(who.organization_id, flow_id))


@put("/api/flows/{flow_id:str}")
@in_thread
def update_flow(request: Request[Any, Any, Any], flow_id: str, data: Any) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    body = body_object(data)
    if "graph" in body:
        require_known_attributes(c, who.organization_id, body["graph"])
    with acting(who, request):
        return flow_dto(c.campaigns.update_flow(who.organization_id, flow_id, body))


@get("/api/flows")
@in_thread
def list_flows(
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
    term, sort, desc = _list_args(search, sort_by, sort_order, tuple(FLOW_SORT))
    rows, total = c.directory.flows(str(who.organization_id), p, lim, term, sort, desc)
    data = [
        {"id": r["id"], "organizationId": r["organization_id"], "name": r["name"], "description": r["description"],
         "version": r["version"], "createdAt": r["created_at"], "updatedAt": r["updated_at"]}
        for r in rows
    ]
    return envelope(data, p, lim, total)


@get("/api/flows/latest/{name:str}")
@in_thread
def latest_flow(request: Request[Any, Any, Any], name: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    flow_id = c.directory.latest_flow(str(who.organization_id), name)
    if flow_id is None:
        raise NotFound(f"No flow named '{name}'")
    return flow_dto(c.campaigns.flow(who.organization_id, flow_id))


@delete("/api/flows/{flow_id:str}", status_code=200)
@in_thread
def delete_flow(request: Request[Any, Any, Any], flow_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return flow_dto(c.campaigns.delete_flow(who.organization_id, flow_id))


# -- programs ----------------------------------------------------------------------------


@post("/api/programs", status_code=201)
@in_thread
def create_program(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return program_dto(c.campaigns.create_program(who.organization, body_object(data)))


@get("/api/programs/{program_id:str}")
@in_thread
def get_program(request: Request[Any, Any, Any], program_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return program_dto(c.campaigns.program(who.organization_id, program_id))


@patch("/api/programs/{program_id:str}")
@in_thread
def update_program(request: Request[Any, Any, Any], program_id: str, data: Any) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        return program_dto(c.campaigns.update_program(who.organization, program_id, body_object(data)))


@post("/api/programs/{program_id:str}/launch", status_code=201)
@in_thread
def launch_program(request: Request[Any, Any, Any], program_id: str) -> Response[Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        execution = c.campaigns.launch_program(who.organization, program_id, c.clock.now())
    return Response({"executionId": str(execution.id), "status": execution.status}, status_code=201)


@get("/api/programs")
@in_thread
def list_programs(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    out = []
    for pid in c.directory.program_ids(str(who.organization_id)):
        try:
            out.append(program_dto(c.campaigns.program(who.organization_id, pid)))
        except NotFound:
            continue
    return out


@delete("/api/programs/{program_id:str}", status_code=204)
@in_thread
def delete_program(request: Request[Any, Any, Any], program_id: str) -> None:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        c.campaigns.delete_program(who.organization_id, program_id, c.clock.now())


RESOURCE_HANDLERS = [
    list_flows,
    latest_flow,
    delete_flow,
    list_programs,
    delete_program,
    create_flow,
    validate_flow,
    get_flow,
    update_flow,
    create_program,
    get_program,
    update_program,
    launch_program,
]
