"""The pure flow engine: given a graph, the call's flow state and what just happened on the
phone (answered, keys pressed, speech heard, a recording, a transfer's end, nothing), it
returns the nodes entered, the instructions for the phone network, the events, and the
next state. No I/O: the telephony adapter renders instructions as TwiML, the Call
aggregate records the turn, and the application performs any ``request`` a turn makes
(a webhook node's HTTP call) and feeds the result back with ``resume`` (see ``settle``).

Node types live in ``domain/flows/nodes`` and register themselves by type name."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from domain.flows import templates
from domain.flows.graph import FlowGraph
from domain.flows.nodes import NODE_TYPES, Jump, Next, Stop, Wait
from domain.flows.nodes.call import DIAL_OUTPUT_FOR_OUTCOME

__all__ = [
    "DIAL_OUTPUT_FOR_OUTCOME", "MAX_NODE_VISITS", "FlowState", "Turn", "on_answer", "on_input",
    "on_machine_detected", "on_unanswered", "render_template", "resume", "settle",
]  # fmt: skip

MAX_NODE_VISITS = 100  # loops are allowed, endless loops are not (a graph may lower or raise it)


@dataclass
class FlowState:
    waiting_node: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    visits: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    ended: bool = False
    reached_hangup: bool = False
    hangup_reason: str | None = None
    contact_updates: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FlowState:
        return cls(**copy.deepcopy(data or {}))


@dataclass
class Turn:
    steps: list[dict[str, Any]]
    instructions: list[dict[str, Any]]
    state: FlowState
    resolved: dict[str, Any] | None = None  # the waiting node that this turn resolved
    input: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    request: dict[str, Any] | None = None  # for the application to perform, then ``resume``

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "instructions": self.instructions,
            "state": self.state.to_dict(),
            "resolved": self.resolved,
            "input": self.input,
            "events": self.events,
            "request": self.request,
        }


def render_template(text: str, context: dict[str, Any]) -> str:
    """``{{ $contact.firstName }}``, ``{{ $variables.code }}``, ``{{ $call.from }}``."""
    return templates.render(text, context)


def _step(node: dict[str, Any], output_path: str | None) -> dict[str, Any]:
    return {"nodeId": node["id"], "nodeType": node["type"], "nodeLabel": node.get("label"), "outputPath": output_path}


def _route(node: dict[str, Any], *names: str) -> tuple[str | None, str | None]:
    outputs = node.get("outputs") or {}
    for name in (*names, "default"):
        if name.startswith("branches."):
            target = (outputs.get("branches") or {}).get(name.removeprefix("branches."))
        else:
            target = outputs.get(name)
        if isinstance(target, str):
            return target, name
    return None, None


def _merge_contact(contact: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    if not updates:
        return contact
    merged = {**contact, **{k: v for k, v in updates.items() if k != "customAttributes"}}
    if updates.get("customAttributes"):
        merged["customAttributes"] = {**(contact.get("customAttributes") or {}), **updates["customAttributes"]}
    return merged


class _Walk:
    """One turn's walk through the graph: what the node types act on (see nodes.base.Walk)."""

    def __init__(
        self,
        graph: FlowGraph,
        state: FlowState,
        context: dict[str, Any],
        *,
        answered_by: str | None = None,
        unanswered_outcome: str | None = None,
    ) -> None:
        self.graph = graph
        self.state = state
        self.base_context = context
        self.answered_by = answered_by
        self.unanswered_outcome = unanswered_outcome
        self.steps: list[dict[str, Any]] = []
        self.instructions: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.request: dict[str, Any] | None = None
        self.input: dict[str, Any] | None = None
        self.current: dict[str, Any] | None = None  # the node being entered or resumed

    @property
    def context(self) -> dict[str, Any]:
        contact = _merge_contact(self.base_context.get("contact") or {}, self.state.contact_updates)
        return {**self.base_context, "contact": contact, "variables": self.state.variables}

    # -- what node types call ---------------------------------------------------------

    def emit(self, type_: str, node: dict[str, Any], **data: Any) -> None:
        self.events.append({"type": type_, "nodeId": node["id"], **data})

    def instruct(self, instruction: dict[str, Any]) -> None:
        self.instructions.append(instruction)
        if instruction["verb"] in ("say", "play") and self.current is not None:
            heard = {k: v for k, v in instruction.items() if k in ("text", "audioId", "url", "language", "item")}
            self.emit("play", self.current, **heard)

    def set_variable(self, node: dict[str, Any], name: str, value: Any) -> None:
        self.state.variables[name] = value
        self.emit("variable_set", node, name=name, value=value)

    def render(self, text: str) -> str:
        return templates.render(text, self.context)

    def value(self, value: Any) -> Any:
        return templates.resolve(value, self.context)

    # -- the walk -------------------------------------------------------------------------

    @property
    def cap(self) -> int:
        return self.graph.max_node_visits or MAX_NODE_VISITS

    def end(self, reason: str, *, hangup: bool) -> None:
        self.state.ended = True
        self.state.reached_hangup = hangup
        self.state.hangup_reason = reason
        self.state.waiting_node = None
        if self.unanswered_outcome is None:
            self.instructions.append({"verb": "hangup", "reason": reason})

    def follow(self, node: dict[str, Any], outcome: Any, *, resumed: bool = False) -> str | None:
        """Apply a node's outcome: the next node id, or None when the call waits or ends."""
        if isinstance(outcome, Wait):
            if not resumed:
                self.steps.append(_step(node, None))
            self.state.waiting_node = node["id"]
            return None
        if isinstance(outcome, Stop):
            if not resumed:
                self.steps.append(_step(node, None))
            self.end(outcome.reason, hangup=outcome.hangup)
            return None
        assert isinstance(outcome, Next)
        target, path = _route(node, *outcome.outputs)
        if resumed:
            self.resolved = {"nodeId": node["id"], "outputPath": path}
        else:
            self.steps.append(_step(node, path))
        if target is None:
            self.end(outcome.dead_end, hangup=False)
        return target

    def jump(self, outcome: Jump) -> str | None:
        """Enter ``outcome.node_id`` with the result it would have waited for."""
        if self.state.visits >= self.cap:
            self.end("max_node_visits", hangup=False)
            return None
        node = self.graph.node(outcome.node_id)
        self.state.visits += 1
        self.current = node
        result = NODE_TYPES[node["type"]].resume(self, node, outcome.result)
        if isinstance(result, Wait):  # e.g. a wrong key, retried: the node now waits
            self.steps.append(_step(node, None))
            self.state.waiting_node = node["id"]
            return None
        if isinstance(result, Jump):
            self.steps.append(_step(node, result.output))
            return self.jump(result)
        return self.follow(node, result)

    def run(self, node_id: str | None) -> None:
        answered = self.unanswered_outcome is None
        while node_id is not None:
            if self.state.visits >= self.cap:
                self.end("max_node_visits", hangup=False)
                return
            node = self.graph.node(node_id)
            kind = NODE_TYPES[node["type"]]
            if not answered and kind.needs_caller:
                break
            self.state.visits += 1
            self.current = node
            node_id = self.follow(node, kind.enter(self, node))
        if not self.state.ended and self.state.waiting_node is None:
            if answered:
                self.end("flow_end", hangup=False)
            else:
                self.state.ended = True

    def turn(self, resolved: dict[str, Any] | None = None) -> Turn:
        return Turn(self.steps, self.instructions, self.state, resolved, self.input, self.events, self.request)


