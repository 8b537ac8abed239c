"""What the platform did for one flow turn: the effects the turn asked for beyond the phone
call (``opt_out``, ``update_contact``, ``sms``), carried out once. One short stream per
turn, its id derived from the Call and the version of the turn's event on it, so that
however often the work is delivered (a redelivered job, a replay after a crash) the turn's
effects are recorded as done once, and a delivery that finds it done does nothing."""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from domain.base import AuditedAggregate

EFFECT_EVENTS = ("opt_out_requested", "contact_update_requested", "sms_requested")


def turn_effects_id(call_id: UUID | str, version: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"gomobile:flow-effects:{call_id}:{version}")


def requested_effects(turn: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The effects a recorded turn asks for, with their place among its events."""
    return [(i, ev) for i, ev in enumerate(turn.get("events") or []) if ev.get("type") in EFFECT_EVENTS]


class TurnEffects(AuditedAggregate):
    """The effects of the turn recorded at ``version`` of Call ``call_id``, carried out;
    ``results`` says for each whether it took effect or why not."""

    @staticmethod
    def create_id(call_id: UUID, version: int, **_: Any) -> UUID:
        return turn_effects_id(call_id, version)

    def __init__(self, call_id: UUID, version: int, attempt: int, turn: int, results: list[dict[str, Any]]) -> None:
        self.call_id = call_id
        self.version = version
        self.attempt = attempt
        self.turn = turn
        self.results = results
