"""Benchmark: live-audience preview over 100,000 contacts on PostgreSQL, and the directory
projection's catch-up rate.

    .venv/bin/python -m bench.audience_preview [--contacts 100000] [--runs 20] [--profile FILE]

Figures go to stdout and bench/results/audience_preview.json (``make bench`` summary).

On a throwaway database:
1. seed the contacts through the application's batch write path (``Contacts.write_batch``,
   batches of 500: Contact events, as an import stores them), with a city, names, an
   email and three typed custom attributes (number, boolean, date);
2. the directory projection catches up from zero (events/s: the rate at which imported
   contacts become visible to lists and previews);
3. ``POST /api/audience/preview`` through the real HTTP app (litestar, in process), for
   several rule sets (AND, OR, nested groups, custom attributes, text operators), each
   ``--runs`` times: p50 / p99 per rule set and over all runs;
4. the raw baselines in the same run: ``SELECT count(*)`` over the same contacts, and the
   preview's own count query run directly (no HTTP, no application); for the catch-up,
   reading the same notifications from the event store without decoding them;
5. a live audience created over the same contacts (its members' joins recorded), until
   its contactCount is listed.

Each preview's count is checked against the in-memory evaluation (domain.rules) of the
same contacts, so a fast wrong answer fails the benchmark.
"""

from __future__ import annotations

import argparse
import cProfile
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import emit, fresh_database, machine

CITIES = ["Casablanca", "Rabat", "Fes", "Marrakech", "Tangier", "Agadir", "Oujda", "Kenitra"]

RULE_SETS: dict[str, dict[str, Any]] = {
    "AND + OR group (3 conditions)": {"combinator": "AND", "rules": [
        {"field": "city", "operator": "equals", "value": "Rabat"},
        {"combinator": "OR", "rules": [{"field": "custom.balance", "operator": "gte", "value": 2500},
                                       {"field": "custom.vip", "operator": "equals", "value": True}]}]},
    "one condition (city)": {"combinator": "AND", "rules": [
        {"field": "city", "operator": "equals", "value": "Casablanca"}]},
    "OR of two AND groups (6 conditions)": {"combinator": "OR", "rules": [
        {"combinator": "AND", "rules": [{"field": "city", "operator": "equals", "value": "Fes"},
                                        {"field": "custom.balance", "operator": "lt", "value": 500},
                                        {"field": "custom.since", "operator": "gte", "value": "2024-01-01"}]},
        {"combinator": "AND", "rules": [{"field": "custom.vip", "operator": "equals", "value": True},
                                        {"field": "primaryEmail", "operator": "contains", "value": "7@"},
                                        {"field": "lastName", "operator": "is_not_empty"}]}]},
    "negations and emptiness": {"combinator": "AND", "rules": [
        {"field": "city", "operator": "not_equals", "value": "Rabat"},
        {"field": "firstName", "operator": "not_contains", "value": "9"},
        {"field": "custom.vip", "operator": "is_empty"}]},
    "no match": {"combinator": "AND", "rules": [
        {"field": "custom.balance", "operator": "gt", "value": 1_000_000}]},
}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--profile", help="write a cProfile of the directory catch-up to this file")
    args = ap.parse_args()
    with fresh_database() as url:
        figures = run(url, Path(tempfile.mkdtemp()), args.contacts, args.runs, args.profile)
    emit("audience_preview", {**figures, "machine": machine()})


