"""``App.current``: several aggregates as they stand now, in one query (the dialer's
dial-time reads: execution, organization, the number's do-not-call entry). The same
answers as replaying each stream, on PostgreSQL (one statement) and on SQLite."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from application.suppression import Suppressions
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("store", ["postgres", "sqlite"])
def test_current_reads_many_streams_up_to_date_in_one_go(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("postgres_database") if store == "postgres" else ""
    c = Container(Settings(data_dir=tmp_path / "var", database_url=url))
    other = Container(Settings(data_dir=tmp_path / "var", database_url=url)) if store == "postgres" else c
    try:
        org_id, _ = c.campaigns.create_organization("Current")
        org = c.campaigns.organization(org_id)
        dnc = Suppressions(c.campaigns)
        entry = dnc.entry_id(org_id, "+212612345678")
        missing = uuid4()

        found = c.campaigns.current(org_id, entry, missing)
        assert found[0].id == org_id and found[0].version == org.version
        assert found[1] is None and found[2] is None and not dnc.listed(found[1])

        # Written elsewhere (another process on PostgreSQL): the next read brings them.
        Suppressions(other.campaigns).add(other.campaigns.organization(org_id), "+212612345678", "asked")
        other.campaigns.update_organization_settings(org_id, {"maxCallsPerContactPerDay": 3})
        again = c.campaigns.current(org_id, entry, missing)
        assert again[0] is found[0]  # the cached aggregate, brought forward in place
        assert again[0].version == c.campaigns.organization(org_id).version
        assert again[0].settings.get("maxCallsPerContactPerDay") == 3
        assert dnc.listed(again[1]) and again[2] is None
        assert dnc.is_suppressed(org_id, "+212612345678")

        Suppressions(other.campaigns).remove(other.campaigns.organization(org_id), "+212612345678")
        third = c.campaigns.current(entry, org_id)
        assert not dnc.listed(third[0]) and third[1] is again[0]
        assert third[0].version == c.campaigns.repository.get(entry).version
    finally:
        if other is not c:
            other.close()
        c.close()
