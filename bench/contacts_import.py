"""Benchmark: import a 100,000-row CSV of contacts on PostgreSQL, end to end.

    .venv/bin/python -m bench.contacts_import [--rows 100000] [--write docs/PERFORMANCE.md]

Steps, all in one run on a throwaway database:
1. the raw PostgreSQL ``COPY`` of the same rows into a plain table (the denominator);
2. ``gomobile projector`` started as in production, then ``gomobile contacts import
   FILE.csv`` as its own process (parse, validate, store as events in batches): its wall
   time and peak RSS, and "end to end", from its start until the directory read model
   lists every row;
3. a second import of the same file (must record nothing, checked on the event store).
The live-audience preview is measured by bench/audience_preview.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
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


IMPORT_MAP = ["--map", "phone=primaryPhone", "--map", "first_name=firstName", "--map", "last_name=lastName",
              "--map", "email=primaryEmail", "--map", "city=city", "--map", "balance=custom.balance",
              "--map", "vip=custom.vip"]


def _hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_import(
    env: dict[str, str], paths: list[Path], org: str, visible: Callable[[], int] | None = None, rows: int = 0
) -> dict[str, Any]:
    """Run one ``gomobile contacts import`` process per file, at once; with ``visible``,
    also wait until the read models list ``rows`` contacts (the projector runs meanwhile)."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-m", "interfaces.cli", "contacts", "import", str(path), "--org", org,
                          *IMPORT_MAP], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for path in paths
    ]
    rss = 0.0
    while any(p.poll() is None for p in procs):
        rss = max(rss, *(_hwm_mb(p.pid) for p in procs))
        time.sleep(0.05)
    import_s = time.perf_counter() - t0
    summaries = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(err)
        summaries.append(json.loads(out))
    summary = {k: sum(s[k] for s in summaries) for k in ("rows", "created", "updated", "unchanged", "rejected")}
    if visible is not None:
        while (seen := visible()) < rows:
            if time.perf_counter() - t0 > 900:
                raise SystemExit(f"only {seen} of {rows} contacts visible after 15 minutes")
            time.sleep(0.05)
    return {"import_s": import_s, "visible_s": time.perf_counter() - t0, "summary": summary, "peak_rss_mb": rss}


def split_csv(path: Path, parts: int) -> list[Path]:
    """The file cut into ``parts`` files of consecutive rows, each with the header."""
    with open(path, encoding="utf-8") as f:
        header, *lines = f.readlines()
    size = -(-len(lines) // parts)
    out = []
    for i in range(parts):
        part = path.with_name(f"{path.stem}.part{i}.csv")
        part.write_text(header + "".join(lines[i * size : (i + 1) * size]), encoding="utf-8")
        out.append(part)
    return out


def main() -> None:
    from bench.common import Processes, emit, fresh_database, machine, postgres_cpu_seconds

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--write", help="rewrite the contact import section of this Markdown file")
    args = ap.parse_args()
    n = args.rows
    tmp = Path(tempfile.mkdtemp())
    csv_path = tmp / "contacts.csv"
    make_csv(csv_path, n)
    with fresh_database() as url:
        copy_s = raw_copy(url, csv_path)
        env = {**os.environ, "GOMOBILE_DATABASE_URL": url, "GOMOBILE_DATA_DIR": str(tmp / "var")}
        env.pop("GOMOBILE_REDIS_URL", None)
        from application.contacts import Contacts
        from infrastructure.bootstrap import Container
        from infrastructure.settings import Settings

        container = Container(Settings(database_url=url, data_dir=tmp / "var"))
        procs = Processes(env, tmp)
        try:
            org_id, _ = container.campaigns.create_organization("Bench")
            contacts = Contacts(container.campaigns)
            contacts.define_attribute(org_id, {"displayName": "Balance", "type": "number"})
            contacts.define_attribute(org_id, {"displayName": "VIP", "type": "boolean"})
            # The projector runs as in production, beside the import: "visible" is when
            # GET /api/contact lists every row.
            procs.start("projector", name="projector")
            directory = container.directory
            # As in production, the projector is up before the import starts: its start (a
            # second of CPU: imports, pools, tables) is not the import's. It is up once it
            # has applied the organization and its attributes.
            head = container.campaigns.recorder.max_notification_id() or 0
            t_up = time.perf_counter()
            while (directory.max_tracking_id(container.campaigns.name) or 0) < head:
                if time.perf_counter() - t_up > 60:
                    raise SystemExit("the projector did not start within 60 s")
                time.sleep(0.05)

            def listed(org: Any = org_id) -> int:
                return int(directory.contacts(str(org), 1, 1, None, "createdAt", True)[1])

            cpu0, pg0, own0 = procs.cpu_seconds(), postgres_cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
            first = run_import(env, [csv_path], str(org_id), listed, n)
            cpu1, pg1, own1 = procs.cpu_seconds(), postgres_cpu_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN)
            # CPU a row of each process (the importer has ended: its time is in our children's).
            cpu_us = {
                "importer": ((own1.ru_utime - own0.ru_utime) + (own1.ru_stime - own0.ru_stime)) * 1e6 / n,
                "projector": (cpu1["projector"] - cpu0["projector"]) * 1e6 / n,
                "postgres": (pg1 - pg0) * 1e6 / n,
            }
            assert first["summary"]["created"] == n, first["summary"]
            max_id = container.campaigns.recorder.max_notification_id()
            again = run_import(env, [csv_path], str(org_id))
            assert again["summary"]["unchanged"] == n and again["summary"]["created"] == 0, again["summary"]
            assert container.campaigns.recorder.max_notification_id() == max_id  # recorded nothing
            # The same rows into a second organization by two importers at once (halves).
            org2, _ = container.campaigns.create_organization("Bench 2")
            contacts.define_attribute(org2, {"displayName": "Balance", "type": "number"})
            contacts.define_attribute(org2, {"displayName": "VIP", "type": "boolean"})
            two = run_import(env, split_csv(csv_path, 2), str(org2), lambda: listed(org2), n)
            assert two["summary"]["created"] == n, two["summary"]
        finally:
            procs.stop()
            container.close()
    figures = {
        "rows": n, "copy_s": copy_s, "copy_rows_per_s": n / copy_s,
        "import_s": first["import_s"], "import_rows_per_s": n / first["import_s"],
        "end_to_end_s": first["visible_s"], "end_to_end_rows_per_s": n / first["visible_s"],
        "ratio_to_copy": (n / first["visible_s"]) / (n / copy_s),
        "peak_rss_mb": first["peak_rss_mb"], "cpu_us_per_row": {k: round(v) for k, v in cpu_us.items()},
        "reimport_s": again["import_s"],
        "reimport_rows_per_s": n / again["import_s"],
        "two_importers_end_to_end_s": two["visible_s"], "two_importers_end_to_end_rows_per_s": n / two["visible_s"],
        **machine(),
    }
    emit("contacts_import", figures)
    if args.write:
        write_section(Path(args.write), figures)


