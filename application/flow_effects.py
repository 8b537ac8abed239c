"""What a flow turn asks of the platform beyond the phone call, carried out once the turn is
saved on the Call: ``opt_out`` puts the number on the do-not-call list, ``update_contact``
changes the Contact, ``sms`` sends a text through the SMS port.

The turn is recorded first, so a failed effect never loses the call's history; each
effect is idempotent (a suppressed number stays suppressed, an unchanged contact records
nothing, a message has a deterministic id), so doing a turn's effects again is harmless.
A failure is logged and recorded where it belongs (a failed SMS on its message stream);
per the node catalogue these effects are non-fatal and the call goes on."""

from __future__ import annotations

import logging
from typing import Any, Protocol
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.campaigns import CampaignsApp
from application.suppression import Suppressions
from domain.call import Call
from domain.errors import DomainError
from domain.sms import SmsMessage, sms_id

log = logging.getLogger("gomobile.flow")


class SmsError(Exception):
    """The gateway refused the message or could not be reached."""


class SmsSender(Protocol):
    def send(self, *, to: str, body: str, sender_id: str | None, message_id: str) -> str:
        """Hand one message to the SMS gateway; returns the gateway's id. Raises SmsError."""
        ...


class FlowEffects:
    def __init__(self, campaigns: CampaignsApp, sms: SmsSender) -> None:
        self.campaigns = campaigns
        self.suppressions = Suppressions(campaigns)
        self.sms = sms

    def apply(self, call: Call, turn: int, events: list[dict[str, Any]]) -> None:
        """Carry out the effects among ``events`` of turn number ``turn`` of ``call``."""
        for index, ev in enumerate(events):
            kind = ev.get("type")
            try:
                if kind == "opt_out_requested":
                    self._opt_out(call, ev)
                elif kind == "contact_update_requested":
                    self._update_contact(call, ev)
                elif kind == "sms_requested":
                    self._send_sms(call, turn, index, ev)
            except DomainError as exc:
                log.warning("flow %s of call %s not applied: %s", kind, call.id, exc.message)

    def _opt_out(self, call: Call, ev: dict[str, Any]) -> None:
        org = self.campaigns.organization(call.organization_id)
        self.suppressions.add(org, ev.get("phone") or call.to, ev.get("reason"), source="opt_out")

    def _update_contact(self, call: Call, ev: dict[str, Any]) -> None:
        org = self.campaigns.organization(call.organization_id)
        name, value = ev["attributeName"], ev.get("value")
        data = {name: value} if ev.get("kind") == "contactField" else {"customAttributes": {name: value}}
        self.campaigns.update_contact(org, str(call.contact_id), data)

    def _send_sms(self, call: Call, turn: int, index: int, ev: dict[str, Any]) -> None:
        mid = sms_id(call.id, call.attempt, turn, index)
        try:
            message = self.campaigns.repository.get(mid)
        except AggregateNotFoundError:
            message = SmsMessage(
                call_id=call.id, attempt=call.attempt, turn=turn, index=index, node_id=ev["nodeId"],
                organization_id=call.organization_id, contact_id=call.contact_id,
                to=str(ev.get("to") or call.to), body=str(ev.get("body") or ""), sender_id=ev.get("senderId"),
            )  # fmt: skip
            try:
                self.campaigns.save(message)
            except IntegrityError:  # another delivery of this callback got here first
                return
        if message.status != "requested":
            return
        try:
            message.sent(self.sms.send(to=message.to, body=message.body, sender_id=message.sender_id, message_id=str(mid)))
        except SmsError as exc:
            message.failed(str(exc))
        self.campaigns.save(message)
