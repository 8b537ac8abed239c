"""Where ``Idempotency-Key`` responses are kept for 24 hours: a table in PostgreSQL when
GOMOBILE_DATABASE_URL is set (shared by every API process), else a SQLite file in the data
dir. A row is claimed (no response yet) before the command runs, so a concurrent retry
with the same key sees it in progress instead of running the command twice."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

TTL_SECONDS = 24 * 3600
STALE_CLAIM_SECONDS = 600  # a claim without a response after this long is a dead process's
PURGE_EVERY = 200  # claims between two purges of expired rows


@dataclass
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class IdempotencyStore:
    """``begin`` → ``new`` (claimed: run it, then ``finish`` or ``abandon``), ``replay``
    (with the stored response), ``mismatch`` (another request used the key) or
    ``in_progress``."""

    _lock = threading.Lock()

    def __init__(self, database_url: str = "", sqlite_path: str = "") -> None:
        self.database_url = database_url
        self.sqlite_path = sqlite_path
        self._pool: Any = None
        self._sqlite_lock = threading.Lock()
        self._claims = 0
        self._ready = False

    @classmethod
    def for_settings(cls, settings: Any) -> IdempotencyStore:
        if settings.uses_postgres:
            return cls(database_url=settings.database_url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(sqlite_path=str(settings.data_dir / "idempotency.sqlite"))

    # -- connections ----------------------------------------------------------------

    def _pg(self) -> Any:
        if self._pool is None:
            from psycopg_pool import ConnectionPool

            with self._lock:
                if self._pool is None:
                    self._pool = ConnectionPool(
                        self.database_url,
                        min_size=1,
                        max_size=4,
                        kwargs={"autocommit": True},
                        open=True,
                    )
        return self._pool

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self._ensure()
        if self.database_url:
            with self._pg().connection() as conn:
                cur = conn.execute(sql.replace("?", "%s"), params)
                return list(cur.fetchall()) if cur.description else [(cur.rowcount,)]
        with self._sqlite_lock:
            conn = sqlite3.connect(self.sqlite_path, timeout=30)
            try:
                with conn:
                    cur = conn.execute(sql, params)
                    return list(cur.fetchall()) if cur.description else [(cur.rowcount,)]
            finally:
                conn.close()

    def _ensure(self) -> None:
        if self._ready:
            return
        self._ready = True
        blob = "BYTEA" if self.database_url else "BLOB"
        real = "DOUBLE PRECISION" if self.database_url else "REAL"
        try:
            self._execute(
                f"CREATE TABLE IF NOT EXISTS idempotency_keys (owner TEXT NOT NULL, key TEXT NOT NULL, "
                f"fingerprint TEXT NOT NULL, created_at {real} NOT NULL, status INTEGER, headers TEXT, body {blob}, "
                f"PRIMARY KEY (owner, key))"
            )
            self._execute(
                "CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at)"
            )
        except Exception:
            self._ready = False
            raise

    # -- the protocol ---------------------------------------------------------------

    def begin(
        self, owner: str, key: str, fingerprint: str, now: float
    ) -> tuple[str, StoredResponse | None]:
        self._claims += 1
        if self._claims % PURGE_EVERY == 1:
            self._execute("DELETE FROM idempotency_keys WHERE created_at < ?", (now - TTL_SECONDS,))
        # An expired row of this key no longer counts.
        self._execute(
            "DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND created_at < ?",
            (owner, key, now - TTL_SECONDS),
        )
        inserted = self._execute(
            "INSERT INTO idempotency_keys (owner, key, fingerprint, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (owner, key, fingerprint, now),
        )
        if inserted and inserted[0][0] == 1:
            return "new", None
        rows = self._execute(
            "SELECT fingerprint, status, headers, body FROM idempotency_keys WHERE owner = ? AND key = ?",
            (owner, key),
        )
        if not rows:  # abandoned meanwhile: claim it again
            return self.begin(owner, key, fingerprint, now)
        stored_fp, status, headers, body = rows[0]
        if stored_fp != fingerprint:
            return "mismatch", None
        if status is None:
            claimed = self._execute(
                "SELECT created_at FROM idempotency_keys WHERE owner = ? AND key = ?", (owner, key)
            )
            if claimed and claimed[0][0] < now - STALE_CLAIM_SECONDS:
                # Its process died mid-request (a finished or failed one settles its row):
                # the command may be retried.
                self._execute(
                    "DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND status IS NULL",
                    (owner, key),
                )
                return self.begin(owner, key, fingerprint, now)
            return "in_progress", None
        return "replay", StoredResponse(
            int(status), [tuple(h) for h in json.loads(headers)], bytes(body)
        )  # type: ignore[misc]

    def finish(self, owner: str, key: str, response: StoredResponse) -> None:
        self._execute(
            "UPDATE idempotency_keys SET status = ?, headers = ?, body = ? WHERE owner = ? AND key = ?",
            (response.status, json.dumps(response.headers), response.body, owner, key),
        )

    def abandon(self, owner: str, key: str) -> None:
        self._execute(
            "DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND status IS NULL",
            (owner, key),
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
