"""The flows of DOMAIN.md, as data, shared by the graph and engine tests.

Each builder returns a fresh dict, so a test may mutate it freely.
"""

from __future__ import annotations

import copy
from typing import Any


def walkthrough() -> dict[str, Any]:
    """DOMAIN.md §9, step 4: the older node shape (play ``config.audioId``, ``onEnd``)."""
    return {
        "startNodeId": "dial-1",
        "nodes": [
            {
                "id": "dial-1",
                "type": "dial",
                "label": "Dial Contact",
                "config": {"timeout": 30000, "enableAMD": False},
                "outputs": {"onAnswer": "play-1", "onNoAnswer": "hangup-1", "onBusy": "hangup-1"},
            },
            {
                "id": "play-1",
                "type": "play",
                "label": "Play Greeting",
                "config": {"audioId": "AUDIO_ID"},
                "outputs": {"onEnd": "hangup-1"},
            },
            {
                "id": "hangup-1",
                "type": "hangup",
                "label": "End Call",
                "config": {"reason": "Call completed", "hangupType": "normal"},
            },
        ],
    }


def _play(nid: str, label: str, audio: str, then: str) -> dict[str, Any]:
    return {
        "id": nid,
        "type": "play",
        "label": label,
        "config": {"audioItems": [{"type": "audioFile", "audioId": audio}]},
        "outputs": {"onComplete": then},
    }


def _hangup(nid: str, label: str, reason: str, kind: str) -> dict[str, Any]:
    return {"id": nid, "type": "hangup", "label": label, "config": {"reason": reason, "hangupType": kind}}


def payment_reminder() -> dict[str, Any]:
    """DOMAIN.md §5.8, the "Payment Reminder" graph exactly as reconstructed."""
    return {
        "startNodeId": "dial-1",
        "nodes": [
            {
                "id": "dial-1",
                "type": "dial",
                "label": "Call Customer",
                "config": {"timeout": 30000, "enableAMD": True},
                "outputs": {
                    "onAnswer": "play-greeting",
                    "onVoicemail": "hangup-vm",
                    "onNoAnswer": "hangup-na",
                    "onBusy": "hangup-busy",
                },
            },
            _play("play-greeting", "Play Reminder", "greeting-audio-id", "collect-response"),
            {
                "id": "collect-response",
                "type": "dtmf",
                "label": "Get Response",
                "config": {
                    "mode": "single_digit",
                    "variable": "customerResponse",
                    "timeout": 10000,
                    "singleDigitConfig": {"allowedDigits": ["1", "2"]},
                },
                "outputs": {
                    "branches": {"1": "play-confirmed", "2": "play-callback"},
                    "onTimeout": "hangup-timeout",
                },
            },
            _play("play-confirmed", "Confirm Payment", "confirmed-audio-id", "hangup-success"),
            _play("play-callback", "Schedule Callback", "callback-audio-id", "hangup-success"),
            _hangup("hangup-success", "End Call - Success", "completed", "normal"),
            _hangup("hangup-vm", "End Call - Voicemail", "voicemail", "voicemail"),
            _hangup("hangup-na", "End Call - No Answer", "no_answer", "no_answer"),
            _hangup("hangup-busy", "End Call - Busy", "busy", "busy"),
            _hangup("hangup-timeout", "End Call - Timeout", "dtmf_timeout", "timeout"),
        ],
    }


def payment_reminder_with_retries() -> dict[str, Any]:
    """The "Building Your First Campaign" variant (§5.8): the dtmf node retries twice and
    then leaves through ``onMaxRetries`` to a dedicated hangup."""
    graph = payment_reminder()
    dtmf = next(n for n in graph["nodes"] if n["id"] == "collect-response")
    dtmf["config"]["retry"] = {"maxRetries": 2}
    dtmf["outputs"]["onMaxRetries"] = "hangup-max-retries"
    graph["nodes"].append(_hangup("hangup-max-retries", "End Call - Max Retries", "max_retries", "timeout"))
    return graph


def minimal_notification() -> dict[str, Any]:
    """§5.8 "Minimal notification flow": ``default`` catches every other dial outcome."""
    return {
        "startNodeId": "dial",
        "nodes": [
            {
                "id": "dial",
                "type": "dial",
                "config": {"timeout": 30000, "enableAMD": False},
                "outputs": {"onAnswer": "play", "default": "hangup"},
            },
            {
                "id": "play",
                "type": "play",
                "config": {"audioItems": [{"type": "audioFile", "audioId": "message"}]},
                "outputs": {"onComplete": "hangup"},
            },
            {"id": "hangup", "type": "hangup", "config": {"reason": "completed", "hangupType": "normal"}},
        ],
    }


def as_map(graph: dict[str, Any], *, keep_ids: bool = False) -> dict[str, Any]:
    """The newer form: ``nodes`` keyed by node id (ids dropped from the bodies by default)."""
    nodes = {}
    for node in copy.deepcopy(graph["nodes"]):
        nid = node["id"] if keep_ids else node.pop("id")
        nodes[nid] = node
    return {"startNodeId": graph["startNodeId"], "nodes": nodes}
