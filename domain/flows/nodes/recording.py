"""What the callee says: ``record`` (a voice message, saved as a recording) and
``collect_audio``: with ``transcription`` (or a ``transcriptionVariable``), speech
recognised into a variable; without, the answer recorded (saved like a ``record`` node's,
its id in ``recordingIdVariable``), leaving by ``onMaxDuration`` when the callee was still
speaking at ``maxDuration``. The phone network cannot give both at once in time for the
flow (Twilio's speech recognition keeps no audio; a recording's transcription comes
minutes later), so a node asks for one."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, uuid5

from domain.flows.issues import FlowIssue
from domain.flows.nodes.audio import check_audio_item, play_items
from domain.flows.nodes.base import (
    Next,
    NodeType,
    Outcome,
    Wait,
    Walk,
    boolean,
    number,
    register,
    seconds,
    variable_name,
)

SPEECH_LANGUAGES = ("auto", "ar-MA", "fr-FR", "en-US")


def records_audio(config: dict[str, Any]) -> bool:
    """Does this ``collect_audio`` node record the answer (rather than transcribe it)?"""
    return not (config.get("transcription") or config.get("transcriptionVariable"))


def recording_id(recording_sid: str) -> str:
    """Our id of a provider recording (deterministic: a duplicate callback saves it once)."""
    return str(uuid5(NAMESPACE_URL, f"gomobile:recording:{recording_sid}"))


@register
class Record(NodeType):
    name = "record"
    outputs = ("onComplete", "onTimeout", "onError", "default")

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues = variable_name(config, "variable", nid) + number(config, "maxDurationMs", nid, 1000, 3600000)
        return issues + number(config, "silenceThresholdMs", nid, 1000, 60000) + boolean(config, "beep", nid)

    def assigns(self, config: dict[str, Any]) -> list[str]:
        return [config["variable"]] if isinstance(config.get("variable"), str) else []

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        walk.emit("record_start", node)
        walk.instruct(
            {
                "verb": "record",
                "nodeId": node["id"],
                "maxLengthSeconds": seconds(config.get("maxDurationMs"), 60000),
                "timeoutSeconds": seconds(config.get("silenceThresholdMs"), 5000),
                "playBeep": bool(config.get("beep", True)),
            }
        )
        return Wait()

    def resume(self, walk: Walk, node: dict[str, Any], result: dict[str, Any]) -> Outcome:
        sid = result.get("recordingSid")
        if not sid:  # nothing was said: Twilio skips the action, our redirect reports it
            walk.emit("record_stop", node, recordId=None, durationMs=0)
            return Next(("onTimeout",), dead_end="record_timeout")
        config = node.get("config") or {}
        duration_ms = int(float(result.get("durationSeconds") or 0) * 1000)
        rid = recording_id(str(sid))
        walk.emit(
            "record_stop", node, recordId=rid, durationMs=duration_ms, recordingSid=sid,
            recordingUrl=result.get("recordingUrl"), recordingType="segment",
        )  # fmt: skip
        if config.get("variable"):
            walk.set_variable(node, config["variable"], rid)
        return Next(("onComplete",))


@register
class CollectAudio(NodeType):
    name = "collect_audio"
    outputs = ("onComplete", "onMaxDuration", "onNoSpeech", "onError", "default")

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues = number(config, "maxDuration", nid, 1, 600) + number(config, "firstSilenceTimeout", nid, 1, 60)
        issues += number(config, "silenceDuration", nid, 1, 30) + number(config, "maxRetry", nid, 0, 10)
        for key in ("silenceDetection", "beep", "transcription"):
            issues += boolean(config, key, nid)
        for key in ("recordingIdVariable", "transcriptionVariable"):
            issues += variable_name(config, key, nid)
        langs = config.get("languages")
        if langs is not None and (not isinstance(langs, list) or not all(x in SPEECH_LANGUAGES for x in langs)):
            issues.append(FlowIssue(nid, "config.languages", f"must be a list of {', '.join(SPEECH_LANGUAGES)}"))
        fallback = config.get("fallbackAudio")
        if fallback is not None:
            if not isinstance(fallback, dict):
                issues.append(FlowIssue(nid, "config.fallbackAudio", "must be an audio item"))
            else:
                issues += check_audio_item(nid, fallback, "config.fallbackAudio")
        return issues

    def assigns(self, config: dict[str, Any]) -> list[str]:
        return [config[k] for k in ("recordingIdVariable", "transcriptionVariable") if isinstance(config.get(k), str)]

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        self._listen(walk, node)
        return Wait()

    def _listen(self, walk: Walk, node: dict[str, Any]) -> None:
        config = node.get("config") or {}
        if records_audio(config):
            walk.emit("record_start", node)
            listen_for = int(config.get("silenceDuration") or 2) if config.get("silenceDetection", True) else int(config.get("maxDuration") or 30)
            walk.instruct({
                "verb": "record", "nodeId": node["id"], "maxLengthSeconds": int(config.get("maxDuration") or 30),
                "timeoutSeconds": listen_for, "playBeep": bool(config.get("beep", False)),
            })  # fmt: skip
            return
        langs = [x for x in (config.get("languages") or []) if x != "auto"]
        ins: dict[str, Any] = {
            "verb": "gather",
            "input": "speech",
            "nodeId": node["id"],
            "timeoutSeconds": int(config.get("firstSilenceTimeout") or 5),
            "speechTimeout": str(int(config["silenceDuration"])) if config.get("silenceDetection", True) and config.get("silenceDuration") else "auto",
            "language": langs[0] if langs else None,
        }
        if config.get("beep"):
            walk.instruct({"verb": "play", "url": "https://api.twilio.com/cowbell.mp3", "beep": True})
        walk.instruct(ins)

    def resume(self, walk: Walk, node: dict[str, Any], result: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        if records_audio(config):
            return self._recorded(walk, node, config, result)
        speech = (result.get("speech") or "").strip()
        walk.emit("speech_collected", node, transcript=speech, confidence=result.get("confidence"))
        if not speech:
            return self._again_or(walk, node, config)
        if config.get("transcriptionVariable"):
            walk.set_variable(node, config["transcriptionVariable"], speech)
        return Next(("onComplete",))

    def _recorded(self, walk: Walk, node: dict[str, Any], config: dict[str, Any], result: dict[str, Any]) -> Outcome:
        sid = result.get("recordingSid")
        duration = float(result.get("durationSeconds") or 0)
        if not sid or duration <= 0:
            walk.emit("record_stop", node, recordId=None, durationMs=0)
            return self._again_or(walk, node, config)
        rid = recording_id(str(sid))
        walk.emit(
            "record_stop", node, recordId=rid, durationMs=int(duration * 1000), recordingSid=sid,
            recordingUrl=result.get("recordingUrl"), recordingType="collect_audio",
        )  # fmt: skip
        if config.get("recordingIdVariable"):
            walk.set_variable(node, config["recordingIdVariable"], rid)
        if duration >= int(config.get("maxDuration") or 30):
            return Next(("onMaxDuration", "onComplete"))  # cut off: still speaking at the limit
        return Next(("onComplete",))

    def _again_or(self, walk: Walk, node: dict[str, Any], config: dict[str, Any]) -> Outcome:
        """Nothing was said: listen again (after the fallback prompt) or leave by onNoSpeech."""
        used = walk.state.retries.get(node["id"], 0)
        if used < int(config.get("maxRetry") or 0):
            walk.state.retries[node["id"]] = used + 1
            if isinstance(config.get("fallbackAudio"), dict):
                play_items(walk, node, [config["fallbackAudio"]], None, False)
            self._listen(walk, node)
            return Wait()
        return Next(("onNoSpeech",), dead_end="no_speech")
