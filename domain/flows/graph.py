"""The flow graph: parsing both documented shapes into one canonical form, and validation.

Canonical form (stored): ``{"startNodeId": str, "nodes": [Node, ...]}`` with, per node,
``{"id", "type", "label", "config", "outputs"}``. Both the older array form and the
newer map-keyed-by-id form of ``nodes`` are accepted. The walkthrough's play node
(``config.audioId``, ``outputs.onEnd``) is normalised to ``audioItems``/``onComplete``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from domain.errors import ValidationError

# Output names each node type may use (``default`` is a catch-all everywhere but hangup).
OUTPUTS: dict[str, tuple[str, ...]] = {
    "dial": ("onAnswer", "onVoicemail", "onNoAnswer", "onBusy", "onRejected", "onError", "default"),
    "answer": ("onSuccess", "onError", "default"),
    "play": ("onComplete", "onError", "default"),
    "say": ("onComplete", "onError", "default"),
    "dtmf": (
        "branches",
        "onSuccess",
        "onTimeout",
        "onInvalid",
        "onMaxRetries",
        "onError",
        "default",
    ),
    "set_variable": ("onSuccess", "onError", "default"),
    "hangup": (),
}
ALIASES = {"play": {"onEnd": "onComplete"}, "say": {"onEnd": "onComplete"}}
AUDIO_ITEM_TYPES = ("audioFile", "url", "tts")
DTMF_DIGITS = set("0123456789*#")
MAX_NODES = 500


@dataclass(frozen=True)
class FlowIssue:
    node_id: str | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"nodeId": self.node_id, "field": self.field, "message": self.message}


@dataclass
class FlowGraph:
    start_node_id: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def node(self, node_id: str) -> dict[str, Any]:
        return self.nodes[node_id]

    def to_json(self) -> dict[str, Any]:
        return {"startNodeId": self.start_node_id, "nodes": list(self.nodes.values())}

    @classmethod
    def from_canonical(cls, data: dict[str, Any]) -> FlowGraph:
        return cls(data["startNodeId"], {n["id"]: n for n in data["nodes"]})


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
    for node in nodes.values():
        issues.extend(_check_node(node, nodes))
    if not issues and isinstance(start, str):
        issues.extend(_check_reachability(start, nodes))
    graph = FlowGraph(start, nodes) if isinstance(start, str) and start in nodes else None
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
    if ntype not in OUTPUTS:
        known = ", ".join(sorted(OUTPUTS))
        return [FlowIssue(nid, "type", f"unknown node type '{ntype}' (known: {known})")]
    if node["label"] is not None and not isinstance(node["label"], str):
        issues.append(FlowIssue(nid, "label", "must be a string"))
    config, outputs = node["config"], node["outputs"]
    if not isinstance(config, dict):
        return issues + [FlowIssue(nid, "config", "must be an object")]
    if not isinstance(outputs, dict):
        return issues + [FlowIssue(nid, "outputs", "must be an object")]
    if ntype == "hangup" and outputs:
        issues.append(FlowIssue(nid, "outputs", "a hangup node is terminal and has no outputs"))
    for name, target in outputs.items():
        if name not in OUTPUTS[ntype]:
            allowed = ", ".join(OUTPUTS[ntype]) or "none"
            issues.append(FlowIssue(nid, f"outputs.{name}", f"unknown output (allowed: {allowed})"))
            continue
        if name == "branches":
            if not isinstance(target, dict):
                issues.append(FlowIssue(nid, "outputs.branches", "must map digits to node ids"))
                continue
            for digit, t in target.items():
                if not (isinstance(digit, str) and digit and set(digit) <= DTMF_DIGITS):
                    issues.append(FlowIssue(nid, f"outputs.branches.{digit}", "not a keypress"))
                if not isinstance(t, str) or t not in nodes:
                    issues.append(
                        FlowIssue(nid, f"outputs.branches.{digit}", f"points to missing node '{t}'")
                    )
        elif not isinstance(target, str) or target not in nodes:
            issues.append(FlowIssue(nid, f"outputs.{name}", f"points to missing node '{target}'"))
    issues.extend(_CONFIG_CHECKS.get(ntype, _no_check)(nid, config))
    return issues


def _no_check(nid: str, config: dict[str, Any]) -> list[FlowIssue]:
    return []


def _number(config: dict[str, Any], key: str, nid: str, lo: float, hi: float) -> list[FlowIssue]:
    v = config.get(key)
    if v is None:
        return []
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        return [FlowIssue(nid, f"config.{key}", f"must be a number between {lo} and {hi}")]
    return []


def _bool(config: dict[str, Any], key: str, nid: str) -> list[FlowIssue]:
    v = config.get(key)
    if v is not None and not isinstance(v, bool):
        return [FlowIssue(nid, f"config.{key}", "must be true or false")]
    return []


def _check_dial(nid: str, config: dict[str, Any]) -> list[FlowIssue]:
    return _number(config, "timeout", nid, 1000, 600000) + _bool(config, "enableAMD", nid)


def _check_audio_items(nid: str, items: Any, where: str) -> list[FlowIssue]:
    if not isinstance(items, list) or not items:
        return [FlowIssue(nid, where, "must be a non-empty array of audio items")]
    issues = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            issues.append(FlowIssue(nid, at, "must be an object"))
            continue
        itype = item.get("type")
        if itype == "audioFile":
            if not isinstance(item.get("audioId"), str) or not item["audioId"]:
                issues.append(FlowIssue(nid, f"{at}.audioId", "is required (an uploaded audio id)"))
        elif itype == "url":
            url = item.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                issues.append(FlowIssue(nid, f"{at}.url", "must be an http(s) URL"))
        elif itype == "tts":
            if not isinstance(item.get("text"), str) or not item["text"].strip():
                issues.append(FlowIssue(nid, f"{at}.text", "is required"))
        else:
            allowed = ", ".join(AUDIO_ITEM_TYPES)
            issues.append(FlowIssue(nid, f"{at}.type", f"unknown audio item type (allowed: {allowed})"))
    return issues


def _check_play(nid: str, config: dict[str, Any]) -> list[FlowIssue]:
    return _check_audio_items(nid, config.get("audioItems"), "config.audioItems")


LANGUAGES = ("ar-MA", "ar", "fr", "en", "fr-FR", "en-US", "en-GB")


def _check_say(nid: str, config: dict[str, Any]) -> list[FlowIssue]:
    issues = []
    if not isinstance(config.get("text"), str) or not config["text"].strip():
        issues.append(FlowIssue(nid, "config.text", "is required"))
    lang = config.get("language")
    if lang is not None and lang not in LANGUAGES:
        issues.append(FlowIssue(nid, "config.language", f"must be one of {', '.join(LANGUAGES)}"))
    if config.get("gender") not in (None, "male", "female"):
        issues.append(FlowIssue(nid, "config.gender", "must be 'male' or 'female'"))
    return issues


def _check_dtmf(nid: str, config: dict[str, Any]) -> list[FlowIssue]:
    issues = _number(config, "timeout", nid, 1000, 120000)
    mode = config.get("mode", "single_digit")
    if mode != "single_digit":
        issues.append(FlowIssue(nid, "config.mode", "only 'single_digit' is supported for now"))
    var = config.get("variable")
    if var is not None and (not isinstance(var, str) or not var.isidentifier()):
        issues.append(FlowIssue(nid, "config.variable", "must be an identifier"))
    single = config.get("singleDigitConfig") or {}
    allowed = single.get("allowedDigits") if isinstance(single, dict) else None
    if allowed is not None and (
        not isinstance(allowed, list) or not all(isinstance(d, str) and d in DTMF_DIGITS for d in allowed)
    ):
        issues.append(
            FlowIssue(nid, "config.singleDigitConfig.allowedDigits", "must be a list of single keys")
        )
    retry = config.get("retry")
    if retry is not None:
        if not isinstance(retry, dict):
            issues.append(FlowIssue(nid, "config.retry", "must be an object"))
        else:
            issues.extend(_number(retry, "maxRetries", nid, 0, 10))
    return issues


def _check_set_variable(nid: str, config: dict[str, Any]) -> list[FlowIssue]:
    var = config.get("variable")
    if not isinstance(var, str) or not var.isidentifier():
        return [FlowIssue(nid, "config.variable", "is required and must be an identifier")]
    return []


def _check_hangup(nid: str, config: dict[str, Any]) -> list[FlowIssue]:
    if config.get("reason") is not None and not isinstance(config["reason"], str):
        return [FlowIssue(nid, "config.reason", "must be a string")]
    return []


_CONFIG_CHECKS = {
    "dial": _check_dial,
    "play": _check_play,
    "say": _check_say,
    "dtmf": _check_dtmf,
    "set_variable": _check_set_variable,
    "hangup": _check_hangup,
}


def _check_reachability(start: str, nodes: dict[str, dict[str, Any]]) -> list[FlowIssue]:
    seen = {start}
    stack = [start]
    while stack:
        for _, t in targets(nodes[stack.pop()]):
            if t not in seen:
                seen.add(t)
                stack.append(t)
    return [
        FlowIssue(nid, "id", f"node '{nid}' is unreachable from the start node '{start}'")
        for nid in nodes
        if nid not in seen
    ]


def require_graph(data: Any) -> FlowGraph:
    graph, issues = parse_graph(data)
    if issues or graph is None:
        field_errors: dict[str, list[str]] = {}
        for i in issues:
            key = f"graph.nodes.{i.node_id}.{i.field}" if i.node_id else i.field
            field_errors.setdefault(key, []).append(i.message)
        first = issues[0] if issues else FlowIssue(None, "graph", "is invalid")
        where = f"node '{first.node_id}' {first.field}" if first.node_id else first.field
        raise ValidationError(f"Invalid flow graph: {where} {first.message}", field_errors)
    return graph
