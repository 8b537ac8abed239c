"""Golden flow fixtures (goflow style): each file of tests/fixtures/flows holds a flow, a
scripted callee (or none, for graphs that must be refused) and exactly what must come
out: the path, the events and the final variables, or the validation errors.

The same fixtures run through the real Twilio adapter against the sandbox in
tests/e2e/test_flow_fixtures_over_twilio.py. After a deliberate change of behaviour,
regenerate with GOMOBILE_UPDATE_GOLDENS=1 and review the diff like code."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from domain.flows.graph import parse_graph
from domain.flows.simulator import context_for, simulate

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "flows"
UPDATE = os.environ.get("GOMOBILE_UPDATE_GOLDENS") == "1"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def outcome(fixture: dict[str, Any]) -> dict[str, Any]:
    graph, issues = parse_graph(fixture["flow"])
    if "callee" not in fixture:
        return {"errors": [i.as_dict() for i in issues]}
    assert not issues, [i.as_dict() for i in issues]
    assert graph is not None
    run = simulate(graph, fixture["callee"], context_for(fixture.get("contact")))
    return {k: run[k] for k in ("path", "events", "variables", "hangupReason", "reachedHangup")}


@pytest.mark.parametrize("name", names())
def test_fixture(name: str) -> None:
    fixture = load(name)
    got = outcome(fixture)
    if UPDATE:
        fixture["expect"] = got
        (FIXTURES / f"{name}.json").write_text(json.dumps(fixture, indent=2, ensure_ascii=False) + "\n")
    assert got == fixture["expect"]


def test_every_node_type_has_a_fixture() -> None:
    from domain.flows.nodes import NODE_TYPES

    used = {n["type"] for name in names() if "callee" in load(name) for n in load(name)["flow"]["nodes"].values()}
    assert set(NODE_TYPES) <= used, set(NODE_TYPES) - used


# Outputs no fixture takes, and why: each is a decision to revisit, not an oversight.
NOT_TAKEN = {
    ("answer", "onError"): "calls are outbound: an inbound answer cannot fail once we run",
    ("record", "onError"): "Twilio reports no recording error to the Record action; silence is onTimeout",
    ("collect_audio", "onError"): "Twilio reports no recognition or recording error to the flow, only silence (onNoSpeech)",
}


def test_every_output_of_every_node_type_is_taken_by_a_fixture() -> None:
    """Every named output (``default`` and per-key branches aside) of every node type is
    the way out of some node in some golden fixture, or listed in NOT_TAKEN with why."""
    from domain.flows.nodes import NODE_TYPES

    taken: set[tuple[str, str]] = set()
    for name in names():
        fixture = load(name)
        if "callee" not in fixture:
            continue
        nodes = fixture["flow"]["nodes"]
        for step in fixture["expect"]["path"]:
            nid, output = step.split(">")
            taken.add((nodes[nid]["type"], output.split(".")[0]))
    wanted = {(t, o) for t, kind in NODE_TYPES.items() for o in kind.outputs if o != "default"}
    missing = wanted - taken - set(NOT_TAKEN)
    assert not missing, sorted(missing)
    assert not set(NOT_TAKEN) & taken, "a fixture takes an output listed as never taken: drop it from NOT_TAKEN"
