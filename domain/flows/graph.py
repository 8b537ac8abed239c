"""The flow graph: parsing both documented shapes into one canonical form, and validation.

Canonical form (stored): ``{"startNodeId": str, "nodes": [Node, ...]}`` (plus
``maxNodeVisits`` when the flow sets its own cap) with, per node,
``{"id", "type", "label", "config", "outputs"}``. Both the older array form and the
newer map-keyed-by-id form of ``nodes`` are accepted. The walkthrough's play node
(``config.audioId``, ``outputs.onEnd``) is normalised to ``audioItems``/``onComplete``.

Validation names the node, the field and why: unknown types, bad config (checked by
each node type of the catalogue), outputs to missing nodes, unreachable nodes, nodes
with no path to a hangup, and templates naming unknown variables or contact fields.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from domain.errors import ValidationError
from domain.flows import templates
from domain.flows.issues import FlowIssue
from domain.flows.nodes import NODE_TYPES
from domain.flows.nodes.dtmf import DTMF_KEYS

__all__ = ["OUTPUTS", "FlowGraph", "FlowIssue", "parse_graph", "require_graph", "targets"]

# Output names each node type may use (``default`` is a catch-all on every non-terminal node).
OUTPUTS: dict[str, tuple[str, ...]] = {name: t.outputs for name, t in NODE_TYPES.items()}
ALIASES = {"play": {"onEnd": "onComplete"}, "say": {"onEnd": "onComplete"}}
MAX_NODES = 500
MAX_NODE_VISITS_LIMIT = 1000
BUILTIN_VARIABLES = frozenset({"lastDtmf"})


@dataclass
class FlowGraph:
    start_node_id: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_node_visits: int | None = None

    def node(self, node_id: str) -> dict[str, Any]:
        return self.nodes[node_id]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"startNodeId": self.start_node_id, "nodes": list(self.nodes.values())}
        if self.max_node_visits is not None:
            data["maxNodeVisits"] = self.max_node_visits
        return data

    @classmethod
    def from_canonical(cls, data: dict[str, Any]) -> FlowGraph:
        return cls(data["startNodeId"], {n["id"]: n for n in data["nodes"]}, data.get("maxNodeVisits"))

    def variables(self) -> set[str]:
        """Every flow variable some node of this graph sets."""
        out = set(BUILTIN_VARIABLES)
        for node in self.nodes.values():
            kind = NODE_TYPES.get(node["type"])
            if kind is not None and isinstance(node.get("config"), dict):
                out.update(kind.assigns(node["config"]))
        return out


def _normalise_node(raw: dict[str, Any]) -> dict[str, Any]:
    node = {
        "id": raw.get("id"),
        "type": raw.get("type"),
        "label": raw.get("label"),
        "config": copy.deepcopy(raw.get("config") or {}),
        "outputs": copy.deepcopy(raw.get("outputs") or {}),
    }
    ntype = node["type"]
    if isinstance(node["outputs"], dict):
        for old, new in ALIASES.get(ntype, {}).items():
            if old in node["outputs"] and new not in node["outputs"]:
                node["outputs"][new] = node["outputs"].pop(old)
    config = node["config"]
    if ntype == "play" and isinstance(config, dict) and "audioId" in config:
        if "audioItems" not in config:
            config["audioItems"] = [{"type": "audioFile", "audioId": config["audioId"]}]
        del config["audioId"]
    return node


def parse_graph(data: Any) -> tuple[FlowGraph | None, list[FlowIssue]]:
    """Parse and validate; returns the canonical graph (None if unusable) and every issue."""
    issues: list[FlowIssue] = []
    if not isinstance(data, dict):
        return None, [FlowIssue(None, "graph", "must be an object with startNodeId and nodes")]
    raw_nodes = data.get("nodes")
    items: list[tuple[str | None, Any]] = []
    if isinstance(raw_nodes, list):
        items = [(None, n) for n in raw_nodes]
    elif isinstance(raw_nodes, dict):
        items = list(raw_nodes.items())
    else:
        return None, [FlowIssue(None, "graph.nodes", "must be an array or a map of nodes")]
    if not items:
        return None, [FlowIssue(None, "graph.nodes", "must contain at least one node")]
    if len(items) > MAX_NODES:
        return None, [FlowIssue(None, "graph.nodes", f"at most {MAX_NODES} nodes")]
    nodes: dict[str, dict[str, Any]] = {}
    for index, (key, raw) in enumerate(items):
        where = f"graph.nodes[{key if key is not None else index}]"
        if not isinstance(raw, dict):
            issues.append(FlowIssue(None, where, "must be an object"))
            continue
        if key is not None and "id" not in raw:
            raw = {**raw, "id": key}
        node = _normalise_node(raw)
        nid = node["id"]
        if not isinstance(nid, str) or not nid.strip() or len(nid) > 128:
            issues.append(FlowIssue(None, f"{where}.id", "must be a non-empty string"))
            continue
        if key is not None and key != nid:
            issues.append(FlowIssue(nid, f"{where}.id", f"does not match its key '{key}'"))
        if nid in nodes:
            issues.append(FlowIssue(nid, f"{where}.id", "duplicate node id"))
            continue
        nodes[nid] = node
    start = data.get("startNodeId")
    if not isinstance(start, str) or not start:
        issues.append(FlowIssue(None, "graph.startNodeId", "is required"))
    elif start not in nodes:
        issues.append(FlowIssue(None, "graph.startNodeId", f"names a missing node '{start}'"))
    cap = data.get("maxNodeVisits")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_NODE_VISITS_LIMIT):
        issues.append(FlowIssue(None, "graph.maxNodeVisits", f"must be an integer from 1 to {MAX_NODE_VISITS_LIMIT}"))
        cap = None
    for node in nodes.values():
        issues.extend(_check_node(node, nodes))
    graph = FlowGraph(start, nodes, cap) if isinstance(start, str) and start in nodes else None
    if not issues and graph is not None:
        issues.extend(_check_templates(graph))
        issues.extend(_check_reachability(graph))
    return graph, issues


def targets(node: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (output path, target node id) of a node."""
    out = []
    for name, target in (node.get("outputs") or {}).items():
        if name == "branches" and isinstance(target, dict):
            out.extend((f"branches.{d}", t) for d, t in target.items())
        else:
            out.append((name, target))
    return out


