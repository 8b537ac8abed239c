"""The audit chain on PostgreSQL: written in the transaction of each save (the table lock
serialises it), so a campaign run by the real processes verifies; each tampering with
the stored events in SQL (UPDATE a state, DELETE a row, INSERT a forged copy with a new
version, swap two notification ids) is caught by ``gomobile audit verify`` and named.
A database that existed before the chain says where its chain starts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from tests.e2e.scenario import run_campaign
from tests.e2e.test_audit import gomobile, named, verify
from tests.harness import Platform

pytestmark = pytest.mark.integration


@pytest.fixture()
def campaign(
    tmp_path: Path, postgres_database: str, redis_namespace: tuple[str, str]
) -> Iterator[dict[str, Any]]:
    redis_url, namespace = redis_namespace
    data = tmp_path / "var"
    p = Platform(
        data, database_url=postgres_database, redis_url=redis_url, redis_namespace=namespace
    )
    try:
        org, key = p.new_org()
        other_org, _ = p.new_org("Other")
        with p.client(key) as client:
            result = run_campaign(client, p.clock.advance, n=10)
    finally:
        p.close()  # its connections back before the CLI's own
    yield {"data": data, "url": postgres_database, "org": org, "other_org": other_org, **result}


def test_tampering_with_stored_events_in_sql_is_caught_and_named(campaign: dict[str, Any]) -> None:
    data, url = campaign["data"], campaign["url"]

    def check(*args: str) -> tuple[int, list[dict[str, Any]]]:
        return verify(data, *args, database_url=url)

    assert check() == (0, [])
    with psycopg.connect(url, autocommit=True) as db:
        q = db.execute
        a_id, a, a_ver, a_state = q(
            "SELECT notification_id, originator_id, originator_version, state FROM calls_events "
            "WHERE originator_version = 2 ORDER BY notification_id LIMIT 1"
        ).fetchone()  # type: ignore[misc]
        b_id, b, b_ver = q(
            "SELECT notification_id, originator_id, originator_version FROM calls_events "
            "WHERE originator_version = 3 AND originator_id <> %s ORDER BY notification_id LIMIT 1", (a,),
        ).fetchone()  # type: ignore[misc]  # fmt: skip
        a, b = str(a), str(b)

        # UPDATE a state.
        q("UPDATE calls_events SET state = state || ' '::bytea WHERE notification_id = %s", (a_id,))
        code, problems = check()
        assert code == 1 and named(problems) == {("calls", "altered", a, a_ver)}
        q("UPDATE calls_events SET state = %s WHERE notification_id = %s", (a_state, a_id))
        assert check() == (0, [])

        # DELETE a row.
        row = q(
            "SELECT originator_id, originator_version, topic, state, notification_id FROM calls_events WHERE notification_id = %s",
            (a_id,),
        ).fetchone()
        q("DELETE FROM calls_events WHERE notification_id = %s", (a_id,))
        code, problems = check()
        assert code == 1 and named(problems) == {("calls", "deleted", a, a_ver)}
        q(
            "INSERT INTO calls_events (originator_id, originator_version, topic, state, notification_id) VALUES (%s, %s, %s, %s, %s)",
            row,
        )
        assert check() == (0, [])

        # INSERT a forged row: a copy of another with a new version (a fresh notification id).
        top = q(
            "SELECT MAX(originator_version) FROM calls_events WHERE originator_id = %s", (a,)
        ).fetchone()[0]  # type: ignore[index]
        q(
            "INSERT INTO calls_events (originator_id, originator_version, topic, state) "
            "SELECT originator_id, %s, topic, state FROM calls_events WHERE notification_id = %s", (top + 1, a_id),
        )  # fmt: skip
        code, problems = check()
        assert code == 1 and named(problems) == {("calls", "inserted", a, top + 1)}
        assert problems[0]["organizationId"] == campaign["org"]
        assert check("--org", campaign["other_org"]) == (0, [])
        assert named(check("--org", campaign["org"])[1]) == {("calls", "inserted", a, top + 1)}
        q(
            "DELETE FROM calls_events WHERE originator_id = %s AND originator_version = %s",
            (a, top + 1),
        )
        assert check() == (0, [])

        # Reorder: swap two rows' notification ids.
        def swap() -> None:
            with db.transaction():
                q(
                    "UPDATE calls_events SET notification_id = -1 WHERE notification_id = %s",
                    (a_id,),
                )
                q(
                    "UPDATE calls_events SET notification_id = %s WHERE notification_id = %s",
                    (a_id, b_id),
                )
                q(
                    "UPDATE calls_events SET notification_id = %s WHERE notification_id = -1",
                    (b_id,),
                )

        swap()
        code, problems = check()
        assert code == 1 and named(problems) == {
            ("calls", "reordered", a, a_ver),
            ("calls", "reordered", b, b_ver),
        }
        swap()
        assert check() == (0, [])

        # A chain row forged to match an altered event is caught by its HMAC (no key in SQL).
        q("UPDATE calls_events SET state = state || ' '::bytea WHERE notification_id = %s", (a_id,))
        q(
            "UPDATE calls_events_chain SET chain_hash = sha256(chain_hash) WHERE position(%s::bytea IN entries) > 0",
            (uuid.UUID(a).bytes,),
        )
        code, problems = check()
        kinds = {p["problem"] for p in problems}
        assert code == 1 and {"altered", "chain"} <= kinds


def test_a_database_older_than_the_chain_says_where_its_chain_starts(
    tmp_path: Path, postgres_database: str
) -> None:
    data = tmp_path / "var"
    old = Container(Settings(data_dir=data, database_url=postgres_database, audit_chain=False))
    try:
        old.campaigns.create_organization("Before the chain")
    finally:
        old.close()
    new = Container(Settings(data_dir=data, database_url=postgres_database))
    try:
        org, _ = new.campaigns.create_organization("After")
        new.campaigns.issue_api_key(org, "auditor", "compliance")
    finally:
        new.close()
    out = gomobile(data, "audit", "verify", database_url=postgres_database)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "campaigns: 5 events checked" in out.stdout
    assert "the chain started after notification 2 (2 older events are not covered)" in out.stdout


def _chain_orgs(url: str, table: str) -> dict[uuid.UUID, int]:
    """Chain rows per organization in ``table``'s chain."""
    with psycopg.connect(url) as conn:
        return dict(conn.execute(f"SELECT org, count(*) FROM {table}_chain GROUP BY org").fetchall())


