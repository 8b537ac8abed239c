"""Benchmark: import a 100,000-row CSV of contacts on PostgreSQL, end to end.

    .venv/bin/python bench/contacts_import.py [--rows 100000] [--write docs/PERFORMANCE.md]

Steps, all in one run on a throwaway database:
1. the raw PostgreSQL ``COPY`` of the same rows into a plain table (the denominator);
2. ``gomobile contacts import FILE.csv`` as its own process (parse, validate, store as
   events in batches), its wall time and peak RSS;
3. the directory projection catching up until every contact is listed (visible in the
   read models), so "end to end" = 2 + 3;
4. a second import of the same file (must record nothing);
5. live-audience previews over the imported contacts (p50 / p99).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ADMIN_URL = os.environ.get("GOMOBILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CITIES = ["Casablanca", "Rabat", "Fes", "Marrakech", "Tangier", "Agadir", "Oujda", "Kenitra"]


def make_csv(path: Path, rows: int) -> None:
    rnd = random.Random(7)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["phone", "first_name", "last_name", "email", "city", "balance", "vip"])
        for i in range(rows):
            w.writerow([f"06{10000000 + i:08d}", f"First{i}", f"Last{i}", f"user{i}@example.ma",
                        rnd.choice(CITIES), rnd.randint(0, 5000), rnd.choice(["yes", "no"])])


def raw_copy(url: str, path: Path) -> float:
    with psycopg.connect(url) as c:
        c.execute("CREATE TABLE bench_copy (phone text, first_name text, last_name text, email text, "
                  "city text, balance int, vip text)")
        t0 = time.perf_counter()
        with open(path, "rb") as f, c.cursor().copy("COPY bench_copy FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
            while chunk := f.read(1 << 20):
                cp.write(chunk)
        c.commit()
        return time.perf_counter() - t0


def run_import(env: dict[str, str], path: Path, org: str) -> tuple[float, dict[str, object], float]:
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run([sys.executable, "-m", "interfaces.cli", "contacts", "import", str(path), "--org", org,
                        "--map", "phone=primaryPhone", "--map", "first_name=firstName", "--map", "last_name=lastName",
                        "--map", "email=primaryEmail", "--map", "city=city", "--map", "balance=custom.balance",
                        "--map", "vip=custom.vip"], env=env, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    rss_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return elapsed, json.loads(p.stdout), rss_mb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--write", help="append the figures to this Markdown file")
    args = ap.parse_args()
    name = f"gomobile_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
        pg_version = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    tmp = Path(tempfile.mkdtemp())
    csv_path = tmp / "contacts.csv"
    try:
        make_csv(csv_path, args.rows)
        copy_s = raw_copy(url, csv_path)
        env = {**os.environ, "GOMOBILE_DATABASE_URL": url, "GOMOBILE_DATA_DIR": str(tmp / "var")}
        env.pop("GOMOBILE_REDIS_URL", None)
        os.environ.update({"GOMOBILE_DATABASE_URL": url})
        from application.audiences import Audiences
        from infrastructure.bootstrap import Container
        from infrastructure.settings import Settings

        container = Container(Settings(database_url=url, data_dir=tmp / "var"))
        org_id, _ = container.campaigns.create_organization("Bench")
        from application.contacts import Contacts

        contacts = Contacts(container.campaigns)
        contacts.define_attribute(org_id, {"displayName": "Balance", "type": "number"})
        contacts.define_attribute(org_id, {"displayName": "VIP", "type": "boolean"})

        import_s, summary, rss_mb = run_import(env, csv_path, str(org_id))
        t0 = time.perf_counter()
        runner = container.runner("directory")
        runner.catch_up()
        project_s = time.perf_counter() - t0
        listed = container.directory.contacts(str(org_id), 1, 1, None, "createdAt", True)[1]
        assert listed == args.rows, listed
        again_s, again, _ = run_import(env, csv_path, str(org_id))
        assert again["unchanged"] == args.rows and again["created"] == 0, again

        audiences = Audiences(container.campaigns, container.directory)
        body = {"rules": {"combinator": "AND", "rules": [
            {"field": "city", "operator": "equals", "value": "Rabat"},
            {"combinator": "OR", "rules": [{"field": "custom.balance", "operator": "gte", "value": 2500},
                                           {"field": "custom.vip", "operator": "equals", "value": True}]}]},
                "sampleSize": 10}
        times = []
        for _ in range(10):
            t = time.perf_counter()
            count, _sample = audiences.preview(org_id, body)
            times.append(time.perf_counter() - t)
        times.sort()
        p50, p99 = statistics.median(times), times[int(0.99 * (len(times) - 1))]
        container.close()
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    n = args.rows
    e2e = import_s + project_s
    figures = {
        "rows": n, "copy_rows_per_s": n / copy_s, "import_s": import_s, "import_rows_per_s": n / import_s,
        "projection_s": project_s, "end_to_end_rows_per_s": n / e2e, "ratio_to_copy": (n / e2e) / (n / copy_s),
        "peak_rss_mb": rss_mb, "reimport_s": again_s, "preview_matches": count, "preview_p50_ms": p50 * 1000,
        "preview_p99_ms": p99 * 1000, "postgres": pg_version, "cpus": os.cpu_count(),
    }
    print(json.dumps(figures, indent=2))
    if args.write:
        out = io.StringIO()
        out.write(f"\n## Contact import (bench/contacts_import.py), {time.strftime('%Y-%m-%d')}\n\n")
        out.write(f"PostgreSQL {pg_version}, {os.cpu_count()} CPUs, {n:,} rows (7 columns, 2 custom attributes), "
                  "fresh database, the importing CLI as its own process.\n\n")
        out.write("| step | time | rate |\n|---|---|---|\n")
        out.write(f"| raw `COPY` of the same CSV (denominator) | {copy_s:.2f} s | {n / copy_s:,.0f} rows/s |\n")
        out.write(f"| `gomobile contacts import` (parse, validate, events in batches of 500) | {import_s:.2f} s | {n / import_s:,.0f} rows/s |\n")
        out.write(f"| directory projection catch-up (visible in `GET /api/contact`) | {project_s:.2f} s | {n / project_s:,.0f} rows/s |\n")
        out.write(f"| **end to end** (import + projection) | {e2e:.2f} s | **{n / e2e:,.0f} rows/s** ({100 * figures['ratio_to_copy']:.1f}% of COPY) |\n")
        out.write(f"| same file again (records nothing) | {again_s:.2f} s | {n / again_s:,.0f} rows/s |\n\n")
        out.write(f"Peak RSS of the importing process: {rss_mb:.0f} MB (target < 300 MB). "
                  f"Live-audience preview over {n:,} contacts ({count:,} matches, AND + OR group, 3 conditions): "
                  f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms (10 runs).\n")
        path = Path(args.write)
        existing = path.read_text() if path.exists() else "# Performance\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(existing.rstrip("\n") + "\n" + out.getvalue())


if __name__ == "__main__":
    main()
