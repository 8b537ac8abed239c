"""One command's load, change and save of an aggregate, again when another command appended
to the same aggregate meanwhile.

The event store refuses a save whose first new version is already taken (eventsourcing's
IntegrityError): another command (an import, a flow's update, a second request on the same
contact) got in between. The change is then decided again on the aggregate as it is now,
unless the request's If-Match named a version of it: the client asked not to overwrite a
version it has not read, so it gets the 412 and decides itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain.base import version_expected
from domain.errors import Conflict, PreconditionFailed

ATTEMPTS = 10

A = TypeVar("A", bound=Aggregate)


def load_change_save(
    app: Application[Any],
    load: Callable[[], A],
    change: Callable[[A], None],
    what: str = "resource",
) -> A:
    """``change`` the aggregate ``load`` returns and save it; load and change again (up to
    ``ATTEMPTS`` times) when the save meets a concurrent append. Nothing recorded by
    ``change``: nothing saved. ``load`` and ``change`` may raise (404, 400) on any attempt."""
    for attempt in range(ATTEMPTS):
        aggregate = load()
        # Read before ``change``: its first event consumes the expected version.
        guarded = version_expected(aggregate.id)
        change(aggregate)
        if not aggregate.pending_events:
            return aggregate
        try:
            app.save(aggregate)
            return aggregate
        except IntegrityError:
            if guarded:
                raise PreconditionFailed(
                    f"The {what} changed since it was read; read it again and retry"
                ) from None
            time.sleep(0.005 * (attempt + 1))  # let the other writer finish before reading again
    raise Conflict(f"The {what} is being changed by other commands; try again")
