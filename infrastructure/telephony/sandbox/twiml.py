"""A TwiML (Voice) interpreter for the phone network sandbox.

Supported verbs, with Twilio's defaults:

* ``<Say voice language loop>``: takes ~0.4 s of simulated time per word (min 1 s).
* ``<Play loop>url</Play>``: 2 s per loop (``loop="0"`` is capped at 10 loops).
* ``<Pause length="1">``.
* ``<Gather input="dtmf" numDigits timeout="5" finishOnKey="#" action method="POST"
  actionOnEmptyResult="false">`` with nested ``Say``/``Play``/``Pause`` played first.
  Keys pressed -> request ``action`` (default: the current document URL) with
  ``Digits`` and ``FinishedOnKey`` and continue with the TwiML returned.  Nothing
  pressed -> wait ``timeout`` seconds, then continue with the verb after
  ``<Gather>`` (or request ``action`` with empty ``Digits`` when
  ``actionOnEmptyResult="true"``).
* ``<Redirect method="POST">url</Redirect>`` (relative to the current document URL).
* ``<Hangup/>``, ``<Reject/>`` (on an answered outbound call: hangs up).
* ``<Record action method maxLength="3600" playBeep="true">``: the callee speaks
  for min(3, maxLength) s and hangs up; ``action`` (default: current document
  URL) is requested with ``RecordingUrl``, ``RecordingSid``,
  ``RecordingDuration`` and ``Digits=hangup``; the call then ends.
* ``<Dial action method>number</Dial>`` (or nested ``<Number>``): a connected
  leg of 5 s; then ``action`` is requested with ``DialCallStatus=completed``,
  ``DialCallSid``, ``DialCallDuration`` and the TwiML returned is executed;
  without ``action`` execution continues after ``<Dial>``.

Reaching the end of a document hangs up.  Unknown verbs are skipped (and
recorded as warning 12200).  A document that is not well-formed TwiML ends the
call (error 12100).  More than ``max_documents`` documents for one call ends it
(error 11215-like "too many redirects").
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin

from .callee import CalleePlan, gather_input

SAY_SECONDS_PER_WORD = 0.4
PLAY_SECONDS = 2.0
GATHER_KEYPRESS_SECONDS = 1.0
RECORD_SPEAK_SECONDS = 3.0
DIAL_LEG_SECONDS = 5


@dataclass
class Verb:
    name: str
    attrs: dict[str, str]
    text: str
    children: list[Verb] = field(default_factory=list)


class TwimlError(ValueError):
    """The document is not valid TwiML."""


def parse_twiml(text: str | bytes) -> list[Verb]:
    """Parse a TwiML document into its top-level verbs."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(f"document is not well-formed XML: {exc}") from exc
    if root.tag != "Response":
        raise TwimlError(f"root element must be <Response>, got <{root.tag}>")
    return [_verb(el) for el in root]


def _verb(el: ET.Element) -> Verb:
    return Verb(
        name=el.tag,
        attrs=dict(el.attrib),
        text=(el.text or "").strip(),
        children=[_verb(c) for c in el],
    )


