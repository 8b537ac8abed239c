"""``gomobile keys issue|list|rotate|revoke --org ID``: an organization's API keys from the
operator's shell, as the same events the API's /api/keys writes (actor ``cli``)."""

from __future__ import annotations

import argparse
import json
from typing import Any
from uuid import UUID

from domain.organization import ROLES


def _run(args: argparse.Namespace, action: Any) -> int:
    from application.keys import ApiKeys
    from domain.base import audit_context
    from infrastructure.bootstrap import Container

    try:
        org = UUID(args.org)
    except ValueError:
        raise ValueError(f"--org must be a UUID, not {args.org!r}") from None
    container = Container()
    try:
        with audit_context(actor="cli", organizationId=str(org)):
            out = action(ApiKeys(container.campaigns), org)
    finally:
        container.close()
    print(json.dumps(out, indent=2))
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    return _run(args, lambda keys, org: keys.list(org))


def cmd_keys_issue(args: argparse.Namespace) -> int:
    data: dict[str, Any] = {"role": args.role}
    for field, value in (
        ("name", args.name),
        ("prefix", args.prefix),
        ("expiresAt", args.expires_at),
    ):
        if value is not None:
            data[field] = value
    return _run(args, lambda keys, org: keys.issue(org, data))


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    data = (
        {"expiresAt": None if args.expires_at in ("", "never") else args.expires_at}
        if args.expires_at is not None
        else {}
    )
    return _run(args, lambda keys, org: keys.rotate(org, args.key_id, data))


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    return _run(args, lambda keys, org: keys.revoke(org, args.key_id))


def add_keys_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="an organization's API keys").add_subparsers(
        dest="keys_command", required=True
    )
    ls = keys.add_parser("list", help="the organization's keys (never their secrets)")
    ls.set_defaults(func=cmd_keys_list)
    issue = keys.add_parser("issue", help="issue a key and print it (shown once)")
    issue.add_argument("--role", required=True, choices=ROLES)
    issue.add_argument("--name")
    issue.add_argument("--prefix", help="the key's prefix, e.g. prod or dev (default gm)")
    issue.add_argument("--expires-at", help="ISO 8601 instant after which the key answers 401")
    issue.set_defaults(func=cmd_keys_issue)
    rotate = keys.add_parser(
        "rotate", help="a new secret for a key (the old one stops working); print it"
    )
    rotate.add_argument("key_id")
    rotate.add_argument("--expires-at", help="a new expiry ('never' for none); kept otherwise")
    rotate.set_defaults(func=cmd_keys_rotate)
    revoke = keys.add_parser("revoke", help="revoke a key: it answers 401 from now on")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)
    for p in (ls, issue, rotate, revoke):
        p.add_argument("--org", required=True, help="the organization's id")
