"""Erasing a contact on the embedded default (SQLite): see tests/e2e/erasure.py."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from tests.e2e import erasure
from tests.e2e.test_audit import gomobile
from tests.harness import Platform

EVENT_FILES = ("campaigns.sqlite", "calls.sqlite")


def _stored_events(data: Path) -> bytes:
    """The raw bytes of the event files (their WAL included): events are only ever
    appended, so whatever was stored in clear would be in there."""
    return b"\n".join(f.read_bytes() for name in EVENT_FILES for f in data.glob(name + "*"))


def _read_models(data: Path) -> str:
    """Every row of every read-model table, as text."""
    out = []
    for f in sorted(data.glob("*.sqlite")):
        if f.name in EVENT_FILES or f.name == "contact_keys.sqlite":
            continue
        with closing(sqlite3.connect(f)) as db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
                out += [repr(tuple(r)) for r in db.execute(f'SELECT * FROM "{table}"')]
    return "\n".join(out)


def test_erasure_on_the_embedded_default(tmp_path: Path) -> None:
    data = tmp_path / "var"
    p = Platform(data)
    try:
        def cli(*args: str) -> Any:
            return gomobile(data, *args)

        result = erasure.run(p, lambda: _stored_events(data), lambda: _read_models(data), cli)
        # the key table holds tombstones for the erased contacts, and live keys for the others
        with closing(sqlite3.connect(data / "contact_keys.sqlite")) as db:
            rows = {(s, g): k is not None for s, g, k in db.execute("SELECT subject, generation, key FROM contact_keys")}
        done = result["ids"][erasure.DONE].replace("-", "")
        assert rows[(done, 1)] is False and rows[(done, 2)] is True
        assert rows[(result["ids"][erasure.RETRYING].replace("-", ""), 1)] is False
    finally:
        p.close()
