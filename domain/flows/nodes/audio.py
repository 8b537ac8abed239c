"""What the callee hears: ``play`` (audio items: uploaded audio, URLs, TTS, spoken numbers,
dates and dictionary words) and ``say`` (text-to-speech with templates, language, voice).

Numbers, dates and words are spoken by the phone network's text-to-speech in the item's
language when no dictionary audio is available; the instruction keeps the
``dictionaryId`` so a dictionary-stitching renderer can replace it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from domain.flows import templates
from domain.flows.issues import FlowIssue
from domain.flows.nodes.base import (
    Jump,
    Next,
    NodeType,
    Outcome,
    Wait,
    Walk,
    boolean,
    failed,
    one_of,
    register,
    text,
)

LANGUAGES = ("ar-MA", "ar", "fr", "en", "fr-FR", "en-US", "en-GB")
GENDERS = ("male", "female")
TONES = ("neutral", "friendly", "formal")
AUDIO_ITEM_TYPES = ("audioFile", "url", "tts", "number", "date", "word")
NUMBER_MODES = ("full", "twoByTwo")
DATE_MODES = ("dayMonthYear", "monthAsWord")
MONTHS = {
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre", "novembre", "décembre"),
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"),
    "ar": ("يناير", "فبراير", "مارس", "أبريل", "ماي", "يونيو", "يوليوز", "غشت", "شتنبر", "أكتوبر", "نونبر", "دجنبر"),
}  # fmt: skip


def _literal_or_source(item: dict[str, Any], key: str, nid: str, at: str) -> list[FlowIssue]:
    v = item.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        what = "an uploaded audio id" if key == "audioId" else "a literal or a value source"
        return [FlowIssue(nid, f"{at}.{key}", f"is required ({what})")]
    if isinstance(v, dict) and not templates.is_value_source(v):
        return [FlowIssue(nid, f"{at}.{key}", "must be a literal or {source: contactField|customAttribute|variable}")]
    return []


def check_audio_items(nid: str, items: Any, where: str) -> list[FlowIssue]:
    if not isinstance(items, list) or not items:
        return [FlowIssue(nid, where, "must be a non-empty array of audio items")]
    issues: list[FlowIssue] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            issues.append(FlowIssue(nid, at, "must be an object"))
            continue
        issues.extend(check_audio_item(nid, item, at))
    return issues


def check_audio_item(nid: str, item: dict[str, Any], at: str) -> list[FlowIssue]:
    itype = item.get("type")
    issues: list[FlowIssue] = []
    if itype == "audioFile":
        issues += _literal_or_source(item, "audioId", nid, at)
    elif itype == "url":
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            issues.append(FlowIssue(nid, f"{at}.url", "must be an http(s) URL"))
    elif itype == "tts":
        if not isinstance(item.get("text"), str) or not item["text"].strip():
            issues.append(FlowIssue(nid, f"{at}.text", "is required"))
    elif itype in ("number", "date", "word"):
        issues += _literal_or_source(item, "value", nid, at)
        modes = {"number": NUMBER_MODES, "date": DATE_MODES}.get(itype)
        if modes and item.get("mode") is not None and item["mode"] not in modes:
            issues.append(FlowIssue(nid, f"{at}.mode", f"'{item['mode']}' is not one of {', '.join(modes)}"))
        value = item.get("value")
        if itype == "number" and isinstance(value, str) and "{{" not in value and _number_text(value) is None:
            issues.append(FlowIssue(nid, f"{at}.value", f"'{value}' is not a number"))
    else:
        allowed = ", ".join(AUDIO_ITEM_TYPES)
        issues.append(FlowIssue(nid, f"{at}.type", f"unknown audio item type '{itype}' (allowed: {allowed})"))
    if item.get("language") is not None and item["language"] not in LANGUAGES:
        issues.append(FlowIssue(nid, f"{at}.language", f"must be one of {', '.join(LANGUAGES)}"))
    return issues


def item_templates(items: Any, where: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict):
            for key in ("text", "value", "audioId"):
                if key in item:
                    out.append((f"{where}[{i}].{key}", item[key]))
    return out


def _number_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, str):
        s = value.strip().replace(" ", "")
        try:
            float(s)
        except ValueError:
            return None
        return s
    return None


def number_words(value: Any, mode: str) -> str | None:
    """The text a TTS voice reads: ``1234`` (full) or ``12 34`` (twoByTwo)."""
    s = _number_text(value)
    if s is None:
        return None
    if mode != "twoByTwo":
        return s
    sign, digits = ("-", s[1:]) if s.startswith("-") else ("", s)
    whole, _, frac = digits.partition(".")
    pairs = [whole[i : i + 2] for i in range(0, len(whole), 2)]
    return sign + " ".join(pairs) + (f" . {frac}" if frac else "")


def date_words(value: Any, mode: str, language: str | None) -> str | None:
    if isinstance(value, datetime):
        d = value.date()
    elif isinstance(value, date):
        d = value
    elif isinstance(value, str):
        try:
            d = date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    else:
        return None
    if mode == "monthAsWord":
        months = MONTHS.get((language or "fr").split("-")[0], MONTHS["fr"])
        return f"{d.day} {months[d.month - 1]} {d.year}"
    return f"{d.day:02d} {d.month:02d} {d.year}"


def play_items(walk: Walk, node: dict[str, Any], items: list[dict[str, Any]], language: str | None, barge_in: bool) -> int:
    """Instructions for each audio item; an item whose value cannot be spoken is skipped
    and reported (a missing balance must not silence the rest of the message). Returns the
    number of items skipped."""
    skipped = 0
    for item in items:
        itype = item.get("type")
        lang = item.get("language") or language
        if itype == "tts":
            walk.instruct({"verb": "say", "text": walk.render(item["text"]), "language": lang, "gender": item.get("gender", "female"), **_barge(barge_in)})
        elif itype == "url":
            walk.instruct({"verb": "play", "url": item["url"], **_barge(barge_in)})
        elif itype == "audioFile":
            audio_id = walk.value(item.get("audioId"))
            if not audio_id:
                walk.emit("play_item_skipped", node, itemType=itype, why="the audio id resolved to nothing")
                skipped += 1
                continue
            walk.instruct({"verb": "play", "audioId": str(audio_id), **_barge(barge_in)})
        else:
            value = walk.value(item.get("value"))
            if itype == "number":
                spoken = number_words(value, item.get("mode") or "full")
            elif itype == "date":
                spoken = date_words(value, item.get("mode") or "dayMonthYear", lang)
            else:
                spoken = None if value in (None, "") else str(value)
            if spoken is None:
                walk.emit("play_item_skipped", node, itemType=itype, value=value, why=f"not a {itype}")
                skipped += 1
                continue
            walk.instruct(
                {"verb": "say", "text": spoken, "language": lang, "gender": "female", "item": itype,
                 "dictionaryId": item.get("dictionaryId"), **_barge(barge_in)}
            )  # fmt: skip
    return skipped


def barge_in_target(config: dict[str, Any]) -> str | None:
    """The dtmf node a key pressed during this node's prompts goes to, if any."""
    target = config.get("bargeInDtmfNodeId")
    return target if config.get("allowBargeIn") and isinstance(target, str) else None


