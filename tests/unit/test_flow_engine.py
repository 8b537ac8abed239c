"""The flow engine as golden data (goflow style): a flow, what happens on the phone, and the
exact nodes entered and instructions sent to the network, turn by turn.

A case's ``turns`` lists, per turn, ``path`` (``nodeId>outputPath``, ``>-`` for a node
that waits or ends the call) and ``do`` (the instructions). The first turn is the answer
(or the unanswered outcome); each later turn is one entry of ``inputs`` (digits, or
``None`` when nothing was pressed before the gather timed out).
"""

from __future__ import annotations

from typing import Any

import pytest

from domain.flows.engine import (
    MAX_NODE_VISITS,
    FlowState,
    Turn,
    on_answer,
    on_input,
    on_unanswered,
    render_template,
)
from domain.flows.graph import require_graph
from tests.unit.flows_data import (
    minimal_notification,
    payment_reminder,
    payment_reminder_with_retries,
    walkthrough,
)

CONTACT = {
    "id": "c-1",
    "phone": "+212612345678",
    "firstName": "Amina",
    "lastName": "El Idrissi",
    "customAttributes": {"balance": 1500, "city": "Rabat"},
}
CONTEXT = {"contact": CONTACT, "call": {"from": "+212500000001", "to": "+212612345678"}}


def play(audio: str) -> dict[str, Any]:
    return {"verb": "play", "audioId": audio}


def gather(node: str, seconds: int = 10) -> dict[str, Any]:
    return {"verb": "gather", "nodeId": node, "numDigits": 1, "timeoutSeconds": seconds}


def hangup(reason: str) -> dict[str, Any]:
    return {"verb": "hangup", "reason": reason}


def say_flow() -> dict[str, Any]:
    """Personalised TTS: a variable set from the contact, then a say node using templates."""
    return {
        "startNodeId": "dial",
        "nodes": {
            "dial": {"type": "dial", "config": {"enableAMD": True}, "outputs": {"onAnswer": "code"}},
            "code": {
                "type": "set_variable",
                "config": {"variable": "code", "value": "R-{{ $contact.customAttributes.city }}"},
                "outputs": {"onSuccess": "greet"},
            },
            "greet": {
                "type": "say",
                "config": {
                    "text": "Bonjour {{ $contact.firstName }}, vous devez {{$contact.customAttributes.balance}}"
                    " dirhams. Référence {{ $variables.code }}.",
                    "language": "fr",
                },
                "outputs": {"onComplete": "bye"},
            },
            "bye": {"type": "hangup", "config": {"reason": "completed"}},
        },
    }


def invalid_prompt_flow() -> dict[str, Any]:
    """Only 1 or 2 accepted; a wrong key replays a prompt, once, then onMaxRetries."""
    return {
        "startNodeId": "ask",
        "nodes": [
            {
                "id": "ask",
                "type": "dtmf",
                "config": {
                    "variable": "choice",
                    "timeout": 5000,
                    "singleDigitConfig": {"allowedDigits": ["1", "2"]},
                    "retry": {"maxRetries": 1, "invalidAudioId": "press-1-or-2"},
                },
                "outputs": {"onSuccess": "thanks", "onMaxRetries": "give-up"},
            },
            {"id": "thanks", "type": "hangup", "config": {"reason": "thanks"}},
            {"id": "give-up", "type": "hangup", "config": {"reason": "max_retries"}},
        ],
    }


