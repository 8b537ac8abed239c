"""A live audience created while the directory read model lags behind the event log still
enrolls every matching contact (issue 3: contacts created ~100 ms before the audience were
missed, because the first membership came from the read model alone).

The directory's projection is driven by hand here, so the lag is certain, not a race:
some contacts are projected, the later ones are not when the audience is created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from application.audiences import Audiences
from application.contacts import Contacts
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings

RULES = {"combinator": "AND", "rules": [
    {"field": "city", "operator": "equals", "value": "Rabat"},
    {"combinator": "OR", "rules": [{"field": "custom.balance", "operator": "gte", "value": 1000},
                                   {"field": "custom.vip", "operator": "equals", "value": True}]}]}


def _people(prefix: str) -> list[dict[str, Any]]:
    return [
        {"primaryPhone": f"+21261200{prefix}01", "city": "Rabat", "customAttributes": {"balance": 1500}},  # in
        {"primaryPhone": f"+21261200{prefix}02", "city": "Rabat", "customAttributes": {"balance": 10}},  # out
        {"primaryPhone": f"+21261200{prefix}03", "city": "Rabat", "customAttributes": {"vip": True}},  # in
        {"primaryPhone": f"+21261200{prefix}04", "city": "Fes", "customAttributes": {"vip": True}},  # out
    ]


@pytest.fixture(params=["sqlite", "postgres"])
def container(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else ""
    c = Container(Settings(data_dir=tmp_path / "var", database_url=url))
    yield c
    c.close()


def test_live_audience_enrolls_contacts_the_directory_has_not_seen_yet(container: Any) -> None:
    campaigns = container.campaigns
    contacts = Contacts(campaigns)
    runner = container.runner("directory")

    def org_with_contacts(name: str, prefix: str) -> tuple[Any, dict[str, str]]:
        org_id, _ = campaigns.create_organization(name)
        contacts.define_attribute(org_id, {"displayName": "Balance", "type": "number"})
        contacts.define_attribute(org_id, {"displayName": "VIP", "type": "boolean"})
        org = campaigns.organization(org_id)
        return org_id, {p["primaryPhone"]: str(contacts.create(org, p).id) for p in _people(prefix)}

    org_id, seen_early = org_with_contacts("Early", "10")
    runner.catch_up()  # the directory knows these four ...
    org = campaigns.organization(org_id)
    late = {p["primaryPhone"]: str(contacts.create(org, p).id) for p in _people("20")}
    other_org, other = org_with_contacts("Other", "30")  # ... but none of these yet
    assert container.directory.contacts(str(org_id), 1, 50, None, "createdAt", False)[1] == 4

    audience = Audiences(campaigns, container.directory).create(org_id, {"name": "Rich in Rabat", "type": "live",
                                                                         "rules": RULES})

    expected = {seen_early["+212612001001"], seen_early["+212612001003"],
                late["+212612002001"], late["+212612002003"]}
    # The truth, on each contact's stream: the four matching contacts joined, nobody else.
    everyone = {**seen_early, **late}
    joined = {cid for cid in everyone.values() if str(audience.id) in campaigns.contact(org_id, cid).live_audiences}
    assert joined == expected
    assert all(not campaigns.contact(other_org, cid).live_audiences for cid in other.values())
    # And the read model, once it has caught up, lists the same members.
    runner.catch_up()
    assert set(container.directory.audience_member_ids(str(audience.id))) == expected
    assert container.directory.audience_member_count(str(audience.id)) == 4
