"""A text message a flow's ``sms`` node sent: one short stream per message, its id derived
from the call, the attempt, the flow turn and its place in that turn, so a callback
applied twice sends it once."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import AuditedAggregate


def sms_id(call_id: UUID | str, attempt: int, turn: int, index: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"gomobile:sms:{call_id}:{attempt}:{turn}:{index}")


class SmsMessage(AuditedAggregate):
    """Requested by a flow, then sent (with the gateway's id) or failed (with why)."""

    @staticmethod
    def create_id(call_id: UUID, attempt: int, turn: int, index: int, **_: Any) -> UUID:
        return sms_id(call_id, attempt, turn, index)

    def __init__(
        self,
        call_id: UUID,
        attempt: int,
        turn: int,
        index: int,
        node_id: str,
        organization_id: UUID,
        contact_id: UUID,
        to: str,
        body: str,
        sender_id: str | None,
    ) -> None:
        self.call_id = call_id
        self.attempt = attempt
        self.turn = turn
        self.node_id = node_id
        self.organization_id = organization_id
        self.contact_id = contact_id
        self.to = to
        self.body = body
        self.sender_id = sender_id
        self.status = "requested"
        self.gateway_id: str | None = None
        self.error: str | None = None

    @event("Sent")
    def sent(self, gateway_id: str) -> None:
        """The gateway accepted the message."""
        self.status = "sent"
        self.gateway_id = gateway_id

    @event("Failed")
    def failed(self, error: str) -> None:
        """The gateway refused it or could not be reached; the call went on regardless."""
        self.status = "failed"
        self.error = error
