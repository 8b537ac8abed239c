"""Scripted callees of the phone network sandbox.

Callee behaviours
=================

Every call placed through the sandbox reaches a *scripted callee*.  Unless a
per-number script overrides it, the callee is chosen by the LAST DIGIT of the
``To`` number:

======  ======================================================================
digit   behaviour
======  ======================================================================
``0``   busy on the FIRST attempt to that number (attempts are counted per
        number, across every call placed to it), then a person (as 4-9).
        Final status ``busy``, ``SipResponseCode=486``.
``1``   rings and never answers: final status ``no-answer``
        (``SipResponseCode=487``) after the call's ``Timeout`` (default 60 s,
        or ``SandboxConfig.no_answer_after_seconds``), scaled by ``time_scale``.
``2``   an answering machine: answers after ringing; ``AnsweredBy=machine_start``
        (``machine_end_beep`` with ``MachineDetection=DetectMessageEnd``) when
        machine detection was requested (posted to ``AsyncAmdStatusCallback``
        3 simulated seconds into the call with ``AsyncAmd=true``), no ``AnsweredBy``
        otherwise; never
        presses keys (every ``<Gather>`` times out); listens to the TwiML until
        it ends.  Final status ``completed``.
``3``   unreachable: final status ``failed`` right away, no ringing
        (``SipResponseCode=404``).
``4-9`` a person: answers after ``ring_seconds`` (``AnsweredBy=human`` when
        machine detection was requested), presses ``1`` at every ``<Gather>``
        and listens until the TwiML ends.  Final status ``completed``.
======  ======================================================================

A number without any digit behaves like a person.

Per-number scripts
------------------

A script (``PUT /_sandbox/scripts/{number}`` with a JSON body, or
``SandboxConfig.scripts={number: script}``) overrides the default::

    {"attempts": [{"behaviour": "busy"},
                  {"behaviour": "human", "digits": ["2", "9"], "hangupAfterVerbs": 3}],
     "then": {"behaviour": "human"},
     "answerDelayMs": 500,
     "duplicateCallbacks": true,
     "outOfOrderCallbacks": true}

* ``attempts[n]`` is used for the (n+1)-th call placed to that number (the
  per-number attempt counter keeps counting across calls); ``then`` is used
  once the list is exhausted (default: ``{"behaviour": "human"}``).
* ``behaviour``: ``human`` | ``machine`` | ``busy`` (486) | ``no_answer`` (487)
  | ``failed`` (404) | ``rejected``.  Twilio has no distinct "declined" status:
  a callee who declines the call ends it as ``busy`` with
  ``SipResponseCode=603`` (after ringing).
* ``digits``: one entry per ``<Gather>``, in order.  A missing entry means the
  default (``"1"`` for a person, nothing for a machine); ``""`` means "press
  nothing" (the Gather times out).  An entry longer than ``numDigits`` is cut
  to ``numDigits``; an entry containing the Gather's ``finishOnKey`` stops there.
* ``speech``: one entry per speech ``<Gather>`` (``input`` containing ``speech``), in
  order: the words said (``SpeechResult``); ``""`` or ``null`` means silence. A person
  says ``"yes"`` by default, a machine nothing.
* ``recordings``: one entry per ``<Record>``: seconds spoken before falling silent (the
  action gets ``RecordingSid``/``RecordingUrl``/``RecordingDuration`` and the call goes
  on with the TwiML it returns), ``0`` for silence (Twilio skips the action and goes on
  with the next verb). Without an entry the callee speaks 3 s and hangs up.
* ``transfers``: one entry per ``<Dial>``: the ``DialCallStatus`` of the other leg
  (``completed`` by default, ``busy``, ``no-answer``, ``failed``).
* ``hangupAfterVerbs``: the callee hangs up after hearing N TwiML verbs (nested
  Gather prompts count; the Gather itself counts once its input is collected,
  and keys pressed still reach the Gather ``action``); the callee hangs up
  instead of hearing the next verb.  The call ends ``completed``.
* ``answerDelayMs``: ring time before answering (unscaled milliseconds of
  simulated time, replaces ``ring_seconds``).  If it exceeds the call's
  ``Timeout`` the call ends ``no-answer``.
* ``callbackLatencyMs``: each status callback leaves this long (simulated milliseconds)
  after its event, as on a slow network: the final status can reach the platform well
  after the call's last flow webhook.
* ``dropFinalCallback`` (per attempt): the final status callback is never sent, as when
  Twilio's request is lost; the call still ends at the provider (fetch shows it).
* ``duplicateCallbacks``: every status callback is delivered twice (same
  ``SequenceNumber``).
* ``outOfOrderCallbacks``: the ``ringing`` callback is held back and delivered
  after the ``in-progress`` callback (or after the final one when the call is
  never answered).

Per-attempt fields (``digits``, ``hangupAfterVerbs``, ``answerDelayMs``) may
also be set at the top level of the script as defaults for every attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

BEHAVIOURS = ("human", "machine", "busy", "no_answer", "failed", "rejected")

#: SIP response codes reported on the final status callback of unanswered calls.
SIP_CODES = {"busy": 486, "no_answer": 487, "failed": 404, "rejected": 603}

#: Final Twilio call status of each behaviour that never answers.
UNANSWERED_STATUS = {
    "busy": "busy",
    "no_answer": "no-answer",
    "failed": "failed",
    "rejected": "busy",
}


class ScriptError(ValueError):
    """A callee script is malformed."""


@dataclass(frozen=True)
class CalleePlan:
    """What the callee does on one particular call attempt."""

    behaviour: str
    digits: tuple[str | None, ...] = ()
    hangup_after_verbs: int | None = None
    answer_delay_seconds: float | None = None  # simulated seconds, unscaled
    duplicate_callbacks: bool = False
    out_of_order_callbacks: bool = False
    speech: tuple[str | None, ...] = ()
    recordings: tuple[float | None, ...] = ()
    transfers: tuple[str, ...] = ()
    drop_final_callback: bool = False  # the final status callback is lost (never sent)
    callback_latency_seconds: float = 0.0  # simulated seconds before each status callback leaves

    def speech_for_gather(self, index: int) -> str:
        """Words said at the ``index``-th speech Gather ("" = silence)."""
        if index < len(self.speech):
            return self.speech[index] or ""
        return "yes" if self.behaviour == "human" else ""

    def recording_for(self, index: int) -> float | None:
        """Seconds spoken at the ``index``-th Record (None: speak 3 s and hang up)."""
        return self.recordings[index] if index < len(self.recordings) else None

    def transfer_status(self, index: int) -> str:
        return self.transfers[index] if index < len(self.transfers) else "completed"

    @property
    def answers(self) -> bool:
        return self.behaviour in ("human", "machine")

    def digits_for_gather(self, index: int) -> str:
        """Keys pressed at the ``index``-th Gather of the call ("" = nothing)."""
        if self.behaviour != "human":
            if index < len(self.digits) and self.digits[index] is not None:
                return self.digits[index] or ""
            return ""
        if index < len(self.digits) and self.digits[index] is not None:
            return self.digits[index] or ""
        return "1"


@dataclass(frozen=True)
class CalleeScript:
    """A validated per-number script."""

    attempts: tuple[Mapping[str, Any], ...] = ()
    then: Mapping[str, Any] = field(default_factory=lambda: {"behaviour": "human"})
    defaults: Mapping[str, Any] = field(default_factory=dict)
    duplicate_callbacks: bool = False
    out_of_order_callbacks: bool = False

    def plan_for_attempt(self, attempt: int) -> CalleePlan:
        step = self.attempts[attempt] if attempt < len(self.attempts) else self.then
        merged = {**self.defaults, **step}
        return _plan_from_step(
            merged,
            duplicate=self.duplicate_callbacks,
            out_of_order=self.out_of_order_callbacks,
        )


def _validate_step(step: Any, where: str) -> dict[str, Any]:
    if not isinstance(step, Mapping):
        raise ScriptError(f"{where} must be an object")
    behaviour = step.get("behaviour", "human")
    if behaviour not in BEHAVIOURS:
        raise ScriptError(f"{where}.behaviour must be one of {', '.join(BEHAVIOURS)}")
    digits = step.get("digits")
    if digits is not None:
        if not isinstance(digits, list) or not all(
            d is None or isinstance(d, str) for d in digits
        ):
            raise ScriptError(f"{where}.digits must be a list of strings")
        for d in digits:
            if d and not all(c in "0123456789*#w" for c in d):
                raise ScriptError(f"{where}.digits entries may only contain 0-9 * #")
    for key, kind in (("speech", str), ("transfers", str)):
        value = step.get(key)
        if value is not None and (not isinstance(value, list) or not all(v is None or isinstance(v, kind) for v in value)):
            raise ScriptError(f"{where}.{key} must be a list of strings")
    recs = step.get("recordings")
    if recs is not None and (
        not isinstance(recs, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in recs)
    ):
        raise ScriptError(f"{where}.recordings must be a list of seconds (0 = silence)")
    hav = step.get("hangupAfterVerbs")
    if hav is not None and (not isinstance(hav, int) or isinstance(hav, bool) or hav < 0):
        raise ScriptError(f"{where}.hangupAfterVerbs must be a non-negative integer")
    for key in ("answerDelayMs", "callbackLatencyMs"):
        delay = step.get(key)
        if delay is not None and (
            not isinstance(delay, (int, float)) or isinstance(delay, bool) or delay < 0
        ):
            raise ScriptError(f"{where}.{key} must be a non-negative number")
    return dict(step)


def _plan_from_step(step: Mapping[str, Any], *, duplicate: bool, out_of_order: bool) -> CalleePlan:
    delay = step.get("answerDelayMs")
    return CalleePlan(
        behaviour=step.get("behaviour", "human"),
        digits=tuple(step.get("digits") or ()),
        hangup_after_verbs=step.get("hangupAfterVerbs"),
        answer_delay_seconds=None if delay is None else float(delay) / 1000.0,
        duplicate_callbacks=duplicate,
        out_of_order_callbacks=out_of_order,
        speech=tuple(step.get("speech") or ()),
        recordings=tuple(step.get("recordings") or ()),
        transfers=tuple(step.get("transfers") or ()),
        drop_final_callback=bool(step.get("dropFinalCallback", False)),
        callback_latency_seconds=float(step.get("callbackLatencyMs") or 0) / 1000.0,
    )


def parse_script(data: Any) -> CalleeScript:
    """Validate a JSON script (see the module docstring) into a :class:`CalleeScript`."""
    if isinstance(data, CalleeScript):
        return data
    if not isinstance(data, Mapping):
        raise ScriptError("script must be a JSON object")
    attempts = data.get("attempts", [])
    if not isinstance(attempts, list):
        raise ScriptError("attempts must be a list")
    steps = tuple(_validate_step(s, f"attempts[{i}]") for i, s in enumerate(attempts))
    then = _validate_step(data.get("then", {"behaviour": "human"}), "then")
    defaults = {
        k: data[k]
        for k in ("digits", "hangupAfterVerbs", "answerDelayMs", "speech", "recordings", "transfers", "callbackLatencyMs")
        if k in data
    }
    _validate_step({"behaviour": "human", **defaults}, "script")
    return CalleeScript(
        attempts=steps,
        then=then,
        defaults=defaults,
        duplicate_callbacks=bool(data.get("duplicateCallbacks", False)),
        out_of_order_callbacks=bool(data.get("outOfOrderCallbacks", False)),
    )


def last_digit(number: str) -> str | None:
    for ch in reversed(number or ""):
        if ch.isdigit():
            return ch
    return None


def default_plan(number: str, attempt: int) -> CalleePlan:
    """The default callee of ``number`` on its ``attempt``-th call (0-based)."""
    digit = last_digit(number)
    if digit == "0":
        return CalleePlan("busy" if attempt == 0 else "human")
    if digit == "1":
        return CalleePlan("no_answer")
    if digit == "2":
        return CalleePlan("machine")
    if digit == "3":
        return CalleePlan("failed")
    return CalleePlan("human")


def plan_for(number: str, attempt: int, script: CalleeScript | None) -> CalleePlan:
    """Resolve the callee plan for a call: script override, else the default table."""
    if script is not None:
        return script.plan_for_attempt(attempt)
    return default_plan(number, attempt)


def gather_input(pressed: str, num_digits: int | None, finish_on_key: str) -> tuple[str, str]:
    """Apply Gather's numDigits/finishOnKey to the keys the callee presses.

    Returns ``(Digits, FinishedOnKey)`` as Twilio reports them.
    """
    digits = ""
    for ch in pressed:
        if finish_on_key and ch == finish_on_key:
            return digits, ch
        digits += ch
        if num_digits and len(digits) >= num_digits:
            break
    return digits, ""
