"""Requests a flow turn makes of the outside world (a ``webhook`` node's HTTP call), made by
the application and fed back to the pure engine (``engine.settle``).

A callback from the phone network can be applied twice (optimistic concurrency retries
the whole change), so each request is performed once per flow position and remembered."""

from __future__ import annotations

import json
from typing import Any, Protocol


class HttpTimeout(Exception):
    """The endpoint did not answer in time."""


class FlowHttp(Protocol):
    def request(
        self, method: str, url: str, headers: dict[str, str], body: Any, timeout_seconds: float
    ) -> tuple[int, str]:
        """Make one HTTP request; returns (status, body text). Raises HttpTimeout, or
        OSError for a connection failure."""
        ...


class FlowRequests:
    """Performs a turn's requests through ``http`` (None: every webhook fails, logged)."""

    def __init__(self, http: FlowHttp | None) -> None:
        self.http = http
        self.done: dict[tuple[str, int], dict[str, Any]] = {}

    def perform(self, request: dict[str, Any]) -> dict[str, Any]:
        key = (request["nodeId"], int(request.get("visit") or 0))
        if key not in self.done:
            self.done[key] = self._perform(request)
        return self.done[key]

    def _perform(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("kind") != "webhook":
            return {"error": f"unknown request kind {request.get('kind')!r}"}
        if self.http is None:
            return {"error": "no HTTP client configured"}
        try:
            status, text = self.http.request(
                request["method"], request["url"], request.get("headers") or {}, request.get("body"),
                float(request.get("timeoutMs") or 5000) / 1000,
            )  # fmt: skip
        except HttpTimeout:
            return {"error": "timeout"}
        except OSError as exc:
            return {"error": f"connection failed: {exc}"}
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        return {"status": status, "json": data}
