"""``gomobile events export``: one organization's events as NDJSON (or Parquet when
pyarrow is installed), for analysts who rebuild reports elsewhere."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def event_feed(container: Any) -> Any:
    from application.event_feed import EventFeed

    return EventFeed([container.campaigns, container.calls], container.views["reports"].organizations_of)


def cmd_events_export(args: argparse.Namespace) -> int:
    from application.event_feed import Cursor
    from domain.timeparse import parse_instant
    from infrastructure.bootstrap import Container

    since = parse_instant(args.since, "--since") if args.since else None
    until = parse_instant(args.until, "--until") if args.until else None
    types = [t for t in (args.type or []) for t in t.split(",") if t]
    container = Container()
    try:
        feed = event_feed(container)
        cursor = Cursor.parse(args.cursor, len(feed.apps))
        records = (record for record, _ in feed.read(args.org, cursor, since=since, until=until, types=types))
        out = open(args.output, "w" if args.format == "ndjson" else "wb") if args.output else None  # noqa: SIM115
        try:
            if args.format == "ndjson":
                stream = out or sys.stdout
                n = 0
                for n, record in enumerate(records, 1):
                    stream.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
            else:
                n = _parquet(records, out or sys.stdout.buffer)
        finally:
            if out is not None:
                out.close()
        print(json.dumps({"organizationId": args.org, "events": n}), file=sys.stderr)
    finally:
        container.close()
    return 0


def _parquet(records: Any, sink: Any) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("--format parquet needs pyarrow (pip install pyarrow); ndjson needs nothing") from None
    rows = []
    for r in records:
        rows.append({**{k: r[k] for k in ("application", "position", "type", "streamId", "version", "timestamp", "organizationId")},
                     "meta": json.dumps(r["meta"], default=str), "data": json.dumps(r["data"], default=str)})  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return len(rows)


def add_events_commands(sub: Any) -> None:
    events = sub.add_parser("events", help="the event log").add_subparsers(dest="events_command", required=True)
    ex = events.add_parser("export", help="export one organization's events")
    ex.add_argument("--org", required=True, help="organization id")
    ex.add_argument("--since", help="ISO instant: events at or after it")
    ex.add_argument("--until", help="ISO instant: events before it")
    ex.add_argument("--type", action="append", help="event type, e.g. Call.AttemptEnded or AttemptEnded (repeatable)")
    ex.add_argument("--cursor", help="resume after this cursor (from GET /api/events)")
    ex.add_argument("--format", choices=("ndjson", "parquet"), default="ndjson")
    ex.add_argument("--output", "-o", help="file to write (default: standard output)")
    ex.set_defaults(func=cmd_events_export)
