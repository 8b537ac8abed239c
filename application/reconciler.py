"""Reconciling calls whose provider callbacks never came.

A status callback can be lost (a timeout, a restart). A call claimed long ago and
still in progress is looked up at the provider: if the provider says it ended, the
same command as the callback's is applied. A claim that never got a provider call id
(the worker died between claiming and dialling) is ended as failed after a longer
delay — never blindly redialled: the retry rule decides, as for any failure."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Protocol

from application.calls import CallsApp
from application.conversation import Conversation
from application.ports import Clock, TelephonyError
from domain.base import audit_context
from domain.call import LIVE
from domain.timeparse import sortable

log = logging.getLogger("gomobile.reconciler")
FINAL = ("completed", "busy", "no_answer", "failed", "cancelled")


class CallLookup(Protocol):
    def fetch_call(self, provider_call_id: str) -> dict[str, Any]: ...


class Reconciler:
    def __init__(
        self,
        calls: CallsApp,
        conversation: Conversation,
        telephony: CallLookup,
        progress: Any,
        clock: Clock,
        stale_after: timedelta = timedelta(minutes=2),
        unplaced_after: timedelta = timedelta(minutes=10),
    ) -> None:
        self.calls = calls
        self.conversation = conversation
        self.telephony = telephony
        self.progress = progress
        self.clock = clock
        self.stale_after = stale_after
        self.unplaced_after = unplaced_after
        self._checked: dict[str, datetime] = {}
        # A look at most this often (on the platform's clock), not at each of the
        # dispatcher's ten ticks a second: the look reads every call in progress (thousands
        # at 200 calls a second, 7 ms a look), for calls whose callback is minutes late.
        self.every = min(timedelta(seconds=5), stale_after / 10)
        self._next: datetime | None = None

    def tick(self) -> int:
        now = self.clock.now()
        if self._next is not None and now < self._next:
            return 0
        self._next = now + self.every
        ended = 0
        with audit_context(actor="reconciler"):
            for call_id in self.progress.stale_live_calls(sortable(now - self.stale_after)):
                last = self._checked.get(call_id)
                if last is not None and now - last < self.stale_after:
                    continue
                self._checked[call_id] = now
                try:
                    ended += self._reconcile(call_id, now)
                except TelephonyError as exc:
                    log.warning("could not reconcile call %s: %s", call_id, exc)
        if len(self._checked) > 100_000:
            self._checked.clear()
        return ended

    def _reconcile(self, call_id: str, now: datetime) -> int:
        call = self.calls.find(call_id)
        if call is None or call.status not in LIVE:
            return 0
        if call.provider_call_id is None:
            if now - call.modified_on < self.unplaced_after:
                return 0
            return int(self.conversation.status(call_id, call.attempt, "failed", reason="never placed (reconciled)"))
        seen = self.telephony.fetch_call(call.provider_call_id)
        if seen["status"] not in FINAL:
            return 0
        log.info("call %s attempt %s ended at the provider without a callback: %s", call_id, call.attempt, seen)
        return int(
            self.conversation.status(
                call_id, call.attempt, seen["status"], seen.get("answeredBy"), seen.get("durationMs"),
                "reconciled: final status callback not received",
            )
        )