SECTION = "## Contact import (bench/contacts_import.py)"
END = "<!-- end of bench/contacts_import.py figures -->"


def write_section(path: Path, f: dict[str, Any]) -> None:
    """Replace the import figures of the section, up to the END marker."""
    n = f["rows"]
    body = (
        f"{SECTION}, {f['date']}\n\n"
        f"PostgreSQL {f['postgres']}, {f['cpus']} CPUs, Python {f['python']}, eventsourcing {f['eventsourcing']}; "
        f"{n:,} rows (7 columns, 2 custom attributes), a fresh database. `gomobile contacts import` runs as its "
        "own process and `gomobile projector` beside it, as in production; *end to end* is from starting the "
        "import to `GET /api/contact` listing every row.\n\n"
        "Reproduce: `.venv/bin/python -m bench.contacts_import --rows 100000 --write docs/PERFORMANCE.md`\n\n"
        "| step | time | rate |\n|---|---|---|\n"
        f"| raw `COPY` of the same CSV (denominator) | {f['copy_s']:.2f} s | {f['copy_rows_per_s']:,.0f} rows/s |\n"
        f"| `gomobile contacts import` (parse, validate, events in batches of 1,000), process start to exit "
        f"| {f['import_s']:.2f} s | {f['import_rows_per_s']:,.0f} rows/s |\n"
        f"| **end to end** (stored as events and listed by the read models) | {f['end_to_end_s']:.2f} s "
        f"| **{f['end_to_end_rows_per_s']:,.0f} rows/s** ({100 * f['ratio_to_copy']:.1f}% of COPY) |\n"
        f"| the same file again (records nothing) | {f['reimport_s']:.2f} s | {f['reimport_rows_per_s']:,.0f} rows/s |\n"
        f"| end to end with **two importers** at once (each half of the file, another organization) "
        f"| {f['two_importers_end_to_end_s']:.2f} s | {f['two_importers_end_to_end_rows_per_s']:,.0f} rows/s |\n\n"
        f"Peak RSS of the importing process: {f['peak_rss_mb']:.0f} MB (target < 300 MB; the file is streamed).\n"
        + (f"CPU a row during the import, end to end: importer {f['cpu_us_per_row']['importer']} us, projector "
           f"{f['cpu_us_per_row']['projector']} us, PostgreSQL {f['cpu_us_per_row']['postgres']} us.\n"
           if "cpu_us_per_row" in f else "")
    )
    text = path.read_text() if path.exists() else "# Performance\n"
    start = text.find(SECTION)
    end = text.find(END, start)
    if start < 0 or end < 0:
        text = text.rstrip("\n") + "\n\n" + body + END + "\n"
    else:  # replace the figures; what follows the marker (the preview, the reading) stays
        text = text[:start] + body + text[end:]
    path.write_text(text)


if __name__ == "__main__":
    main()