def run(url: str, tmp: Path, n: int, runs: int, profile: str | None = None) -> dict[str, Any]:
    import logging

    from litestar.testing import TestClient

    from application.contacts import Contacts, Prepared
    from domain import rules
    from domain.contact import contact_id
    from infrastructure.bootstrap import Container
    from infrastructure.settings import Settings
    from interfaces.http.app import create_app

    logging.getLogger("httpx").setLevel(logging.WARNING)
    container = Container(Settings(database_url=url, data_dir=tmp / "var"))
    org_id, key = container.campaigns.create_organization("Bench")
    contacts = Contacts(container.campaigns)
    for attr in ({"displayName": "Balance", "type": "number"}, {"displayName": "VIP", "type": "boolean"},
                 {"displayName": "Since", "type": "date"}):
        contacts.define_attribute(org_id, attr)
    org = container.campaigns.organization(org_id)
    schema = contacts.schema(org_id)
    types = schema.types()

    # 1. seed
    rnd = random.Random(7)
    docs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    batch: list[tuple[Any, Prepared]] = []
    for i in range(n):
        phone = f"+2126{10000000 + i:08d}"
        custom: dict[str, Any] = {"balance": rnd.randint(0, 5000)}
        if rnd.random() < 0.8:
            custom["vip"] = rnd.random() < 0.3
        custom["since"] = (date(2020, 1, 1) + timedelta(days=rnd.randint(0, 2000))).isoformat()
        fields: dict[str, Any] = {"firstName": f"First{i}", "primaryEmail": f"user{i}@example.ma",
                                  "city": rnd.choice(CITIES), "timezone": "Africa/Casablanca",
                                  "customAttributes": custom}
        if i % 3:
            fields["lastName"] = f"Last{i}"
        docs.append({"primaryPhone": phone, **fields})
        batch.append((i, Prepared(phone, phone, fields, contact_id(org_id, phone))))
        if len(batch) == 500:
            contacts.write_batch(org, schema, batch)
            batch = []
    if batch:
        contacts.write_batch(org, schema, batch)
    seed_s = time.perf_counter() - t0

    # 2. the directory catches up from zero
    runner = container.runner("directory")
    profiler = cProfile.Profile() if profile else None
    t0, cpu0 = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    applied = runner.catch_up()
    catch_up_s = time.perf_counter() - t0
    catch_up_cpu_s = time.process_time() - cpu0  # this process only (PostgreSQL's share is apart)
    if profiler and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    listed = container.directory.contacts(str(org_id), 1, 1, None, "createdAt", True)[1]
    assert listed == n, listed
    # The catch-up's floor in the same run: reading the same notifications, 500 at a time, undecoded.
    recorder = container.campaigns.recorder
    t0, after = time.perf_counter(), 0
    while notes := recorder.select_notifications(start=after + 1, limit=500):
        after = notes[-1].id
    read_s = time.perf_counter() - t0

    # 3. previews through HTTP, 4. raw baselines
    directory = container.directory
    results: dict[str, Any] = {}
    all_times: list[float] = []
    with TestClient(create_app(container)) as client, psycopg.connect(url) as raw:
        client.headers["x-api-key"] = key
        raw_count: list[float] = []
        for _ in range(runs):
            t = time.perf_counter()
            raw.execute("SELECT count(*) FROM dir_contacts WHERE organization_id = %s", (str(org_id),)).fetchone()
            raw_count.append(time.perf_counter() - t)
        for label, tree in RULE_SETS.items():
            canonical = rules.parse(tree, types)
            expected = sum(1 for d in docs if rules.matches(canonical, d, types))
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                resp = client.post("/api/audience/preview", json={"rules": tree, "sampleSize": 10})
                times.append(time.perf_counter() - t)
                assert resp.status_code == 200, resp.text
                body = resp.json()
                assert body["contactCount"] == expected, (label, body["contactCount"], expected)
                assert len(body["sample"]) == min(10, expected)
            cond, params = directory._rules_where(canonical, types)
            sql = ("SELECT count(*) FROM dir_contacts WHERE organization_id = %s AND deleted_at IS NULL AND "
                   + cond.replace("?", "%s"))
            direct = []
            for _ in range(runs):
                t = time.perf_counter()
                raw.execute(sql, (str(org_id), *params)).fetchone()
                direct.append(time.perf_counter() - t)
            all_times += times
            results[label] = {"matches": expected, "p50_ms": round(1000 * statistics.median(times), 1),
                              "p99_ms": round(1000 * pct(times, 0.99), 1),
                              "count_query_p50_ms": round(1000 * statistics.median(direct), 1)}

        # 5. a live audience over the same contacts: its creation records every member's
        # join (the directory's projection running beside it, as in production).
        follower = container.runner("directory").start()
        first = next(iter(RULE_SETS.values()))
        t = time.perf_counter()
        resp = client.post("/api/audience", json={"name": "Bench live", "type": "live", "rules": first})
        live_create_s = time.perf_counter() - t
        assert resp.status_code == 201, resp.text
        aid = resp.json()["id"]
        want = results[next(iter(RULE_SETS))]["matches"]
        deadline = time.monotonic() + 120
        while client.get(f"/api/audience/{aid}").json()["contactCount"] != want:
            assert time.monotonic() < deadline, "live audience members never listed"
            time.sleep(0.05)
        live_listed_s = time.perf_counter() - t
        follower.stop()
    container.close()
    return {
        "contacts": n,
        "seed_s": round(seed_s, 2), "seed_contacts_per_s": round(n / seed_s),
        "directory_catch_up_s": round(catch_up_s, 2), "directory_events": applied,
        "directory_events_per_s": round(applied / catch_up_s),
        "directory_events_per_cpu_s": round(applied / catch_up_cpu_s),
        "raw_notification_read_per_s": round(applied / read_s),
        "raw_count_p50_ms": round(1000 * statistics.median(raw_count), 1),
        "preview_runs_per_rule_set": runs,
        "preview_p50_ms": round(1000 * statistics.median(all_times), 1),
        "preview_p99_ms": round(1000 * pct(all_times, 0.99), 1),
        "rule_sets": results,
        "live_audience_members": want,
        "live_audience_create_s": round(live_create_s, 2),
        "live_audience_listed_s": round(live_listed_s, 2),
    }


if __name__ == "__main__":
    main()
