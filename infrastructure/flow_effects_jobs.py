"""The durable path of a flow turn's effects (opt-out, contact updates, SMS; see
application/flow_effects): an outbox that follows the calls log and, for every turn that
asks for effects, sends a Dramatiq job in the same transaction that advances its tracking
position; and the actor that runs the job, with retries.

If the process dies after a turn was saved and before its effects ran, the outbox has not
moved past the turn and sends the job on restart; if it dies after sending and before its
position was committed, the job is sent twice and the second finds the turn done
(``FlowEffects.run`` is idempotent). Either way each effect happens once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dramatiq
from eventsourcing.application import Application

from domain.flow_effect import requested_effects
from projections.runner import ProjectionRunner
from projections.store import ViewMixin, make_view

log = logging.getLogger("gomobile.flow")

FLOW_EFFECTS_QUEUE = "flow_effects"


class FlowEffectsQueue:
    """The ``flow_effects`` actor on ``broker``: ``send`` from the outbox, ``set_handler`` in workers."""

    def __init__(self, broker: dramatiq.Broker, handler: Callable[[str, int], str] | None = None) -> None:
        self._handler = handler

        def flow_effects(call_id: str, version: int) -> None:
            if self._handler is None:
                raise RuntimeError("no flow effects handler in this process")
            log.info("flow effects of call %s turn v%s: %s", call_id, version, self._handler(call_id, version))

        # An exception (the database or the SMS gateway away) is retried with backoff for
        # about an hour; effects already done are not redone on a retry.
        self.actor = dramatiq.actor(
            flow_effects, broker=broker, actor_name="flow_effects", queue_name=FLOW_EFFECTS_QUEUE,
            max_retries=30, min_backoff=500, max_backoff=300_000, time_limit=120_000,
        )  # fmt: skip

    def set_handler(self, handler: Callable[[str, int], str]) -> None:
        self._handler = handler

    def send(self, call_id: str, version: int) -> None:
        self.actor.send(call_id, version)


class FlowEffectsOutbox(ViewMixin):
    """Tracks its position in the calls log like a read model; holds no rows."""

    TABLES: Sequence[str] = ()
    send: Callable[[str, int], None]

    def wants(self, topic: str) -> bool:
        """Only flow turns are decoded; the runner tracks past every other call event."""
        return topic.endswith(":Call.FlowAdvanced")

    def handle(self, c: Any, event: Any) -> None:
        if type(event).__qualname__ == "Call.FlowAdvanced" and requested_effects(event.turn):
            self.send(str(event.originator_id), int(event.originator_version))


def effects_outbox(env: dict[str, str], calls: Application[Any], send: Callable[[str, int], None], poll_interval: float) -> ProjectionRunner:
    if env.get("CALLS_SQLITE_DBNAME"):  # the embedded store: a file of its own, beside the calls'
        env = {**env, "FLOW_EFFECTS_OUTBOX_SQLITE_DBNAME": str(Path(env["CALLS_SQLITE_DBNAME"]).with_name("flow_effects_outbox.sqlite"))}
    view = make_view(FlowEffectsOutbox, "flow_effects_outbox", env)
    view.send = send
    return ProjectionRunner("flow_effects_outbox", view, [calls], poll_interval=poll_interval)
