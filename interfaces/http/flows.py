"""Flow versions and the simulator: HTTP to queries, nothing more.

``POST /api/flows/execute`` runs a flow (a saved one, at its latest or a given version,
or a graph in the body) against a scripted callee with the pure engine: the path taken
and every event, and no call placed."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post

from domain.errors import NotFound, ValidationError
from domain.flows.graph import issues_message, parse_graph
from domain.flows.simulator import context_for, simulate
from interfaces.http.common import authenticate, body_object, in_thread


def _c(request: Request[Any, Any, Any]) -> Any:
    return request.app.state.container


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


FLOW_HANDLERS = [list_flow_versions, get_flow_version, execute_flow]