class CallEnded(Exception):
    """Raised inside the interpreter when the call is over."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class WebhookFailed(Exception):
    """A webhook answered non-2xx, timed out, or could not be reached."""


class TwimlSession(Protocol):
    """What the interpreter needs from the live call it runs on."""

    plan: CalleePlan
    recording_base_url: str

    async def fetch_twiml(self, kind: str, url: str, method: str, extra: dict[str, str]) -> str:
        """Request ``url`` with the call params + ``extra``; return the body.

        Raises :class:`WebhookFailed` on a non-2xx answer or a timeout.
        """

    async def elapse(self, simulated_seconds: float) -> None:
        """Let simulated time pass (scaled by the sandbox's time_scale)."""

    def record_verb(self, entry: dict[str, Any]) -> None: ...

    def record_digits(self, digits: str) -> None: ...

    def record_error(self, code: int, message: str) -> None: ...


def _int(value: str | None, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(float(value))
    except ValueError:
        return default


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None:
        return default
    return value.strip().lower() == "true"


class TwimlInterpreter:
    """Executes TwiML documents for one answered call, as the callee experiences them."""

    def __init__(self, session: TwimlSession, max_documents: int = 200):
        self.session = session
        self.max_documents = max_documents
        self.verbs_heard = 0
        self.gathers = 0
        self.speech_gathers = 0
        self.records = 0
        self.dials = 0
        self.documents = 0

    # -- callee hang-up accounting -------------------------------------
    def _before_verb(self) -> None:
        limit = self.session.plan.hangup_after_verbs
        if limit is not None and self.verbs_heard >= limit:
            raise CallEnded("callee-hangup")

    def _after_verb(self) -> None:
        self.verbs_heard += 1

    # -- main loop -----------------------------------------------------
    async def run(self, document: str, document_url: str) -> str:
        """Run from the first document until the call ends; return the reason."""
        try:
            text, url = document, document_url
            while True:
                self.documents += 1
                if self.documents > self.max_documents:
                    self.session.record_error(
                        11215, f"more than {self.max_documents} TwiML documents for one call"
                    )
                    return "too-many-documents"
                try:
                    verbs = parse_twiml(text)
                except TwimlError as exc:
                    self.session.record_error(12100, f"Document parse failure: {exc} ({url})")
                    return "application-error"
                nxt = None
                for verb in verbs:
                    nxt = await self._execute(verb, url)
                    if nxt is not None:
                        break
                if nxt is None:
                    return "end-of-document"
                text, url = nxt
        except CallEnded as ended:
            return ended.reason
        except WebhookFailed:
            return "application-error"

    async def _fetch(
        self, kind: str, base_url: str, target: str | None, method: str | None, extra: dict
    ) -> tuple[str, str]:
        if self.documents >= self.max_documents:
            self.session.record_error(
                11215, f"more than {self.max_documents} TwiML documents for one call"
            )
            raise CallEnded("too-many-documents")
        url = urljoin(base_url, target) if target else base_url
        method = (method or "POST").upper()
        body = await self.session.fetch_twiml(kind, url, method, extra)
        return body, url

    async def _execute(self, verb: Verb, doc_url: str) -> tuple[str, str] | None:
        name = verb.name
        a = verb.attrs
        if name in ("Say", "Play", "Pause"):
            self._before_verb()
            await self._play(verb)
            self._after_verb()
            return None
        if name == "Gather":
            return await self._gather(verb, doc_url)
        if name == "Redirect":
            self._before_verb()
            self.session.record_verb({"verb": "Redirect", "url": verb.text, "method": a.get("method", "POST")})
            self._after_verb()
            return await self._fetch("redirect", doc_url, verb.text or None, a.get("method"), {})
        if name in ("Hangup", "Reject"):
            self._before_verb()
            self.session.record_verb({"verb": name})
            self._after_verb()
            raise CallEnded("twiml-hangup")
        if name == "Record":
            return await self._record(verb, doc_url)
        if name == "Dial":
            return await self._dial(verb, doc_url)
        self.session.record_error(12200, f"Schema validation warning: unsupported verb <{name}> skipped")
        self.session.record_verb({"verb": name, "skipped": True})
        return None

    async def _play(self, verb: Verb) -> None:
        a = verb.attrs
        if verb.name == "Say":
            loops = _int(a.get("loop"), 1) or 10
            words = max(1, len(verb.text.split()))
            self.session.record_verb(
                {"verb": "Say", "text": verb.text, "voice": a.get("voice"), "language": a.get("language")}
            )
            await self.session.elapse(max(1.0, words * SAY_SECONDS_PER_WORD) * loops)
        elif verb.name == "Play":
            loops = _int(a.get("loop"), 1) or 10
            self.session.record_verb({"verb": "Play", "url": verb.text})
            await self.session.elapse(PLAY_SECONDS * loops)
        else:
            length = _int(a.get("length"), 1) or 0
            self.session.record_verb({"verb": "Pause", "length": length})
            await self.session.elapse(length)

    async def _gather(self, verb: Verb, doc_url: str) -> tuple[str, str] | None:
        a = verb.attrs
        self._before_verb()
        num_digits = _int(a.get("numDigits"), None)
        timeout = _int(a.get("timeout"), 5)
        finish_on_key = a.get("finishOnKey", "#")
        inputs = (a.get("input") or "dtmf").split()
        for child in verb.children:
            if child.name in ("Say", "Play", "Pause"):
                self._before_verb()
                await self._play(child)
                self._after_verb()
        pressed = ""
        if "dtmf" in inputs:
            pressed = self.session.plan.digits_for_gather(self.gathers)
            self.gathers += 1
        said = ""
        if "speech" in inputs:
            said = self.session.plan.speech_for_gather(self.speech_gathers)
            self.speech_gathers += 1
        digits, finished_on = gather_input(pressed, num_digits, finish_on_key)
        entry = {
            "verb": "Gather",
            "input": " ".join(inputs),
            "numDigits": num_digits,
            "timeout": timeout,
            "action": a.get("action"),
            "digits": digits,
        }
        if "speech" in inputs:
            entry["speech"] = said if not digits else ""
            entry["language"] = a.get("language")
        self.session.record_verb(entry)
        if said and not digits and not finished_on:
            await self.session.elapse(max(1.0, len(said.split()) * SAY_SECONDS_PER_WORD))
            self._after_verb()
            extra = {"SpeechResult": said, "Confidence": "0.92"}
            return await self._fetch("gather-action", doc_url, a.get("action"), a.get("method"), extra)
        if digits or finished_on:
            await self.session.elapse(GATHER_KEYPRESS_SECONDS)
            self.session.record_digits(digits)
        else:
            await self.session.elapse(timeout or 0)
        self._after_verb()
        if digits or finished_on or _bool(a.get("actionOnEmptyResult")):
            extra = {"Digits": digits, "FinishedOnKey": finished_on}
            return await self._fetch("gather-action", doc_url, a.get("action"), a.get("method"), extra)
        return None

    async def _record(self, verb: Verb, doc_url: str) -> tuple[str, str] | None:
        a = verb.attrs
        self._before_verb()
        max_length = _int(a.get("maxLength"), 3600) or 3600
        scripted = self.session.plan.recording_for(self.records)
        self.records += 1
        spoken = RECORD_SPEAK_SECONDS if scripted is None else scripted
        duration = int(min(spoken, max_length))
        self.session.record_verb({"verb": "Record", "action": a.get("action"), "maxLength": max_length, "seconds": duration})
        if _bool(a.get("playBeep"), True):
            await self.session.elapse(0.5)
        await self.session.elapse(duration)
        self._after_verb()
        rec_sid = "RE" + secrets.token_hex(16)
        save = getattr(self.session, "save_recording", None)
        if save is not None:  # so that GET RecordingUrl serves its media
            save(rec_sid, duration)
        extra = {
            "RecordingUrl": f"{self.session.recording_base_url}/{rec_sid}",
            "RecordingSid": rec_sid,
            "RecordingDuration": str(duration),
            "Digits": "hangup",
        }
        if scripted is not None:
            # The callee falls silent: Twilio waits the silence timeout, then requests the
            # action (and runs the TwiML it returns); nothing said means no request at all.
            await self.session.elapse(_int(a.get("timeout"), 5) or 0)
            if duration <= 0:
                return None
            extra["Digits"] = ""
            return await self._fetch("record-action", doc_url, a.get("action"), a.get("method"), extra)
        try:
            await self._fetch("record-action", doc_url, a.get("action"), a.get("method"), extra)
        except WebhookFailed:
            pass
        raise CallEnded("callee-hangup")

    async def _dial(self, verb: Verb, doc_url: str) -> tuple[str, str] | None:
        a = verb.attrs
        self._before_verb()
        number = verb.text
        for child in verb.children:
            if child.name in ("Number", "Client", "Sip") and child.text:
                number = child.text
                break
        status = self.session.plan.transfer_status(self.dials)
        self.dials += 1
        self.session.record_verb(
            {"verb": "Dial", "number": number, "action": a.get("action"), "callerId": a.get("callerId"),
             "timeout": a.get("timeout"), "status": status}
        )  # fmt: skip
        connected = status == "completed"
        await self.session.elapse(DIAL_LEG_SECONDS if connected else 1)
        self._after_verb()
        if a.get("action"):
            extra = {
                "DialCallStatus": status,
                "DialCallSid": "CA" + secrets.token_hex(16),
                "DialCallDuration": str(DIAL_LEG_SECONDS if connected else 0),
            }
            return await self._fetch("dial-action", doc_url, a.get("action"), a.get("method"), extra)
        return None
