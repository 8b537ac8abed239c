"""Decisions and memory: ``condition`` (simple and and/or expressions, DOMAIN.md §5.4)
and ``set_variable``."""

from __future__ import annotations

from typing import Any

from domain.flows import templates
from domain.flows.issues import FlowIssue
from domain.flows.nodes.base import (
    Next,
    NodeType,
    Outcome,
    Walk,
    failed,
    register,
    unresolved,
    variable_name,
)

OPERATORS = ("eq", "neq", "gt", "lt", "gte", "lte", "contains", "startsWith", "endsWith")
VARIABLE_TYPES = ("flow_variable", "custom_attribute", "contact_field", "system_variable")
MAX_DEPTH = 5


class ConditionError(ValueError):
    """The expression cannot be evaluated on these values (e.g. 'gt' on a word)."""


def check_expression(nid: str, expr: Any, where: str, depth: int = 0) -> list[FlowIssue]:
    if not isinstance(expr, dict):
        return [FlowIssue(nid, where, "must be an expression object")]
    kind = expr.get("type", "simple")
    if kind in ("and", "or"):
        conds = expr.get("conditions")
        if depth >= MAX_DEPTH:
            return [FlowIssue(nid, where, f"nests deeper than {MAX_DEPTH} levels")]
        if not isinstance(conds, list) or not conds:
            return [FlowIssue(nid, f"{where}.conditions", f"'{kind}' needs a non-empty list of conditions")]
        out: list[FlowIssue] = []
        for i, c in enumerate(conds):
            out += check_expression(nid, c, f"{where}.conditions[{i}]", depth + 1)
        return out
    if kind != "simple":
        return [FlowIssue(nid, f"{where}.type", f"'{kind}' is not one of simple, and, or")]
    issues: list[FlowIssue] = []
    var = expr.get("variable")
    if not isinstance(var, dict):
        issues.append(FlowIssue(nid, f"{where}.variable", "must be {type, name}"))
    else:
        if var.get("type") not in VARIABLE_TYPES:
            issues.append(FlowIssue(nid, f"{where}.variable.type", f"'{var.get('type')}' is not one of {', '.join(VARIABLE_TYPES)}"))
        if not isinstance(var.get("name"), str) or not var["name"]:
            issues.append(FlowIssue(nid, f"{where}.variable.name", "is required"))
        elif var.get("type") == "contact_field" and var["name"].split(".")[0] not in templates.CONTACT_FIELDS:
            issues.append(FlowIssue(nid, f"{where}.variable.name", f"'{var['name']}' is not a contact field"))
        elif var.get("type") == "system_variable" and var["name"].removeprefix("sys.") not in templates.SYSTEM_VARIABLES:
            issues.append(FlowIssue(nid, f"{where}.variable.name", f"'{var['name']}' is not a system variable"))
    if expr.get("operator") not in OPERATORS:
        issues.append(FlowIssue(nid, f"{where}.operator", f"'{expr.get('operator')}' is not one of {', '.join(OPERATORS)}"))
    if "value" not in expr:
        issues.append(FlowIssue(nid, f"{where}.value", "is required"))
    return issues


def expression_variables(expr: Any, where: str) -> list[tuple[str, str]]:
    """(field, flow variable name) of every flow_variable the expression reads."""
    if not isinstance(expr, dict):
        return []
    if expr.get("type") in ("and", "or"):
        return [
            pair
            for i, c in enumerate(expr.get("conditions") or [])
            for pair in expression_variables(c, f"{where}.conditions[{i}]")
        ]
    var = expr.get("variable")
    if isinstance(var, dict) and var.get("type") == "flow_variable" and isinstance(var.get("name"), str):
        return [(f"{where}.variable.name", var["name"])]
    return []


def _operand(var: dict[str, Any], context: dict[str, Any]) -> Any:
    name = str(var.get("name"))
    kind = var.get("type")
    if kind == "flow_variable":
        return (context.get("variables") or {}).get(name)
    if kind == "custom_attribute":
        return templates.lookup(context, "contact", ["customAttributes", name])
    if kind == "contact_field":
        return templates.lookup(context, "contact", name.split("."))
    return (context.get("sys") or {}).get(name.removeprefix("sys."))


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def evaluate(expr: dict[str, Any], context: dict[str, Any]) -> bool:
    kind = expr.get("type", "simple")
    if kind == "and":
        return all(evaluate(c, context) for c in expr["conditions"])
    if kind == "or":
        return any(evaluate(c, context) for c in expr["conditions"])
    left = _operand(expr["variable"], context)
    right = templates.resolve(expr.get("value"), context)
    op = expr["operator"]
    if left is None:
        return {"eq": right is None, "neq": right is not None}.get(op, False)
    if op in ("contains", "startsWith", "endsWith"):
        s, t = str(left), "" if right is None else str(right)
        return {"contains": t in s, "startsWith": s.startswith(t), "endsWith": s.endswith(t)}[op]
    ln, rn = _as_number(left), _as_number(right)
    a: Any
    b: Any
    if ln is not None and rn is not None:
        a, b = ln, rn
    elif op in ("eq", "neq"):
        a, b = str(left).lower() if isinstance(left, bool) else str(left), str(right).lower() if isinstance(right, bool) else str(right)
    elif isinstance(left, str) and isinstance(right, str):
        a, b = left, right  # ISO dates and times compare as text
    else:
        raise ConditionError(f"'{op}' needs two numbers, got {left!r} and {right!r}")
    return {"eq": a == b, "neq": a != b, "gt": a > b, "lt": a < b, "gte": a >= b, "lte": a <= b}[op]


@register
class Condition(NodeType):
    name = "condition"
    outputs = ("onTrue", "onFalse", "onError", "default")
    needs_caller = False

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        if "expression" not in config:
            return [FlowIssue(nid, "config.expression", "is required")]
        return check_expression(nid, config["expression"], "config.expression")

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        return [(f, {"source": "variable", "variableName": n}) for f, n in expression_variables(config.get("expression"), "config.expression")]

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        try:
            result = evaluate(node["config"]["expression"], walk.context)
        except ConditionError as exc:
            walk.emit("condition_evaluated", node, result=None, error=str(exc))
            return Next(("onError", "onFalse"))
        walk.emit("condition_evaluated", node, result=result)
        return Next(("onTrue",) if result else ("onFalse",))


@register
class SetVariable(NodeType):
    name = "set_variable"
    outputs = ("onSuccess", "onError", "default")
    needs_caller = False

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues = variable_name(config, "variable", nid, required=True)
        if "value" not in config:
            issues.append(FlowIssue(nid, "config.value", "is required (a literal, a template or a value source)"))
        return issues

    def assigns(self, config: dict[str, Any]) -> list[str]:
        return [config["variable"]] if isinstance(config.get("variable"), str) else []

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        return [("config.value", config.get("value"))]

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        value = walk.value(config.get("value"))
        if why := unresolved(config.get("value"), value):
            return failed(walk, node, why, "onSuccess")
        walk.set_variable(node, config["variable"], value)
        return Next(("onSuccess",))
