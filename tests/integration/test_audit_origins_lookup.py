"""The audited save finds the organization of a stream this process has not seen (its
first save by a worker or an API process that did not create it: a call's claim, its
first webhook) with one index lookup a stream, whatever plan PostgreSQL keeps.

The lookup was a join that PostgreSQL planned, for a session's cached generic plan, as a
hash join over a sequential scan of the whole origins table (one row for every stream
ever created): 0.45 ms a call at 4,000 calls, and, in a long-lived pooled connection
whose plan was made while the table was small, 39 ms a save once it held 300,000 streams
(the plan is not made again as the table grows). Seen with auto_explain in the calls
benchmark; here the plan is read the same way (auto_explain's NOTICE on this connection,
with the generic plan forced, as a pooled connection ends up using)."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from infrastructure.audit import audit_recorder_of
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings

pytestmark = pytest.mark.integration


def test_a_stream_of_an_organization_unknown_here_is_looked_up_by_its_key(tmp_path: Path, postgres_database: str) -> None:
    container = Container(Settings(data_dir=tmp_path / "var", database_url=postgres_database))  # makes the tables
    try:
        recorder = audit_recorder_of(container.calls)
        assert recorder is not None
        table, sql_save = recorder.origins_table, recorder.sql_save
    finally:
        container.close()
    orgs = [uuid.uuid4() for _ in range(3)]
    streams = [uuid.uuid4() for _ in range(8)]
    with psycopg.connect(postgres_database) as db:
        # 1,500 streams, as early in a run (the plan a pooled connection keeps is made then, and
        # is not made again as the table grows); never analysed (autovacuum
        # is off on this server, and a young table in production has no statistics yet).
        db.execute(
            f"INSERT INTO {table} SELECT gen_random_uuid(), %s FROM generate_series(1, 1500)", (orgs[0],)
        )
        db.execute(
            f"INSERT INTO {table} SELECT * FROM unnest(%s::uuid[], %s::uuid[])",
            (streams, [orgs[i % 3] for i in range(len(streams))]),
        )
        db.commit()
        try:
            db.execute("LOAD 'auto_explain'")
        except psycopg.errors.InsufficientPrivilege as exc:
            pytest.fail(f"this test reads plans through auto_explain, which needs a superuser connection: {exc}")
        for setting, value in (("auto_explain.log_min_duration", "0"), ("auto_explain.log_nested_statements", "on"),
                               ("auto_explain.log_level", "notice"), ("client_min_messages", "notice"),
                               ("plan_cache_mode", "force_generic_plan")):  # fmt: skip
            db.execute(f"SET {setting} = {value}")
        notices: list[str] = []
        db.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        # Version 2 of each stream, its organization unknown to this process (None): the
        # save function finds it in the origins table. Rolled back: nothing is stored.
        row = db.execute(
            sql_save,
            (streams, [2] * len(streams), ["t.Event"] * len(streams), [b"{}"] * len(streams), [None] * len(streams)),
        ).fetchone()
        db.rollback()
    assert row is not None and row[0] is not None, row  # every stream found: the events went in
    assert list(row[1]) == [orgs[i % 3] for i in range(len(streams))]
    lookups = [n for n in notices if table in n and "unnest" in n]
    assert lookups, notices
    for plan in lookups:
        assert f"Seq Scan on {table}" not in plan, plan
        assert f"{table}_pkey" in plan, plan


def test_a_stream_read_from_its_start_is_saved_under_its_organization_without_a_lookup(
    tmp_path: Path, postgres_database: str
) -> None:
    """A worker claims calls the dispatcher created, an API process records the first
    webhook of a call the worker dialled: each reads the stream first. What it read names
    the stream's organization, so its save need not look it up (one lookup a process a
    call, 0.73 a call in the calls benchmark). Each way of reading teaches it; the chain
    those saves write verifies."""
    from eventsourcing.persistence import StoredEvent

    from application.app_base import select_events_after, select_events_of
    from tests.e2e.test_audit import verify

    data = tmp_path / "var"
    org = uuid.uuid4()
    state = b'{"organization_id":{"_type_":"uuid_hex","_data_":"' + org.hex.encode() + b'"},"x":1}'
    streams = [uuid.uuid4() for _ in range(3)]
    creator = Container(Settings(data_dir=data, database_url=postgres_database))
    try:
        first = audit_recorder_of(creator.calls)
        assert first is not None and first.chain_started_after == 0
        first.insert_events([StoredEvent(s, 1, "tests.Created", state) for s in streams])
    finally:
        creator.close()
    reader = Container(Settings(data_dir=data, database_url=postgres_database))  # another process: caches empty
    try:
        recorder = audit_recorder_of(reader.calls)
        assert recorder is not None
        second = [StoredEvent(s, 2, "tests.Changed", b"{}") for s in streams]
        assert recorder._plan(second).lookup == streams  # nothing read yet: each would be looked up

        recorder.select_events(streams[0])  # a repository's get
        select_events_of(reader.calls, [streams[1]])  # a batch of calls loaded at once (the dialer)
        select_events_after(reader.calls, [(streams[2], 0)])  # streams brought forward
        plan = recorder._plan(second)
        assert plan.lookup == [] and plan.orgs == [org] * 3

        select_events_after(reader.calls, [(streams[0], 1)])  # read from version 2 on: teaches nothing new
        recorder.insert_events(second)
    finally:
        reader.close()
    code, problems = verify(data, database_url=postgres_database)
    assert (code, problems) == (0, [])
    with psycopg.connect(postgres_database) as db:
        rows = db.execute("SELECT org, entries FROM calls_events_chain ORDER BY seq").fetchall()
    assert {r[0] for r in rows} == {org}
