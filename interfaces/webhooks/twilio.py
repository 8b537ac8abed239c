"""Twilio webhooks: signature checked with the SDK's RequestValidator over the public URL
Twilio called (never the Host header behind a proxy), then translated into commands."""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request, Response, post
from twilio.request_validator import RequestValidator

from application.ports import TelephonyError
from infrastructure.telephony.twilio.provider import callback_result, render_twiml

log = logging.getLogger("gomobile.twilio")

TWIML = "application/xml"

# Twilio's CallStatus (and SIP code) in our words.
FINAL = {"completed": "completed", "busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "cancelled"}


def _answered_by(value: str | None) -> str | None:
    if not value:
        return None
    return "machine" if value.startswith(("machine", "fax")) else "human"


class _Validator(RequestValidator):
    """The SDK's validator, trying the URL as we know it first. The SDK signs two variants
    of it (with and without the port, as Twilio's own signing has varied), always both:
    our public URL is one of the two, so a signature that matches it is valid for the SDK
    too, and only a mismatch pays for the other (a fifth of a webhook's own CPU)."""

    def validate(self, uri: str, params: Any, signature: str, algorithm: str | None = None) -> bool:
        if isinstance(params, dict) and hmac.compare_digest(self.compute_signature(uri, params, algorithm), signature):
            return True
        return bool(super().validate(uri, params, signature, algorithm))


_FORM = "application/x-www-form-urlencoded"


async def _verified_form(request: Request[Any, Any, Any]) -> dict[str, str] | None:
    c = request.app.state.container
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == _FORM:
        # Twilio's form, parsed once by the standard library (litestar's own parser also
        # builds a multi-dict we would not use).
        params = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    else:
        form = await request.form()
        params = {k: v for k, v in form.items() if isinstance(v, str)}
    url = c.settings.public_base_url + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("x-twilio-signature", "")
    if not _Validator(c.settings.twilio_auth_token).validate(url, params, signature):
        return None
    return params


def _forbidden() -> Response[str]:
    return Response("invalid Twilio signature", status_code=403, media_type="text/plain")


def _twiml(request: Request[Any, Any, Any], call_id: str, attempt: int, reply: Any) -> Response[str]:
    c = request.app.state.container
    audio_url = lambda audio_id: c.signer.playback(audio_id).url
    twiml = render_twiml(reply.instructions, c.settings.public_base_url, call_id, attempt, reply.seq, audio_url)
    return Response(twiml, media_type=TWIML)


@post("/twilio/voice/{call_id:str}/{attempt:int}", status_code=200)
async def voice(request: Request[Any, Any, Any], call_id: str, attempt: int) -> Response[str]:
    params = await _verified_form(request)
    if params is None:
        return _forbidden()
    conv = request.app.state.container.conversation
    from litestar.concurrency import sync_to_thread

    reply = await sync_to_thread(conv.answered, call_id, attempt, _answered_by(params.get("AnsweredBy")))
    return _twiml(request, call_id, attempt, reply)


@post("/twilio/voice/{call_id:str}/{attempt:int}/input/{seq:int}", status_code=200)
async def voice_input(request: Request[Any, Any, Any], call_id: str, attempt: int, seq: int) -> Response[str]:
    params = await _verified_form(request)
    if params is None:
        return _forbidden()
    conv = request.app.state.container.conversation
    from litestar.concurrency import sync_to_thread

    reply = await sync_to_thread(conv.advance, call_id, attempt, seq, callback_result(params))
    if reply is None:
        return Response("unknown turn", status_code=404, media_type="text/plain")
    return _twiml(request, call_id, attempt, reply)


@post("/twilio/status/{call_id:str}/{attempt:int}", status_code=204)
async def status(request: Request[Any, Any, Any], call_id: str, attempt: int) -> Response[None]:
    params = await _verified_form(request)
    if params is None:
        return Response(None, status_code=403)
    call_status = params.get("CallStatus", "")
    answered_by = _answered_by(params.get("AnsweredBy"))
    conv = request.app.state.container.conversation
    from litestar.concurrency import sync_to_thread

    if call_status == "ringing":
        await sync_to_thread(conv.status, call_id, attempt, "ringing")
    elif call_status == "in-progress":
        await sync_to_thread(conv.status, call_id, attempt, "answered", answered_by)
    elif call_status in FINAL:
        ours = FINAL[call_status]
        if ours == "busy" and params.get("SipResponseCode") == "603":
            ours = "rejected"
        duration = params.get("CallDuration") or params.get("Duration")
        duration_ms = int(duration) * 1000 if duration and duration.isdigit() else None
        reason = params.get("ErrorMessage") or (f"sip:{params['SipResponseCode']}" if params.get("SipResponseCode") else None)
        await sync_to_thread(conv.status, call_id, attempt, ours, answered_by, duration_ms, reason)
    return Response(None, status_code=204)


@post("/twilio/amd/{call_id:str}/{attempt:int}", status_code=204)
async def amd(request: Request[Any, Any, Any], call_id: str, attempt: int) -> Response[None]:
    """Asynchronous answering-machine detection's verdict. A machine met while the flow
    runs gets the flow's onVoicemail turn, sent to the live call as a redirect."""
    params = await _verified_form(request)
    if params is None:
        return Response(None, status_code=403)
    answered_by = _answered_by(params.get("AnsweredBy"))
    if answered_by is None or params.get("AnsweredBy") == "unknown":
        return Response(None, status_code=204)  # no verdict: the flow goes on as for a person
    c = request.app.state.container
    from litestar.concurrency import sync_to_thread

    reply = await sync_to_thread(c.conversation.machine_detected, call_id, attempt, answered_by, params.get("AnsweredBy"))
    if reply is not None and params.get("CallSid"):
        twiml = _twiml(request, call_id, attempt, reply).content
        try:
            await sync_to_thread(c.telephony.redirect, params["CallSid"], twiml)
        except TelephonyError as exc:  # the call ended meanwhile: its outcome says voicemail
            log.warning("could not turn call %s to voicemail: %s", call_id, exc)
    return Response(None, status_code=204)


WEBHOOK_HANDLERS = [voice, voice_input, status, amd]
