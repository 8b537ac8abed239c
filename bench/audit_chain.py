"""What the audit chain costs a save (issue 7): the same saves through eventsourcing's
recorder and through the audit recorder, on PostgreSQL (or SQLite with --sqlite).
Prints wall time and this process's CPU time per event for three shapes: a new stream
of 3 events per save (a queued call), 1 event on a known stream per save (a webhook),
and 100 streams in one save (a queueing batch).

    .venv/bin/python -m bench.audit_chain [--url postgresql://...] [--sqlite] [--n 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.domain import event

from domain.base import AuditedAggregate, audit_context
from infrastructure.settings import Settings


class Probe(AuditedAggregate):
    """A stand-in for a Call: an organization, a few fields, a few hundred bytes a state."""

    def __init__(self, organization_id: uuid.UUID, to: str) -> None:
        self.organization_id = organization_id
        self.to = to

    @event("Stepped")
    def step(self, node: str, data: dict[str, Any]) -> None:
        self.node = node


def _app(settings: Settings) -> Any:
    from eventsourcing.application import Application

    class Bench(Application[uuid.UUID]):
        name = "bench"

    env = settings.persistence_env()
    env["BENCH_SQLITE_DBNAME"] = str(settings.data_dir / "bench.sqlite")
    return Bench(env=env)


def run(settings: Settings, n: int) -> dict[str, tuple[float, float]]:
    app = _app(settings)
    org = uuid.uuid4()
    data = {
        "digits": "1",
        "variables": {"choice": "1", "firstName": "Test"},
        "at": "2026-11-27T07:00:00Z",
    }
    out = {}
    with audit_context(
        actor="apikey:bench", organizationId=str(org), requestId="r" * 16, role="admin"
    ):
        shapes = []
        streams: list[Probe] = []

        def new_streams() -> int:
            for i in range(n):
                p = Probe(org, f"+2126{i:08d}")
                p.step("dial", data)
                p.step("greet", data)
                app.save(p)
                streams.append(p)
            return 3 * n

        def known_stream_events() -> int:
            for p in streams[:n]:
                p.step("menu", data)
                app.save(p)
            return n

        def batches() -> int:
            for _ in range(max(1, n // 100)):
                batch = [Probe(org, "+212600000000") for _ in range(100)]
                app.save(*batch)
            return 100 * max(1, n // 100)

        shapes = [("new stream, 3 events a save", new_streams), ("1 event a save, known stream", known_stream_events),
                  ("100 new streams in one save", batches)]  # fmt: skip
        for name, fn in shapes:
            w0, c0 = time.perf_counter(), time.process_time()
            events = fn()
            out[name] = (
                (time.perf_counter() - w0) / events * 1e6,
                (time.process_time() - c0) / events * 1e6,
            )
    app.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--sqlite", action="store_true")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    results: dict[bool, list[dict[str, tuple[float, float]]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for chain in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                url = ""
                if not args.sqlite:
                    name = f"bench_audit_{uuid.uuid4().hex[:8]}"
                    with psycopg.connect(args.url, autocommit=True) as c:
                        c.execute(f'CREATE DATABASE "{name}"')
                    url = args.url.rsplit("/", 1)[0] + "/" + name
                try:
                    results[chain].append(
                        run(
                            Settings(data_dir=Path(tmp), database_url=url, audit_chain=chain),
                            args.n,
                        )
                    )
                finally:
                    if url:
                        with psycopg.connect(args.url, autocommit=True) as c:
                            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    backend = "SQLite" if args.sqlite else "PostgreSQL"
    print(f"{backend}, best of {args.rounds}: us per event, wall / this process's CPU")
    for shape in results[False][0]:
        off = min(r[shape][0] for r in results[False]), min(r[shape][1] for r in results[False])
        on = min(r[shape][0] for r in results[True]), min(r[shape][1] for r in results[True])
        print(f"  {shape:32s} off {off[0]:7.1f} / {off[1]:6.1f}   chain {on[0]:7.1f} / {on[1]:6.1f}   "
              f"cost {on[0] - off[0]:+6.1f} / {on[1] - off[1]:+5.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
