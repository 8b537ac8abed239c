"""Test tiers. Unit and embedded end-to-end tests need nothing. The integration tier needs
PostgreSQL and Redis: where they are unreachable it is skipped and the summary says so,
unless CI=true or GOMOBILE_REQUIRE_SERVICES=1, where that is a failure."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

POSTGRES_URL = os.environ.get("GOMOBILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GOMOBILE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_not_run: list[str] = []


def services_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("GOMOBILE_REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _need(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{service} unreachable at {host}:{port}"
    if services_required():
        pytest.fail(f"{message}, and the integration tier is required (CI=true or GOMOBILE_REQUIRE_SERVICES=1)")
    _not_run.append(message)
    pytest.skip(message)


@pytest.fixture()
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    from urllib.parse import urlparse

    import psycopg

    url = urlparse(POSTGRES_URL)
    _need("PostgreSQL", url.hostname or "127.0.0.1", url.port or 5432)
    name = f"gomobile_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def redis_namespace() -> Iterator[tuple[str, str]]:
    """A Redis URL and a key namespace of this test's own, deleted afterwards."""
    from urllib.parse import urlparse

    import redis

    url = urlparse(REDIS_URL)
    _need("Redis", url.hostname or "127.0.0.1", url.port or 6379)
    namespace = f"gomobile-test-{uuid.uuid4().hex[:12]}"
    yield REDIS_URL, namespace
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{namespace}*"))
    if keys:
        client.delete(*keys)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _not_run:
        terminalreporter.write_line("")
        terminalreporter.write_line("NOT RUN (integration tier skipped; set CI=true or GOMOBILE_REQUIRE_SERVICES=1 to require it):", yellow=True)
        for line in sorted(set(_not_run)):
            terminalreporter.write_line(f"  - {line}", yellow=True)
