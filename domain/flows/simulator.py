"""The flow simulator: run a flow against a scripted callee with the pure engine, placing
no call, and return the path taken and every event (``POST /api/flows/execute``,
``gomobile flows simulate``, and the golden fixtures).

A callee script::

    {"answeredBy": "human" | "machine",     # or "outcome": busy | no_answer | rejected | failed
     "amd": "async" | "sync",               # when a machine is told apart (default async)
     "inputs": ["1", null, "123#", ...],    # one per waiting node, in order (see below)
     "webhooks": [{"status": 200, "json": {...}}, {"error": "timeout"}, ...]}

Each entry of ``inputs`` answers the node the call waits at: keys for ``dtmf`` and for a
``play`` node whose prompts can be barged in on (``null`` = nothing pressed), words for a
transcribing ``collect_audio`` (``null`` = silence), seconds spoken for ``record`` and a
recording ``collect_audio`` (``null`` = silence), a DialCallStatus for ``transfer`` (``completed``,
``busy``, ``no-answer``, ``failed``); an object is passed to the engine as it is. When
the inputs run out while the call waits, the callee hangs up. Webhook nodes take the
next entry of ``webhooks`` (default: ``200`` with an empty JSON object).

Answering-machine detection runs as the platform runs it over Twilio, asynchronously
(``"amd": "async"``): the flow starts as for a person and the verdict arrives while the
call waits for the first time (a flow that never waits has ended before it); a machine
then leaves the dial node by ``onVoicemail``. ``"amd": "sync"`` stands for a verdict
known when the call is answered (the dial node leaves by ``onVoicemail`` at once)."""

from __future__ import annotations

from typing import Any

from domain.errors import ValidationError
from domain.flows import engine
from domain.flows.graph import FlowGraph
from domain.flows.nodes.recording import records_audio

OUTCOMES = ("busy", "no_answer", "rejected", "failed")
DEFAULT_CONTACT = {"id": "simulated-contact", "firstName": "Test", "lastName": "Contact", "customAttributes": {}}


def check_callee(callee: Any) -> dict[str, Any]:
    if callee is None:
        return {}
    if not isinstance(callee, dict):
        raise ValidationError.single("callee", "must be an object")
    errors: dict[str, list[str]] = {}
    if callee.get("answeredBy") not in (None, "human", "machine"):
        errors["callee.answeredBy"] = ["must be 'human' or 'machine'"]
    if callee.get("amd") not in (None, "async", "sync"):
        errors["callee.amd"] = ["must be 'async' or 'sync'"]
    if callee.get("outcome") is not None and callee["outcome"] not in OUTCOMES:
        errors["callee.outcome"] = [f"must be one of {', '.join(OUTCOMES)}"]
    for key in ("inputs", "webhooks"):
        if callee.get(key) is not None and not isinstance(callee[key], list):
            errors[f"callee.{key}"] = ["must be a list"]
    for i, hook in enumerate(callee.get("webhooks") or []):
        if not isinstance(hook, dict) or not ("status" in hook or "error" in hook):
            errors[f"callee.webhooks[{i}]"] = ["must be {status, json} or {error}"]
    if errors:
        raise ValidationError("Invalid simulated callee", errors)
    return callee


