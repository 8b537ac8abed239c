"""A call flow: named, with immutable numbered versions of its graph."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from domain.base import AuditedAggregate


class Flow(AuditedAggregate):
    def __init__(
        self, organization_id: UUID, name: str, description: str | None, graph: dict[str, Any]
    ) -> None:
        self.organization_id = organization_id
        self.name = name
        self.description = description
        self.versions: list[dict[str, Any]] = [graph]
        self.deleted = False
        self.created_at = self.modified_on

    @property
    def latest_version(self) -> int:
        return len(self.versions)

    @property
    def graph(self) -> dict[str, Any]:
        return self.versions[-1]

    @event("Updated")
    def update(self, name: str, description: str | None, graph: dict[str, Any] | None) -> None:
        self.name = name
        self.description = description
        if graph is not None and graph != self.versions[-1]:
            self.versions.append(graph)

    @event("Deleted")
    def delete(self) -> None:
        self.deleted = True

    @event("Erased")
    def erase(self) -> None:
        """Deleted for good: no version of the graph is served again (executions keep the
        copy they were launched with; the log keeps the history it must)."""
        self.deleted = True
        self.versions = []
