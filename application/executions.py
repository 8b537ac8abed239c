"""What calls need of their execution: the frozen flow graph, retry rule and caller ids.

These are immutable for an execution, so they are cached per process."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from application.campaigns import CampaignsApp
from domain.flows.graph import FlowGraph
from domain.retry import RetryStrategy
from domain.windows import PauseWindows


@dataclass(frozen=True)
class ExecutionInfo:
    execution_id: str
    organization_id: str
    program_id: str
    graph: FlowGraph
    flow: dict[str, Any]
    retry: RetryStrategy
    did_pool: list[str]
    ring_timeout_seconds: int
    machine_detection: bool
    windows: PauseWindows
    calls_per_second: float | None
    require_consent: str | None = None  # the consent scope each contact must hold at dial time


class ExecutionCache:
    def __init__(self, campaigns: CampaignsApp, maxsize: int = 1024) -> None:
        self.campaigns = campaigns
        self.maxsize = maxsize
        self._items: dict[str, ExecutionInfo] = {}
        self._lock = threading.Lock()

    def get(self, execution_id: UUID | str) -> ExecutionInfo:
        key = str(execution_id)
        with self._lock:
            found = self._items.get(key)
        if found is not None:
            return found
        e = self.campaigns.execution(None, key)
        graph = FlowGraph.from_canonical(e.flow["graph"])
        start = graph.node(graph.start_node_id)
        dial_cfg = start.get("config") or {} if start["type"] == "dial" else {}
        info = ExecutionInfo(
            execution_id=key,
            organization_id=str(e.organization_id),
            program_id=str(e.program_id),
            graph=graph,
            flow={k: v for k, v in e.flow.items() if k != "graph"},
            retry=RetryStrategy.parse(e.program["retryStrategy"]),
            did_pool=list(e.program.get("didPool") or []),
            ring_timeout_seconds=max(5, round((dial_cfg.get("timeout") or 30000) / 1000)),
            machine_detection=bool(dial_cfg.get("enableAMD", True)) if start["type"] == "dial" else False,
            windows=PauseWindows.parse(e.program.get("pauseWindows")),
            calls_per_second=e.program.get("callsPerSecond"),
            require_consent=e.program.get("requireConsent"),
        )
        with self._lock:
            if len(self._items) >= self.maxsize:
                self._items.pop(next(iter(self._items)))
            self._items[key] = info
        return info