def test_saves_to_streams_older_than_the_chain_or_unknown_to_the_process_chain_under_their_organization(
    tmp_path: Path, postgres_database: str
) -> None:
    """A save is one statement that must know each event's organization. A stream older
    than the chain is in no table that says it: that save goes the pipelined way, which
    reads the stream's first event, and records the stream so the next save (in any
    process) finds it in the origins table. Every row lands under the right organization
    and the whole chain verifies."""
    data = tmp_path / "var"
    old = Container(Settings(data_dir=data, database_url=postgres_database, audit_chain=False))
    try:
        legacy, _ = old.campaigns.create_organization("Before the chain")
    finally:
        old.close()
    first = Container(Settings(data_dir=data, database_url=postgres_database))
    try:
        first.campaigns.issue_api_key(legacy, "auditor", "a stream older than the chain")
        recorder = first.campaigns.recorder
        assert recorder.origins_cache.get(legacy) == legacy  # learned from the pipelined save
        with psycopg.connect(postgres_database) as conn:
            origins = dict(conn.execute("SELECT originator_id, org FROM campaigns_events_origins").fetchall())
        assert origins[legacy] == legacy
        fresh, _ = first.campaigns.create_organization("After")
    finally:
        first.close()
    second = Container(Settings(data_dir=data, database_url=postgres_database))  # caches empty
    try:
        assert second.campaigns.recorder.origins_cache.get(legacy) is None
        second.campaigns.issue_api_key(legacy, "auditor", "found in the origins table by the statement")
        second.campaigns.issue_api_key(fresh, "auditor", "a stream the chain started")
        assert second.campaigns.recorder.origins_cache.get(legacy) == legacy
        assert second.campaigns.recorder.origins_cache.get(fresh) == fresh
    finally:
        second.close()
    rows = _chain_orgs(postgres_database, "campaigns_events")
    assert rows[legacy] == 2 and rows[fresh] == 2, rows  # two saves each; none under the system org
    out = gomobile(data, "audit", "verify", database_url=postgres_database)
    assert out.returncode == 0, out.stdout + out.stderr


def test_concurrent_saves_share_transactions_keep_their_own_outcome_and_the_chain_verifies(
    tmp_path: Path, postgres_database: str
) -> None:
    """Group commit (infrastructure/group_commit.py) on the real recorder: saves made by
    many threads at once are written in fewer transactions than saves; a save that
    conflicts (the same stream and version as another) fails alone with IntegrityError
    and the others of its transaction are stored; every event is chained and verifies."""
    import threading
    import time

    from eventsourcing.persistence import IntegrityError

    from domain.contact import Contact

    data = tmp_path / "var"
    c = Container(Settings(data_dir=data, database_url=postgres_database))
    try:
        org_id, _ = c.campaigns.create_organization("Group commit")
        people = [Contact(org_id, f"+2126{2000000 + i:07d}1", "", {"firstName": f"P{i}"}) for i in range(24)]
        c.campaigns.save(*people)
        group = c.campaigns.recorder._group
        real = group._append

        def slow(items: Any) -> Any:  # a slower round trip, so that the others queue behind it
            time.sleep(0.02)
            return real(items)

        group._append = slow
        before_tx, before_saves = group.transactions, group.saves
        loaded = [c.campaigns.repository.get(p.id) for p in people]
        racing = [c.campaigns.repository.get(people[0].id) for _ in range(4)]  # all at one version
        outcome: dict[str, object] = {}
        go = threading.Barrier(len(loaded) - 1 + len(racing))

        def change(name: str, contact: Any, value: str) -> None:
            contact.update({"lastName": value})
            go.wait()
            try:
                c.campaigns.save(contact)
                outcome[name] = "saved"
            except IntegrityError:
                outcome[name] = "conflict"

        threads = [threading.Thread(target=change, args=(f"p{i}", p, f"L{i}")) for i, p in enumerate(loaded) if i]
        threads += [threading.Thread(target=change, args=(f"race{i}", p, f"R{i}")) for i, p in enumerate(racing)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        group._append = real
        assert all(outcome[f"p{i}"] == "saved" for i in range(1, len(loaded))), outcome
        races = sorted(outcome[f"race{i}"] for i in range(len(racing)))
        assert races == ["conflict"] * 3 + ["saved"], outcome
        saves = group.saves - before_saves
        assert saves == len(loaded) - 1 + 1
        assert group.transactions - before_tx < saves  # shared transactions
        for i, p in enumerate(people[1:], start=1):
            assert c.campaigns.repository.get(p.id).fields["lastName"] == f"L{i}"
        assert c.campaigns.repository.get(people[0].id).fields["lastName"] in {f"R{i}" for i in range(4)}
    finally:
        c.close()
    out = gomobile(data, "audit", "verify", database_url=postgres_database)
    assert out.returncode == 0, out.stdout + out.stderr
