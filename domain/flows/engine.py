"""The pure flow engine: given a graph, the call's flow state and what just happened on the
phone (answered, keys pressed, nothing pressed, not answered), it returns the nodes
entered, the instructions for the phone network and the next state. No I/O: the
telephony adapter renders instructions as TwiML, the Call aggregate records the turn.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from domain.flows.graph import FlowGraph

MAX_NODE_VISITS = 100  # loops are allowed, endless loops are not

# What an unanswered dial leaves through, per attempt outcome.
DIAL_OUTPUT_FOR_OUTCOME = {
    "busy": "onBusy",
    "no_answer": "onNoAnswer",
    "rejected": "onRejected",
    "failed": "onError",
    "voicemail": "onVoicemail",
}

_TEMPLATE = re.compile(r"\{\{\s*\$(contact|variables|call|sys)\.([A-Za-z0-9_.]+)\s*\}\}")


@dataclass
class FlowState:
    waiting_node: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    visits: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    ended: bool = False
    reached_hangup: bool = False
    hangup_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FlowState:
        return cls(**(data or {}))


@dataclass
class Turn:
    steps: list[dict[str, Any]]
    instructions: list[dict[str, Any]]
    state: FlowState
    resolved: dict[str, Any] | None = None  # the waiting node that this turn resolved
    input: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "instructions": self.instructions,
            "state": self.state.to_dict(),
            "resolved": self.resolved,
            "input": self.input,
        }


def render_template(text: str, context: dict[str, Any]) -> str:
    """``{{ $contact.firstName }}``, ``{{ $variables.code }}``, ``{{ $call.from }}``."""

    def lookup(m: re.Match[str]) -> str:
        scope = context.get({"variables": "variables"}.get(m.group(1), m.group(1))) or {}
        value: Any = scope
        for part in m.group(2).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return "" if value is None else str(value)

    return _TEMPLATE.sub(lookup, text)


def _step(node: dict[str, Any], output_path: str | None) -> dict[str, Any]:
    return {
        "nodeId": node["id"],
        "nodeType": node["type"],
        "nodeLabel": node.get("label"),
        "outputPath": output_path,
    }


def _route(node: dict[str, Any], *names: str) -> tuple[str | None, str | None]:
    outputs = node.get("outputs") or {}
    for name in (*names, "default"):
        target = outputs.get(name)
        if isinstance(target, str):
            return target, name
    return None, None


class _Walk:
    def __init__(self, graph: FlowGraph, state: FlowState, context: dict[str, Any]) -> None:
        self.graph = graph
        self.state = state
        self.context = {**context, "variables": state.variables}
        self.steps: list[dict[str, Any]] = []
        self.instructions: list[dict[str, Any]] = []

    def end(self, reason: str, *, hangup: bool) -> None:
        self.state.ended = True
        self.state.reached_hangup = hangup
        self.state.hangup_reason = reason
        self.state.waiting_node = None
        self.instructions.append({"verb": "hangup", "reason": reason})

    def run(self, node_id: str | None, *, answered: bool = True) -> None:
        while node_id is not None:
            if self.state.visits >= MAX_NODE_VISITS:
                self.end("max_node_visits", hangup=False)
                return
            self.state.visits += 1
            node = self.graph.node(node_id)
            ntype, config = node["type"], node.get("config") or {}
            if ntype == "hangup":
                self.steps.append(_step(node, None))
                self.end(str(config.get("reason") or "completed"), hangup=True)
                return
            if ntype == "dtmf":
                if not answered:
                    break
                self.steps.append(_step(node, None))
                self.gather(node)
                return
            if ntype in ("play", "say"):
                if not answered:
                    break
                self.speak(node)
                out = ("onComplete",)
            elif ntype == "set_variable":
                value = config.get("value")
                if isinstance(value, str):
                    value = render_template(value, self.context)
                self.state.variables[config["variable"]] = value
                out = ("onSuccess",)
            elif ntype == "dial":
                out = ("onAnswer",)
            else:  # answer
                out = ("onSuccess",)
            node_id, path = _route(node, *out)
            self.steps.append(_step(node, path))
        if answered:
            self.end("flow_end", hangup=False)
        else:
            self.state.ended = True

    def speak(self, node: dict[str, Any]) -> None:
        config = node.get("config") or {}
        if node["type"] == "say":
            self.instructions.append(
                {
                    "verb": "say",
                    "text": render_template(config["text"], self.context),
                    "language": config.get("language"),
                    "gender": config.get("gender", "female"),
                }
            )
            return
        for item in config.get("audioItems") or []:
            if item.get("type") == "tts":
                self.instructions.append(
                    {
                        "verb": "say",
                        "text": render_template(item["text"], self.context),
                        "language": item.get("language") or config.get("language"),
                        "gender": item.get("gender", "female"),
                    }
                )
            elif item.get("type") == "url":
                self.instructions.append({"verb": "play", "url": item["url"]})
            else:
                self.instructions.append({"verb": "play", "audioId": item.get("audioId")})

    def gather(self, node: dict[str, Any], prompt_audio: str | None = None) -> None:
        config = node.get("config") or {}
        if prompt_audio:
            self.instructions.append({"verb": "play", "audioId": prompt_audio})
        self.instructions.append(
            {
                "verb": "gather",
                "nodeId": node["id"],
                "numDigits": 1,
                "timeoutSeconds": max(1, round((config.get("timeout") or 10000) / 1000)),
            }
        )
        self.state.waiting_node = node["id"]


def on_answer(graph: FlowGraph, answered_by: str | None, context: dict[str, Any]) -> Turn:
    """The callee picked up: run from the start node until the call waits for input or ends."""
    state = FlowState()
    walk = _Walk(graph, state, context)
    start = graph.node(graph.start_node_id)
    if start["type"] == "dial":
        amd = (start.get("config") or {}).get("enableAMD", True)
        names = ("onVoicemail",) if answered_by == "machine" and amd else ("onAnswer",)
        state.visits += 1
        next_id, path = _route(start, *names)
        walk.steps.append(_step(start, path))
        walk.run(next_id)
    else:
        walk.run(graph.start_node_id)
    return Turn(walk.steps, walk.instructions, state)


def on_unanswered(graph: FlowGraph, outcome: str, context: dict[str, Any]) -> Turn:
    """The call was never answered: follow the dial node's outcome output through the
    nodes that need no caller (variables, hangup), so reports show the path taken."""
    state = FlowState()
    walk = _Walk(graph, state, context)
    start = graph.node(graph.start_node_id)
    if start["type"] != "dial":
        return Turn([], [], state)
    state.visits += 1
    next_id, path = _route(start, DIAL_OUTPUT_FOR_OUTCOME.get(outcome, "onError"))
    walk.steps.append(_step(start, path))
    walk.run(next_id, answered=False)
    state.ended = True
    return Turn(walk.steps, [], state)


def on_input(
    graph: FlowGraph, state: FlowState, node_id: str, digits: str | None, context: dict[str, Any]
) -> Turn | None:
    """Keys pressed (``digits``) or nothing pressed (``None``) at the waiting dtmf node.

    Returns None when the call is not waiting at ``node_id`` (a duplicate or stale request).
    """
    if state.ended or state.waiting_node != node_id:
        return None
    state = FlowState.from_dict(state.to_dict())
    state.waiting_node = None
    node = graph.node(node_id)
    config = node.get("config") or {}
    walk = _Walk(graph, state, context)
    retry = config.get("retry") or {}
    max_retries = int(retry.get("maxRetries") or 0)
    digit = (digits or "")[:1]
    if digit:
        if config.get("variable"):
            state.variables[config["variable"]] = digit
        state.variables["lastDtmf"] = digit
        branches = (node.get("outputs") or {}).get("branches") or {}
        allowed = (config.get("singleDigitConfig") or {}).get("allowedDigits")
        if digit in branches:
            next_id, path = branches[digit], f"branches.{digit}"
        elif allowed and digit not in allowed:
            return _retry_or(walk, node, max_retries, "onInvalid", retry.get("invalidAudioId"), digit)
        else:
            next_id, path = _route(node, "onSuccess")
        resolved = {"nodeId": node_id, "outputPath": path}
        inp = {"nodeId": node_id, "digits": digit, "mode": "single_digit"}
        if next_id is None:
            walk.end("no_route", hangup=False)
        else:
            walk.run(next_id)
        return Turn(walk.steps, walk.instructions, state, resolved, inp)
    return _retry_or(walk, node, max_retries, "onTimeout", retry.get("timeoutAudioId"), None)


def _retry_or(
    walk: _Walk, node: dict[str, Any], max_retries: int, output: str, audio: str | None, digit: str | None
) -> Turn:
    state = walk.state
    used = state.retries.get(node["id"], 0)
    inp = {"nodeId": node["id"], "digits": digit or "", "mode": "single_digit"}
    if used < max_retries:
        state.retries[node["id"]] = used + 1
        walk.gather(node, audio)
        return Turn(walk.steps, walk.instructions, state, {"nodeId": node["id"], "outputPath": "retry"}, inp)
    # Once configured retries are used up, onMaxRetries wins over onTimeout/onInvalid
    # (the guide's flow keeps both and ends "max_retries" after the last retry).
    names = ("onMaxRetries", output) if max_retries else (output,)
    next_id, path = _route(node, *names)
    if next_id is None:
        walk.end(output.removeprefix("on").lower(), hangup=False)
    else:
        walk.run(next_id)
    return Turn(walk.steps, walk.instructions, state, {"nodeId": node["id"], "outputPath": path}, inp)
