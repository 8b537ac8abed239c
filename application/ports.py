"""The ports the application needs from the outside world (small Protocols)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class Telephony(Protocol):
    def place_call(
        self,
        *,
        to: str,
        from_: str,
        call_id: str,
        attempt: int,
        timeout_seconds: int,
        machine_detection: bool,
    ) -> str:
        """Ask the phone network to dial; returns the provider's call id."""
        ...


class TelephonyError(Exception):
    """The provider refused or could not be reached; the attempt fails."""


class DialQueue(Protocol):
    def enqueue_dial(self, call_id: str, attempt: int) -> None: ...

    def enqueue_dials(self, jobs: Sequence[tuple[str, int]]) -> None:
        """Several jobs, sent as few messages as the queue's batch allows."""
        ...


class ProgressQueries(Protocol):
    """What the dispatcher reads from the progress read model."""

    def executions_due_to_start(self, now_key: str) -> list[str]: ...

    def executions_to_complete(self) -> list[str]: ...

    def due_calls(self, now_key: str, lease_key: str, limit: int) -> list[tuple[str, int]]: ...

    def mark_dispatched(self, items: list[tuple[str, int]], at_key: str) -> None: ...

    def execution(self, execution_id: str) -> dict[str, Any] | None: ...


class Pacer(Protocol):
    """Calls-per-second limits shared by every worker process."""

    def try_acquire(self, key: str, per_second: float) -> bool: ...


class Suppressions(Protocol):
    """The do-not-call list. The dialer reads a number's entry stream (``entry_id``) with
    the other streams it checks, in one query, and asks ``listed`` of what it found."""

    def is_suppressed(self, organization_id: Any, e164: str) -> bool: ...

    def entry_id(self, organization_id: Any, e164: str) -> Any: ...

    def listed(self, entry: Any) -> bool: ...


class ConsentCheck(Protocol):
    def holds(self, organization_id: Any, contact: Any, scope: str, at: datetime) -> bool:
        """Does the contact consent to ``scope`` at ``at``? Current state, no read-model lag."""
        ...