CASES: dict[str, dict[str, Any]] = {
    "walkthrough: answer, play, hangup": {
        "flow": walkthrough(),
        "answeredBy": "human",
        "turns": [
            {
                "path": ["dial-1>onAnswer", "play-1>onComplete", "hangup-1>-"],
                "do": [play("AUDIO_ID"), hangup("Call completed")],
            }
        ],
        "final": {"ended": True, "reached_hangup": True, "hangup_reason": "Call completed"},
    },
    "walkthrough: AMD off, a machine is treated as a person": {
        "flow": walkthrough(),
        "answeredBy": "machine",
        "turns": [
            {
                "path": ["dial-1>onAnswer", "play-1>onComplete", "hangup-1>-"],
                "do": [play("AUDIO_ID"), hangup("Call completed")],
            }
        ],
    },
    "payment reminder: AMD says machine, onVoicemail": {
        "flow": payment_reminder(),
        "answeredBy": "machine",
        "turns": [{"path": ["dial-1>onVoicemail", "hangup-vm>-"], "do": [hangup("voicemail")]}],
        "final": {"ended": True, "reached_hangup": True, "hangup_reason": "voicemail"},
    },
    "payment reminder: presses 1": {
        "flow": payment_reminder(),
        "inputs": ["1"],
        "turns": [
            {
                "path": ["dial-1>onAnswer", "play-greeting>onComplete", "collect-response>-"],
                "do": [play("greeting-audio-id"), gather("collect-response", 10)],
            },
            {
                "resolved": "collect-response>branches.1",
                "path": ["play-confirmed>onComplete", "hangup-success>-"],
                "do": [play("confirmed-audio-id"), hangup("completed")],
            },
        ],
        "final": {"variables": {"customerResponse": "1", "lastDtmf": "1"}, "reached_hangup": True},
    },
    "payment reminder: presses 2": {
        "flow": payment_reminder(),
        "inputs": ["2"],
        "turns": [
            {"path": ["dial-1>onAnswer", "play-greeting>onComplete", "collect-response>-"]},
            {
                "resolved": "collect-response>branches.2",
                "path": ["play-callback>onComplete", "hangup-success>-"],
                "do": [play("callback-audio-id"), hangup("completed")],
            },
        ],
        "final": {"variables": {"customerResponse": "2", "lastDtmf": "2"}},
    },
    "payment reminder: presses nothing, onTimeout": {
        "flow": payment_reminder(),
        "inputs": [None],
        "turns": [
            {"path": ["dial-1>onAnswer", "play-greeting>onComplete", "collect-response>-"]},
            {
                "resolved": "collect-response>onTimeout",
                "path": ["hangup-timeout>-"],
                "do": [hangup("dtmf_timeout")],
            },
        ],
        "final": {"variables": {}, "hangup_reason": "dtmf_timeout"},
    },
    "with retries: a wrong key twice is retried, the third goes to onMaxRetries": {
        "flow": payment_reminder_with_retries(),
        "inputs": ["7", "9", "5"],
        "turns": [
            {"path": ["dial-1>onAnswer", "play-greeting>onComplete", "collect-response>-"]},
            {"resolved": "collect-response>retry", "path": [], "do": [gather("collect-response")]},
            {"resolved": "collect-response>retry", "path": [], "do": [gather("collect-response")]},
            {
                "resolved": "collect-response>onMaxRetries",
                "path": ["hangup-max-retries>-"],
                "do": [hangup("max_retries")],
            },
        ],
        "final": {"retries": {"collect-response": 2}, "hangup_reason": "max_retries"},
    },
    "with retries: silence is retried, then onMaxRetries (not onTimeout)": {
        "flow": payment_reminder_with_retries(),
        "inputs": [None, None, None],
        "turns": [
            {"path": ["dial-1>onAnswer", "play-greeting>onComplete", "collect-response>-"]},
            {"resolved": "collect-response>retry", "path": [], "do": [gather("collect-response")]},
            {"resolved": "collect-response>retry", "path": [], "do": [gather("collect-response")]},
            {
                "resolved": "collect-response>onMaxRetries",
                "path": ["hangup-max-retries>-"],
                "do": [hangup("max_retries")],
            },
        ],
    },
    "with retries: a right key after a wrong one still branches": {
        "flow": payment_reminder_with_retries(),
        "inputs": ["8", "2"],
        "turns": [
            {"path": ["dial-1>onAnswer", "play-greeting>onComplete", "collect-response>-"]},
            {"resolved": "collect-response>retry", "do": [gather("collect-response")]},
            {
                "resolved": "collect-response>branches.2",
                "path": ["play-callback>onComplete", "hangup-success>-"],
            },
        ],
        "final": {"variables": {"customerResponse": "2", "lastDtmf": "2"}},
    },
    "invalid key replays the invalid prompt, then onMaxRetries": {
        "flow": invalid_prompt_flow(),
        "inputs": ["9", "3"],
        "turns": [
            {"path": ["ask>-"], "do": [gather("ask", 5)]},
            {"resolved": "ask>retry", "path": [], "do": [play("press-1-or-2"), gather("ask", 5)]},
            {"resolved": "ask>onMaxRetries", "path": ["give-up>-"], "do": [hangup("max_retries")]},
        ],
    },
    "allowed key without a branch goes to onSuccess": {
        "flow": invalid_prompt_flow(),
        "inputs": ["2"],
        "turns": [
            {"path": ["ask>-"]},
            {"resolved": "ask>onSuccess", "path": ["thanks>-"], "do": [hangup("thanks")]},
        ],
        "final": {"variables": {"choice": "2", "lastDtmf": "2"}},
    },
    "minimal notification: answer plays the message": {
        "flow": minimal_notification(),
        "turns": [
            {
                "path": ["dial>onAnswer", "play>onComplete", "hangup>-"],
                "do": [play("message"), hangup("completed")],
            }
        ],
    },
    "say node renders contact and variable templates": {
        "flow": say_flow(),
        "turns": [
            {
                "path": ["dial>onAnswer", "code>onSuccess", "greet>onComplete", "bye>-"],
                "do": [
                    {
                        "verb": "say",
                        "text": "Bonjour Amina, vous devez 1500 dirhams. Référence R-Rabat.",
                        "language": "fr",
                        "gender": "female",
                    },
                    hangup("completed"),
                ],
            }
        ],
        "final": {"variables": {"code": "R-Rabat"}},
    },
    "unanswered busy follows onBusy to the hangup": {
        "flow": payment_reminder(),
        "unanswered": "busy",
        "turns": [{"path": ["dial-1>onBusy", "hangup-busy>-"], "do": []}],
        "final": {"ended": True, "reached_hangup": True, "hangup_reason": "busy"},
    },
    "unanswered no_answer follows onNoAnswer": {
        "flow": payment_reminder(),
        "unanswered": "no_answer",
        "turns": [{"path": ["dial-1>onNoAnswer", "hangup-na>-"], "do": []}],
        "final": {"hangup_reason": "no_answer"},
    },
    "unanswered rejected falls back to default": {
        "flow": minimal_notification(),
        "unanswered": "rejected",
        "turns": [{"path": ["dial>default", "hangup>-"], "do": []}],
        "final": {"ended": True, "hangup_reason": "completed"},
    },
    "unanswered without a route records the dial only": {
        "flow": walkthrough(),
        "unanswered": "rejected",
        "turns": [{"path": ["dial-1>-"], "do": []}],
        "final": {"ended": True, "reached_hangup": False},
    },
    "unanswered never plays audio": {
        "flow": {
            "startNodeId": "dial",
            "nodes": {
                "dial": {"type": "dial", "outputs": {"onBusy": "sorry"}},
                "sorry": {
                    "type": "play",
                    "config": {"audioItems": [{"type": "audioFile", "audioId": "x"}]},
                    "outputs": {"onComplete": "bye"},
                },
                "bye": {"type": "hangup"},
            },
        },
        "unanswered": "busy",
        "turns": [{"path": ["dial>onBusy"], "do": []}],
        "final": {"ended": True, "reached_hangup": False},
    },
}


