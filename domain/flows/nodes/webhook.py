"""``webhook`` (ours): call an external HTTP endpoint (a CRM, a payment system) with a
template body, store fields of its JSON answer in flow variables, and branch on success,
failure or timeout.

The engine never performs I/O: entering the node sets a *request* on the turn and the
call waits; the application makes the HTTP call and resumes the engine with
``{"status", "json"}`` or ``{"error": "timeout" | "..."}``."""

from __future__ import annotations

from typing import Any

from domain.flows.issues import FlowIssue
from domain.flows.nodes.base import Next, NodeType, Outcome, Wait, Walk, number, register

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_TIMEOUT_MS = 5000


def _walk_json(template: Any, render: Any) -> Any:
    if isinstance(template, str):
        return render(template)
    if isinstance(template, list):
        return [_walk_json(v, render) for v in template]
    if isinstance(template, dict):
        return {k: _walk_json(v, render) for k, v in template.items()}
    return template


def _strings(value: Any, where: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _strings(v, f"{where}[{i}]")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _strings(v, f"{where}.{k}")]
    return []


def pick(data: Any, path: str) -> Any:
    """``data.items.0.id`` style lookup in a JSON answer (None when absent)."""
    for part in [p for p in path.split(".") if p]:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


@register
class Webhook(NodeType):
    name = "webhook"
    outputs = ("onSuccess", "onFailure", "onTimeout", "onError", "default")
    needs_caller = False

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues: list[FlowIssue] = []
        url = config.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            issues.append(FlowIssue(nid, "config.url", "is required and must be an http(s) URL"))
        method = config.get("method", "POST")
        if method not in METHODS:
            issues.append(FlowIssue(nid, "config.method", f"'{method}' is not one of {', '.join(METHODS)}"))
        issues += number(config, "timeout", nid, 100, 15000)
        headers = config.get("headers")
        if headers is not None and (not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values())):
            issues.append(FlowIssue(nid, "config.headers", "must map header names to strings"))
        mapping = config.get("responseMapping")
        if mapping is not None:
            if not isinstance(mapping, dict):
                issues.append(FlowIssue(nid, "config.responseMapping", "must map variable names to JSON paths"))
            else:
                for var, path in mapping.items():
                    if not isinstance(var, str) or not var.isidentifier():
                        issues.append(FlowIssue(nid, f"config.responseMapping.{var}", f"'{var}' is not a variable name"))
                    if not isinstance(path, str) or not path:
                        issues.append(FlowIssue(nid, f"config.responseMapping.{var}", "must be a JSON path such as 'data.status'"))
        return issues

    def assigns(self, config: dict[str, Any]) -> list[str]:
        mapping = config.get("responseMapping")
        return [k for k in mapping if isinstance(k, str)] if isinstance(mapping, dict) else []

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        out = [("config.url", config.get("url"))]
        out += _strings(config.get("headers"), "config.headers") + _strings(config.get("body"), "config.body")
        return out

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        walk.request = {
            "kind": "webhook",
            "nodeId": node["id"],
            "method": config.get("method", "POST"),
            "url": walk.render(config["url"]),
            "headers": {k: walk.render(v) for k, v in (config.get("headers") or {}).items()},
            "body": _walk_json(config.get("body"), walk.render),
            "timeoutMs": int(config.get("timeout") or DEFAULT_TIMEOUT_MS),
            "visit": walk.state.visits,  # the flow position: a retried callback calls once
        }
        return Wait()

    def resume(self, walk: Walk, node: dict[str, Any], result: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        status = result.get("status")
        error = result.get("error")
        if error == "timeout":
            outcome, names = "timeout", ("onTimeout", "onFailure")
        elif error or not isinstance(status, int):
            outcome, names = "error", ("onFailure", "onError")
        elif 200 <= status < 300:
            outcome, names = "success", ("onSuccess",)
        else:
            outcome, names = "failure", ("onFailure",)
        walk.emit("webhook_called", node, url=walk.render(config["url"]), method=config.get("method", "POST"), status=status, outcome=outcome, error=error)
        if outcome == "success":
            for var, path in (config.get("responseMapping") or {}).items():
                walk.set_variable(node, var, pick(result.get("json"), path))
        return Next(names, dead_end=f"webhook_{outcome}")
