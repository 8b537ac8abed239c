"""Live-audience rules: a tree of AND/OR groups over contact fields and custom attributes.

    {"combinator": "AND", "rules": [
        {"field": "city", "operator": "equals", "value": "Casablanca"},
        {"combinator": "OR", "rules": [
            {"field": "custom.balance", "operator": "gt", "value": 1000},
            {"field": "custom.vip", "operator": "equals", "value": true}]}]}

The tree is at most 3 levels deep counting the root group and the leaves (root → group →
condition). ``parse`` checks the tree against the organization's fields and returns a
canonical copy; a bad rule is a ValidationError keyed by its path (``rules[1].rules[0]``).
``matches`` evaluates a rule tree over a contact document in memory; the read model
compiles the same tree to SQL (projections/rules_sql.py) and both must agree.

Semantics, the same in both places: a value of the wrong type counts as absent;
``is_empty`` is absent (or the empty string for text); ``not_equals`` and
``not_contains`` are true for an absent value; every other operator is false for it.
Text comparisons are exact (case-sensitive).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from domain.contact import STANDARD_FIELDS
from domain.errors import ValidationError

MAX_DEPTH = 3
MAX_LEAVES = 50
MAX_NUMBER = 2**53  # a rule's numbers stay below, where every integer is exact as a double
TEXTUAL = ("text", "email", "url", "phone_number")
EMPTINESS = ("is_empty", "is_not_empty")
OPERATORS: dict[str, tuple[str, ...]] = {
    **{t: ("equals", "not_equals", *EMPTINESS, "contains", "not_contains") for t in TEXTUAL},
    "number": ("equals", "not_equals", *EMPTINESS, "gt", "gte", "lt", "lte"),
    "date": ("equals", "not_equals", *EMPTINESS, "gt", "gte", "lt", "lte"),
    "boolean": ("equals", "not_equals", *EMPTINESS),
}
ALL_OPERATORS = ("equals", "not_equals", "is_empty", "is_not_empty", "gt", "gte", "lt", "lte", "contains", "not_contains")
STANDARD_TYPES: dict[str, str] = {
    **{f: "text" for f in STANDARD_FIELDS},
    "primaryEmail": "email",
    "primaryPhone": "phone_number",
    "timezone": "text",
}


def field_catalog(attribute_types: dict[str, str]) -> dict[str, str]:
    """Every field a rule may name, with its type: standard fields and ``custom.{name}``."""
    return {**STANDARD_TYPES, **{f"custom.{n}": t for n, t in attribute_types.items()}}


def canonical_field(field: str) -> str:
    for prefix in ("customAttributes.", "custom_attributes.", "custom."):
        if field.startswith(prefix):
            return "custom." + field[len(prefix):]
    return field


def parse(tree: Any, attribute_types: dict[str, str], path: str = "rules") -> dict[str, Any]:
    """The canonical rule tree, or a ValidationError naming the first bad rule."""
    catalog = field_catalog(attribute_types)
    leaves = [0]
    out = _group(tree, catalog, path, 1, leaves)
    if leaves[0] > MAX_LEAVES:
        raise ValidationError.single(path, f"has {leaves[0]} conditions; at most {MAX_LEAVES} are allowed")
    return out


def _group(node: Any, catalog: dict[str, str], path: str, depth: int, leaves: list[int]) -> dict[str, Any]:
    if not isinstance(node, dict) or "rules" not in node:
        raise ValidationError.single(path, "must be a group {\"combinator\": \"AND\"|\"OR\", \"rules\": [...]}")
    comb = node.get("combinator")
    if not isinstance(comb, str) or comb.upper() not in ("AND", "OR"):
        raise ValidationError.single(path, "combinator must be 'AND' or 'OR'")
    children = node["rules"]
    if not isinstance(children, list) or not children:
        raise ValidationError.single(path, "must hold a non-empty list of rules")
    out = []
    for i, child in enumerate(children):
        child_path = f"{path}[{i}]" if path == "rules" else f"{path}.rules[{i}]"
        if isinstance(child, dict) and "rules" in child:
            if depth + 1 >= MAX_DEPTH:
                raise ValidationError.single(
                    child_path, f"nests too deep: at most {MAX_DEPTH} levels (root group → group → condition)"
                )
            out.append(_group(child, catalog, child_path, depth + 1, leaves))
        else:
            leaves[0] += 1
            out.append(_leaf(child, catalog, child_path))
    return {"combinator": comb.upper(), "rules": out}


def _leaf(node: Any, catalog: dict[str, str], path: str) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise ValidationError.single(path, "must be a condition {\"field\", \"operator\", \"value\"} or a group")
    raw_field = node.get("field")
    if not isinstance(raw_field, str):
        raise ValidationError.single(path, "field must be a string")
    field = canonical_field(raw_field)
    type_ = catalog.get(field)
    if type_ is None:
        raise ValidationError.single(path, f"unknown field '{raw_field}'")
    op = node.get("operator")
    if op not in ALL_OPERATORS:
        raise ValidationError.single(path, f"unknown operator '{op}' (known: {', '.join(ALL_OPERATORS)})")
    if op not in OPERATORS[type_]:
        raise ValidationError.single(
            path,
            f"operator '{op}' is not allowed on {type_} field '{raw_field}' (allowed: {', '.join(OPERATORS[type_])})",
        )
    if op in EMPTINESS:
        return {"field": field, "operator": op}
    value = node.get("value")
    try:
        value = _value(type_, op, value)
    except ValueError as exc:
        raise ValidationError.single(path, f"value for '{raw_field}' {exc}") from None
    return {"field": field, "operator": op, "value": value}


def _value(type_: str, op: str, value: Any) -> Any:
    if type_ == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        if not abs(value) < MAX_NUMBER:  # (NaN too) beyond, SQL engines and doubles round
            raise ValueError(f"must be a finite number between -{MAX_NUMBER - 1} and {MAX_NUMBER - 1}")
        return value
    if type_ == "boolean":
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")  # noqa: TRY004 - a value's validation message (400), not a programming error
    if "\x00" in value or "\ufffd" in value:
        # PostgreSQL cannot store U+0000: the directory keeps it as U+FFFD (projections/
        # directory.py), so neither may be compared against.
        raise ValueError("must not contain the characters U+0000 or U+FFFD")
    if type_ == "date":
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError("must be a date (YYYY-MM-DD)") from None
    if op in ("contains", "not_contains") and value == "":
        raise ValueError("must not be empty")
    return value


def fields_of(tree: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for r in tree["rules"]:
        out |= fields_of(r) if "rules" in r else {r["field"]}
    return out


# -- evaluation in memory -----------------------------------------------------------------


def typed_value(doc: dict[str, Any], field: str, type_: str) -> Any:
    """The contact's value of ``field``, or None when absent or not of the field's type."""
    if field.startswith("custom."):
        raw = (doc.get("customAttributes") or {}).get(field[7:])
    else:
        raw = doc.get(field)
    if type_ == "number":
        return raw if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
    if type_ == "boolean":
        return raw if isinstance(raw, bool) else None
    return raw if isinstance(raw, str) else None


def matches(tree: dict[str, Any], doc: dict[str, Any], attribute_types: dict[str, str]) -> bool:
    """Does the contact document (``primaryPhone``, standard fields, ``customAttributes``) match?"""
    catalog = field_catalog(attribute_types)
    return _eval(tree, doc, catalog)


def _eval(node: dict[str, Any], doc: dict[str, Any], catalog: dict[str, str]) -> bool:
    if "rules" in node:
        results = (_eval(r, doc, catalog) for r in node["rules"])
        return all(results) if node["combinator"] == "AND" else any(results)
    type_ = catalog.get(node["field"])
    if type_ is None:  # the attribute was removed since: its values can no longer be read
        v = None
        type_ = "text"
    else:
        v = typed_value(doc, node["field"], type_)
    op = node["operator"]
    if op == "is_empty":
        return v is None or v == ""
    if op == "is_not_empty":
        return not (v is None or v == "")
    if op == "not_equals":
        return v is None or v != node["value"]
    if op == "not_contains":
        return v is None or node["value"] not in v
    if v is None:
        return False
    target = node["value"]
    if op == "equals":
        return bool(v == target)
    if op == "contains":
        return target in v
    if op == "gt":
        return bool(v > target)
    if op == "gte":
        return bool(v >= target)
    if op == "lt":
        return bool(v < target)
    return bool(v <= target)
