"""Consent and opt-out at dial time on PostgreSQL and Redis (the production stores): the
worker reads the contact's consent events and the do-not-call list from PostgreSQL as they
are at that moment, so a withdrawal or an opt-out stored after the calls were queued
prevents the dial, in every execution."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.call import call_id
from tests.e2e.test_consent import consent, dialled, launch, new_contact
from tests.harness import Platform

pytestmark = pytest.mark.integration


def test_consent_and_opt_out_checked_at_dial_time(
    tmp_path: Path, postgres_database: str, redis_namespace: tuple[str, str]
) -> None:
    redis_url, namespace = redis_namespace
    p = Platform(tmp_path / "var", database_url=postgres_database, redis_url=redis_url,
                 redis_namespace=namespace, start_dispatcher=False)  # fmt: skip
    try:
        _, key = p.new_org("Consent on PostgreSQL")
        phones = {"holds": "+212612410014", "none": "+212612410024", "withdrawn": "+212612410034", "opted": "+212612410044"}
        with p.client(key) as c:
            ids = {name: new_contact(c, phone) for name, phone in phones.items()}
            for name in ("holds", "withdrawn", "opted"):
                assert c.post(f"/api/contact/{ids[name]}/consents", json=consent(p)).status_code == 201
            eid = launch(p, c, list(ids.values()), requireConsent="calls")
            plain = launch(p, c, [ids["opted"]])  # another execution, no consent required
            assert c.delete(f"/api/contact/{ids['withdrawn']}/consents/calls").status_code == 200
            assert c.post(f"/api/contact/{ids['opted']}/opt-out", json={"reason": "asked"}).status_code == 201
            dialer = p.container.dialer
            results = {name: dialer.dial(str(call_id(eid, ids[name])), 1).status for name in phones}
            assert results == {"holds": "placed", "none": "no_consent", "withdrawn": "no_consent", "opted": "suppressed"}
            assert dialer.dial(str(call_id(plain, ids["opted"])), 1).status == "suppressed"
            assert [name for name, phone in phones.items() if dialled(p, phone)] == ["holds"]
    finally:
        p.close()