def on_answer(graph: FlowGraph, answered_by: str | None, context: dict[str, Any]) -> Turn:
    """The callee picked up: run from the start node until the call waits or ends."""
    walk = _Walk(graph, FlowState(), context, answered_by=answered_by)
    walk.run(graph.start_node_id)
    return walk.turn()


def on_unanswered(graph: FlowGraph, outcome: str, context: dict[str, Any]) -> Turn:
    """The call was never answered: follow the dial node's outcome output through the
    nodes that need no caller (variables, conditions, hangup), so reports show the path."""
    state = FlowState()
    if graph.node(graph.start_node_id)["type"] != "dial":
        return Turn([], [], state)
    walk = _Walk(graph, state, context, unanswered_outcome=outcome)
    walk.run(graph.start_node_id)
    state.ended = True
    state.waiting_node = None
    return walk.turn()


def on_machine_detected(graph: FlowGraph, state: FlowState, context: dict[str, Any]) -> Turn | None:
    """Asynchronous answering-machine detection said "machine" while the flow already runs
    (it started as for a person, so that a person hears no dead air): leave the dial node
    again, by ``onVoicemail``, from wherever the call is. None when there is nothing to
    change: the flow ended, the start is not a dial with AMD on, or it has no
    ``onVoicemail`` output (the call goes on; its outcome will still say voicemail)."""
    if state.ended:
        return None
    start = graph.node(graph.start_node_id)
    config = start.get("config") or {}
    if start["type"] != "dial" or not config.get("enableAMD", True):
        return None
    if not isinstance((start.get("outputs") or {}).get("onVoicemail"), str):
        return None
    state = FlowState.from_dict(state.to_dict())
    state.waiting_node = None
    walk = _Walk(graph, state, context, answered_by="machine")
    walk.current = start
    walk.emit("machine_detected", start, answeredBy="machine")
    if state.visits >= walk.cap:
        walk.end("max_node_visits", hangup=False)
        return walk.turn()
    state.visits += 1
    walk.run(walk.follow(start, Next(("onVoicemail",))))
    return walk.turn()


