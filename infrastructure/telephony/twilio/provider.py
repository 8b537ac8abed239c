"""Twilio through its official SDK: placing calls, and the TwiML our webhooks answer.

The same code runs against real Twilio and against our sandbox (the SDK's HTTP
client is pointed at the sandbox)."""

from __future__ import annotations

from typing import Any

from twilio.base.exceptions import TwilioException
from twilio.rest import Client
from twilio.twiml.voice_response import Gather, VoiceResponse

from application.ports import TelephonyError

SAY_LANGUAGE = {"ar": "ar-XA", "ar-MA": "ar-XA", "fr": "fr-FR", "fr-FR": "fr-FR", "en": "en-US", "en-US": "en-US", "en-GB": "en-GB"}


class TwilioTelephony:
    def __init__(self, client: Client, public_base_url: str) -> None:
        self.client = client
        self.base = public_base_url.rstrip("/")

    def place_call(
        self,
        *,
        to: str,
        from_: str,
        call_id: str,
        attempt: int,
        timeout_seconds: int,
        machine_detection: bool,
    ) -> str:
        params: dict[str, Any] = {
            "to": to,
            "from_": from_,
            "url": f"{self.base}/twilio/voice/{call_id}/{attempt}",
            "method": "POST",
            "status_callback": f"{self.base}/twilio/status/{call_id}/{attempt}",
            "status_callback_event": ["initiated", "ringing", "answered", "completed"],
            "status_callback_method": "POST",
            "timeout": timeout_seconds,
        }
        if machine_detection:
            params["machine_detection"] = "Enable"
        try:
            return str(self.client.calls.create(**params).sid)
        except (TwilioException, OSError) as exc:
            raise TelephonyError(str(exc)) from exc
        except Exception as exc:  # the HTTP layer (requests) raises its own errors
            if exc.__class__.__module__.startswith(("requests", "urllib3")):
                raise TelephonyError(str(exc)) from exc
            raise


def render_twiml(
    instructions: list[dict[str, Any]], base_url: str, call_id: str, attempt: int, seq: int
) -> str:
    """Instructions of one flow turn as TwiML; a gather posts to the next turn's URL."""
    response = VoiceResponse()
    base = base_url.rstrip("/")
    for ins in instructions:
        verb = ins["verb"]
        if verb == "say":
            lang = SAY_LANGUAGE.get(ins.get("language") or "", None)
            kwargs: dict[str, Any] = {"language": lang} if lang else {}
            response.say(ins["text"], **kwargs)
        elif verb == "play":
            url = ins.get("url") or f"{base}/api/audio-management/audio/{ins.get('audioId')}"
            response.play(url)
        elif verb == "gather":
            action = f"{base}/twilio/voice/{call_id}/{attempt}/input/{seq + 1}"
            response.append(
                Gather(
                    input="dtmf",
                    num_digits=ins.get("numDigits", 1),
                    timeout=ins.get("timeoutSeconds", 10),
                    action=action,
                    method="POST",
                )
            )
            # Nothing pressed: Twilio falls through to the next verb.
            response.redirect(action, method="POST")
        elif verb == "hangup":
            response.hangup()
    return str(response)
