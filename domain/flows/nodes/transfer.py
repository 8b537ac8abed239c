"""``transfer`` (ours): connect the callee to another number (an agent, a call centre) with
a caller id and a ring timeout, and branch on how that leg ended."""

from __future__ import annotations

from typing import Any

from domain.flows import templates
from domain.flows.issues import FlowIssue
from domain.flows.nodes.base import (
    Next,
    NodeType,
    Outcome,
    Wait,
    Walk,
    number,
    register,
    seconds,
    text,
)

# Twilio's DialCallStatus → the output taken.
OUTPUT_FOR_STATUS = {
    "completed": "onComplete",
    "answered": "onComplete",
    "busy": "onBusy",
    "no-answer": "onNoAnswer",
    "failed": "onError",
    "canceled": "onError",
}


@register
class Transfer(NodeType):
    name = "transfer"
    outputs = ("onComplete", "onBusy", "onNoAnswer", "onError", "default")

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues = number(config, "timeout", nid, 5000, 600000) + text(config, "callerId", nid)
        to = config.get("to")
        if to is None or (isinstance(to, str) and not to.strip()):
            issues.append(FlowIssue(nid, "config.to", "is required (a phone number, a template or a value source)"))
        elif isinstance(to, str) and "{{" not in to and not _looks_like_phone(to):
            issues.append(FlowIssue(nid, "config.to", f"'{to}' is not a phone number in E.164 form (+212...)"))
        elif isinstance(to, dict) and not templates.is_value_source(to):
            issues.append(FlowIssue(nid, "config.to", "must be a phone number or a value source"))
        cid = config.get("callerId")
        if isinstance(cid, str) and not _looks_like_phone(cid):
            issues.append(FlowIssue(nid, "config.callerId", f"'{cid}' is not a phone number in E.164 form"))
        return issues

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        return [("config.to", config.get("to"))]

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        to = str(walk.value(config["to"]) or "").strip()
        if not _looks_like_phone(to):
            walk.emit("transfer_failed", node, to=to, why="the number resolved to no phone number")
            return Next(("onError",))
        walk.emit("transfer_started", node, to=to, callerId=config.get("callerId"))
        walk.instruct(
            {"verb": "dial", "nodeId": node["id"], "number": to, "callerId": config.get("callerId"),
             "timeoutSeconds": seconds(config.get("timeout"), 30000)}
        )  # fmt: skip
        return Wait()

    def resume(self, walk: Walk, node: dict[str, Any], result: dict[str, Any]) -> Outcome:
        status = str(result.get("dialStatus") or "failed")
        duration = result.get("durationSeconds")
        walk.emit(
            "transfer_ended", node, status=status,
            durationMs=int(float(duration) * 1000) if duration not in (None, "") else None,
        )  # fmt: skip
        return Next((OUTPUT_FOR_STATUS.get(status, "onError"),), dead_end=f"transfer_{status}")


def _looks_like_phone(value: str) -> bool:
    digits = value.removeprefix("+")
    return value.startswith("+") and digits.isdigit() and 6 <= len(digits) <= 15
