"""The event stores alone: what a batch command needs (``gomobile contacts import``),
without the composition root's telephony, job queues, HTTP clients and read models.

``infrastructure.bootstrap.Container`` opens its stores through ``open_stores`` too, so
both open them the same way (clock, schema lock, crypto-shredding bindings). Importing
the container costs a command about 0.3 s more (twilio, httpx, dramatiq, redis, PyAV).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from application.calls import CallsApp
from application.campaigns import CampaignsApp
from application.ports import Clock
from domain import base
from infrastructure.clock import FileOffsetClock, SystemClock
from infrastructure.settings import Settings

SCHEMA_LOCK_ID = 7_420_001


def no_jit() -> None:
    """Every PostgreSQL connection this process opens runs with JIT compilation off
    (libpq's PGOPTIONS, unless it names ``jit`` already). Our statements are short; on
    a table not yet analysed (a million contacts just imported) the planner's estimates
    put even an index lookup of 2,000 streams over JIT's threshold, and compiling it
    took 0.8-1.2 s for a query that runs in 0.1 s."""
    import os

    options = os.environ.get("PGOPTIONS", "")
    if "jit" not in options:
        os.environ["PGOPTIONS"] = f"{options} -c jit=off".strip()


@contextmanager
def schema_lock(settings: Settings) -> Iterator[None]:
    """Processes starting together must not race to create tables (PostgreSQL answers
    "tuple concurrently updated"): creation is serialised by an advisory lock."""
    if not settings.uses_postgres:
        yield
        return
    import psycopg

    with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_ID,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_ID,))


@dataclass
class Stores:
    settings: Settings
    clock: Clock
    env: dict[str, str]
    campaigns: CampaignsApp
    calls: CallsApp

    def close(self) -> None:
        self.campaigns.close()
        self.calls.close()
        keys: Any = getattr(self.campaigns.mapper, "keystore", None)
        if keys is not None:
            keys.close()  # its pool; opened again if this process uses the table again


def open_stores(settings: Settings | None = None, clock: Clock | None = None) -> Stores:
    """The settings' clock (also the domain's), and both applications, bound for
    crypto-shredding (a save's contact keys in one query)."""
    s = settings or Settings()
    clock = clock or (FileOffsetClock(s.clock_offset_file) if s.clock_offset_file else SystemClock())
    base.set_clock(clock.now)
    env = s.persistence_env()
    if s.uses_postgres:
        no_jit()
    if "CAMPAIGNS_SQLITE_DBNAME" in env:  # the embedded store: a file per read model
        env["CLIENT_WEBHOOKS_SQLITE_DBNAME"] = str(s.data_dir / "client_webhooks.sqlite")
    with schema_lock(s):
        campaigns = CampaignsApp(env=env)
        calls = CallsApp(env=env)
    from infrastructure.privacy import bind

    bind(campaigns)
    bind(calls)
    return Stores(s, clock, env, campaigns, calls)
