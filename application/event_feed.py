"""One organization's events, read from the notification logs of every application in
order, for analysts who rebuild reports elsewhere (``GET /api/events``,
``gomobile events export``).

The logs are merged by event time; the cursor holds a position in each log
(``"<campaigns>-<calls>"``), so a reader resumes exactly after the last event it got,
with nothing skipped or repeated, whichever log moves faster.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.errors import ValidationError

REDACTED_FIELDS = {"key_hash"}  # an API key's hash never leaves the platform
SKIP_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic", "meta"}


@dataclasses.dataclass(frozen=True)
class Cursor:
    positions: tuple[int, ...]

    @classmethod
    def parse(cls, value: str | None, width: int) -> Cursor:
        if not value:
            return cls((0,) * width)
        parts = value.split("-")
        if len(parts) != width or not all(p.isdigit() for p in parts):
            raise ValidationError.single("cursor", f"must be {width} non-negative integers joined by '-'")
        return cls(tuple(int(p) for p in parts))

    def __str__(self) -> str:
        return "-".join(str(p) for p in self.positions)


def _jsonable(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def event_record(app_name: str, position: int, event: Any, organization_id: str) -> dict[str, Any]:
    state = {k: v for k, v in vars(event).items() if k not in SKIP_FIELDS}
    for k in REDACTED_FIELDS & set(state):
        state[k] = "[redacted]"
    return {
        "application": app_name,
        "position": position,
        "type": type(event).__qualname__,
        "streamId": str(event.originator_id),
        "version": event.originator_version,
        "timestamp": _jsonable(event.timestamp),
        "organizationId": organization_id,
        "meta": _jsonable(getattr(event, "meta", None) or {}),
        "data": _jsonable(state),
    }


class EventFeed:
    def __init__(
        self,
        apps: Sequence[Any],
        organizations_of: Callable[[list[str]], dict[str, str]],
        batch_size: int = 1000,
    ) -> None:
        self.apps = list(apps)
        self.organizations_of = organizations_of
        self.batch_size = batch_size

    def read(
        self,
        organization_id: str,
        cursor: Cursor | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Sequence[str] = (),
        limit: int | None = None,
    ) -> Iterator[tuple[dict[str, Any], Cursor]]:
        """The organization's events after ``cursor``, each with the cursor just past it."""
        positions = list((cursor or Cursor((0,) * len(self.apps))).positions)
        buffers: list[deque[tuple[Any, int]]] = [deque() for _ in self.apps]
        exhausted = [False] * len(self.apps)
        known: dict[str, str] = {}
        sent = 0

        def fill(i: int) -> None:
            app = self.apps[i]
            start = positions[i] + 1
            notes = app.recorder.select_notifications(start=start, limit=self.batch_size)
            if not notes:
                exhausted[i] = True
                return
            events = [(app.mapper.to_domain_event(n), n.id) for n in notes]
            unknown = sorted({str(e.originator_id) for e, _ in events} - set(known))
            if unknown:
                known.update(self.organizations_of(unknown))
                for e, _ in events:  # a stream created in this very batch
                    if type(e).__qualname__ == "Organization.Created":
                        known[str(e.originator_id)] = str(e.originator_id)
                    elif type(e).__qualname__.endswith(".Created") and getattr(e, "organization_id", None):
                        known.setdefault(str(e.originator_id), str(e.organization_id))
            buffers[i] = deque(events)

        while limit is None or sent < limit:
            for i in range(len(self.apps)):
                if not buffers[i] and not exhausted[i]:
                    fill(i)
            live = [i for i in range(len(self.apps)) if buffers[i]]
            if not live:
                return
            i = min(live, key=lambda j: buffers[j][0][0].timestamp)
            event, position = buffers[i].popleft()
            positions[i] = position
            if known.get(str(event.originator_id)) != organization_id:
                continue
            if since is not None and event.timestamp < since:
                continue
            if until is not None and event.timestamp >= until:
                continue
            name = type(event).__qualname__
            if types and name not in types and name.rsplit(".", 1)[-1] not in types:
                continue
            sent += 1
            yield event_record(self.apps[i].name, position, event, organization_id), Cursor(tuple(positions))
