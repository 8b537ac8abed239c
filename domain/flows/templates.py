"""Personalisation: ``{{ $contact.firstName }}`` templates and value sources
(``{"source": "contactField" | "customAttribute" | "variable", ...}``), DOMAIN.md §5.5.

Rendering is pure: it reads a context ``{"contact", "variables", "call", "sys"}``.
``names_in`` lists what a template refers to, so validation can refuse a template
naming a variable no node sets or a contact field that does not exist."""

from __future__ import annotations

import re
from typing import Any

# Any ``{{ $scope.path }}``; unknown scopes are found by validation, not silently kept.
_TEMPLATE = re.compile(r"\{\{\s*\$([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z0-9_]+)*)\s*\}\}")

SCOPES = ("contact", "variables", "call", "sys")
CONTACT_FIELDS = frozenset(
    {
        "id", "firstName", "lastName", "fullName", "phone", "primaryPhone", "email", "primaryEmail",
        "address", "city", "state", "zip", "occupation", "preferredChannel", "gender", "customAttributes",
    }
)  # fmt: skip
CALL_FIELDS = frozenset({"from", "to", "id", "attempt"})
SYSTEM_VARIABLES = frozenset(
    {
        "callId", "callStatus", "callDirection", "answeredBy", "contactId", "contactPhone",
        "contactName", "organizationId", "programId",
    }
)  # fmt: skip
VALUE_SOURCES = ("contactField", "customAttribute", "variable")


def lookup(context: dict[str, Any], scope: str, path: list[str]) -> Any:
    value: Any = context.get(scope) or {}
    if scope == "contact" and path and path[0] == "fullName" and "fullName" not in value:
        first, last = value.get("firstName"), value.get("lastName")
        return " ".join(p for p in (first, last) if p) or None
    if scope == "contact" and path and path[0] == "email" and "email" not in value:
        path = ["primaryEmail", *path[1:]]
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def render(text: str, context: dict[str, Any]) -> str:
    """Replace each ``{{ $scope.path }}`` with its value ('' when absent)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in SCOPES:
            return ""
        value = lookup(context, m.group(1), [p for p in m.group(2).split(".") if p])
        return "" if value is None else str(value)

    return _TEMPLATE.sub(sub, text)


def names_in(text: str) -> list[tuple[str, list[str]]]:
    """Every (scope, path) a template refers to."""
    return [(m.group(1), [p for p in m.group(2).split(".") if p]) for m in _TEMPLATE.finditer(text)]


def problem_with(scope: str, path: list[str], flow_variables: set[str]) -> str | None:
    """Why a template reference cannot resolve, or None when it can."""
    ref = "$" + ".".join([scope, *path])
    if scope not in SCOPES:
        return f"'{ref}': unknown scope '${scope}' (use $contact, $variables, $call or $sys)"
    if not path:
        return f"'{ref}': names no field"
    head = path[0]
    if scope == "contact":
        if head not in CONTACT_FIELDS:
            return f"'{ref}': '{head}' is not a contact field"
        if head == "customAttributes" and len(path) < 2:
            return f"'{ref}': name the custom attribute ($contact.customAttributes.NAME)"
    elif scope == "variables" and head not in flow_variables:
        return f"'{ref}': no node of this flow sets the variable '{head}'"
    elif scope == "call" and head not in CALL_FIELDS:
        return f"'{ref}': '{head}' is not a call field ({', '.join(sorted(CALL_FIELDS))})"
    elif scope == "sys" and head not in SYSTEM_VARIABLES:
        return f"'{ref}': '{head}' is not a system variable"
    return None


def is_value_source(value: Any) -> bool:
    return isinstance(value, dict) and "source" in value


def resolve(value: Any, context: dict[str, Any]) -> Any:
    """A literal (templates rendered), or the value a value source points at."""
    if isinstance(value, str):
        return render(value, context)
    if not is_value_source(value):
        return value
    source = value.get("source")
    if source == "contactField":
        return lookup(context, "contact", str(value.get("field", "")).split("."))
    if source == "customAttribute":
        return lookup(context, "contact", ["customAttributes", str(value.get("attributeName", ""))])
    if source == "variable":
        return (context.get("variables") or {}).get(value.get("variableName"))
    return None


def value_source_problem(value: Any, flow_variables: set[str]) -> str | None:
    """Why a value source is malformed or points at nothing, or None."""
    source = value.get("source")
    if source == "contactField":
        field = value.get("field")
        if not isinstance(field, str) or field.split(".")[0] not in CONTACT_FIELDS:
            return f"contactField '{field}' is not a contact field"
    elif source == "customAttribute":
        if not isinstance(value.get("attributeName"), str) or not value["attributeName"]:
            return "customAttribute needs an attributeName"
    elif source == "variable":
        name = value.get("variableName")
        if not isinstance(name, str) or name not in flow_variables:
            return f"no node of this flow sets the variable '{name}'"
    else:
        return f"unknown source '{source}' (allowed: {', '.join(VALUE_SOURCES)})"
    return None
