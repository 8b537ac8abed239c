"""Facts about the contact that the platform acts on after the call's turn is saved:
``update_contact`` and ``sms`` (both non-fatal: the call goes on) and ``opt_out`` (the
number goes on the do-not-call list; the callee hears a confirmation and the call ends).
The engine only records the requests as events; the application carries them out."""

from __future__ import annotations

from typing import Any

from domain.flows import templates
from domain.flows.issues import FlowIssue
from domain.flows.nodes.audio import LANGUAGES
from domain.flows.nodes.base import (
    Next,
    NodeType,
    Outcome,
    Stop,
    Walk,
    failed,
    one_of,
    register,
    text,
    unresolved,
)

WRITABLE_FIELDS = templates.CONTACT_FIELDS - {"id", "phone", "primaryPhone", "customAttributes"}


def phone_number(value: Any) -> bool:
    """E.164-shaped (the call's own number always is; a template or source may not be)."""
    digits = str(value or "").strip()
    return digits.startswith("+") and digits[1:].isdigit() and 8 <= len(digits) - 1 <= 15


@register
class UpdateContact(NodeType):
    name = "update_contact"
    needs_caller = False

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues = text(config, "attributeName", nid, required=True)
        name = config.get("attributeName")
        if isinstance(name, str) and name in ("id", "phone", "primaryPhone"):
            issues.append(FlowIssue(nid, "config.attributeName", f"'{name}' cannot be changed by a flow"))
        if "value" not in config:
            issues.append(FlowIssue(nid, "config.value", "is required (a literal, a template or a value source)"))
        return issues

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        return [("config.value", config.get("value"))]

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        name = str(config["attributeName"])
        value = walk.value(config.get("value"))
        if why := unresolved(config.get("value"), value):
            return failed(walk, node, why, "onComplete")
        field = name.removeprefix("customAttributes.")
        kind = "contactField" if name in WRITABLE_FIELDS else "customAttribute"
        walk.emit("contact_update_requested", node, attributeName=field, kind=kind, value=value)
        updates = walk.state.contact_updates
        if kind == "contactField":
            updates[field] = value
        else:
            updates.setdefault("customAttributes", {})[field] = value
        return Next(("onComplete",))


@register
class Sms(NodeType):
    name = "sms"
    needs_caller = False

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues = text(config, "messageTemplate", nid, required=True) + text(config, "senderId", nid)
        if isinstance(config.get("messageTemplate"), str) and len(config["messageTemplate"]) > 1600:
            issues.append(FlowIssue(nid, "config.messageTemplate", "is longer than 1600 characters"))
        return issues

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        return [("config.messageTemplate", config.get("messageTemplate")), ("config.to", config.get("to"))]

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        to = walk.value(config["to"]) if config.get("to") else (walk.context.get("call") or {}).get("to")
        body = walk.render(config["messageTemplate"])
        if not phone_number(to):
            return failed(walk, node, f"the recipient {to!r} is not a phone number", "onComplete")
        if not body.strip():
            return failed(walk, node, "the message rendered empty", "onComplete")
        walk.emit("sms_requested", node, to=to, body=body, senderId=config.get("senderId"))
        return Next(("onComplete",))


DEFAULT_CONFIRMATION = {
    "fr": "Votre numéro a été retiré de notre liste d'appels. Au revoir.",
    "ar": "تمت إزالة رقمك من قائمة الاتصال. مع السلامة.",
    "en": "Your number has been removed from our call list. Goodbye.",
}


@register
class OptOut(NodeType):
    name = "opt_out"
    outputs = ()
    terminal = True

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        return text(config, "confirmationText", nid) + text(config, "audioId", nid) + one_of(config, "language", nid, LANGUAGES) + text(config, "reason", nid)

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        return [("config.confirmationText", config.get("confirmationText"))]

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        phone = (walk.context.get("call") or {}).get("to")
        walk.emit("opt_out_requested", node, phone=phone, reason=config.get("reason") or "callee_request")
        if config.get("audioId"):
            walk.instruct({"verb": "play", "audioId": config["audioId"]})
        else:
            lang = config.get("language") or "en"
            default = DEFAULT_CONFIRMATION.get(lang.split("-")[0], DEFAULT_CONFIRMATION["en"])
            walk.instruct({"verb": "say", "text": walk.render(config.get("confirmationText") or default), "language": lang, "gender": "female"})
        return Stop("opted_out")