def _check_node(node: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> list[FlowIssue]:
    nid, ntype = node["id"], node["type"]
    issues: list[FlowIssue] = []
    kind = NODE_TYPES.get(ntype) if isinstance(ntype, str) else None
    if kind is None:
        known = ", ".join(sorted(NODE_TYPES))
        return [FlowIssue(nid, "type", f"unknown node type '{ntype}' (known: {known})")]
    if node["label"] is not None and not isinstance(node["label"], str):
        issues.append(FlowIssue(nid, "label", "must be a string"))
    config, outputs = node["config"], node["outputs"]
    if not isinstance(config, dict):
        return issues + [FlowIssue(nid, "config", "must be an object")]
    if not isinstance(outputs, dict):
        return issues + [FlowIssue(nid, "outputs", "must be an object")]
    if kind.terminal and outputs:
        issues.append(FlowIssue(nid, "outputs", f"a {ntype} node ends the call and has no outputs" if ntype != "hangup" else "a hangup node is terminal and has no outputs"))
    for name, target in outputs.items():
        if name not in kind.outputs:
            allowed = ", ".join(kind.outputs) or "none"
            issues.append(FlowIssue(nid, f"outputs.{name}", f"unknown output (allowed: {allowed})"))
            continue
        if name == "branches":
            if not isinstance(target, dict):
                issues.append(FlowIssue(nid, "outputs.branches", "must map keys pressed to node ids"))
                continue
            for digit, t in target.items():
                if not (isinstance(digit, str) and digit and set(digit) <= DTMF_KEYS):
                    issues.append(FlowIssue(nid, f"outputs.branches.{digit}", "not a keypress"))
                if not isinstance(t, str) or t not in nodes:
                    issues.append(FlowIssue(nid, f"outputs.branches.{digit}", f"points to missing node '{t}'"))
        elif not isinstance(target, str) or target not in nodes:
            issues.append(FlowIssue(nid, f"outputs.{name}", f"points to missing node '{target}'"))
    issues.extend(kind.check(nid, config))
    barge = config.get("bargeInDtmfNodeId")
    if isinstance(barge, str) and (barge not in nodes or nodes[barge]["type"] != "dtmf"):
        issues.append(FlowIssue(nid, "config.bargeInDtmfNodeId", f"'{barge}' is not a dtmf node of this flow"))
    return issues


def _check_templates(graph: FlowGraph) -> list[FlowIssue]:
    known = graph.variables()
    issues: list[FlowIssue] = []
    for node in graph.nodes.values():
        for where, value in NODE_TYPES[node["type"]].templates(node["config"]):
            if isinstance(value, str):
                for scope, path in templates.names_in(value):
                    why = templates.problem_with(scope, path, known)
                    if why:
                        issues.append(FlowIssue(node["id"], where, why))
            elif templates.is_value_source(value):
                why = templates.value_source_problem(value, known)
                if why:
                    issues.append(FlowIssue(node["id"], where, why))
    return issues


def _check_reachability(graph: FlowGraph) -> list[FlowIssue]:
    nodes, start = graph.nodes, graph.start_node_id
    seen = {start}
    stack = [start]
    while stack:
        for _, t in targets(nodes[stack.pop()]):
            if t not in seen:
                seen.add(t)
                stack.append(t)
    issues = [
        FlowIssue(nid, "id", f"node '{nid}' is unreachable from the start node '{start}'")
        for nid in nodes
        if nid not in seen
    ]
    # Backwards from every terminal node: what can still end the call properly.
    incoming: dict[str, set[str]] = {nid: set() for nid in nodes}
    for nid, node in nodes.items():
        for _, t in targets(node):
            incoming[t].add(nid)
    ending = {nid for nid, n in nodes.items() if NODE_TYPES[n["type"]].terminal}
    stack = list(ending)
    while stack:
        for src in incoming[stack.pop()]:
            if src not in ending:
                ending.add(src)
                stack.append(src)
    for nid in nodes:
        if nid in seen and nid not in ending:
            issues.append(FlowIssue(nid, "outputs", f"no path from node '{nid}' to a hangup: wire an output to a path that ends the call"))
    return issues


def require_graph(data: Any) -> FlowGraph:
    graph, issues = parse_graph(data)
    if issues or graph is None:
        raise ValidationError(*issues_message(issues))
    return graph


def issues_message(issues: list[FlowIssue]) -> tuple[str, dict[str, list[str]]]:
    field_errors: dict[str, list[str]] = {}
    for i in issues:
        key = f"graph.nodes.{i.node_id}.{i.field}" if i.node_id else i.field
        field_errors.setdefault(key, []).append(i.message)
    first = issues[0] if issues else FlowIssue(None, "graph", "is invalid")
    where = f"node '{first.node_id}' {first.field}" if first.node_id else first.field
    return f"Invalid flow graph: {where} {first.message}", field_errors


def custom_attributes_named(graph: FlowGraph) -> list[tuple[str, str, str]]:
    """Every custom attribute the flow reads or writes, as (node id, field, name): templates
    (``$contact.customAttributes.NAME``), value sources, condition operands and
    ``update_contact`` targets that are not contact fields."""
    from domain.flows.nodes.contact import WRITABLE_FIELDS

    found: list[tuple[str, str, str]] = []

    def walk(nid: str, where: str, value: Any) -> None:
        if isinstance(value, str):
            for scope, path in templates.names_in(value):
                if scope == "contact" and len(path) >= 2 and path[0] == "customAttributes":
                    found.append((nid, where, path[1]))
        elif isinstance(value, dict):
            if value.get("source") == "customAttribute" and isinstance(value.get("attributeName"), str):
                found.append((nid, where, value["attributeName"]))
            elif value.get("type") in ("and", "or"):
                for i, c in enumerate(value.get("conditions") or []):
                    walk(nid, f"{where}.conditions[{i}]", c)
            elif isinstance(value.get("variable"), dict) and value["variable"].get("type") == "custom_attribute":
                found.append((nid, f"{where}.variable.name", str(value["variable"].get("name"))))
            else:
                for k, v in value.items():
                    walk(nid, f"{where}.{k}", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(nid, f"{where}[{i}]", v)

    for nid, node in graph.nodes.items():
        config = node.get("config") or {}
        kind = NODE_TYPES[node["type"]]
        for where, value in kind.templates(config):
            walk(nid, where, value)
        if node["type"] == "condition":
            walk(nid, "config.expression", config.get("expression"))
        if node["type"] == "update_contact" and isinstance(config.get("attributeName"), str):
            name = config["attributeName"]
            if name not in WRITABLE_FIELDS and name not in templates.CONTACT_FIELDS:
                found.append((nid, "config.attributeName", name.removeprefix("customAttributes.")))
    return found


def unknown_custom_attributes(graph: FlowGraph, known: set[str]) -> list[FlowIssue]:
    """A flow naming a custom attribute the organization has not defined: which node,
    which field, which name (the organization's definitions are not the graph's to know,
    so this runs where they are: at create, update, validate and execute)."""
    return [
        FlowIssue(nid, where, f"'{name}' is not a custom attribute of this organization (define it first: /api/custom-attributes)")
        for nid, where, name in custom_attributes_named(graph)
        if name not in known
    ]
