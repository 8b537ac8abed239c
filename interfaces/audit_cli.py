"""``gomobile audit``: verify the hash chains, write and check signed exports (issue 7)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from uuid import UUID


def _container() -> Any:
    from infrastructure.bootstrap import Container

    return Container()


def _uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ValueError(f"{what} must be a UUID, not {value!r}") from None


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Recompute every chain (or one organization's) against the stored events; exit 1
    naming each altered, inserted, deleted or reordered event."""
    from infrastructure.audit import AuditTrail

    org = _uuid(args.org, "--org") if args.org else None
    container = _container()
    try:
        reports = AuditTrail(container).verify(org)
    finally:
        container.close()
    if not reports:
        print(
            "audit verify: no application keeps an audit chain (GOMOBILE_AUDIT_CHAIN=off?)",
            file=sys.stderr,
        )
        return 2
    problems = sum(len(r.problems) for r in reports)
    if args.json:
        print(
            json.dumps(
                {"ok": problems == 0, "applications": [r.as_dict() for r in reports]}, indent=2
            )
        )
    else:
        for r in reports:
            print(
                f"{r.application}: {r.events_checked} events checked against {r.chain_rows} chain rows; "
                f"the chain started after notification {r.started_after}"
                + (f" ({r.not_covered} older events are not covered)" if r.not_covered else "")
            )
            for p in r.problems:
                print(f"  {p}")
        print("audit verify: OK" if problems == 0 else f"audit verify: {problems} problem(s) found")
    return 0 if problems == 0 else 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    from infrastructure.audit import AuditTrail

    container = _container()
    try:
        stream_id = _uuid(
            args.contact or args.execution, "--contact" if args.contact else "--execution"
        )
        if args.org:
            org = _uuid(args.org, "--org")
        else:  # an operator's export: the stream names its organization
            from eventsourcing.application import AggregateNotFoundError

            try:
                org = container.campaigns.repository.get(stream_id).organization_id
            except (AggregateNotFoundError, AttributeError):
                raise ValueError(f"no contact or execution {stream_id}") from None
        doc = AuditTrail(container).export(
            org,
            contact_id=str(stream_id) if args.contact else None,
            execution_id=str(stream_id) if args.execution else None,
        )
    finally:
        container.close()
    text = json.dumps(doc, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


def cmd_audit_verify_export(args: argparse.Namespace) -> int:
    from application.audit_export import ExportInvalid, verify_export

    try:
        payload = verify_export(Path(args.file).read_bytes(), Path(args.public_key).read_bytes())
    except ExportInvalid as exc:
        print(f"audit verify-export: INVALID: {exc}", file=sys.stderr)
        return 1
    subject = payload["subject"]
    print(
        f"audit verify-export: OK: {subject['type']} {subject['id']} of organization {payload['organizationId']}, "
        f"{len(payload['events'])} events ({payload['eventsNotChained']} from before the chain), "
        f"{len(payload['chain'])} chain rows, generated {payload['generatedAt']}"
    )
    return 0


def cmd_audit_public_key(args: argparse.Namespace) -> int:
    from application.audit_export import public_key_pem
    from infrastructure.settings import Settings

    sys.stdout.write(public_key_pem(Settings().audit_private_key_pem()).decode())
    return 0


def add_audit_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the tamper-evident audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    v = audit.add_parser(
        "verify", help="check the hash chains against the stored events (exit 1 on any problem)"
    )
    v.add_argument("--org", help="only this organization's chain and events")
    v.add_argument("--json", action="store_true", help="a JSON report")
    v.set_defaults(func=cmd_audit_verify)
    e = audit.add_parser(
        "export", help="a signed JSON export of a contact's or an execution's events"
    )
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--contact")
    which.add_argument("--execution")
    e.add_argument("--org", help="the organization (default: the stream's own)")
    e.add_argument("--out", help="write to this file instead of standard output")
    e.set_defaults(func=cmd_audit_export)
    ve = audit.add_parser(
        "verify-export", help="check a signed export with the platform's public key"
    )
    ve.add_argument("file")
    ve.add_argument(
        "--public-key",
        required=True,
        help="PEM file (GET /api/audit/public-key, or gomobile audit public-key)",
    )
    ve.set_defaults(func=cmd_audit_verify_export)
    audit.add_parser("public-key", help="print the export-signing public key (PEM)").set_defaults(
        func=cmd_audit_public_key
    )
