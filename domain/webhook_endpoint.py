"""A client system's webhook endpoint: where an organization wants its call and execution
events delivered, signed with a secret of the endpoint's own.

The secret is kept sealed (encrypted by the application, see application/client_webhooks):
the event store, the event feed and audit exports carry only the sealed form."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import AuditedAggregate

#: The event types a client may subscribe to, and the domain events they are made of
#: (``Call.Finished`` splits by its result).
EVENT_TYPES: dict[str, str] = {
    "call.attempt_ended": "an attempt ended (outcome: completed, busy, no_answer, voicemail, failed, ...)",
    "call.retry_scheduled": "another attempt is scheduled after this one (its number and time)",
    "call.completed": "the contact's call reached its final result 'completed'",
    "call.failed": "the contact's call reached its final result 'failed' (retries exhausted)",
    "call.skipped": "the contact was not called (the execution was cancelled or stopped)",
    "execution.started": "an execution began placing calls",
    "execution.paused": "an execution was paused (by a user or an auto-pause rule)",
    "execution.resumed": "a paused execution resumed",
    "execution.completed": "every contact of an execution reached a final result",
    "execution.cancelled": "an execution was cancelled",
    "execution.stopped": "an execution reached its stop time",
}


class WebhookEndpoint(AuditedAggregate):
    """One HTTPS endpoint of an organization, subscribed to some of ``EVENT_TYPES``."""

    def __init__(
        self,
        organization_id: UUID,
        url: str,
        events: list[str],
        description: str,
        sealed_secret: str,
    ) -> None:
        self.organization_id = organization_id
        self.url = url
        self.events = list(events)
        self.description = description
        self.sealed_secret = sealed_secret
        self.deleted = False
        self.secret_rotations = 0

    @event("SecretRotated")
    def rotate_secret(self, sealed_secret: str) -> None:
        """A new signing secret; deliveries sent from now on are signed with it."""
        self.sealed_secret = sealed_secret
        self.secret_rotations += 1

    @event("Deleted")
    def delete(self) -> None:
        """No more deliveries; those not yet delivered are cancelled."""
        self.deleted = True
