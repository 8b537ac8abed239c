"""A program: an audience, a flow, a schedule and retry rules; launched into executions."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from domain.base import AuditedAggregate
from domain.errors import Conflict


class Program(AuditedAggregate):
    def __init__(self, organization_id: UUID, settings: dict[str, Any]) -> None:
        self.organization_id = organization_id
        self.settings = settings
        self.status = "draft"
        self.execution_ids: list[str] = []
        self.created_at = self.modified_on

    @event("Configured")
    def configure(self, changes: dict[str, Any]) -> None:
        self.settings = {**self.settings, **changes}

    @event("Launched")
    def record_launch(self, execution_id: str) -> None:
        if self.status == "archived":
            raise Conflict("An archived program cannot be launched")
        self.execution_ids.append(execution_id)
        self.status = "active"

    @event("Archived")
    def archive(self) -> None:
        self.status = "archived"

    @event("Deleted")
    def delete(self) -> None:
        self.status = "deleted"

    @property
    def last_execution_id(self) -> str | None:
        return self.execution_ids[-1] if self.execution_ids else None
