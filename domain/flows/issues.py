"""A validation issue of a flow graph: which node, which field, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FlowIssue:
    node_id: str | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"nodeId": self.node_id, "field": self.field, "message": self.message}
