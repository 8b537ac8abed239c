"""`make bench`: run every benchmark of bench/ and rewrite the summary of docs/PERFORMANCE.md.

Each benchmark runs as its own process (a crash in one does not stop the others) and
leaves its figures in bench/results/NAME.json; the raw baselines (bench/baselines.py) are
measured first in the same run, and the summary puts each figure beside its baseline.
Benchmarks that keep a detailed section of docs/PERFORMANCE.md rewrite it themselves.

    .venv/bin/python -m bench.run_all [--quick] [--only contacts_import,calls_e2e]

``--quick`` runs every benchmark at a tenth of its size or less (a smoke run: minutes, not
the figures to publish; its summary goes to bench/results/summary-quick.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "PERFORMANCE.md"
START = "<!-- make bench summary: start -->"
END = "<!-- make bench summary: end -->"

# name -> (module of bench/, arguments for a full run, arguments for --quick). A module run
# under several names (the rebuild at several sizes) keeps each run's figures apart.
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "baselines": ("baselines", ["--rows", "1000000"], ["--rows", "100000", "--seconds", "1"]),
    "contacts_import": ("contacts_import", ["--rows", "100000", "--write", str(DOC)], ["--rows", "10000"]),
    "audience_preview": ("audience_preview", ["--contacts", "100000", "--runs", "12"], ["--contacts", "10000", "--runs", "3"]),
    "api_latency": ("api_latency", ["--rates", "25,50,100", "--seconds", "10"], ["--rates", "20", "--seconds", "3"]),
    "calls_e2e": ("calls_e2e", ["--contacts", "1000", "--workers", "1,2,4"], ["--contacts", "100", "--workers", "1"]),
    "launch_1m": ("launch_1m", ["--contacts", "1000000", "--calls-per-second", "1", "--timeout", "1800"],
                  ["--contacts", "50000"]),
    # Seeded with the platform's mapper and COPY (bench/rebuild.py --bulk-seed): the same
    # stored events as the recorder's, 10^7 of them in minutes.
    "rebuild_1e5": ("rebuild", ["--events", "100000", "--batch-size", "5000", "--bulk-seed"],
                    ["--events", "20000", "--batch-size", "5000", "--bulk-seed"]),
    # At 10^6, every read model that follows the calls log (at 10^7, reports alone: the
    # other two add ten minutes to a run).
    "rebuild_1e6": ("rebuild", ["--events", "1000000", "--batch-size", "5000", "--bulk-seed",
                                "--views", "reports,progress,call_history", "--processes", "1,2"],
                    ["--events", "50000", "--batch-size", "5000", "--bulk-seed", "--views", "reports,progress,call_history"]),
    "rebuild_1e7": ("rebuild", ["--events", "10000000", "--batch-size", "5000", "--bulk-seed"],
                    ["--events", "100000", "--batch-size", "5000", "--bulk-seed"]),
}


def run(name: str, module: str, args: list[str]) -> dict[str, Any]:
    if importlib.util.find_spec(f"bench.{module}") is None:
        return {"name": name, "status": "missing"}
    started = time.perf_counter()
    print(f"== {name}: bench.{module} {' '.join(args)}", flush=True)
    p = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=ROOT, check=False)
    took = time.perf_counter() - started
    if p.returncode == 0 and module != name and (RESULTS / f"{module}.json").exists():
        (RESULTS / f"{name}.json").write_text((RESULTS / f"{module}.json").read_text())
    return {"name": name, "status": "ok" if p.returncode == 0 else f"failed (exit {p.returncode})", "seconds": round(took)}


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}" if v >= 10 else f"{v:,.2f}"


Row = tuple[str, str, str, str]  # figure, value, baseline, ratio


def _rows_baselines(r: dict[str, Any]) -> list[Row]:
    return [
        ("raw PostgreSQL INSERT+COMMIT (one connection)",
         f"{_fmt(r['commitsPerSecond'])}/s, p50 {r['commitLatencyMs']['p50']} ms, p99 {r['commitLatencyMs']['p99']} ms",
         "-", "-"),
        ("raw PostgreSQL batched inserts / COPY", f"{_fmt(r['batchedInsertRowsPerSecond'])} / {_fmt(r['copyRowsPerSecond'])} rows/s", "-", "-"),
        ("raw PostgreSQL sequential read", f"{_fmt(r['sequentialReadRowsPerSecond'])} rows/s", "-", "-"),
        ("raw Redis queue (LPUSH+BRPOP)", f"{_fmt(r['queueMessagesPerSecond'])} messages/s", "-", "-"),
    ]


def _rows_import(r: dict[str, Any]) -> list[Row]:
    return [
        (f"contact import end to end ({r['rows']:,} rows)", f"{_fmt(r['end_to_end_rows_per_s'])} rows/s",
         f"COPY {_fmt(r['copy_rows_per_s'])} rows/s", f"{r['ratio_to_copy']:.4f}"),
        ("contact import end to end, two importers at once", f"{_fmt(r['two_importers_end_to_end_rows_per_s'])} rows/s",
         f"COPY {_fmt(r['copy_rows_per_s'])} rows/s", f"{r['two_importers_end_to_end_rows_per_s'] / r['copy_rows_per_s']:.4f}"),
        ("contact import: peak RSS of the importer", f"{r['peak_rss_mb']:.0f} MB", "-", "-"),
    ]


def _rows_calls(r: dict[str, Any]) -> list[Row]:
    return [
        (f"completed calls/s, {x['workers']} worker process(es)", _fmt(x["completedCallsPerSecond"]),
         f"{_fmt(x['rawPostgresCommitsPerSecond'])} commits/s", f"{x['ratioToRawCommits']:.4f}")
        for x in r.get("runs", [])
    ]


def _rows_api(r: dict[str, Any]) -> list[Row]:
    raw = r["rawPostgres"]["commitLatencyMs"]
    return [
        (f"API {x['kind']} at {x['rate']:.0f} req/s: p50 / p99", f"{x['latencyMs']['p50']} / {x['latencyMs']['p99']} ms",
         f"commit p50 {raw['p50']} ms", f"{x['p50RatioToRawCommit']}x")
        for x in r.get("runs", [])
    ]


def _rows_rebuild(r: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for key, v in r.items():
        if isinstance(v, dict) and "ratioToRaw" in v:
            procs = f", {v['processes']} processes" if v.get("processes", 1) > 1 else ""
            out.append((f"rebuild {key.split('@')[0]} from {v['events']:,} events ({v.get('batchSize', '?')} a transaction{procs})",
                        f"{_fmt(v['eventsPerSecond'])} events/s", f"sequential read {_fmt(v['rawRowsPerSecond'])} rows/s",
                        f"{v['ratioToRaw']:.3f}"))
    return out


def _rows_generic(r: dict[str, Any]) -> list[Row]:
    """Benchmarks without a dedicated summary: their scalar figures."""
    out: list[Row] = []
    for k, v in r.items():
        if k in ("benchmark", "machine") or isinstance(v, (dict, list, bool)):
            continue
        if isinstance(v, (int, float)):
            out.append((k, _fmt(float(v)), "-", "-"))
    return out[:12]


SUMMARIES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "baselines": _rows_baselines,
    "contacts_import": _rows_import,
    "calls_e2e": _rows_calls,
    "api_latency": _rows_api,
    "rebuild_1e5": _rows_rebuild,
    "rebuild_1e6": _rows_rebuild,
    "rebuild_1e7": _rows_rebuild,
}


def summary(statuses: list[dict[str, Any]], quick: bool) -> str:
    base = _load("baselines") or {}
    m = base.get("machine") or {}
    lines = [
        START,
        f"## Summary (`make bench`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"Machine: {m.get('cpus', '?')} CPUs, Python {m.get('python', '?')}, PostgreSQL {m.get('postgres', '?')}, "
        f"eventsourcing {m.get('eventsourcing', '?')}, dramatiq {m.get('dramatiq', '?')}, litestar {m.get('litestar', '?')}."
        + (" **Quick run (reduced sizes): not figures to publish.**" if quick else ""),
        ("Every figure's baseline was measured in the same run as the figure (UTC time beside each benchmark). "
         "Details in the sections below."),
        "",
        "| benchmark | figure | value | raw baseline | ratio |",
        "|---|---|---|---|---|",
    ]
    for s in statuses:
        name = s["name"]
        result = _load(name) if s["status"].startswith("ok") else None
        if result is None:
            lines.append(f"| {name} | - | {s['status']} | - | - |")
            continue
        # When these figures were measured (a summary may gather runs of --only).
        when = time.strftime("%m-%d %H:%M", time.gmtime((RESULTS / f"{name}.json").stat().st_mtime))
        for fig, val, baseline, ratio in SUMMARIES.get(name, _rows_generic)(result):
            lines.append(f"| {name} ({when}) | {fig} | {val} | {baseline} | {ratio} |")
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_summary(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else "# Performance\n"
    start, end = doc.find(START), doc.find(END)
    if start >= 0 and end >= 0:
        doc = doc[:start] + text + doc[end + len(END) + 1 :]
    else:
        head, _, rest = doc.partition("\n")
        doc = head + "\n\n" + text + rest
    DOC.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="comma-separated benchmark names")
    ap.add_argument("--summary-only", action="store_true",
                    help="rewrite the summary from the figures in bench/results, running nothing")
    ap.add_argument("--reuse", default="",
                    help="comma-separated benchmarks not run again: their figures in bench/results are kept "
                         "(with the time they were measured), e.g. the half-hour launch_1m")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    reuse = {n for n in args.reuse.split(",") if n}
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHES)})")
    if "baselines" not in names:
        names.insert(0, "baselines")  # every figure needs its baseline from the same run
    if args.summary_only:
        statuses = [{"name": n, "status": "ok" if (RESULTS / f"{n}.json").exists() else "not run"} for n in names]
    else:
        statuses = [
            {"name": n, "status": "ok (reused)"} if n in reuse and (RESULTS / f"{n}.json").exists()
            else run(n, BENCHES[n][0], BENCHES[n][2 if args.quick else 1])
            for n in names
        ]  # fmt: skip
    text = summary(statuses, args.quick)
    if args.quick:  # a smoke run does not overwrite the published figures
        (RESULTS / "summary-quick.md").write_text(text)
        print(f"summary: {RESULTS / 'summary-quick.md'}")
    else:
        write_summary(text)
    for s in statuses:
        print(f"{s['name']:18s} {s['status']}", flush=True)
    if any(s["status"].startswith("failed") for s in statuses):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
