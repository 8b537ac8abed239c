"""Flow graphs: both documented shapes parse to one canonical graph; bad graphs are refused
with an issue that names the node and the field a user has to fix (DOMAIN.md §5.2, §10.3-4)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from domain.errors import ValidationError
from domain.flows.graph import FlowGraph, FlowIssue, parse_graph, require_graph
from tests.unit.flows_data import (
    as_map,
    minimal_notification,
    payment_reminder,
    payment_reminder_with_retries,
    walkthrough,
)


def issues_of(data: Any) -> list[tuple[str | None, str, str]]:
    _, issues = parse_graph(data)
    return [(i.node_id, i.field, i.message) for i in issues]


def node(graph: dict[str, Any], nid: str) -> dict[str, Any]:
    return next(n for n in graph["nodes"] if n["id"] == nid)


# -- valid graphs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build", [walkthrough, payment_reminder, payment_reminder_with_retries, minimal_notification]
)
def test_documented_flows_are_valid(build):
    graph, issues = parse_graph(build())
    assert issues == []
    assert isinstance(graph, FlowGraph)
    assert graph.start_node_id == build()["startNodeId"]
    assert list(graph.nodes) == [n["id"] for n in build()["nodes"]]


@pytest.mark.parametrize("build", [walkthrough, payment_reminder, minimal_notification])
@pytest.mark.parametrize("keep_ids", [False, True])
def test_array_and_map_forms_give_the_same_canonical_graph(build, keep_ids):
    from_array = require_graph(build()).to_json()
    from_map = require_graph(as_map(build(), keep_ids=keep_ids)).to_json()
    assert from_map == from_array
    assert isinstance(from_array["nodes"], list)
    assert all(set(n) == {"id", "type", "label", "config", "outputs"} for n in from_array["nodes"])


def test_walkthrough_play_node_is_normalised_to_audio_items_and_on_complete():
    canonical = require_graph(walkthrough()).to_json()
    play = node(canonical, "play-1")
    assert play["config"] == {"audioItems": [{"type": "audioFile", "audioId": "AUDIO_ID"}]}
    assert play["outputs"] == {"onComplete": "hangup-1"}
    hangup = node(canonical, "hangup-1")
    assert hangup["outputs"] == {}
    assert hangup["label"] == "End Call"


def test_canonical_graph_round_trips_and_does_not_alias_the_input():
    raw = payment_reminder()
    before = copy.deepcopy(raw)
    graph = require_graph(raw)
    graph.node("collect-response")["config"]["timeout"] = 5000
    assert raw == before  # parsing copies: editing the stored graph never edits the request
    again = FlowGraph.from_canonical(graph.to_json())
    assert again.to_json() == graph.to_json()
    assert require_graph(graph.to_json()).to_json() == graph.to_json()


# -- precise errors ------------------------------------------------------------------------


def test_unknown_node_type_names_the_node_and_the_known_types():
    graph = minimal_notification()
    node(graph, "play")["type"] = "teleport"
    [(nid, field, message)] = issues_of(graph)
    assert (nid, field) == ("play", "type")
    assert message.startswith("unknown node type 'teleport' (known: ")
    assert "dtmf" in message and "hangup" in message


def test_output_to_a_missing_node():
    graph = walkthrough()
    node(graph, "play-1")["outputs"] = {"onEnd": "hangup-2"}
    assert issues_of(graph) == [("play-1", "outputs.onComplete", "points to missing node 'hangup-2'")]


def test_unknown_output_name_is_refused_with_the_allowed_names():
    graph = minimal_notification()
    node(graph, "play")["outputs"]["onAnswer"] = "hangup"
    [(nid, field, message)] = issues_of(graph)
    assert (nid, field) == ("play", "outputs.onAnswer")
    assert message == "unknown output (allowed: onComplete, onError, default)"


def test_unreachable_node_is_named():
    graph = minimal_notification()
    graph["nodes"].append(
        {"id": "orphan", "type": "hangup", "config": {"reason": "never", "hangupType": "normal"}}
    )
    assert issues_of(graph) == [
        ("orphan", "id", "node 'orphan' is unreachable from the start node 'dial'")
    ]


def test_node_reachable_only_through_a_dtmf_branch_counts_as_reachable():
    graph = payment_reminder()
    # play-callback is only reachable through branches.2; remove the branch and it is orphaned
    del node(graph, "collect-response")["outputs"]["branches"]["2"]
    assert issues_of(graph) == [
        ("play-callback", "id", "node 'play-callback' is unreachable from the start node 'dial-1'")
    ]


def test_hangup_with_outputs_is_refused():
    graph = minimal_notification()
    node(graph, "hangup")["outputs"] = {"default": "play"}
    found = issues_of(graph)
    assert ("hangup", "outputs", "a hangup node is terminal and has no outputs") in found
    assert ("hangup", "outputs.default", "unknown output (allowed: none)") in found


def test_missing_dtmf_branch_target():
    graph = payment_reminder()
    node(graph, "collect-response")["outputs"]["branches"]["3"] = "play-transfer"
    assert issues_of(graph) == [
        ("collect-response", "outputs.branches.3", "points to missing node 'play-transfer'")
    ]


def test_dtmf_branch_key_must_be_a_keypress():
    graph = payment_reminder()
    node(graph, "collect-response")["outputs"]["branches"]["x"] = "play-callback"
    assert issues_of(graph) == [("collect-response", "outputs.branches.x", "not a keypress")]


@pytest.mark.parametrize(
    ("items", "field", "message"),
    [
        ([], "config.audioItems", "must be a non-empty array of audio items"),
        ("greeting", "config.audioItems", "must be a non-empty array of audio items"),
        ([{"type": "audioFile"}], "config.audioItems[0].audioId", "is required (an uploaded audio id)"),
        (
            [{"type": "audioFile", "audioId": "a"}, {"type": "video", "src": "x"}],
            "config.audioItems[1].type",
            "unknown audio item type 'video' (allowed: audioFile, url, tts, number, date, word)",
        ),
        ([{"type": "url", "url": "ftp://x/y.wav"}], "config.audioItems[0].url", "must be an http(s) URL"),
        ([{"type": "tts", "text": "  "}], "config.audioItems[0].text", "is required"),
        (["greeting"], "config.audioItems[0]", "must be an object"),
    ],
)
def test_bad_audio_item(items, field, message):
    graph = minimal_notification()
    node(graph, "play")["config"]["audioItems"] = items
    assert issues_of(graph) == [("play", field, message)]


def test_play_node_without_any_audio_is_refused():
    graph = minimal_notification()
    node(graph, "play")["config"] = {}
    assert issues_of(graph) == [("play", "config.audioItems", "must be a non-empty array of audio items")]


def test_missing_start_node_id():
    graph = minimal_notification()
    del graph["startNodeId"]
    parsed, issues = parse_graph(graph)
    assert parsed is None
    assert issues == [FlowIssue(None, "graph.startNodeId", "is required")]


def test_start_node_id_naming_a_missing_node():
    graph = minimal_notification()
    graph["startNodeId"] = "dial-9"
    parsed, issues = parse_graph(graph)
    assert parsed is None
    assert [(i.field, i.message) for i in issues] == [("graph.startNodeId", "names a missing node 'dial-9'")]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (None, "graph"),
        ({"startNodeId": "a", "nodes": "a"}, "graph.nodes"),
        ({"startNodeId": "a", "nodes": []}, "graph.nodes"),
        ({"startNodeId": "a", "nodes": {}}, "graph.nodes"),
    ],
)
def test_unusable_graph_shapes(data, field):
    parsed, issues = parse_graph(data)
    assert parsed is None
    assert [i.field for i in issues] == [field]


def test_duplicate_node_id_in_array_form():
    graph = minimal_notification()
    graph["nodes"].append(copy.deepcopy(graph["nodes"][2]))
    assert issues_of(graph) == [("hangup", "graph.nodes[3].id", "duplicate node id")]


def test_map_key_must_match_the_node_id():
    graph = as_map(minimal_notification(), keep_ids=True)
    graph["nodes"]["play"]["id"] = "speak"
    found = issues_of(graph)
    assert ("speak", "graph.nodes[play].id", "does not match its key 'play'") in found


def test_config_checks_name_the_field():
    graph = payment_reminder()
    node(graph, "dial-1")["config"]["enableAMD"] = "yes"
    node(graph, "collect-response")["config"]["singleDigitConfig"]["allowedDigits"] = ["1", "12"]
    assert issues_of(graph) == [
        ("dial-1", "config.enableAMD", "must be true or false"),
        ("collect-response", "config.singleDigitConfig.allowedDigits", "must be a list of single keys"),
    ]


# -- require_graph: the API's 400 --------------------------------------------------------


def test_require_graph_returns_the_graph_when_valid():
    assert require_graph(payment_reminder()).node("collect-response")["type"] == "dtmf"


def test_require_graph_raises_validation_error_whose_field_errors_name_the_node():
    graph = payment_reminder()
    node(graph, "play-confirmed")["outputs"]["onComplete"] = "hangup-gone"
    node(graph, "hangup-vm")["type"] = "voicemail_drop"
    with pytest.raises(ValidationError) as caught:
        require_graph(graph)
    err = caught.value
    assert err.code == "VALIDATION_FAILED" and err.status == 400
    assert err.field_errors == {
        "graph.nodes.play-confirmed.outputs.onComplete": ["points to missing node 'hangup-gone'"],
        "graph.nodes.hangup-vm.type": [
            "unknown node type 'voicemail_drop' (known: answer, collect_audio, condition, dial, dtmf, hangup, opt_out, play, record, say, set_variable, sms, transfer, update_contact, webhook)"
        ],
    }
    assert "node 'play-confirmed'" in err.message
    assert "hangup-gone" in err.message


def test_require_graph_without_start_uses_the_graph_field():
    graph = walkthrough()
    graph["startNodeId"] = ""
    with pytest.raises(ValidationError) as caught:
        require_graph(graph)
    assert caught.value.field_errors == {"graph.startNodeId": ["is required"]}
    assert caught.value.message == "Invalid flow graph: graph.startNodeId is required"
