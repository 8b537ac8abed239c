"""The read models of one execution as they stood at a given instant, replayed from the
events (not read from the current read models).

The execution's stream and its calls' streams are read up to the instant, and applied,
in the order the live projections apply them (an execution's events before its calls'),
by the same projection code (``ProgressView``, ``ReportsView``) into a private in-memory
SQLite database. So a report computed from them is the report the live read models gave
at that instant, once they had caught up with the events recorded before it.

Not in the events, hence not replayed: which pending calls the dispatcher had sent to
the dial queue and not yet claimed (its own memory): as of a past instant they count as
pending. Which Call streams belong to the execution is looked up in the progress view
(an index of stream ids; their content comes from the events).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.errors import NotFound
from projections.progress import ProgressView
from projections.reports import ReportsView
from projections.store import make_view


@dataclass
class ExecutionAsOf:
    execution: Any  # the Execution aggregate at its last version recorded by then
    progress: ProgressView
    reports: ReportsView
    events: int  # how many events were replayed


def _events_until(app: Any, stream_id: UUID, until: datetime) -> list[Any]:
    out = []
    for stored in app.recorder.select_events(stream_id):
        event = app.mapper.to_domain_event(stored)
        if event.timestamp > until:
            continue
        out.append(event)
    return out


@contextmanager
def execution_as_of(
    campaigns: Any, calls: Any, execution_id: str, call_ids: Sequence[str], until: datetime
) -> Iterator[ExecutionAsOf]:
    """The execution and its read models as of ``until`` (NotFound if it was launched later)."""
    own = _events_until(campaigns, UUID(execution_id), until)
    if not own:
        raise NotFound("The execution had not been launched yet at that time (asOf)")
    execution = campaigns.repository.get(UUID(execution_id), version=own[-1].originator_version)
    ordered: list[tuple[Any, int, int, Any]] = [(e.timestamp, 0, e.originator_version, e) for e in own]
    for cid in call_ids:
        ordered += [(e.timestamp, 1, e.originator_version, e) for e in _events_until(calls, UUID(cid), until)]
    ordered.sort(key=lambda t: t[:3])
    db = f"file:asof-{uuid.uuid4().hex}?mode=memory&cache=shared"
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": db}
    progress = make_view(ProgressView, "asof", env)
    reports = make_view(ReportsView, "asof", env)
    try:
        for view in (progress, reports):
            with view.transaction() as c:
                for _, _, _, event in ordered:
                    view.handle(c, event)
        yield ExecutionAsOf(execution, progress, reports, len(ordered))
    finally:
        reports.datastore.close()
        progress.datastore.close()