def context_for(contact: dict[str, Any] | None, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    c = {**DEFAULT_CONTACT, **(contact or {})}
    phone = c.get("phone") or c.get("primaryPhone") or "+212600000000"
    c.setdefault("phone", phone)
    c.setdefault("primaryPhone", phone)
    return {
        "contact": c,
        "call": {"from": "+212500000000", "to": phone, "id": "simulated-call", "attempt": 1},
        "sys": {
            "callId": "simulated-call", "callStatus": "in-progress", "callDirection": "outbound",
            "contactId": c.get("id"), "contactPhone": phone,
            "contactName": " ".join(p for p in (c.get("firstName"), c.get("lastName")) if p),
            "organizationId": None, "programId": None,
        },
        "variables": dict(variables or {}),
    }  # fmt: skip


def result_for(node: dict[str, Any], entry: Any, index: int) -> dict[str, Any]:
    """The engine result a scripted input stands for at ``node`` (keys stop at the
    node's terminator, as Twilio's finishOnKey does)."""
    node_type = node["type"]
    if isinstance(entry, dict):
        return entry
    if node_type == "play":  # a barge-in prompt: a key pressed while it plays
        return {"digits": None if entry in (None, "") else str(entry)}
    if node_type == "dtmf":
        if entry is None:
            return {"digits": None}
        keys = str(entry)
        for term in ((node.get("config") or {}).get("multiDigitConfig") or {}).get("terminators") or []:
            keys = keys.split(term)[0]
        return {"digits": keys}
    if node_type == "collect_audio" and not records_audio(node.get("config") or {}):
        return {"speech": entry, "confidence": 0.9 if entry else None}
    if node_type in ("record", "collect_audio"):
        if entry in (None, 0, ""):
            return {}
        config = node.get("config") or {}
        limit = float(config.get("maxDurationMs") or 60000) / 1000 if node_type == "record" else float(config.get("maxDuration") or 30)
        spoken = min(float(entry), limit)  # the recording stops at the node's limit
        return {"recordingSid": f"RE-simulated-{index}", "recordingUrl": f"https://recordings.invalid/RE-simulated-{index}",
                "durationSeconds": int(spoken) if spoken.is_integer() else spoken}  # fmt: skip
    if node_type == "transfer":
        return {"dialStatus": entry or "completed", "durationSeconds": 30 if entry in (None, "completed") else 0}
    return {"value": entry}


def simulate(graph: FlowGraph, callee: dict[str, Any] | None = None, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``graph`` against the scripted ``callee``; nothing leaves the process."""
    callee = check_callee(callee)
    ctx = context or context_for(None)
    hooks = list(callee.get("webhooks") or [])

    def perform(request: dict[str, Any]) -> dict[str, Any]:
        return hooks.pop(0) if hooks else {"status": 200, "json": {}}

    events: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []

    def add(trigger: dict[str, Any], turn: engine.Turn) -> None:
        if turn.resolved is not None:
            for s in reversed(steps):  # as the call report does: the node's latest visit
                if s["nodeId"] == turn.resolved["nodeId"]:
                    s["outputPath"] = turn.resolved["outputPath"]
                    break
        steps.extend(dict(s) for s in turn.steps)
        events.append({"type": "trigger", **trigger})
        events.extend(turn.events)
        turns.append({"trigger": trigger, "path": [fmt(s) for s in turn.steps], "instructions": turn.instructions})

    outcome = callee.get("outcome")
    if outcome:
        turn = engine.on_unanswered(graph, outcome, ctx)
        add({"kind": "unanswered", "outcome": outcome}, turn)
        state = turn.state
    else:
        answered_by = callee.get("answeredBy") or "human"
        pending_amd = answered_by == "machine" and callee.get("amd", "async") == "async"
        heard_as = "human" if pending_amd else answered_by
        ctx = {**ctx, "sys": {**ctx.get("sys", {}), "answeredBy": heard_as}}
        turn = engine.settle(graph, engine.on_answer(graph, heard_as, ctx), ctx, perform)
        add({"kind": "answer", "answeredBy": heard_as}, turn)
        state = turn.state
        inputs = list(callee.get("inputs") or [])
        index = 0
        while state.waiting_node is not None and not state.ended:
            if pending_amd:
                pending_amd = False
                ctx = {**ctx, "sys": {**ctx["sys"], "answeredBy": "machine"}}
                amd = engine.on_machine_detected(graph, state, ctx)
                if amd is not None:
                    amd = engine.settle(graph, amd, ctx, perform)
                    add({"kind": "amd", "answeredBy": "machine"}, amd)
                    state = amd.state
                    continue
            node = graph.node(state.waiting_node)
            if index >= len(inputs):
                events.append({"type": "trigger", "kind": "callee_hangup", "nodeId": node["id"]})
                break
            result = result_for(node, inputs[index], index)
            index += 1
            nxt = engine.resume(graph, state, node["id"], result, ctx)
            if nxt is None:
                break
            nxt = engine.settle(graph, nxt, ctx, perform)
            add({"kind": "input", "nodeId": node["id"], "result": result}, nxt)
            state = nxt.state
    return {
        "path": [fmt(s) for s in steps],
        "steps": steps,
        "events": events,
        "turns": turns,
        "variables": state.variables,
        "ended": state.ended,
        "hangupReason": state.hangup_reason if state.ended else "callee_hangup",
        "reachedHangup": state.reached_hangup,
    }


def fmt(step: dict[str, Any]) -> str:
    return f"{step['nodeId']}>{step['outputPath'] or '-'}"
