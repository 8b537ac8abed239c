"""Pure tests of the callee table, script parsing and TwiML parsing."""

from __future__ import annotations

import pytest

from infrastructure.telephony.sandbox.callee import (
    ScriptError,
    default_plan,
    gather_input,
    parse_script,
    plan_for,
)
from infrastructure.telephony.sandbox.twiml import TwimlError, parse_twiml


@pytest.mark.parametrize(
    "number, attempt, behaviour",
    [
        ("+15550000010", 0, "busy"),
        ("+15550000010", 1, "human"),
        ("+15550000011", 0, "no_answer"),
        ("+15550000012", 3, "machine"),
        ("+15550000013", 0, "failed"),
        ("+15550000014", 0, "human"),
        ("+15550000019", 5, "human"),
        ("client:alice", 0, "human"),
    ],
)
def test_default_table(number, attempt, behaviour):
    assert default_plan(number, attempt).behaviour == behaviour


def test_digits_defaults():
    human = default_plan("+15550000015", 0)
    assert [human.digits_for_gather(i) for i in range(3)] == ["1", "1", "1"]
    machine = default_plan("+15550000012", 0)
    assert machine.digits_for_gather(0) == ""


def test_script_attempts_then_and_top_level_defaults():
    script = parse_script(
        {
            "attempts": [{"behaviour": "busy"}, {"behaviour": "human", "digits": ["2", ""]}],
            "then": {"behaviour": "machine"},
            "answerDelayMs": 500,
            "hangupAfterVerbs": 4,
            "duplicateCallbacks": True,
        }
    )
    first, second, third = (plan_for("+1555", i, script) for i in range(3))
    assert first.behaviour == "busy" and first.duplicate_callbacks
    assert second.digits_for_gather(0) == "2"
    assert second.digits_for_gather(1) == ""
    assert second.digits_for_gather(2) == "1"
    assert second.answer_delay_seconds == 0.5
    assert second.hangup_after_verbs == 4
    assert third.behaviour == "machine"


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"attempts": [{"behaviour": "sing"}]},
        {"attempts": {"behaviour": "human"}},
        {"then": {"digits": "1"}},
        {"then": {"digits": ["x"]}},
        {"hangupAfterVerbs": -1},
        {"answerDelayMs": "soon"},
    ],
)
def test_bad_scripts(bad):
    with pytest.raises(ScriptError):
        parse_script(bad)


def test_gather_input_rules():
    assert gather_input("1", 1, "#") == ("1", "")
    assert gather_input("123", 2, "#") == ("12", "")
    assert gather_input("12#3", None, "#") == ("12", "#")
    assert gather_input("", 1, "#") == ("", "")


def test_parse_twiml():
    verbs = parse_twiml(
        '<?xml version="1.0" encoding="UTF-8"?><Response><Say voice="alice">Hi</Say>'
        '<Gather numDigits="1" action="/g"><Say>Press</Say></Gather><Hangup/></Response>'
    )
    assert [v.name for v in verbs] == ["Say", "Gather", "Hangup"]
    assert verbs[0].attrs == {"voice": "alice"} and verbs[0].text == "Hi"
    assert verbs[1].children[0].text == "Press"
    with pytest.raises(TwimlError):
        parse_twiml("<html/>")
    with pytest.raises(TwimlError):
        parse_twiml("not xml")
