"""Twilio webhooks: signature checked with the SDK's RequestValidator over the public URL
Twilio called (never the Host header behind a proxy), then translated into commands.

Served by a plain ASGI layer in front of litestar's routing (``TwilioWebhooks``): these
are the hot path (three a call, at hundreds of calls a second), they answer Twilio, not
API clients (no API key, no JSON bodies, no OpenAPI), and litestar's request handling was
a third of a webhook's CPU. The request id, access log and metrics middleware still wraps
them; an unreachable store is still a 503 with ``Retry-After``."""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from application.ports import TelephonyError
from infrastructure.telephony.twilio.provider import callback_result, render_twiml
from infrastructure.telephony.twilio.signature import Validator
from interfaces.http.handoff import HandOff

log = logging.getLogger("gomobile.twilio")

TWIML = b"application/xml; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"
MAX_BODY = 256 * 1024  # Twilio's forms are a few hundred bytes; a recording's transcript at most a few KB

# Twilio's CallStatus (and SIP code) in our words.
FINAL = {"completed": "completed", "busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "cancelled"}

# /twilio/voice/{call_id}/{attempt}, /twilio/voice/{call_id}/{attempt}/input/{seq},
# /twilio/status/{call_id}/{attempt}, /twilio/amd/{call_id}/{attempt}
_ROUTE = re.compile(r"^/twilio/(?:(voice)/([^/]+)/(\d+)(?:/input/(\d+))?|(status|amd)/([^/]+)/(\d+))$")


def _answered_by(value: str | None) -> str | None:
    if not value:
        return None
    return "machine" if value.startswith(("machine", "fax")) else "human"


class _Validator(Validator):
    """The SDK's validator, trying the URL as we know it first. The SDK signs two variants
    of it (with and without the port, as Twilio's own signing has varied), always both:
    our public URL is one of the two, so a signature that matches it is valid for the SDK
    too, and only a mismatch pays for the other (a fifth of a webhook's own CPU)."""

    def validate(self, uri: str, params: Any, signature: str, algorithm: str | None = None) -> bool:
        if isinstance(params, dict) and hmac.compare_digest(self.compute_signature(uri, params, algorithm), signature):
            return True
        return bool(super().validate(uri, params, signature, algorithm))


# An answer: (status, content type or None, body).
Answer = tuple[int, bytes | None, bytes]
NO_CONTENT: Answer = (204, None, b"")


def _twiml(c: Any, call_id: str, attempt: int, reply: Any) -> Answer:
    audio_url = lambda audio_id: c.signer.playback(audio_id).url
    twiml = render_twiml(reply.instructions, c.settings.public_base_url, call_id, attempt, reply.seq, audio_url)
    return 200, TWIML, twiml.encode()


def voice(c: Any, call_id: str, attempt: int, seq: int | None, params: dict[str, str]) -> Answer:
    """The callee answered: the flow's first turn, as TwiML."""
    reply = c.conversation.answered(call_id, attempt, _answered_by(params.get("AnsweredBy")))
    return _twiml(c, call_id, attempt, reply)


def voice_input(c: Any, call_id: str, attempt: int, seq: int | None, params: dict[str, str]) -> Answer:
    """What the callee did at a gather, record or transfer (turn ``seq - 1``): the next turn."""
    assert seq is not None
    reply = c.conversation.advance(call_id, attempt, seq, callback_result(params))
    if reply is None:
        return 404, TEXT, b"unknown turn"
    return _twiml(c, call_id, attempt, reply)


def status(c: Any, call_id: str, attempt: int, seq: int | None, params: dict[str, str]) -> Answer:
    """Call progress: ringing, in progress, or the attempt's final status."""
    call_status = params.get("CallStatus", "")
    answered_by = _answered_by(params.get("AnsweredBy"))
    conv = c.conversation
    if call_status == "ringing":
        conv.status(call_id, attempt, "ringing")
    elif call_status == "in-progress":
        conv.status(call_id, attempt, "answered", answered_by)
    elif call_status in FINAL:
        ours = FINAL[call_status]
        if ours == "busy" and params.get("SipResponseCode") == "603":
            ours = "rejected"
        duration = params.get("CallDuration") or params.get("Duration")
        duration_ms = int(duration) * 1000 if duration and duration.isdigit() else None
        reason = params.get("ErrorMessage") or (f"sip:{params['SipResponseCode']}" if params.get("SipResponseCode") else None)
        conv.status(call_id, attempt, ours, answered_by, duration_ms, reason)
    return NO_CONTENT


def amd(c: Any, call_id: str, attempt: int, seq: int | None, params: dict[str, str]) -> Answer:
    """Asynchronous answering-machine detection's verdict. A machine met while the flow
    runs gets the flow's onVoicemail turn, sent to the live call as a redirect."""
    answered_by = _answered_by(params.get("AnsweredBy"))
    if answered_by is None or params.get("AnsweredBy") == "unknown":
        return NO_CONTENT  # no verdict: the flow goes on as for a person
    reply = c.conversation.machine_detected(call_id, attempt, answered_by, params.get("AnsweredBy"))
    if reply is not None and params.get("CallSid"):
        twiml = _twiml(c, call_id, attempt, reply)[2].decode()
        try:
            c.telephony.redirect(params["CallSid"], twiml)
        except TelephonyError as exc:  # the call ended meanwhile: its outcome says voicemail
            log.warning("could not turn call %s to voicemail: %s", call_id, exc)
    return NO_CONTENT


Handler = Callable[[Any, str, int, "int | None", dict[str, str]], Answer]
HANDLERS: dict[str, Handler] = {"voice": voice, "input": voice_input, "status": status, "amd": amd}


async def _send(send: Any, status_code: int, media_type: bytes | None, body: bytes,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    out = [(b"content-length", str(len(body)).encode()), *(headers or [])]
    if media_type is not None:
        out.insert(0, (b"content-type", media_type))
    await send({"type": "http.response.start", "status": status_code, "headers": out})
    await send({"type": "http.response.body", "body": body})


async def _body(receive: Any, limit: int) -> bytes | None:
    """The request's whole body; None once it is over ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


class TwilioWebhooks:
    """ASGI: serves ``POST /twilio/...`` (the routes above) and passes every other request
    to ``app``. A webhook whose signature does not check is 403 and changes nothing."""

    def __init__(self, app: Any, container: Any, store_watch: Any = None) -> None:
        self.app = app
        self.container = container
        self.store_watch = store_watch
        # The handlers' threads (interfaces/http/handoff.py says why not run_in_executor).
        self.threads = HandOff(container.settings.api_threads, "twilio-webhook") if container is not None else None

    def close(self) -> None:
        if self.threads is not None:
            self.threads.close()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        match = _ROUTE.match(scope["path"]) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _send(send, 405, TEXT, b"Twilio webhooks are POST", [(b"allow", b"POST")])
            return
        if match[1]:
            kind, call_id, attempt, seq = ("input" if match[4] else "voice"), match[2], int(match[3]), match[4]
        else:
            kind, call_id, attempt, seq = match[5], match[6], int(match[7]), None
        headers = {k: v for k, v in scope["headers"] if k in (b"content-type", b"x-twilio-signature")}
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/x-www-form-urlencoded":
            await _send(send, 415, TEXT, b"Twilio webhooks are application/x-www-form-urlencoded forms")
            return
        body = await _body(receive, MAX_BODY)
        if body is None:
            await _send(send, 413, TEXT, f"a Twilio webhook's form is at most {MAX_BODY} bytes".encode())
            return
        params = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        c = self.container
        url = c.settings.public_base_url + scope["path"]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        signature = headers.get(b"x-twilio-signature", b"").decode("latin-1")
        if not _Validator(c.settings.twilio_auth_token).validate(url, params, signature):
            await _send(send, 403, TEXT, b"invalid Twilio signature")
            return
        try:
            assert self.threads is not None
            answer = await self.threads.run(HANDLERS[kind], c, call_id, attempt, int(seq) if seq else None, params)
        except Exception as exc:  # noqa: BLE001 - answered as the API's error handlers answer
            await self._failed(scope, send, exc)
            return
        await _send(send, *answer)

    async def _failed(self, scope: Any, send: Any, exc: Exception) -> None:
        """As the API's error handlers answer: 503 + Retry-After while a store is
        unreachable (Twilio retries, then falls back), 500 for anything else."""
        from interfaces.http.outage import OUTAGE_ERRORS, RETRY_AFTER_SECONDS, outage_detail
        from interfaces.http.security import send_problem

        if isinstance(exc, OUTAGE_ERRORS):
            log.warning("store unavailable on %s: %s", scope["path"], exc)
            if self.store_watch is not None:
                self.store_watch.suspect()  # probe now rather than at the next tick
            await send_problem(scope, send, 503, "SERVICE_UNAVAILABLE", outage_detail(exc),
                               headers=[(b"retry-after", str(RETRY_AFTER_SECONDS).encode())])
            return
        log.error("unhandled error on %s", scope["path"], exc_info=exc)
        await send_problem(scope, send, 500, "INTERNAL_ERROR", "Internal server error")
