"""What a flow turn asks of the platform beyond the phone call: ``opt_out`` puts the number
on the do-not-call list, ``update_contact`` changes the Contact, ``sms`` sends a text
through the SMS port.

Durable: the request is part of the turn's own event on the Call (one save), so it
cannot be lost. An outbox that follows the calls log (infrastructure/flow_effects_jobs)
sends a job for every such turn, in the same transaction as its tracking position, and a
Dramatiq actor (with retries) runs ``run``: it carries the turn's effects out and records
that on a ``TurnEffects`` stream of its own. After a crash anywhere in between, the
outbox sends the job again and ``run`` finds what is done: a turn already recorded is not
done again, and each effect is idempotent besides (a suppressed number stays suppressed,
an unchanged contact records nothing, a message has a deterministic id and a status), so
one that was done just before a crash is not done twice either.

A failure the effect cannot recover from (an unknown attribute) is recorded with why;
per the node catalogue these effects are non-fatal and the call goes on."""

from __future__ import annotations

import logging
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.calls import CallsApp
from application.campaigns import CampaignsApp
from application.consent import Consents
from application.suppression import Suppressions
from domain.call import Call
from domain.errors import DomainError
from domain.flow_effect import TurnEffects, requested_effects, turn_effects_id
from domain.sms import SmsMessage, sms_id

log = logging.getLogger("gomobile.flow")


class SmsError(Exception):
    """The gateway refused the message or could not be reached."""


class SmsSender(Protocol):
    def send(self, *, to: str, body: str, sender_id: str | None, message_id: str) -> str:
        """Hand one message to the SMS gateway; returns the gateway's id. Raises SmsError."""
        ...


class FlowEffects:
    def __init__(self, campaigns: CampaignsApp, calls: CallsApp, sms: SmsSender) -> None:
        self.campaigns = campaigns
        self.calls = calls
        self.suppressions = Suppressions(campaigns)
        self.consents = Consents(campaigns)
        self.sms = sms

    def done(self, call_id: UUID | str, version: int) -> TurnEffects | None:
        try:
            found = self.campaigns.repository.get(turn_effects_id(call_id, version))
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, TurnEffects) else None

    def run(self, call_id: str, version: int) -> str:
        """Carry out the effects of the turn recorded at ``version`` of Call ``call_id``,
        once: ``applied``, ``already_done``, or ``no_effects``."""
        if self.done(call_id, version) is not None:
            return "already_done"
        found = self._turn(UUID(call_id), version)
        if found is None:
            return "no_effects"
        call, attempt, turn, effects = found
        results = self.apply(call, attempt, turn, effects)
        try:
            self.campaigns.save(TurnEffects(call_id=call.id, version=version, attempt=attempt, turn=turn, results=results))
        except IntegrityError:  # another delivery of the job finished first
            return "already_done"
        return "applied"

    def _turn(self, call_id: UUID, version: int) -> tuple[Call, int, int, list[tuple[int, dict[str, Any]]]] | None:
        """The Call, and the attempt, place in the attempt and requested effects of the turn
        recorded at ``version`` (read from the Call's events: the attempt may be over)."""
        attempt, turn = 0, -1
        effects: list[tuple[int, dict[str, Any]]] = []
        for ev in self.calls.repository.event_store.get(call_id, lte=version):
            name = type(ev).__name__
            if name == "DialClaimed":
                attempt, turn = ev.attempt, -1  # type: ignore[attr-defined]
            elif name == "FlowAdvanced":
                turn += 1
                if ev.originator_version == version:
                    effects = requested_effects(ev.turn)  # type: ignore[attr-defined]
                    attempt = ev.attempt  # type: ignore[attr-defined]
        if not effects:
            return None
        return self.calls.call(call_id), attempt, turn, effects

    def apply(self, call: Call, attempt: int, turn: int, effects: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Carry out ``effects`` (place among the turn's events, event) of turn number
        ``turn`` of ``attempt`` of ``call``; each one's result."""
        results: list[dict[str, Any]] = []
        for index, ev in effects:
            kind = ev.get("type")
            result: dict[str, Any] = {"index": index, "type": kind, "nodeId": ev.get("nodeId"), "status": "done"}
            try:
                if kind == "opt_out_requested":
                    self._opt_out(call, ev)
                elif kind == "contact_update_requested":
                    self._update_contact(call, ev)
                elif kind == "sms_requested":
                    result["status"] = self._send_sms(call, attempt, turn, index, ev)
            except DomainError as exc:
                log.warning("flow %s of call %s not applied: %s", kind, call.id, exc.message)
                result.update(status="failed", error=exc.message)
            results.append(result)
        return results

    def _opt_out(self, call: Call, ev: dict[str, Any]) -> None:
        """The number on the do-not-call list, the contact's consents withdrawn and
        ``OptedOut`` on the contact (application/consent.py); what is already done is not
        recorded again."""
        from domain.phone import to_e164

        org = self.campaigns.organization(call.organization_id)
        phone = to_e164(ev.get("phone") or call.to, org.country, "phone")
        # The callee's request stands whatever the flow's reason text: never refused for it.
        reason = str(ev.get("reason") or "").replace("\x00", "")[:256] or None
        self.consents.opt_out_number(org, phone, "ivr", reason)

    def opt_out_now(self, call: Call, events: list[dict[str, Any]]) -> None:
        """The opt-outs a turn just saved asks for, at once (Conversation calls this before
        answering the callback): the next dial of the number, in any execution, must not
        wait for the outbox. The outbox's run still comes and finds them done."""
        for ev in events:
            self._opt_out(call, ev)

    def _update_contact(self, call: Call, ev: dict[str, Any]) -> None:
        org = self.campaigns.organization(call.organization_id)
        name, value = ev["attributeName"], ev.get("value")
        data = {name: value} if ev.get("kind") == "contactField" else {"customAttributes": {name: value}}
        self.campaigns.update_contact(org, str(call.contact_id), data)

    def _send_sms(self, call: Call, attempt: int, turn: int, index: int, ev: dict[str, Any]) -> str:
        mid = sms_id(call.id, attempt, turn, index)
        try:
            message = self.campaigns.repository.get(mid)
        except AggregateNotFoundError:
            message = SmsMessage(
                call_id=call.id, attempt=attempt, turn=turn, index=index, node_id=ev["nodeId"],
                organization_id=call.organization_id, contact_id=call.contact_id,
                to=str(ev.get("to") or call.to), body=str(ev.get("body") or ""), sender_id=ev.get("senderId"),
            )  # fmt: skip
            try:
                self.campaigns.save(message)
            except IntegrityError:  # another delivery got here first
                message = self.campaigns.repository.get(mid)
        if message.status != "requested":
            return str(message.status)
        try:
            message.sent(self.sms.send(to=message.to, body=message.body, sender_id=message.sender_id, message_id=str(mid)))
        except SmsError as exc:
            message.failed(str(exc))
        self.campaigns.save(message)
        return str(message.status)
