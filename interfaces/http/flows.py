"""Flow versions and the simulator: HTTP to queries, nothing more.

``POST /api/flows/execute`` runs a flow (a saved one, at its latest or a given version,
or a graph in the body) against a scripted callee with the pure engine: the path taken
and every event, and no call placed."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from litestar import Request, delete, get, post

from domain.errors import NotFound, ValidationError
from domain.flows.graph import issues_message, parse_graph, unknown_custom_attributes
from domain.flows.simulator import context_for, simulate
from interfaces.http.common import acting, authenticate, body_object, in_thread


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


def known_attributes(c: Any, organization_id: Any) -> set[str]:
    from application.contacts import Contacts

    return set(Contacts(c.campaigns).schema(organization_id).attributes)


def attribute_issues(c: Any, organization_id: Any, raw: Any) -> list[Any]:
    """The organization's side of validation: custom attributes the graph names that the
    organization has not defined (the graph's own checks come first)."""
    graph, issues = parse_graph(raw)
    if issues or graph is None:
        return []
    return unknown_custom_attributes(graph, known_attributes(c, organization_id))


def require_known_attributes(c: Any, organization_id: Any, raw: Any) -> None:
    """For create and update: a 400 naming each node, field and unknown attribute."""
    issues = attribute_issues(c, organization_id, raw)
    if issues:
        raise ValidationError(*issues_message(issues))


def _version(flow: Any, version: int) -> dict[str, Any]:
    if not 1 <= version <= len(flow.versions):
        raise NotFound(f"Flow {flow.id} has no version {version} (versions 1 to {len(flow.versions)})")
    return {
        "id": str(flow.id),
        "name": flow.name,
        "version": version,
        "latestVersion": flow.latest_version,
        "graph": flow.versions[version - 1],
    }


@get("/api/flows/{flow_id:str}/versions")
@in_thread
def list_flow_versions(request: Request[Any, Any, Any], flow_id: str) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    flow = c.campaigns.flow(who.organization_id, flow_id)
    return {
        "id": str(flow.id),
        "latestVersion": flow.latest_version,
        "versions": [{"version": n, "nodeCount": len(g["nodes"])} for n, g in enumerate(flow.versions, 1)],
    }


@get("/api/flows/{flow_id:str}/versions/{version:int}")
@in_thread
def get_flow_version(request: Request[Any, Any, Any], flow_id: str, version: int) -> dict[str, Any]:
    c = _c(request)
    who = authenticate(request, c.campaigns)
    return _version(c.campaigns.flow(who.organization_id, flow_id), version)


@delete("/api/flows/{flow_id:str}/permanent", status_code=200)
@in_thread
def delete_flow_permanently(request: Request[Any, Any, Any], flow_id: str) -> dict[str, Any]:
    """Hard delete (a soft-deleted flow too): no version is served again; executions
    already launched keep the copy of the graph they froze."""
    from domain.flow import Flow

    c = _c(request)
    who = authenticate(request, c.campaigns)
    try:
        flow = c.campaigns.repository.get(UUID(flow_id))
    except (AggregateNotFoundError, ValueError):
        raise NotFound("Flow not found") from None
    if not isinstance(flow, Flow) or flow.organization_id != who.organization_id or not flow.versions:
        raise NotFound("Flow not found")
    with acting(who, request):
        if not flow.deleted:
            flow.delete()  # leaves every list and name lookup
        flow.erase()
        c.campaigns.save(flow)
    return {"message": "Flow permanently deleted", "id": flow_id}


@post("/api/flows/execute", status_code=201)
@in_thread
def execute_flow(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    """Body: ``{graph}`` or ``{flowId, version?}``, plus ``callee`` (see the simulator) and
    ``contact`` (fields and ``customAttributes`` the templates read)."""
    c = _c(request)
    who = authenticate(request, c.campaigns)
    body = body_object(data)
    source: dict[str, Any] = {}
    if body.get("flowId") is not None:
        flow = c.campaigns.flow(who.organization_id, str(body["flowId"]))
        version = body.get("version", flow.latest_version)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValidationError.single("version", "must be an integer")
        found = _version(flow, version)
        raw, source = found["graph"], {"flowId": found["id"], "flowVersion": version}
    elif "graph" in body:
        raw = body["graph"]
        require_known_attributes(c, who.organization_id, raw)
    else:
        raise ValidationError("Give the flow to run: 'graph', or 'flowId' (and 'version')", {"graph": ["is required without flowId"]})
    graph, issues = parse_graph(raw)
    if issues or graph is None:
        raise ValidationError(*issues_message(issues))
    contact = body.get("contact")
    if contact is not None and not isinstance(contact, dict):
        raise ValidationError.single("contact", "must be an object of contact fields")
    run = simulate(graph, body.get("callee"), context_for(contact))
    return {**source, "placedCall": False, **{k: run[k] for k in ("path", "steps", "events", "turns", "variables", "ended", "hangupReason", "reachedHangup")}}


FLOW_HANDLERS = [list_flow_versions, get_flow_version, execute_flow, delete_flow_permanently]
