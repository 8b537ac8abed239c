"""``dtmf``: keypresses, single or multi digit, with retries on silence or a wrong answer.

Twilio's ``<Gather>`` does the collecting: ``numDigits`` (1, or ``maxDigits``), one
``finishOnKey`` terminator and one ``timeout`` (Twilio waits that long for the first and
for each next key, so ``interDigitTimeout``, when given, is what the TwiML uses once the
first key is expected within ``timeout``: we take the larger of the two)."""

from __future__ import annotations

from typing import Any

from domain.flows.issues import FlowIssue
from domain.flows.nodes.base import (
    Next,
    NodeType,
    Outcome,
    Wait,
    Walk,
    number,
    register,
    seconds,
    variable_name,
)

DTMF_KEYS = set("0123456789*#")
MODES = ("single_digit", "multi_digit")


@register
class Dtmf(NodeType):
    name = "dtmf"
    outputs = ("branches", "onSuccess", "onTimeout", "onInvalid", "onMaxRetries", "onError", "default")

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        issues = number(config, "timeout", nid, 1000, 120000) + variable_name(config, "variable", nid)
        mode = config.get("mode", "single_digit")
        if mode not in MODES:
            issues.append(FlowIssue(nid, "config.mode", f"'{mode}' is not one of {', '.join(MODES)}"))
        single = config.get("singleDigitConfig")
        if single is not None and not isinstance(single, dict):
            issues.append(FlowIssue(nid, "config.singleDigitConfig", "must be an object"))
        allowed = single.get("allowedDigits") if isinstance(single, dict) else None
        if allowed is not None and (
            not isinstance(allowed, list) or not all(isinstance(d, str) and d in DTMF_KEYS for d in allowed)
        ):
            issues.append(FlowIssue(nid, "config.singleDigitConfig.allowedDigits", "must be a list of single keys"))
        multi = config.get("multiDigitConfig")
        if multi is not None and not isinstance(multi, dict):
            issues.append(FlowIssue(nid, "config.multiDigitConfig", "must be an object"))
        elif isinstance(multi, dict):
            where = "config.multiDigitConfig"
            issues += number(multi, "minDigits", nid, 1, 50, where=where) + number(multi, "maxDigits", nid, 1, 50, where=where)
            issues += number(multi, "interDigitTimeout", nid, 1000, 60000, where=where)
            lo, hi = multi.get("minDigits", 1), multi.get("maxDigits")
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                issues.append(FlowIssue(nid, f"{where}.minDigits", f"is greater than maxDigits ({lo} > {hi})"))
            terms = multi.get("terminators")
            if terms is not None and (
                not isinstance(terms, list) or len(terms) > 1 or not all(t in ("#", "*") for t in terms)
            ):
                issues.append(FlowIssue(nid, f"{where}.terminators", "must be [] or one key of '#', '*' (Twilio's finishOnKey is one key)"))
        elif mode == "multi_digit":
            issues.append(FlowIssue(nid, "config.multiDigitConfig", "is required in multi_digit mode (minDigits, maxDigits, terminators)"))
        retry = config.get("retry")
        if retry is not None:
            if not isinstance(retry, dict):
                issues.append(FlowIssue(nid, "config.retry", "must be an object"))
            else:
                issues += number(retry, "maxRetries", nid, 0, 10, where="config.retry")
                for key in ("invalidAudioId", "timeoutAudioId", "invalidMessage", "timeoutMessage"):
                    if retry.get(key) is not None and not isinstance(retry[key], str):
                        issues.append(FlowIssue(nid, f"config.retry.{key}", "must be a string"))
        return issues

    def assigns(self, config: dict[str, Any]) -> list[str]:
        return [v for v in (config.get("variable"), "lastDtmf") if isinstance(v, str)]

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        retry = config.get("retry") if isinstance(config.get("retry"), dict) else {}
        return [(f"config.retry.{k}", retry[k]) for k in ("invalidMessage", "timeoutMessage") if isinstance(retry.get(k), str)]

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        gather(walk, node)
        return Wait()

    def resume(self, walk: Walk, node: dict[str, Any], result: dict[str, Any]) -> Outcome:
        config = node.get("config") or {}
        multi = config.get("mode") == "multi_digit"
        mode = "multi_digit" if multi else "single_digit"
        digits = result.get("digits") or ""
        if not multi:
            digits = digits[:1]
        walk.input = {"nodeId": node["id"], "digits": digits, "mode": mode}
        walk.emit("dtmf_collected", node, digits=digits, mode=mode)
        if not digits:
            return retry_or(walk, node, "onTimeout")
        if multi:
            mc = config.get("multiDigitConfig") or {}
            lo, hi = int(mc.get("minDigits") or 1), mc.get("maxDigits")
            if not digits.isdigit() or len(digits) < lo or (isinstance(hi, int) and len(digits) > hi):
                return retry_or(walk, node, "onInvalid")
        else:
            allowed = (config.get("singleDigitConfig") or {}).get("allowedDigits")
            branches = (node.get("outputs") or {}).get("branches") or {}
            if allowed and digits not in allowed and digits not in branches:
                return retry_or(walk, node, "onInvalid")
        if config.get("variable"):
            walk.set_variable(node, config["variable"], digits)
        walk.state.variables["lastDtmf"] = digits
        branches = (node.get("outputs") or {}).get("branches") or {}
        if digits in branches:
            return Next((f"branches.{digits}",), dead_end="no_route")
        # Keys that are valid but lead nowhere (no branch, no onSuccess) are the flow's
        # error: onError where it is wired, else default, else the call ends.
        if multi and "*" in branches:
            return Next(("branches.*", "onSuccess", "onError"), dead_end="no_route")
        return Next(("onSuccess", "onError"), dead_end="no_route")


