"""Twilio through its official SDK: placing calls, and the TwiML our webhooks answer.

The same code runs against real Twilio and against our sandbox (the SDK's HTTP
client is pointed at the sandbox)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twilio.base.exceptions import TwilioException
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

from application.ports import TelephonyError

SAY_LANGUAGE = {"ar": "ar-XA", "ar-MA": "ar-XA", "fr": "fr-FR", "fr-FR": "fr-FR", "en": "en-US", "en-US": "en-US", "en-GB": "en-GB"}


# Twilio's call statuses in our words.
PROVIDER_STATUS = {
    "queued": "queued",
    "initiated": "queued",
    "ringing": "ringing",
    "in-progress": "in_progress",
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "failed",
    "canceled": "cancelled",
}
FINAL_STATUSES = ("completed", "busy", "no_answer", "failed", "cancelled")


class TwilioTelephony:
    def __init__(self, client: Client, public_base_url: str) -> None:
        self.client = client
        self.base = public_base_url.rstrip("/")

    def fetch_call(self, provider_call_id: str) -> dict[str, Any]:
        """The provider's view of a call, in our words (for reconciling lost callbacks)."""
        try:
            call = self.client.calls(provider_call_id).fetch()
        except (TwilioException, OSError) as exc:
            raise TelephonyError(str(exc)) from exc
        status = PROVIDER_STATUS.get(str(call.status), str(call.status))
        answered_by = getattr(call, "answered_by", None)
        duration = getattr(call, "duration", None)
        return {
            "status": status,
            "answeredBy": ("machine" if str(answered_by).startswith(("machine", "fax")) else "human") if answered_by else None,
            "durationMs": int(duration) * 1000 if duration not in (None, "") and str(duration).isdigit() else None,
        }

    def redirect(self, provider_call_id: str, twiml: str) -> None:
        """Replace what a live call is doing with ``twiml`` (Twilio's call update)."""
        try:
            self.client.calls(provider_call_id).update(twiml=twiml)
        except (TwilioException, OSError) as exc:
            raise TelephonyError(str(exc)) from exc

    def place_call(
        self,
        *,
        to: str,
        from_: str,
        call_id: str,
        attempt: int,
        timeout_seconds: int,
        machine_detection: bool | str,
    ) -> str:
        params: dict[str, Any] = {
            "to": to,
            "from_": from_,
            "url": f"{self.base}/twilio/voice/{call_id}/{attempt}",
            "method": "POST",
            "status_callback": f"{self.base}/twilio/status/{call_id}/{attempt}",
            # "initiated" changes nothing for us and "answered" arrives anyway as the voice
            # webhook: asking only for these halves the callbacks each call costs.
            "status_callback_event": ["ringing", "completed"],
            "status_callback_method": "POST",
            "timeout": timeout_seconds,
        }
        if machine_detection:
            # Asynchronous: a person hears the flow at once (no dead air while Twilio
            # listens); the verdict comes to its own webhook, and a machine is then turned
            # to the dial node's onVoicemail by redirecting the live call (``redirect``).
            # True is "Enable" (a machine is told apart as soon as it answers: best to hang
            # up on it); "DetectMessageEnd" waits for its beep (best to leave a message).
            params["machine_detection"] = machine_detection if isinstance(machine_detection, str) else "Enable"
            params["async_amd"] = "true"
            params["async_amd_status_callback"] = f"{self.base}/twilio/amd/{call_id}/{attempt}"
            params["async_amd_status_callback_method"] = "POST"
        try:
            return str(self.client.calls.create(**params).sid)
        except (TwilioException, OSError) as exc:
            raise TelephonyError(str(exc)) from exc
        except Exception as exc:  # the HTTP layer (requests) raises its own errors
            if exc.__class__.__module__.startswith(("requests", "urllib3")):
                raise TelephonyError(str(exc)) from exc
            raise


# A voice per (language, gender) when the flow names none (Amazon Polly voices on Twilio).
VOICES = {
    ("fr-FR", "female"): "Polly.Lea", ("fr-FR", "male"): "Polly.Mathieu",
    ("en-US", "female"): "Polly.Joanna", ("en-US", "male"): "Polly.Matthew",
    ("en-GB", "female"): "Polly.Amy", ("en-GB", "male"): "Polly.Brian",
    ("ar-XA", "female"): "Polly.Zeina", ("ar-XA", "male"): "Polly.Zeina",
}  # fmt: skip
SPEECH_LANGUAGE = {"ar-MA": "ar-MA", "fr-FR": "fr-FR", "en-US": "en-US"}


