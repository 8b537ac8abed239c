"""``gomobile flows simulate FILE``: run a flow against a scripted callee, placing no call.

FILE holds a graph (``{"startNodeId", "nodes"}``), a flow body (``{"name", "graph"}``) or a
golden fixture (``{"flow", "callee", "contact"}``). ``--inputs`` answers the nodes the call
waits at, in order: ``--inputs 1 - 1234#`` (``-`` is silence); ``--answered-by machine``
(with ``--amd sync`` for a verdict known at the answer) or ``--outcome busy`` change how
the call starts. Prints the path and events as JSON;
exits 2 with every validation error when the flow is invalid."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def cmd_flows_simulate(args: argparse.Namespace) -> int:
    from domain.flows.graph import parse_graph
    from domain.flows.simulator import context_for, simulate

    try:
        data = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as exc:
        print(f"gomobile: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    raw = data.get("graph") or data.get("flow") or data if isinstance(data, dict) else data
    if isinstance(raw, dict) and "graph" in raw:
        raw = raw["graph"]
    graph, issues = parse_graph(raw)
    if issues or graph is None:
        for i in issues:
            where = f"node '{i.node_id}' " if i.node_id else ""
            print(f"gomobile: {args.file}: {where}{i.field}: {i.message}", file=sys.stderr)
        return 2
    callee: dict[str, Any] = dict(data.get("callee") or {}) if isinstance(data, dict) else {}
    if args.inputs is not None:
        callee["inputs"] = [None if v == "-" else v for v in args.inputs]
    if args.answered_by:
        callee["answeredBy"] = args.answered_by
    if args.amd:
        callee["amd"] = args.amd
    if args.outcome:
        callee["outcome"] = args.outcome
    if args.webhooks:
        callee["webhooks"] = json.loads(args.webhooks)
    contact = json.loads(args.contact) if args.contact else (data.get("contact") if isinstance(data, dict) else None)
    run = simulate(graph, callee, context_for(contact))
    out = {k: run[k] for k in ("path", "events", "variables", "hangupReason", "reachedHangup")}
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def add_flows_commands(sub: Any) -> None:
    flows = sub.add_parser("flows", help="call flows").add_subparsers(dest="flows_command", required=True)
    sim = flows.add_parser("simulate", help="run a flow against a scripted callee (no call is placed)")
    sim.add_argument("file")
    sim.add_argument("--inputs", nargs="*", help="one per waiting node: keys, words, seconds recorded, transfer status; '-' = nothing")
    sim.add_argument("--answered-by", choices=("human", "machine"))
    sim.add_argument("--amd", choices=("async", "sync"), help="when a machine is told apart: while the flow runs (default, as over Twilio) or at the answer")
    sim.add_argument("--outcome", choices=("busy", "no_answer", "rejected", "failed"), help="the call is never answered")
    sim.add_argument("--webhooks", help='JSON list of webhook answers, e.g. \'[{"status": 200, "json": {}}]\'')
    sim.add_argument("--contact", help="JSON object of contact fields and customAttributes")
    sim.set_defaults(func=cmd_flows_simulate)
