"""Read models at the scale of a million-contact execution, on PostgreSQL.

The progress view keeps PostgreSQL's statistics of its hot tables itself. With autovacuum off (as on CI's server) or behind a launch, ``progress_calls`` was planned
as nearly empty while it held 900,000 pending calls, and each dispatcher tick scanned it
whole (a second a query instead of 2 ms). The view analyzes it once it has grown by a
fifth (at least 10,000 rows); calls queued in bulk go in as one ``executemany`` per run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from domain.call import Call
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings


def _analyzes(view: object) -> tuple[int, float]:
    row = view.one(  # type: ignore[attr-defined]
        "SELECT s.analyze_count AS n, c.reltuples AS tuples FROM pg_stat_user_tables s "
        "JOIN pg_class c ON c.oid = s.relid WHERE s.relid = 'progress_calls'::regclass"
    )
    assert row is not None
    return int(row["n"]), float(row["tuples"])


def test_bulk_queued_calls_are_projected_and_analyzed(postgres_database: str, tmp_path: Path) -> None:
    container = Container(Settings(data_dir=tmp_path / "var", database_url=postgres_database))
    try:
        view = container.views["progress"]
        runner = container.runner("progress")
        runner.catch_up()
        assert _analyzes(view)[0] == 0
        execution, org, program = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        when = datetime(2026, 1, 1, tzinfo=UTC)

        def queue(n: int, offset: int) -> None:
            calls = [Call(execution, uuid.uuid5(execution, str(offset + i)), org, program, f"+2126{offset + i:08d}",
                          {"timezone": "Africa/Casablanca"}, when) for i in range(n)]
            for i in range(0, n, 2000):
                container.calls.save(*calls[i : i + 2000])

        queue(6_000, 0)
        runner.catch_up()
        assert view.one("SELECT COUNT(*) AS n FROM progress_calls")["n"] == 6_000
        assert _analyzes(view)[0] == 0, "analyzed before 10,000 new rows"
        queue(6_000, 6_000)
        runner.catch_up()
        count, tuples = _analyzes(view)
        assert count == 1 and 10_000 <= tuples <= 12_000, (count, tuples)
        rows = view.rows("SELECT timezone, bucket, attempt FROM progress_calls WHERE call_id = ?",
                         (str(Call.create_id(execution, uuid.uuid5(execution, "11999"))),))
        assert rows == [{"timezone": "Africa/Casablanca", "bucket": "pending", "attempt": 1}]
        queue(2_000, 12_000)  # under a fifth of 12,000: not yet
        runner.catch_up()
        assert _analyzes(view)[0] == 1
    finally:
        container.close()


def test_call_durations_sum_past_32_bits(postgres_database: str, tmp_path: Path) -> None:
    """The reports' duration total per execution and attempt is a 64-bit sum: 1.2 million
    answered calls of 20 s are 2.4e10 ms, and a 32-bit column stopped the rebuild of 10^7
    events with "integer out of range"."""
    from domain.retry import RetryStrategy

    container = Container(Settings(data_dir=tmp_path / "var", database_url=postgres_database))
    try:
        execution, org, program = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        when = datetime(2026, 1, 1, tzinfo=UTC)
        strategy = RetryStrategy.parse({"type": "none"})
        calls = []
        for i in range(3):
            call = Call(execution, uuid.uuid4(), org, program, f"+21261000000{i}", {}, when)
            call.claim(1, when, "test")
            call.record_placed(1, f"CA{i}", "+212500000001")
            call.record_answered(1, "human")
            call.end_attempt(1, "completed", None, 1_500_000_000, when, strategy)
            calls.append(call)
        container.calls.save(*calls)
        container.runner("reports").catch_up()
        [row] = container.views["reports"].attempts(str(execution))
        assert (row["duration_total"], row["duration_count"], row["completed"]) == (4_500_000_000, 3, 3)
    finally:
        container.close()


def test_the_contact_key_table_is_analyzed_as_it_grows(postgres_database: str, tmp_path: Path) -> None:
    """Never analyzed, the lookup of a page's contact keys was planned as a sequential scan
    (150 ms a lookup at 30,000 keys: a 100,000-row import fell to 713 rows/s). The key
    store analyzes the table once it has doubled since it last did (at least 2,000 keys):
    often enough for the plan, rarely enough not to slow a large import (each ANALYZE
    samples up to 30,000 rows on the importer's path)."""
    from domain.contact import Contact

    container = Container(Settings(data_dir=tmp_path / "var", database_url=postgres_database))
    try:
        campaigns = container.campaigns
        org_id, _ = campaigns.create_organization("Keys")

        def analyzes() -> tuple[int, float]:
            with psycopg.connect(postgres_database) as c:
                row = c.execute("SELECT s.analyze_count, c.reltuples FROM pg_stat_user_tables s JOIN pg_class c "
                                "ON c.oid = s.relid WHERE s.relid = 'contact_keys'::regclass").fetchone()  # fmt: skip
            assert row is not None
            return int(row[0]), float(row[1])

        def add(first: int, n: int) -> None:
            people = [Contact(org_id, f"+2126{first + i:08d}", "", {"firstName": f"P{i}"}) for i in range(n)]
            for i in range(0, n, 500):
                campaigns.save(*people[i : i + 500])

        add(0, 1_500)
        assert analyzes()[0] == 0, "analyzed before 2,000 new keys"
        add(1_500, 1_000)
        count, tuples = analyzes()
        assert count == 1 and 2_000 <= tuples <= 2_500, (count, tuples)
        add(2_500, 1_000)  # 3,500: not yet twice the 2,000 it had when it analyzed
        assert analyzes()[0] == 1, "analyzed again before the table doubled"
        add(3_500, 1_000)  # 4,500: doubled at 4,000
        count, tuples = analyzes()
        assert count == 2 and 4_000 <= tuples <= 4_500, (count, tuples)
        add(4_500, 6_000)  # 10,500: doubled at 8,000 once more, not at every fifth more (6,000, 8,000, 10,000)
        count, tuples = analyzes()
        assert count == 3 and 8_000 <= tuples <= 8_500, (count, tuples)
    finally:
        container.close()


def test_key_stores_racing_to_make_a_page_of_keys_agree(postgres_database: str, tmp_path: Path) -> None:
    """A page's keys are read, and made where missing, in one statement. Two processes
    (two key stores) making keys for the same new contacts at once end with one key each,
    the same for both."""
    import threading

    from infrastructure.privacy import KeyStore
    from infrastructure.settings import Settings as S

    container = Container(S(data_dir=tmp_path / "var", database_url=postgres_database))
    try:
        env = dict(container.campaigns.mapper.keystore.env)  # type: ignore[attr-defined]
    finally:
        container.close()
    subjects = [uuid.uuid4() for _ in range(1_200)]
    stores = [KeyStore(env), KeyStore(env)]
    barrier = threading.Barrier(2)
    got: list[dict[uuid.UUID, tuple[int, bytes | None]]] = [{}, {}]

    def make(i: int) -> None:
        barrier.wait()
        for n in range(0, len(subjects), 100):  # overlapping pages, as two importers' saves
            got[i].update(stores[i].current(subjects[n : n + 150]))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert got[0] == got[1]
        assert len(got[0]) == len(subjects) and all(g == 1 and k is not None and len(k) == 32 for g, k in got[0].values())
        with psycopg.connect(postgres_database) as c:
            row = c.execute("SELECT count(*), count(DISTINCT subject) FROM contact_keys WHERE subject = ANY(%s)",
                            ([s.hex for s in subjects],)).fetchone()  # fmt: skip
        assert row == (len(subjects), len(subjects))
    finally:
        for s in stores:
            s.close()


def test_every_view_analyzes_its_tables_as_they_grow(postgres_database: str, tmp_path: Path) -> None:
    """With autovacuum off (CI's server), a read model's table created empty was never
    analyzed, and the generic plan of a prepared statement made while it was small was kept
    for good: the reports view read each batch's visited nodes by a sequential scan of
    ``report_visits`` (24 ms a batch at 5,000 rows, PostgreSQL's largest cost in 20,000
    calls). Each view now analyzes, at most every ``STATISTICS_EVERY`` seconds, its tables
    changed by as many rows as they hold (at least 1,000) since their last analysis."""
    import time

    from projections.reports import ReportsView
    from projections.store import STATISTICS_EVERY, make_view

    view = make_view(ReportsView, "reports", Settings(database_url=postgres_database).persistence_env())

    def analyzes() -> dict[str, int]:
        rows = view.rows("SELECT relname, analyze_count FROM pg_stat_user_tables WHERE relname IN ('report_visits', 'report_calls')")
        return {r["relname"]: int(r["analyze_count"]) for r in rows}

    def write(n: int) -> None:
        with view.datastore.transaction(commit=True) as c:
            c.executemany("INSERT INTO report_visits (call_id, node_ids) VALUES (%s, '[]')", [(uuid.uuid4().hex,) for _ in range(n)])
            c.execute("SELECT pg_stat_force_next_flush()")  # (counts reach pg_stat_* within a second, not ten)

    def changes_seen(n: int) -> None:
        deadline = time.monotonic() + 15
        while view.one("SELECT n_mod_since_analyze AS n FROM pg_stat_user_tables WHERE relname = 'report_visits'")["n"] < n:
            assert time.monotonic() < deadline, "the inserts never reached pg_stat_user_tables"
            time.sleep(0.1)

    try:
        assert analyzes() == {"report_visits": 0, "report_calls": 0}
        write(900)
        changes_seen(900)
        view.keep_statistics()
        assert analyzes() == {"report_visits": 0, "report_calls": 0}, "analyzed under 1,000 changed rows"
        write(1_140)
        changes_seen(2_040)
        view.keep_statistics()  # within STATISTICS_EVERY of the last look: not yet
        assert analyzes()["report_visits"] == 0
        view._statistics_due -= STATISTICS_EVERY
        view.after_batch()  # (what every batch of every view calls)
        assert analyzes() == {"report_visits": 1, "report_calls": 0}  # the table that changed, only
        planned = view.one("SELECT reltuples FROM pg_class WHERE relname = 'report_visits'")["reltuples"]
        assert planned == 2_040
        write(2_000)  # fewer than the 2,040 rows it held: not again
        changes_seen(2_000)
        view._statistics_due -= STATISTICS_EVERY
        view.keep_statistics()
        assert analyzes()["report_visits"] == 1
        write(40)  # doubled since: again
        changes_seen(2_040)
        view._statistics_due -= STATISTICS_EVERY
        view.keep_statistics()
        assert analyzes()["report_visits"] == 2
    finally:
        view.datastore.close()
