"""The phone network sandbox: a fake Twilio speaking the REST API subset we use.

``create_sandbox_app(config)`` returns an ASGI app (litestar's, but for creating a call) that implements

* ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``           (create a call)
* ``GET  /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` (fetch a call)
* ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` (update: ``Status=completed|canceled``,
  or ``Url``/``Method``/``Twiml`` to redirect a live call)

Answering-machine detection (``MachineDetection``) runs synchronously (the voice webhook
waits for the verdict and carries ``AnsweredBy``) or, with ``AsyncAmd=true``, in the
background: the voice webhook comes at once and the verdict is posted, signed, to
``AsyncAmdStatusCallback`` (``AnsweredBy``, ``MachineDetectionDuration``) while the TwiML
plays; the platform may then redirect the live call.

with HTTP Basic auth ``AccountSid:AuthToken`` and Twilio-style JSON errors, and
simulates every call in asyncio tasks: signed (``X-Twilio-Signature``) status
callbacks, the voice webhook, the TwiML the webhooks return (see ``twiml.py``)
and a scripted callee (see ``callee.py`` for the behaviour table).

Control endpoints (not Twilio):

* ``GET /_sandbox/health``
* ``GET /_sandbox/calls`` (every call, in order) and ``GET /_sandbox/calls/{CallSid}``
* ``PUT /_sandbox/scripts/{number}`` (JSON script), ``DELETE /_sandbox/scripts``
* ``POST /_sandbox/reset`` (forget calls, attempt counters and API-set scripts)

Simulated time: every simulated delay is multiplied by ``SandboxConfig.time_scale``;
durations reported to the platform (``CallDuration``, ``duration``) are in
simulated seconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import itertools
import json
import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import yarl
from litestar import Litestar, Request, Response, delete, get, post, put

from infrastructure.telephony.twilio.signature import Validator

from .callee import (
    SIP_CODES,
    UNANSWERED_STATUS,
    CalleePlan,
    CalleeScript,
    ScriptError,
    parse_script,
    plan_for,
)
from .twiml import TwimlInterpreter, WebhookFailed

API_VERSION = "2010-04-01"
FINAL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")
AMD_DETECTION_SECONDS = {"human": 2.0, "machine_start": 3.0, "machine_end_beep": 8.0}
ERRORS_URL = "https://www.twilio.com/docs/errors/"


@dataclass
class SandboxConfig:
    """Configuration of the sandbox.

    ``time_scale`` multiplies every simulated delay (tests use ~0.01).
    ``ring_seconds`` is how long a person/machine lets the phone ring before
    answering.  ``no_answer_after_seconds`` is when an unanswered call gives up
    (default: the call's ``Timeout`` parameter, itself defaulting to 60).
    ``webhook_timeout`` is the real (unscaled) timeout of every webhook request.
    ``scripts`` maps a ``To`` number to a callee script (see ``callee.py``).
    ``public_base_url`` is used for ``RecordingUrl`` values.
    """

    account_sid: str
    auth_token: str
    time_scale: float = 1.0
    ring_seconds: float = 2.0
    no_answer_after_seconds: float | None = None
    webhook_timeout: float = 10.0
    scripts: dict[str, Any] = field(default_factory=dict)
    max_documents_per_call: int = 200
    max_concurrent_webhooks: int = 32
    public_base_url: str = "http://127.0.0.1:8089"


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc2822(dt: datetime | None) -> str | None:
    return None if dt is None else email.utils.format_datetime(dt)


# An answer of the REST API: (status, JSON body, extra headers).
Answer = tuple[int, dict[str, Any], dict[str, str]]


def _error(status: int, code: int, message: str, **headers: str) -> Answer:
    return status, {"code": code, "message": message, "more_info": f"{ERRORS_URL}{code}", "status": status}, headers


def _twilio_error(status: int, code: int, message: str, **headers: str) -> Response:
    return _response(_error(status, code, message, **headers))


def _response(answer: Answer) -> Response:
    status, body, headers = answer
    return Response(content=body, status_code=status, media_type="application/json", headers=headers or None)


@dataclass
class Call:
    sid: str
    account_sid: str
    to: str
    from_: str
    url: str | None
    method: str
    twiml: str | None
    status_callback: str | None
    status_callback_method: str
    status_callback_events: set[str]
    machine_detection: str | None
    timeout: int
    attempt: int
    plan: CalleePlan
    date_created: datetime = field(default_factory=_now)
    date_updated: datetime = field(default_factory=_now)
    status: str = "queued"
    answered_by: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration: int | None = None
    sip_response_code: int | None = None
    end_reason: str | None = None
    finished: bool = False
    digits: list[str] = field(default_factory=list)
    verbs: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    sim_clock: float = 0.0
    answered_at_sim: float | None = None
    sequence: itertools.count = field(default_factory=itertools.count)
    # runtime plumbing (not serialised)
    task: asyncio.Task | None = None
    sim_task: asyncio.Task | None = None
    interp_task: asyncio.Task | None = None
    api_end: str | None = None
    api_redirect: tuple[str | None, str, str | None] | None = None
    held_ringing: dict[str, str] | None = None
    callbacks: asyncio.Queue | None = None
    async_amd: bool = False
    async_amd_callback: str | None = None
    async_amd_method: str = "POST"
    amd_task: asyncio.Task | None = None
    amd_due: tuple[float, str] | None = None  # (simulated time, verdict) of a pending async AMD verdict

    def set_status(self, status: str) -> None:
        self.status = status
        self.date_updated = _now()

    def resource(self) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{self.sid}"
        return {
            "sid": self.sid,
            "date_created": _rfc2822(self.date_created),
            "date_updated": _rfc2822(self.date_updated),
            "parent_call_sid": None,
            "account_sid": self.account_sid,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "start_time": _rfc2822(self.start_time),
            "end_time": _rfc2822(self.end_time),
            "duration": None if self.duration is None else str(self.duration),
            "price": None,
            "price_unit": "USD",
            "direction": "outbound-api",
            "answered_by": self.answered_by,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri + ".json",
            "subresource_uris": {
                "notifications": uri + "/Notifications.json",
                "recordings": uri + "/Recordings.json",
                "payments": uri + "/Payments.json",
                "events": uri + "/Events.json",
                "siprec": uri + "/Siprec.json",
                "streams": uri + "/Streams.json",
                "user_defined_message_subscriptions": uri + "/UserDefinedMessageSubscriptions.json",
                "user_defined_messages": uri + "/UserDefinedMessages.json",
            },
        }

    def report(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "answered_by": self.answered_by,
            "attempt": self.attempt,
            "behaviour": self.plan.behaviour,
            "machine_detection": self.machine_detection,
            "async_amd": self.async_amd,
            "duration": self.duration,
            "sip_response_code": self.sip_response_code,
            "end_reason": self.end_reason,
            "finished": self.finished,
            "digits": list(self.digits),
            "verbs": list(self.verbs),
            "webhooks": list(self.webhooks),
            "errors": list(self.errors),
            "date_created": _rfc2822(self.date_created),
        }


class _LiveCall:
    """The :class:`~.twiml.TwimlSession` of one answered call."""

    def __init__(self, sandbox: Sandbox, call: Call):
        self.sandbox = sandbox
        self.call = call
        self.plan = call.plan
        self.recording_base_url = (
            f"{sandbox.config.public_base_url.rstrip('/')}/{API_VERSION}/Accounts/"
            f"{call.account_sid}/Recordings"
        )

    async def fetch_twiml(self, kind: str, url: str, method: str, extra: dict[str, str]) -> str:
        params = {**self.sandbox.call_params(self.call), **extra}
        entry, body = await self.sandbox.send_webhook(self.call, kind, url, method, params)
        if entry["error"] is not None:
            self.record_error(11200, f"HTTP retrieval failure: {entry['error']} ({method} {url})")
            raise WebhookFailed(entry["error"])
        return body

    async def elapse(self, simulated_seconds: float) -> None:
        await self.sandbox.elapse(self.call, simulated_seconds)

    def record_verb(self, entry: dict[str, Any]) -> None:
        self.call.verbs.append(entry)

    def record_digits(self, digits: str) -> None:
        self.call.digits.append(digits)

    def record_error(self, code: int, message: str) -> None:
        self.call.errors.append({"code": code, "message": message})

    def save_recording(self, sid: str, seconds: int) -> None:
        self.sandbox.recordings[sid] = seconds


class Sandbox:
    """State of the phone network: calls placed, per-number attempts, scripts."""

    def __init__(self, config: SandboxConfig):
        self.config = config
        self.validator = Validator(config.auth_token)
        self.calls: dict[str, Call] = {}
        self.attempts: dict[str, int] = {}
        self.config_scripts: dict[str, CalleeScript] = {
            number: parse_script(script) for number, script in (config.scripts or {}).items()
        }
        self.scripts: dict[str, CalleeScript] = {}
        self.recordings: dict[str, int] = {}  # RecordingSid -> simulated seconds
        self.http: aiohttp.ClientSession | None = None

    # -- lifecycle ------------------------------------------------------
    async def startup(self) -> None:
        # aiohttp rather than httpx: a third of the CPU a webhook (the sandbox shares the
        # machine with the platform in the benchmarks). Every slot keeps its connection
        # alive, closed after 2 s idle: before the platform's server (uvicorn: 5 s) could
        # close it under a request.
        slots = self.config.max_concurrent_webhooks
        self.http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout),
            connector=aiohttp.TCPConnector(limit=slots, keepalive_timeout=2.0),
        )
        # Keep the queue of webhooks waiting for a connection short.
        self.webhook_slots = asyncio.Semaphore(slots)

    async def shutdown(self) -> None:
        tasks = [c.task for c in self.calls.values() if c.task and not c.task.done()]
        for call in self.calls.values():
            for t in (call.sim_task, call.task):
                if t and not t.done():
                    t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.close()
            self.http = None

    def reset(self) -> None:
        for call in self.calls.values():
            for t in (call.sim_task, call.task):
                if t and not t.done():
                    t.cancel()
        self.calls.clear()
        self.attempts.clear()
        self.scripts.clear()

    # -- helpers ------------------------------------------------------------
    def script_for(self, number: str) -> CalleeScript | None:
        return self.scripts.get(number) or self.config_scripts.get(number)

    async def elapse(self, call: Call, simulated_seconds: float) -> None:
        if simulated_seconds <= 0:
            return
        if call.amd_due is not None and call.sim_clock + simulated_seconds >= call.amd_due[0]:
            # An asynchronous AMD verdict falls due within this stretch: post it there. Like
            # every webhook, the platform's handling takes no simulated time (the callee
            # hears nothing more until it answered, or redirected the call meanwhile).
            (due, verdict), call.amd_due = call.amd_due, None
            first = max(0.0, due - call.sim_clock)
            call.sim_clock += first
            await asyncio.sleep(first * self.config.time_scale)
            started = call.answered_at_sim or 0.0
            task = asyncio.create_task(self._post_amd_verdict(call, verdict, call.sim_clock - started))
            call.amd_task = task
            await asyncio.shield(task)
            simulated_seconds -= first
        call.sim_clock += simulated_seconds
        await asyncio.sleep(simulated_seconds * self.config.time_scale)

    def call_params(self, call: Call) -> dict[str, str]:
        params = {
            "CallSid": call.sid,
            "AccountSid": call.account_sid,
            "From": call.from_,
            "To": call.to,
            "Caller": call.from_,
            "Called": call.to,
            "CallStatus": call.status,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
        }
        if call.machine_detection and call.answered_by:
            params["AnsweredBy"] = call.answered_by
        return params

    async def send_webhook(
        self, call: Call, kind: str, url: str, method: str, params: dict[str, str]
    ) -> tuple[dict[str, Any], str]:
        """Make one signed request to the platform and record it on the call."""
        method = method.upper()
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        if method == "GET":
            target = url + ("&" if "?" in url else "?") + urlencode(params)
            headers["X-Twilio-Signature"] = self.validator.compute_signature(target, {})
            request_kwargs: dict[str, Any] = {}
        else:
            target = url
            headers["X-Twilio-Signature"] = self.validator.compute_signature(url, params)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            request_kwargs = {"data": urlencode(params).encode()}
        entry: dict[str, Any] = {
            "kind": kind,
            "url": url,
            "method": method,
            "params": dict(params),
            "http_status": None,
            "error": None,
        }
        call.webhooks.append(entry)
        assert self.http is not None, "sandbox not started"
        try:
            # encoded=True: sent exactly as signed (yarl would re-quote the query).
            async with self.webhook_slots, self.http.request(
                method, yarl.URL(target, encoded=True), headers=headers, allow_redirects=False, **request_kwargs
            ) as resp:
                status, body = resp.status, await resp.read()
                text = body.decode(resp.charset or "utf-8", errors="replace")
        except TimeoutError:
            entry["error"] = f"timeout after {self.config.webhook_timeout}s"
            return entry, ""
        except (aiohttp.ClientError, ValueError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            return entry, ""
        entry["http_status"] = status
        if not 200 <= status < 300:
            entry["error"] = f"HTTP {status}"
        return entry, text

    # -- call lifecycle -------------------------------------------------------
    def place_call(self, params: dict[str, list[str]]) -> Call:
        def one(name: str, default: str | None = None) -> str | None:
            values = params.get(name)
            return values[-1] if values else default

        to = one("To") or ""
        attempt = self.attempts.get(to, 0)
        self.attempts[to] = attempt + 1
        events: set[str] = set()
        for value in params.get("StatusCallbackEvent", []):
            events.update(v.lower() for v in value.replace(",", " ").split())
        if not events:
            events = {"completed"}
        try:
            timeout = int(one("Timeout", "60") or "60")
        except ValueError:
            timeout = 60
        timeout = max(1, min(timeout, 600))
        call = Call(
            sid="CA" + secrets.token_hex(16),
            account_sid=self.config.account_sid,
            to=to,
            from_=one("From") or "",
            url=one("Url"),
            method=(one("Method", "POST") or "POST").upper(),
            twiml=one("Twiml"),
            status_callback=one("StatusCallback"),
            status_callback_method=(one("StatusCallbackMethod", "POST") or "POST").upper(),
            status_callback_events=events,
            machine_detection=one("MachineDetection"),
            timeout=timeout,
            attempt=attempt,
            plan=plan_for(to, attempt, self.script_for(to)),
            async_amd=(one("AsyncAmd") or "").lower() == "true",
            async_amd_callback=one("AsyncAmdStatusCallback"),
            async_amd_method=(one("AsyncAmdStatusCallbackMethod", "POST") or "POST").upper(),
        )
        self.calls[call.sid] = call
        call.callbacks = asyncio.Queue()
        call.task = asyncio.create_task(self._run_call(call), name=f"sandbox-call-{call.sid}")
        return call

    def end_call(self, call: Call, status: str) -> None:
        """API update ``Status=completed|canceled``."""
        if call.status in FINAL_STATUSES or call.api_end is not None:
            return
        if status == "canceled" and call.status == "in-progress":
            return  # Twilio: canceled only affects queued/ringing calls
        call.api_end = "completed" if call.status == "in-progress" else "canceled"
        if call.sim_task is not None and not call.sim_task.done():
            call.sim_task.cancel()

    def redirect_call(self, call: Call, url: str | None, method: str, twiml: str | None) -> None:
        if call.status != "in-progress" or call.interp_task is None or call.interp_task.done():
            return
        call.api_redirect = (url, method, twiml)
        call.interp_task.cancel()

    async def _run_call(self, call: Call) -> None:
        worker = asyncio.create_task(self._callback_worker(call))
        call.sim_task = asyncio.create_task(self._simulate(call))
        final: tuple[str, str | None, int | None]
        try:
            final = await call.sim_task
        except asyncio.CancelledError:
            if call.api_end is None:
                worker.cancel()
                raise
            if call.api_end == "completed":
                final = ("completed", "api-hangup", None)
            else:
                final = ("canceled", "api-cancel", None)
        except Exception as exc:  # noqa: BLE001 - a bug: never leave the call hanging
            call.errors.append({"code": 0, "message": f"sandbox error: {exc!r}"})
            final = ("failed", "sandbox-error", None)
        status, reason, sip = final
        call.end_time = _now()
        if call.answered_at_sim is not None:
            call.duration = round(call.sim_clock - call.answered_at_sim)
        else:
            call.duration = 0
        call.sip_response_code = sip
        call.end_reason = reason
        call.set_status(status)
        extra: dict[str, str] = {}
        if call.answered_at_sim is not None:
            extra["CallDuration"] = str(call.duration)
            extra["Duration"] = str(math.ceil(call.duration / 60))
        if sip is not None:
            extra["SipResponseCode"] = str(sip)
        self._enqueue_callback(call, status, extra, final=True)
        call.callbacks.put_nowait(None)
        try:
            await worker
        finally:
            call.finished = True

    async def _simulate(self, call: Call) -> tuple[str, str, int | None]:
        plan = call.plan
        await asyncio.sleep(0)  # let the 201 response go out first
        self._enqueue_callback(call, "initiated")
        behaviour = plan.behaviour
        if behaviour == "failed":
            await self.elapse(call, 0.5)
            return UNANSWERED_STATUS["failed"], "unreachable", SIP_CODES["failed"]
        if behaviour == "busy":
            await self.elapse(call, 1.0)
            return UNANSWERED_STATUS["busy"], "busy", SIP_CODES["busy"]
        await self.elapse(call, 0.5)
        call.set_status("ringing")
        self._enqueue_callback(call, "ringing")
        give_up = (
            self.config.no_answer_after_seconds
            if self.config.no_answer_after_seconds is not None
            else float(call.timeout)
        )
        if behaviour == "rejected":
            await self.elapse(call, min(self.config.ring_seconds, give_up))
            return UNANSWERED_STATUS["rejected"], "rejected", SIP_CODES["rejected"]
        ring = plan.answer_delay_seconds
        if ring is None:
            ring = self.config.ring_seconds
        if behaviour == "no_answer" or ring >= give_up:
            await self.elapse(call, give_up)
            return UNANSWERED_STATUS["no_answer"], "no-answer", SIP_CODES["no_answer"]
        await self.elapse(call, ring)
        # answered
        call.set_status("in-progress")
        call.start_time = _now()
        call.answered_at_sim = call.sim_clock
        verdict: str | None = None
        if call.machine_detection:
            if behaviour == "human":
                verdict = "human"
            elif call.machine_detection.lower() == "detectmessageend":
                verdict = "machine_end_beep"
            else:
                verdict = "machine_start"
        if verdict is not None and call.async_amd:
            # Asynchronous AMD: the call goes on at once; the verdict is due after the
            # detection time on the call's own (simulated) clock, i.e. while its TwiML
            # plays, and is posted to its own callback (see ``elapse``).
            self._enqueue_callback(call, "in-progress")
            call.amd_due = (call.sim_clock + AMD_DETECTION_SECONDS[verdict], verdict)
        else:
            call.answered_by = verdict
            self._enqueue_callback(call, "in-progress")
            if verdict is not None:
                await self.elapse(call, AMD_DETECTION_SECONDS[verdict])
        reason = await self._answered_phase(call)
        return "completed", reason, None

    async def _post_amd_verdict(self, call: Call, verdict: str, seconds: float) -> None:
        call.answered_by = verdict
        if not call.async_amd_callback:
            return
        params = {
            "CallSid": call.sid,
            "AccountSid": call.account_sid,
            "AnsweredBy": verdict,
            "MachineDetectionDuration": str(int(seconds * 1000)),
        }
        entry, _ = await self.send_webhook(call, "amd-callback", call.async_amd_callback, call.async_amd_method, params)
        if entry["error"] is not None:
            call.errors.append({"code": 21262, "message": f"AMD status callback failed: {entry['error']}"})

    async def _answered_phase(self, call: Call) -> str:
        live = _LiveCall(self, call)
        interpreter = TwimlInterpreter(live, max_documents=self.config.max_documents_per_call)
        source: tuple[str | None, str, str | None] = (call.url, call.method, call.twiml)
        kind = "voice"
        while True:
            call.interp_task = asyncio.create_task(self._interpret(live, interpreter, kind, source))
            try:
                return await call.interp_task
            except asyncio.CancelledError:
                if call.api_redirect is None or (
                    asyncio.current_task() is not None and asyncio.current_task().cancelling()
                ):
                    raise
                source, call.api_redirect = call.api_redirect, None
                kind = "api-redirect"

    async def _interpret(
        self,
        live: _LiveCall,
        interpreter: TwimlInterpreter,
        kind: str,
        source: tuple[str | None, str, str | None],
    ) -> str:
        url, method, twiml = source
        if twiml is not None:
            return await interpreter.run(twiml, url or "")
        try:
            body = await live.fetch_twiml(kind, url or "", method, {})
        except WebhookFailed:
            return "application-error"
        return await interpreter.run(body, url or "")

    # -- status callbacks -------------------------------------------------------
    def _enqueue_callback(
        self, call: Call, status: str, extra: dict[str, str] | None = None, final: bool = False
    ) -> None:
        event = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered"}.get(
            status, "completed"
        )
        if not call.status_callback:
            return
        if not final and event not in call.status_callback_events:
            return
        params = {
            "CallSid": call.sid,
            "AccountSid": call.account_sid,
            "From": call.from_,
            "To": call.to,
            "Caller": call.from_,
            "Called": call.to,
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": API_VERSION,
            "CallbackSource": "call-progress-events",
            "Timestamp": _rfc2822(_now()) or "",
        }
        if call.machine_detection and call.answered_by:
            params["AnsweredBy"] = call.answered_by
        params.update(extra or {})
        assert call.callbacks is not None
        if call.plan.drop_final_callback and status in ("completed", "busy", "no-answer", "failed", "canceled"):
            return
        if status == "ringing" and call.plan.out_of_order_callbacks:
            call.held_ringing = params
            return
        self._put_callback(call, params)
        if call.held_ringing is not None and status != "ringing":
            held, call.held_ringing = call.held_ringing, None
            self._put_callback(call, held)

    def _put_callback(self, call: Call, params: dict[str, str]) -> None:
        params = {**params, "SequenceNumber": str(next(call.sequence))}
        assert call.callbacks is not None
        call.callbacks.put_nowait(params)
        if call.plan.duplicate_callbacks:
            call.callbacks.put_nowait(dict(params))

    async def _callback_worker(self, call: Call) -> None:
        assert call.callbacks is not None
        while True:
            params = await call.callbacks.get()
            if params is None:
                return
            if call.plan.callback_latency_seconds:
                await asyncio.sleep(call.plan.callback_latency_seconds * self.config.time_scale)
            entry, _ = await self.send_webhook(
                call, "status-callback", call.status_callback or "", call.status_callback_method, params
            )
            if entry["error"] is not None:
                call.errors.append(
                    {"code": 15003, "message": f"Status callback failed: {entry['error']}"}
                )


# ---------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------

_E164 = re.compile(r"^\+?[1-9]\d{1,14}$")


def _silence_wav(seconds: int) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8000 * max(seconds, 0))
    return buf.getvalue()


def _valid_address(value: str) -> bool:
    return bool(_E164.match(value)) or value.startswith(("client:", "sip:"))


def _check_auth(sandbox: Sandbox, request: Request, account_sid: str) -> Response | None:
    denied = _denied(sandbox, request.headers.get("authorization", ""), account_sid, request.url.path)
    return _response(denied) if denied else None


def _denied(sandbox: Sandbox, header: str, account_sid: str, path: str) -> Answer | None:
    """HTTP Basic ``AccountSid:AuthToken``, for the account in the path."""
    ok = False
    if header.lower().startswith("basic "):
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            ok = (user, password) == (sandbox.config.account_sid, sandbox.config.auth_token)
        except (binascii.Error, UnicodeDecodeError):
            ok = False
    if not ok:
        return _error(401, 20003, "Authenticate", **{"WWW-Authenticate": 'Basic realm="Twilio API"'})
    if account_sid != sandbox.config.account_sid:
        return _error(404, 20404, f"The requested resource {path} was not found")
    return None


async def _form(request: Request) -> dict[str, list[str]]:
    return _parse_form(await request.body())


def _parse_form(body: bytes) -> dict[str, list[str]]:
    form: dict[str, list[str]] = {}
    for key, value in parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True):
        form.setdefault(key, []).append(value)
    return form


def _create_call(sandbox: Sandbox, form: dict[str, list[str]]) -> Answer:
    """``POST .../Calls.json``, once authenticated: the call placed, or Twilio's error."""

    def one(name: str) -> str:
        values = form.get(name)
        return values[-1] if values else ""

    if not one("To"):
        return _error(400, 21201, "No 'To' number is specified")
    if not _valid_address(one("To")):
        return _error(400, 21211, f"Invalid 'To' Phone Number: {one('To')}")
    if not one("From"):
        return _error(400, 21603, "A 'From' phone number is required.")
    if not one("Url") and not one("Twiml"):
        return _error(400, 21205, "Url parameter is required.")
    for name in ("Method", "StatusCallbackMethod"):
        if one(name) and one(name).upper() not in ("GET", "POST"):
            return _error(400, 21207, f"{name} must be GET or POST")
    md = one("MachineDetection")
    if md and md.lower() not in ("enable", "detectmessageend"):
        return _error(400, 21626, "MachineDetection must be Enable or DetectMessageEnd")
    if one("AsyncAmd") and one("AsyncAmd").lower() not in ("true", "false"):
        return _error(400, 21263, "AsyncAmd must be true or false")
    return 201, sandbox.place_call(form).resource(), {}


_CREATE_PATH = re.compile(rf"^/{API_VERSION}/Accounts/([^/]+)/Calls\.json$")


class SandboxApp:
    """The sandbox's ASGI app. Creating a call (one request a call the platform places:
    the hot path of its benchmarks, which run the sandbox on the platform's own cores) is
    answered here; every other request goes to litestar's routes (``app``). Litestar's
    routing, request and response objects were about a fifth of the sandbox's CPU a call."""

    def __init__(self, app: Litestar, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox
        self.state = app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        match = _CREATE_PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        header = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
        answer = _denied(self.sandbox, header, match[1], scope["path"])
        if answer is None:
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client went away mid-request: nothing is placed
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            answer = _create_call(self.sandbox, _parse_form(b"".join(chunks)))
        status, body, extra = answer
        content = json.dumps(body, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def create_sandbox_app(config: SandboxConfig, sandbox: Sandbox | None = None) -> SandboxApp:
    """Build the sandbox ASGI app.  The :class:`Sandbox` is at ``app.state.sandbox``."""
    sandbox = sandbox or Sandbox(config)
    prefix = f"/{API_VERSION}/Accounts/{{account_sid:str}}"

    def _lookup(request: Request, account_sid: str, call_file: str) -> Call | Response:
        denied = _check_auth(sandbox, request, account_sid)
        if denied:
            return denied
        sid = call_file.removesuffix(".json")
        call = sandbox.calls.get(sid)
        if call is None:
            return _twilio_error(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        return call

    @get(prefix + "/Calls/{call_file:str}")
    async def fetch_call(request: Request, account_sid: str, call_file: str) -> Response:
        found = _lookup(request, account_sid, call_file)
        if isinstance(found, Response):
            return found
        return Response(content=found.resource(), status_code=200, media_type="application/json")

    @post(prefix + "/Calls/{call_file:str}")
    async def update_call(request: Request, account_sid: str, call_file: str) -> Response:
        found = _lookup(request, account_sid, call_file)
        if isinstance(found, Response):
            return found
        form = await _form(request)
        status = (form.get("Status") or [""])[-1]
        url = (form.get("Url") or [""])[-1] or None
        twiml = (form.get("Twiml") or [""])[-1] or None
        method = ((form.get("Method") or ["POST"])[-1] or "POST").upper()
        if status:
            if status not in ("completed", "canceled"):
                return _twilio_error(400, 21218, f"Invalid Status: {status}")
            sandbox.end_call(found, status)
        elif url or twiml:
            sandbox.redirect_call(found, url, method, twiml)
        resource = found.resource()
        if found.api_end and found.status not in FINAL_STATUSES:
            resource["status"] = found.api_end  # the call task settles it momentarily
        return Response(content=resource, status_code=200, media_type="application/json")

    @get(prefix + "/Recordings/{recording_file:str}")
    async def recording_media(request: Request, account_sid: str, recording_file: str) -> Response:
        """A recording's audio, as Twilio serves ``RecordingUrl`` (+ ``.wav``, the default,
        or ``.mp3``): HTTP Basic auth, a WAV of silence as long as the callee spoke."""
        denied = _check_auth(sandbox, request, account_sid)
        if denied is not None:
            return denied
        sid, _, ext = recording_file.partition(".")
        if sid not in sandbox.recordings or ext not in ("", "wav"):
            return _twilio_error(404, 20404, f"The requested resource {request.url.path} was not found")
        return Response(content=_silence_wav(sandbox.recordings[sid]), status_code=200, media_type="audio/x-wav")

    @get("/_sandbox/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "account_sid": config.account_sid, "calls": len(sandbox.calls)}

    @get("/_sandbox/calls")
    async def list_calls() -> list[dict[str, Any]]:
        return [c.report() for c in sandbox.calls.values()]

    @get("/_sandbox/calls/{call_sid:str}")
    async def get_call(call_sid: str) -> Response:
        call = sandbox.calls.get(call_sid)
        if call is None:
            return Response(content={"error": "unknown call"}, status_code=404)
        return Response(content=call.report(), status_code=200)

    @put("/_sandbox/scripts/{number:str}")
    async def put_script(request: Request, number: str) -> Response:
        try:
            data = json.loads(await request.body() or b"null")
            script = parse_script(data)
        except (ValueError, ScriptError) as exc:
            return Response(content={"error": str(exc)}, status_code=400)
        sandbox.scripts[number] = script
        return Response(content={"number": number, "script": data}, status_code=200)

    @delete("/_sandbox/scripts", status_code=200)
    async def delete_scripts() -> dict[str, Any]:
        n = len(sandbox.scripts)
        sandbox.scripts.clear()
        return {"deleted": n}

    @post("/_sandbox/reset", status_code=200)
    async def reset() -> dict[str, Any]:
        sandbox.reset()
        return {"status": "reset"}

    app = Litestar(
        route_handlers=[
            fetch_call,
            update_call,
            health,
            list_calls,
            get_call,
            put_script,
            delete_scripts,
            reset,
            recording_media,
        ],
        on_startup=[sandbox.startup],
        on_shutdown=[sandbox.shutdown],
        debug=False,
    )
    app.state.sandbox = sandbox
    return SandboxApp(app, sandbox)