def _say_args(ins: dict[str, Any]) -> dict[str, Any]:
    lang = SAY_LANGUAGE.get(ins.get("language") or "")
    kwargs: dict[str, Any] = {"language": lang} if lang else {}
    voice = ins.get("voice") or (VOICES.get((lang, ins.get("gender") or "female")) if lang and ins.get("gender") == "male" else None)
    if voice:
        kwargs["voice"] = voice
    return kwargs


AudioUrl = Callable[[str], str]  # an uploaded audio id -> a URL Twilio can fetch


def _prompt(parent: Any, ins: dict[str, Any], audio_url: AudioUrl) -> None:
    if ins["verb"] == "say":
        parent.say(ins["text"], **_say_args(ins))
    else:
        parent.play(ins.get("url") or audio_url(str(ins.get("audioId"))))


def render_twiml(
    instructions: list[dict[str, Any]],
    base_url: str,
    call_id: str,
    attempt: int,
    seq: int,
    audio_url: AudioUrl | None = None,
) -> str:
    """Instructions of one flow turn as TwiML. A verb that waits for the callee (gather,
    record, dial) posts its result to the next turn's URL; when Twilio skips that request
    (nothing pressed, nothing recorded) the Redirect after it reports the silence.

    ``audio_url`` makes the URL of an uploaded audio's ``<Play>`` (a signed playback URL:
    Twilio sends no API key); without it, the plain stream URL."""
    response = VoiceResponse()
    base = base_url.rstrip("/")
    if audio_url is None:
        audio_url = lambda audio_id: f"{base}/api/audio-management/audio/{audio_id}"
    action = f"{base}/twilio/voice/{call_id}/{attempt}/input/{seq + 1}"
    held: list[dict[str, Any]] = []  # barge-in prompts: played inside the next Gather
    for ins in instructions:
        verb = ins["verb"]
        if verb in ("say", "play") and ins.get("bargeIn"):
            held.append(ins)
            continue
        if verb != "gather":
            for prompt in held:
                _prompt(response, prompt, audio_url)
            held = []
        if verb in ("say", "play"):
            _prompt(response, ins, audio_url)
        elif verb == "gather":
            speech = ins.get("input") == "speech"
            kwargs: dict[str, Any] = {"input": "speech" if speech else "dtmf", "timeout": ins.get("timeoutSeconds", 10), "action": action, "method": "POST"}
            if speech:
                kwargs["speech_timeout"] = ins.get("speechTimeout") or "auto"
                if SPEECH_LANGUAGE.get(ins.get("language") or ""):
                    kwargs["language"] = SPEECH_LANGUAGE[ins["language"]]
            else:
                if ins.get("numDigits"):
                    kwargs["num_digits"] = ins["numDigits"]
                if "finishOnKey" in ins:
                    kwargs["finish_on_key"] = ins["finishOnKey"]
            gather = Gather(**kwargs)
            for prompt in held:
                _prompt(gather, prompt, audio_url)
            held = []
            response.append(gather)
            response.redirect(action, method="POST")  # nothing pressed or said
        elif verb == "record":
            response.record(
                action=action, method="POST", max_length=ins.get("maxLengthSeconds", 60),
                timeout=ins.get("timeoutSeconds", 5), play_beep=bool(ins.get("playBeep", True)), finish_on_key="#",
            )  # fmt: skip
            response.redirect(action, method="POST")  # nothing recorded
        elif verb == "dial":
            kwargs = {"action": action, "method": "POST", "timeout": ins.get("timeoutSeconds", 30)}
            if ins.get("callerId"):
                kwargs["caller_id"] = ins["callerId"]
            dial = Dial(**kwargs)
            dial.number(ins["number"])
            response.append(dial)
        elif verb == "hangup":
            response.hangup()
    for prompt in held:
        _prompt(response, prompt, audio_url)
    return str(response)


def callback_result(params: dict[str, str]) -> dict[str, Any]:
    """What the callee did, from the parameters of a Gather/Record/Dial action request."""
    result: dict[str, Any] = {"digits": params.get("Digits") or None}
    if result["digits"] == "hangup":  # Record ended by the callee hanging up
        result["digits"] = None
    if "SpeechResult" in params:
        result["speech"] = params["SpeechResult"]
        try:
            result["confidence"] = float(params.get("Confidence") or 0)
        except ValueError:
            result["confidence"] = None
    if params.get("RecordingSid"):
        result["recordingSid"] = params["RecordingSid"]
        result["recordingUrl"] = params.get("RecordingUrl")
        result["durationSeconds"] = params.get("RecordingDuration")
    if params.get("DialCallStatus"):
        result["dialStatus"] = params["DialCallStatus"]
        result["durationSeconds"] = params.get("DialCallDuration")
    return result