def _barge(barge_in: bool) -> dict[str, Any]:
    return {"bargeIn": True} if barge_in else {}


def _check_barge(nid: str, config: dict[str, Any]) -> list[FlowIssue]:
    issues = boolean(config, "allowBargeIn", nid)
    target = config.get("bargeInDtmfNodeId")
    if target is not None and not isinstance(target, str):
        issues.append(FlowIssue(nid, "config.bargeInDtmfNodeId", "must be a node id"))
    return issues


@register
class Play(NodeType):
    name = "play"

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues = check_audio_items(nid, config.get("audioItems"), "config.audioItems")
        return issues + _check_barge(nid, config) + one_of(config, "language", nid, LANGUAGES)

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        return item_templates(config.get("audioItems"), "config.audioItems")

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        skipped = play_items(walk, node, config.get("audioItems") or [], config.get("language"), bool(config.get("allowBargeIn")))
        if skipped:
            return failed(walk, node, f"{skipped} audio item(s) could not be played", "onComplete")
        target = barge_in_target(config)
        if target is not None and (node.get("outputs") or {}).get("onComplete") != target:
            # The prompts play inside a keypress prompt: a key pressed while they play goes
            # to the target dtmf node as its input (DOMAIN.md §5.3); none, and the flow
            # goes on once they end.
            walk.instruct({"verb": "gather", "nodeId": node["id"], "numDigits": 1, "timeoutSeconds": 1, "bargeInTo": target})
            return Wait()
        return Next(("onComplete",))

    def resume(self, walk: Walk, node: dict[str, Any], result: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        target = barge_in_target(config)
        if result.get("digits") and target is not None:
            walk.emit("barge_in", node, digits=result["digits"], target=target)
            return Jump(target, {"digits": result["digits"]}, "bargeIn")
        return Next(("onComplete",))


@register
class Say(NodeType):
    name = "say"

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues = text(config, "text", nid, required=True) + one_of(config, "language", nid, LANGUAGES)
        issues += one_of(config, "gender", nid, GENDERS) + one_of(config, "tone", nid, TONES)
        issues += text(config, "voice", nid) + _check_barge(nid, config)
        return issues

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        return [("config.text", config.get("text"))]

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        said = walk.render(config["text"])
        if not said.strip():
            return failed(walk, node, "the text rendered empty", "onComplete")
        ins = {"verb": "say", "text": said, "language": config.get("language"), "gender": config.get("gender", "female")}
        if config.get("voice"):
            ins["voice"] = config["voice"]
        if config.get("allowBargeIn"):
            ins["bargeIn"] = True
        walk.instruct(ins)
        return Next(("onComplete",))
