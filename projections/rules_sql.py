"""Live-audience rules compiled to a SQL condition over ``dir_contacts`` (the same
semantics as ``domain.rules.matches``, which the property tests hold it to).

Values live in the row's ``data`` JSON; a value of the wrong JSON type counts as absent,
as in memory. Field names are checked by ``domain.rules.parse`` (standard fields and
attribute slugs), so they can be spelled into the JSON path; values are parameters."""

from __future__ import annotations

import json
from typing import Any

from domain.rules import field_catalog


def _path(field: str, pg: bool) -> str:
    parts = ["customAttributes", field[7:]] if field.startswith("custom.") else [field]
    if pg:
        return "'{" + ",".join(parts) + "}'"
    return "'$." + ".".join(f'"{p}"' for p in parts) + "'"


def _value_sql(field: str, type_: str | None, pg: bool) -> str:
    if field == "primaryPhone":
        return "primary_phone"
    if type_ is None:
        return "CAST(NULL AS TEXT)"
    p = _path(field, pg)
    if pg:
        # ``data`` is a jsonb column there: read in place, nothing parsed per row.
        typ = f"jsonb_typeof(data #> {p})"
        txt = f"(data #>> {p})"
        if type_ == "number":
            # numeric, exact; _node picks how it is compared (see there)
            return f"(CASE WHEN {typ} = 'number' THEN (data #> {p})::numeric END)"
        if type_ == "boolean":
            return f"(CASE WHEN {typ} = 'boolean' THEN (CASE WHEN {txt} = 'true' THEN 1 ELSE 0 END) END)"
        return f"(CASE WHEN {typ} = 'string' THEN {txt} END)"
    typ = f"json_type(data, {p})"
    val = f"json_extract(data, {p})"
    if type_ == "number":
        return f"(CASE WHEN {typ} IN ('integer', 'real') THEN {val} END)"
    if type_ == "boolean":
        return f"(CASE {typ} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"
    return f"(CASE WHEN {typ} = 'text' THEN {val} END)"


def compile_rules(tree: dict[str, Any], attribute_types: dict[str, str], pg: bool) -> tuple[str, list[Any]]:
    """A SQL condition (``?`` placeholders) and its parameters."""
    catalog = field_catalog(attribute_types)
    params: list[Any] = []
    sql = _node(tree, catalog, pg, params)
    return sql, params


def _node(node: dict[str, Any], catalog: dict[str, str], pg: bool, params: list[Any]) -> str:
    if "rules" in node:
        joiner = " AND " if node["combinator"] == "AND" else " OR "
        return "(" + joiner.join(_node(r, catalog, pg, params) for r in node["rules"]) + ")"
    field, op = node["field"], node["operator"]
    type_ = catalog.get(field)
    # Each condition reads the value once (the reading is the cost, per contact): an
    # absent value makes the comparison NULL, and COALESCE gives the verdict for absent.
    if pg and type_ is not None and field != "primaryPhone" and op in ("equals", "not_equals"):
        fast = _jsonb_equality(field, type_, node["value"], params)
        if fast is not None:
            return f"COALESCE({fast}, FALSE)" if op == "equals" else f"COALESCE(NOT {fast}, TRUE)"
    x = _value_sql(field, type_, pg)
    textual = type_ not in ("number", "boolean")
    if op == "is_empty":
        return f"COALESCE({x} = '', TRUE)" if textual else f"({x} IS NULL)"
    if op == "is_not_empty":
        return f"COALESCE({x} <> '', FALSE)" if textual else f"({x} IS NOT NULL)"
    value = node["value"]
    if type_ == "boolean":
        value = 1 if value else 0
    mark = "?"
    if type_ == "number" and pg:
        # As Python compares: an int exactly (numeric), a float as a double (jsonb keeps
        # a float as its shortest decimal, which reads back as the same double).
        if isinstance(value, int):
            mark = "CAST(? AS numeric)"
        else:
            x = f"CAST({x} AS float8)"
            mark = "CAST(? AS float8)"
    if type_ == "date" and pg:
        x = f'({x} COLLATE "C")'
    params.append(value)
    if op in ("contains", "not_contains"):
        found = f"strpos({x}, ?)" if pg else f"instr({x}, ?)"
        return f"COALESCE({found} > 0, FALSE)" if op == "contains" else f"COALESCE({found} = 0, TRUE)"
    if op == "not_equals":
        return f"COALESCE({x} <> {mark}, TRUE)"
    sym = {"equals": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
    return f"COALESCE({x} {sym} {mark}, FALSE)"


def _jsonb_equality(field: str, type_: str, value: Any, params: list[Any]) -> str | None:
    """``value = the stored value`` as one jsonb comparison (PostgreSQL), NULL when the
    field is absent. jsonb equality is typed as the in-memory one is: a string never
    equals a number, true never equals 1, 5 equals 5.0. The value is sent as JSON text,
    so the planner makes it a constant (``to_jsonb(?)`` would run for every row). Floats
    take the general path (comparing doubles, as Python does)."""
    if type_ == "number" and not isinstance(value, int):
        return None
    params.append(json.dumps(value))
    return f"((data #> {_path(field, True)}) = CAST(? AS jsonb))"
