"""Erasing a contact on PostgreSQL (with Redis): the same run as the embedded one
(tests/e2e/erasure.py); the stored events are searched in every events table's rows,
the read models in every other table's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e import erasure
from tests.e2e.test_audit import gomobile
from tests.harness import Platform

pytestmark = pytest.mark.integration


def _tables(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as db:
        return [r[0] for r in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1").fetchall()]  # fmt: skip


def _event_tables(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as db:
        return [r[0] for r in db.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name = 'originator_version' ORDER BY 1").fetchall()]  # fmt: skip


def _stored_events(url: str) -> bytes:
    out: list[bytes] = []
    with psycopg.connect(url, autocommit=True) as db:
        for t in _event_tables(url):
            out += [bytes(r[0]) for r in db.execute(f'SELECT state FROM "{t}"').fetchall()]
    assert out
    return b"\n".join(out)


def _read_models(url: str) -> str:
    out: list[str] = []
    skip = ("_chain", "_origins", "_chain_genesis")
    events = set(_event_tables(url))
    with psycopg.connect(url, autocommit=True) as db:
        for t in _tables(url):
            if t in events or t.endswith(skip) or t == "contact_keys":
                continue
            out += [repr(r) for r in db.execute(f'SELECT * FROM "{t}"').fetchall()]
    return "\n".join(out)


def test_erasure_on_postgres(tmp_path: Path, postgres_database: str, redis_namespace: tuple[str, str]) -> None:
    redis_url, namespace = redis_namespace
    data = tmp_path / "var"
    p = Platform(data, database_url=postgres_database, redis_url=redis_url, redis_namespace=namespace)
    try:
        def cli(*args: str) -> Any:
            return gomobile(data, *args, database_url=postgres_database)

        result = erasure.run(p, lambda: _stored_events(postgres_database), lambda: _read_models(postgres_database), cli)
    finally:
        p.close()
    with psycopg.connect(postgres_database, autocommit=True) as db:
        rows = {(s, g): k is not None for s, g, k in db.execute("SELECT subject, generation, key FROM contact_keys").fetchall()}
    done = result["ids"][erasure.DONE].replace("-", "")
    assert rows[(done, 1)] is False and rows[(done, 2)] is True
    assert rows[(result["ids"][erasure.RETRYING].replace("-", ""), 1)] is False
