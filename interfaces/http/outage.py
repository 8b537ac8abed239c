"""A store that cannot be reached is an outage, not a bug: 503 with ``Retry-After``.

While PostgreSQL restarts (or Redis, for the features that need it), requests fail with
connection errors. They are answered ``503 SERVICE_UNAVAILABLE`` with a ``Retry-After``
header so that clients back off and retry, instead of a 500 that reads as a defect; the
pools reconnect by themselves once the store is back. A conflict (IntegrityError) or a
bad query is not an outage and is not mapped here."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import psycopg
import redis
from eventsourcing.persistence import InterfaceError, OperationalError
from litestar import Request, Response

from interfaces.http.common import _problem

RETRY_AFTER_SECONDS = 5

# Exception classes that mean "the store is unreachable right now".
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError, redis.ConnectionError,
    redis.TimeoutError,
)

log = logging.getLogger("gomobile.api")


def outage_detail(exc: Exception) -> str:
    """The 503's message, for the API's handlers and Twilio's callbacks alike."""
    return f"A data store is unavailable ({type(exc).__name__}); retry in {RETRY_AFTER_SECONDS} seconds"


def outage_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning("store unavailable on %s: %s", request.url.path, exc)
    watch = getattr(request.app.state, "store_watch", None)
    if watch is not None and isinstance(exc, (OperationalError, InterfaceError, psycopg.Error)):
        watch.suspect()  # probe now rather than at the next tick
    response = _problem(request, 503, "SERVICE_UNAVAILABLE", outage_detail(exc))
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def outage_handlers() -> dict[type[Exception], Any]:
    return dict.fromkeys(OUTAGE_ERRORS, outage_handler)


class StoreWatch:
    """Probes PostgreSQL four times a second on a connection of its own (``SELECT 1``).

    A request that reaches the event store while PostgreSQL is down waits in
    eventsourcing's retries (ten attempts, each up to the pool's connect timeout) before
    failing; the watch lets the gate answer 503 at once instead, from a quarter second
    into an outage to a quarter second after it."""

    def __init__(self, database_url: str, interval: float = 0.25) -> None:
        self.database_url = database_url
        self.interval = interval
        self.down: str | None = None  # why the store is unreachable, while it is
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name="store-watch", daemon=True)

    def start(self) -> StoreWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def suspect(self) -> None:
        """A request just failed on the store: probe at once (from the probing thread)."""
        self._wake.set()

    def probe(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.database_url, connect_timeout=2, autocommit=True)
            self._conn.execute("SELECT 1")
            if self.down:
                log.warning("PostgreSQL is reachable again")
            self.down = None
        except psycopg.Error as exc:
            if not self.down:
                log.warning("PostgreSQL is unreachable: %s", exc)
            self.down = f"PostgreSQL is unreachable ({type(exc).__name__})"
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe()
            self._wake.wait(self.interval)
            self._wake.clear()


class OutageGate:
    """ASGI middleware: while the watch says the store is down, API requests get 503 with
    ``Retry-After`` at once (health and the docs still answer)."""

    def __init__(self, app: Any, watch: StoreWatch) -> None:
        self.app = app
        self.watch = watch

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        down = self.watch.down
        if down and scope["type"] == "http" and scope.get("path", "").startswith(("/api", "/webhooks", "/dashboard")):
            from interfaces.http.security import send_problem

            await send_problem(scope, send, 503, "SERVICE_UNAVAILABLE", f"{down}; retry in {RETRY_AFTER_SECONDS} seconds",
                               headers=[(b"retry-after", str(RETRY_AFTER_SECONDS).encode())])
            return
        await self.app(scope, receive, send)
