"""The call itself: ``dial`` (outbound start), ``answer`` (inbound start), ``hangup``."""

from __future__ import annotations

from typing import Any

from domain.flows.issues import FlowIssue
from domain.flows.nodes.base import (
    Next,
    NodeType,
    Outcome,
    Stop,
    Walk,
    boolean,
    number,
    register,
    text,
)

# What an unanswered dial leaves through, per attempt outcome.
DIAL_OUTPUT_FOR_OUTCOME = {
    "busy": "onBusy",
    "no_answer": "onNoAnswer",
    "rejected": "onRejected",
    "failed": "onError",
    "voicemail": "onVoicemail",
}
HANGUP_TYPES = ("normal", "voicemail", "no_answer", "busy", "timeout", "error", "opt_out")


@register
class Dial(NodeType):
    name = "dial"
    outputs = ("onAnswer", "onVoicemail", "onNoAnswer", "onBusy", "onRejected", "onError", "default")
    needs_caller = False

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        return number(config, "timeout", nid, 1000, 600000) + boolean(config, "enableAMD", nid)

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        if walk.unanswered_outcome is not None:
            return Next((DIAL_OUTPUT_FOR_OUTCOME.get(walk.unanswered_outcome, "onError"),))
        amd = (node.get("config") or {}).get("enableAMD", True)
        if walk.answered_by == "machine" and amd:
            return Next(("onVoicemail",))
        return Next(("onAnswer",))


@register
class Answer(NodeType):
    name = "answer"
    outputs = ("onSuccess", "onError", "default")

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        return Next(("onSuccess",))


@register
class Hangup(NodeType):
    name = "hangup"
    outputs = ()
    terminal = True
    needs_caller = False

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues = text(config, "reason", nid)
        if config.get("hangupType") is not None and config["hangupType"] not in HANGUP_TYPES:
            issues.append(FlowIssue(nid, "config.hangupType", f"must be one of {', '.join(HANGUP_TYPES)}"))
        return issues

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        walk.emit("flow_hangup", node, hangupType=config.get("hangupType", "normal"), hangupReason=config.get("reason"))
        return Stop(str(config.get("reason") or "completed"))
