"""``GET /api/events``: the organization's events as a streamed NDJSON feed with a cursor.

Each line is one event and carries ``cursor``: pass the last one received back as
``?cursor=`` to continue exactly after it (see application.event_feed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from litestar import Request, Response, get
from litestar.response import Stream

from application.event_feed import Cursor, EventFeed
from domain.errors import ValidationError
from domain.timeparse import parse_instant
from interfaces.http.common import authenticate, in_thread

MAX_LIMIT = 10_000


def feed_of(c: Any) -> EventFeed:
    return EventFeed([c.campaigns, c.calls], c.views["reports"].organizations_of)


@get("/api/events")
@in_thread
def events_feed(
    request: Request[Any, Any, Any],
    cursor: str | None = None,
    since: str | None = None,
    until: str | None = None,
    type: str | None = None,
    limit: int | None = None,
) -> Response[Any]:
    c = request.app.state.container
    who = authenticate(request, c.campaigns)
    feed = feed_of(c)
    start = Cursor.parse(cursor, len(feed.apps))
    lim = 1000 if limit is None else limit
    if not 1 <= lim <= MAX_LIMIT:
        raise ValidationError.single("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    records = feed.read(
        str(who.organization_id),
        start,
        since=parse_instant(since, "since") if since else None,
        until=parse_instant(until, "until") if until else None,
        types=[t for t in (type or "").split(",") if t],
        limit=lim,
    )

    def lines() -> Iterator[bytes]:
        for record, after in records:
            yield (json.dumps({**record, "cursor": str(after)}, separators=(",", ":"), default=str) + "\n").encode()

    return Stream(lines(), media_type="application/x-ndjson")


EVENT_HANDLERS = [events_feed]