def fmt(step: dict[str, Any]) -> str:
    return f"{step['nodeId']}>{step['outputPath'] or '-'}"


def replay(case: dict[str, Any]) -> tuple[list[Turn], FlowState]:
    graph = require_graph(case["flow"])
    if "unanswered" in case:
        turn = on_unanswered(graph, case["unanswered"], CONTEXT)
        return [turn], turn.state
    turn = on_answer(graph, case.get("answeredBy", "human"), CONTEXT)
    turns, state = [turn], turn.state
    for digits in case.get("inputs", []):
        assert state.waiting_node is not None, "the case presses keys after the call stopped waiting"
        nxt = on_input(graph, state, state.waiting_node, digits, CONTEXT)
        assert nxt is not None
        turns.append(nxt)
        state = nxt.state
    return turns, state


@pytest.mark.parametrize("name", list(CASES))
def test_golden(name):
    case = CASES[name]
    turns, state = replay(case)
    assert len(turns) == len(case["turns"])
    for i, (got, want) in enumerate(zip(turns, case["turns"], strict=True)):
        if "path" in want:
            assert [fmt(s) for s in got.steps] == want["path"], f"turn {i} path"
        if "do" in want:
            assert got.instructions == want["do"], f"turn {i} instructions"
        if "resolved" in want:
            assert got.resolved is not None
            assert f"{got.resolved['nodeId']}>{got.resolved['outputPath']}" == want["resolved"]
    for key, value in case.get("final", {}).items():
        assert getattr(state, key) == value, key
    if state.waiting_node is None:
        assert state.ended, "a call that does not wait must be over"


def test_every_step_carries_the_node_type_and_label():
    turn = on_answer(require_graph(payment_reminder()), "human", CONTEXT)
    assert turn.steps[0] == {
        "nodeId": "dial-1",
        "nodeType": "dial",
        "nodeLabel": "Call Customer",
        "outputPath": "onAnswer",
    }
    assert turn.state.waiting_node == "collect-response"
    assert turn.state.ended is False


def test_digit_input_is_recorded_as_input():
    graph = require_graph(payment_reminder())
    first = on_answer(graph, "human", CONTEXT)
    turn = on_input(graph, first.state, "collect-response", "12", CONTEXT)
    assert turn is not None
    assert turn.input == {"nodeId": "collect-response", "digits": "1", "mode": "single_digit"}