def resume(
    graph: FlowGraph, state: FlowState, node_id: str, result: dict[str, Any], context: dict[str, Any]
) -> Turn | None:
    """The result the waiting node ``node_id`` was waiting for: ``{"digits"}`` (dtmf; None or
    "" when nothing was pressed), ``{"speech", "confidence"}`` (collect_audio),
    ``{"recordingSid", "recordingUrl", "durationSeconds"}`` (record), ``{"dialStatus",
    "durationSeconds"}`` (transfer), ``{"status", "json"} | {"error"}`` (webhook).

    Returns None when the call is not waiting at ``node_id`` (a duplicate or stale request).
    """
    if state.ended or state.waiting_node != node_id:
        return None
    state = FlowState.from_dict(state.to_dict())
    state.waiting_node = None
    node = graph.node(node_id)
    walk = _Walk(graph, state, context)
    walk.resolved = None
    walk.current = node
    outcome = NODE_TYPES[node["type"]].resume(walk, node, result)
    if isinstance(outcome, Wait):
        state.waiting_node = node_id
        return walk.turn({"nodeId": node_id, "outputPath": "retry"})
    if isinstance(outcome, Jump):
        resolved = {"nodeId": node_id, "outputPath": outcome.output}
        walk.run(walk.jump(outcome))
        return walk.turn(resolved)
    next_id = walk.follow(node, outcome, resumed=True)
    resolved = getattr(walk, "resolved", None) or {"nodeId": node_id, "outputPath": None}
    walk.run(next_id)
    return walk.turn(resolved)


def on_input(
    graph: FlowGraph, state: FlowState, node_id: str, digits: str | None, context: dict[str, Any]
) -> Turn | None:
    """Keys pressed (``digits``) or nothing pressed (``None``) at the waiting dtmf node."""
    return resume(graph, state, node_id, {"digits": digits}, context)


def merge(first: Turn, then: Turn) -> Turn:
    """One turn made of two: ``then`` resumed the node ``first`` left waiting (a webhook)."""
    steps = [dict(s) for s in first.steps]
    if then.resolved is not None:
        for s in reversed(steps):
            if s["nodeId"] == then.resolved["nodeId"] and s["outputPath"] is None:
                s["outputPath"] = then.resolved["outputPath"]
                break
    return Turn(
        steps + then.steps,
        first.instructions + then.instructions,
        then.state,
        first.resolved,
        first.input,
        first.events + then.events,
        then.request,
    )


def settle(
    graph: FlowGraph, turn: Turn, context: dict[str, Any], perform: Callable[[dict[str, Any]], dict[str, Any]]
) -> Turn:
    """Perform each request a turn makes (``perform`` does the I/O and returns the result)
    and resume, until the turn needs only the phone network."""
    while turn.request is not None and turn.state.waiting_node == turn.request["nodeId"]:
        result = perform(turn.request)
        nxt = resume(graph, turn.state, turn.request["nodeId"], result, context)
        if nxt is None:
            break
        turn = merge(turn, nxt)
    return turn
