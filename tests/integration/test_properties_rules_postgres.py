"""The properties of tests/unit/test_properties_rules.py on PostgreSQL, where the directory
keeps contact documents as jsonb: rules over the projected read model agree with the
in-memory evaluation, and batched joins and exits leave exactly the final members."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import pytest
from hypothesis import HealthCheck, given, settings

from domain import rules
from projections.directory import DirectoryView
from projections.store import make_view
from tests.unit.test_properties_rules import (
    CONTACTS,
    CUTS,
    MEMBER_OPS,
    ORDERS,
    TREES,
    TYPES,
    check_memberships,
    check_rules_agree,
)

pytestmark = pytest.mark.integration
QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]


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


def test_rules_over_the_projected_jsonb_directory_agree_with_rules_in_memory(pg_view: Any) -> None:
    @settings(max_examples=120, deadline=None, suppress_health_check=QUIET)
    @given(TREES, CONTACTS, ORDERS, CUTS)
    def check(tree: dict[str, Any], contacts: Any, order: list[int], cuts: list[int]) -> None:
        check_rules_agree(pg_view, rules.parse(tree, TYPES), contacts, order, cuts)

    check()


def test_batched_joins_and_exits_on_postgres(pg_view: Any) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=QUIET)
    @given(MEMBER_OPS, CUTS)
    def check(ops: list[tuple[int, int, str]], cuts: list[int]) -> None:
        check_memberships(pg_view, ops, cuts)

    check()


def test_a_contact_holding_u0000_is_projected_and_matched(pg_view: Any) -> None:
    # PostgreSQL text and jsonb cannot hold U+0000: one such value must not stop the projection.
    from domain.contact import Contact
    from tests.unit.test_properties_rules import ORG, project

    odd = Contact(ORG, "+212612345601", "x", {"firstName": "a\x00b", "customAttributes": {"note": "x\x00y"}})
    plain = Contact(ORG, "+212612345602", "x", {"firstName": "ab"})
    project(pg_view, [*odd.collect_events(), *plain.collect_events()], [])
    for tree, expected in (
        ({"combinator": "AND", "rules": [{"field": "firstName", "operator": "contains", "value": "b"},
                                         {"field": "custom.note", "operator": "contains", "value": "y"}]}, [odd]),
        ({"combinator": "OR", "rules": [{"field": "firstName", "operator": "equals", "value": "ab"}]}, [plain]),
    ):
        canonical = rules.parse(tree, TYPES)
        assert {str(c.id) for c in (odd, plain) if rules.matches(canonical, c.document(), TYPES)} == {str(c.id) for c in expected}
        assert pg_view.matching_contact_ids(str(ORG), canonical, TYPES) == {str(c.id) for c in expected}