def test_duplicate_or_stale_input_returns_none_and_leaves_the_state_alone():
    graph = require_graph(payment_reminder())
    first = on_answer(graph, "human", CONTEXT)
    waiting = first.state.to_dict()
    # a request for a node the call is not waiting at
    assert on_input(graph, first.state, "play-greeting", "1", CONTEXT) is None
    second = on_input(graph, first.state, "collect-response", "1", CONTEXT)
    assert second is not None
    assert first.state.to_dict() == waiting  # the engine never mutates the state it is given
    # the same keypress delivered again, against the new state: the call is over
    assert on_input(graph, second.state, "collect-response", "1", CONTEXT) is None
    assert on_input(graph, second.state, "collect-response", None, CONTEXT) is None


def test_state_survives_serialisation_between_webhooks():
    graph = require_graph(payment_reminder_with_retries())
    state = on_answer(graph, "human", CONTEXT).state
    for digits in ("7", None):
        turn = on_input(graph, FlowState.from_dict(state.to_dict()), "collect-response", digits, CONTEXT)
        assert turn is not None
        state = FlowState.from_dict(turn.to_dict()["state"])
    assert state.retries == {"collect-response": 2}
    assert state.waiting_node == "collect-response"


def loop_flow() -> dict[str, Any]:
    """a -> b -> a ...; the exit to a hangup (the callee speaks Klingon) is never taken."""
    return {
        "startNodeId": "dial",
        "nodes": {
            "dial": {"type": "dial", "outputs": {"onAnswer": "a"}},
            "a": {
                "type": "play",
                "config": {"audioItems": [{"type": "audioFile", "audioId": "a"}]},
                "outputs": {"onComplete": "b", "onError": "bye"},
            },
            "b": {
                "type": "play",
                "config": {"audioItems": [{"type": "audioFile", "audioId": "b"}]},
                "outputs": {"onComplete": "a"},
            },
            "bye": {"type": "hangup"},
        },
    }


@pytest.mark.timeout(5)  # without the cap this loops forever
def test_node_visit_cap_stops_an_endless_loop():
    turn = on_answer(require_graph(loop_flow()), "human", CONTEXT)
    assert len(turn.steps) == MAX_NODE_VISITS
    assert turn.instructions[-1] == hangup("max_node_visits")
    assert len(turn.instructions) == MAX_NODE_VISITS  # 99 plays and the hangup
    assert turn.state.ended and not turn.state.reached_hangup
    assert turn.state.hangup_reason == "max_node_visits"


@pytest.mark.timeout(5)  # without the cap this loops forever
def test_node_visit_cap_counts_across_turns():
    graph = require_graph(
        {
            "startNodeId": "dial",
            "nodes": {
                "dial": {"type": "dial", "outputs": {"onAnswer": "ask"}},
                "ask": {"type": "dtmf", "outputs": {"onTimeout": "again", "onSuccess": "bye"}},
                "bye": {"type": "hangup"},
                "again": {
                    "type": "play",
                    "config": {"audioItems": [{"type": "audioFile", "audioId": "again"}]},
                    "outputs": {"onComplete": "ask"},
                },
            },
        }
    )
    state = on_answer(graph, "human", CONTEXT).state
    turns = 0
    while state.waiting_node is not None:
        turns += 1
        assert turns < MAX_NODE_VISITS, "the silent caller is never hung up on"
        turn = on_input(graph, state, "ask", None, CONTEXT)
        assert turn is not None
        state = turn.state
    assert state.hangup_reason == "max_node_visits"
    assert state.visits == MAX_NODE_VISITS


def test_dtmf_without_any_route_ends_the_call():
    graph = require_graph(
        {
            "startNodeId": "ask",
            "nodes": {"ask": {"type": "dtmf", "outputs": {"branches": {"1": "bye"}}}, "bye": {"type": "hangup"}},
        }
    )
    state = on_answer(graph, "human", CONTEXT).state
    wrong = on_input(graph, state, "ask", "5", CONTEXT)
    assert wrong is not None
    assert wrong.instructions == [hangup("no_route")]
    silent = on_input(graph, state, "ask", None, CONTEXT)
    assert silent is not None
    assert silent.instructions == [hangup("timeout")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi {{ $contact.firstName }}", "Hi Amina"),
        ("{{$contact.lastName}}!", "El Idrissi!"),
        ("{{ $contact.customAttributes.balance }} MAD", "1500 MAD"),
        ("{{ $call.from }}", "+212500000001"),
        ("{{ $variables.code }}", "X1"),
        ("[{{ $contact.unknown }}]", "[]"),
        ("{{ contact.firstName }}", "{{ contact.firstName }}"),  # not a template: no $
    ],
)
def test_render_template(text, expected):
    assert render_template(text, {**CONTEXT, "variables": {"code": "X1"}}) == expected
