"""Live-audience rules compiled for PostgreSQL agree with the in-memory evaluation
(the same property as tests/unit/test_properties_contacts.py, on a real PostgreSQL)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import rules
from projections.directory import DirectoryView
from projections.store import make_view
from tests.unit.test_properties_contacts import TREES, TYPES, contact, sql_matches

pytestmark = pytest.mark.integration


@pytest.fixture()
def pg_view(postgres_database: str) -> Any:
    url = urlparse(postgres_database)
    view = make_view(DirectoryView, "directory", {
        "PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": url.path.lstrip("/"),
        "POSTGRES_HOST": url.hostname or "127.0.0.1", "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres", "POSTGRES_PASSWORD": url.password or "",
    })
    yield view
    view.datastore.close()


def test_rules_in_postgres_agree_with_rules_in_memory(pg_view: Any) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(TREES, st.lists(contact(), min_size=1, max_size=8))
    def check(tree: dict[str, Any], docs: list[dict[str, Any]]) -> None:
        canonical = rules.parse(tree, TYPES)
        in_memory = {i for i, d in enumerate(docs) if rules.matches(canonical, d, TYPES)}
        assert sql_matches(pg_view, docs, canonical) == in_memory

    check()