def gather(walk: Walk, node: dict[str, Any], prompt: str | None = None) -> None:
    config = node.get("config") or {}
    retry = config.get("retry") or {}
    if prompt == "invalid":
        _prompt(walk, retry.get("invalidAudioId"), retry.get("invalidMessage"))
    elif prompt == "timeout":
        _prompt(walk, retry.get("timeoutAudioId"), retry.get("timeoutMessage"))
    ins: dict[str, Any] = {"verb": "gather", "nodeId": node["id"], "numDigits": 1, "timeoutSeconds": seconds(config.get("timeout"), 10000)}
    if config.get("mode") == "multi_digit":
        mc = config.get("multiDigitConfig") or {}
        terms = mc.get("terminators") or []
        ins["numDigits"] = mc.get("maxDigits")
        if terms:
            ins["finishOnKey"] = terms[0]
        if mc.get("interDigitTimeout"):
            ins["timeoutSeconds"] = max(ins["timeoutSeconds"], seconds(mc["interDigitTimeout"], 5000))
    walk.instruct(ins)


def _prompt(walk: Walk, audio_id: Any, message: Any) -> None:
    if audio_id:
        walk.instruct({"verb": "play", "audioId": audio_id})
    if message:
        walk.instruct({"verb": "say", "text": walk.render(message), "language": None, "gender": "female"})


def retry_or(walk: Walk, node: dict[str, Any], output: str) -> Outcome:
    """Retry with the matching prompt while retries remain; then ``onMaxRetries`` wins
    over ``onTimeout``/``onInvalid`` (the guide's flow keeps both)."""
    config = node.get("config") or {}
    max_retries = int((config.get("retry") or {}).get("maxRetries") or 0)
    used = walk.state.retries.get(node["id"], 0)
    if used < max_retries:
        walk.state.retries[node["id"]] = used + 1
        gather(walk, node, "invalid" if output == "onInvalid" else "timeout")
        return Wait()
    names = ("onMaxRetries", output) if max_retries else (output,)
    return Next(names, dead_end=output.removeprefix("on").lower())
