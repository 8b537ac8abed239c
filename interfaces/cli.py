"""The ``gomobile`` command: run the platform (all in one, or one process per role),
manage organizations, and operate read models."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("gomobile")


def _container(**kw: Any) -> Any:
    from infrastructure.bootstrap import Container

    return Container(**kw)


def _serve_api(container: Any) -> None:
    import uvicorn

    from interfaces.http.app import create_app

    s = container.settings
    _setup_logging()  # again: the sandbox's app (in this process) replaced the handlers
    uvicorn.run(create_app(container), host=s.host, port=s.port, log_level="warning", access_log=False, log_config=None)


def _setup_logging() -> None:
    """JSON log lines with request and correlation ids (infrastructure.logs)."""
    from infrastructure.logs import configure_logging

    configure_logging(os.environ.get("GOMOBILE_LOG_LEVEL", "WARNING"))


def _sandbox_config(settings: Any) -> Any:
    from infrastructure.telephony.sandbox.app import SandboxConfig

    return SandboxConfig(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        time_scale=settings.sandbox_time_scale,
        public_base_url=settings.sandbox_url,
    )


def _wait_for_signal() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()


def cmd_run(args: argparse.Namespace) -> int:
    """Everything in one process on the embedded default."""
    from infrastructure.settings import Settings

    settings = Settings()
    sandbox = None
    if settings.telephony == "sandbox" and not os.environ.get("GOMOBILE_SANDBOX_URL"):
        from infrastructure.telephony.sandbox.server import run_sandbox_in_thread

        sandbox = run_sandbox_in_thread(_sandbox_config(settings), "127.0.0.1", settings.sandbox_port)
    container = _container(settings=settings)
    container.start_projections()
    container.start_worker()
    container.start_dispatcher()
    creds = _demo_credentials(container)
    backend = "PostgreSQL" if settings.uses_postgres else f"SQLite under {settings.data_dir.resolve()}"
    print(f"Gomobile platform (embedded): event store on {backend}", flush=True)
    print(f"  API base URL:  http://{settings.host}:{settings.port}/api", flush=True)
    print(f"  OpenAPI docs:  http://{settings.host}:{settings.port}/docs", flush=True)
    if sandbox is not None:
        print(f"  Phone network: Twilio-compatible sandbox at {sandbox.base_url}", flush=True)
    print(f"  Demo organization {creds['organizationId']}, admin API key: {creds['apiKey']}", flush=True)
    try:
        _serve_api(container)
    finally:
        container.close()
        if sandbox is not None:
            sandbox.stop()
    return 0


def _demo_credentials(container: Any) -> dict[str, str]:
    path = Path(container.settings.data_dir) / "demo-credentials.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    org_id, key = container.campaigns.create_organization("Demo Organization")
    creds = {"organizationId": str(org_id), "apiKey": key}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds))
    path.chmod(0o600)
    return creds


def cmd_api(args: argparse.Namespace) -> int:
    workers = getattr(args, "workers", 1) or 1
    if workers > 1:
        # Several processes, each with its own container (PostgreSQL + Redis are shared).
        import uvicorn

        from infrastructure.settings import Settings

        s = Settings()
        if not s.uses_postgres:
            print("gomobile: --workers needs GOMOBILE_DATABASE_URL (the embedded store is one process)", file=sys.stderr)
            return 2
        uvicorn.run("interfaces.http.asgi:app", host=s.host, port=s.port, workers=workers, log_level="warning", access_log=False, log_config=None)
        return 0
    container = _container()
    try:
        _serve_api(container)
    finally:
        container.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    container = _container()
    container.start_worker()
    print("worker started", flush=True)
    _wait_for_signal()
    container.close()
    return 0


def cmd_dispatcher(args: argparse.Namespace) -> int:
    container = _container()
    container.start_dispatcher()
    print("dispatcher started", flush=True)
    _wait_for_signal()
    container.close()
    return 0


def cmd_projector(args: argparse.Namespace) -> int:
    container = _container()
    container.start_projections()
    print("projector started", flush=True)
    _wait_for_signal()
    container.close()
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from infrastructure.settings import Settings
    from infrastructure.telephony.sandbox.server import serve

    settings = Settings()
    serve(_sandbox_config(settings), args.host, args.port or settings.sandbox_port)
    return 0


def cmd_org_create(args: argparse.Namespace) -> int:
    container = _container()
    try:
        org_id, key = container.campaigns.create_organization(args.name, args.country, args.timezone)
    finally:
        container.close()
    print(json.dumps({"organizationId": str(org_id), "apiKey": key}))
    return 0


def cmd_projections_rebuild(args: argparse.Namespace) -> int:
    container = _container()
    try:
        if args.name not in container.views:
            print(f"unknown read model '{args.name}' (known: {', '.join(container.views)})", file=sys.stderr)
            return 2
        runner = container.runner(args.name)
        processes = args.processes or ((os.cpu_count() or 1) if container.settings.uses_postgres else 1)
        # Safe while the projector runs: it holds off this read model until the rebuild ends.
        total = runner.rebuild(
            lambda n: print(f"\r{args.name}: {n} events applied", end="", file=sys.stderr, flush=True),
            processes=processes,
        )
        print(file=sys.stderr)
        print(json.dumps({"projection": args.name, "eventsApplied": total}))
    finally:
        container.close()
    return 0


def cmd_projections_status(args: argparse.Namespace) -> int:
    container = _container()
    try:
        out = []
        for name in container.views:
            runner = container.runner(name)
            out.append(
                {
                    "projection": name,
                    "positions": {a.name: runner.position(a) for a in runner.upstreams},
                    "lag": runner.lag(),
                    "rebuilding": runner.view.rebuilding(),  # a rebuild holds it (the projector waits)
                }
            )
        print(json.dumps(out, indent=2))
    finally:
        container.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gomobile", description="Automated outbound voice campaigns")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run everything in one process (embedded default)").set_defaults(func=cmd_run)
    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--workers", type=int, default=int(os.environ.get("GOMOBILE_API_WORKERS", "1")), help="server processes (PostgreSQL only)")
    api.set_defaults(func=cmd_api)
    sub.add_parser("worker", help="run a Dramatiq dial worker").set_defaults(func=cmd_worker)
    sub.add_parser("dispatcher", help="run the dispatcher").set_defaults(func=cmd_dispatcher)
    sub.add_parser("projector", help="run the read-model projections").set_defaults(func=cmd_projector)
    sb = sub.add_parser("sandbox", help="run the Twilio-compatible sandbox")
    sb.add_argument("--host", default="127.0.0.1")
    sb.add_argument("--port", type=int, default=0)
    sb.set_defaults(func=cmd_sandbox)
    org = sub.add_parser("org", help="organizations").add_subparsers(dest="org_command", required=True)
    oc = org.add_parser("create", help="create an organization and print its admin API key")
    oc.add_argument("name")
    oc.add_argument("--country", default="MA")
    oc.add_argument("--timezone", default="Africa/Casablanca")
    oc.set_defaults(func=cmd_org_create)
    proj = sub.add_parser("projections", help="read models").add_subparsers(dest="proj_command", required=True)
    rb = proj.add_parser("rebuild", help="drop a read model and rebuild it from the events (a running projector holds off this read model until it is done)")
    rb.add_argument("name")
    rb.add_argument("--processes", type=int, default=0,
                    help="processes sharing the replay (PostgreSQL; default: one per core)")  # fmt: skip
    rb.set_defaults(func=cmd_projections_rebuild)
    proj.add_parser("status", help="each read model's position and lag").set_defaults(func=cmd_projections_status)
    from interfaces.contacts_cli import add_contacts_commands

    add_contacts_commands(sub)
    from interfaces.flows_cli import add_flows_commands

    add_flows_commands(sub)
    from interfaces.events_cli import add_events_commands

    add_events_commands(sub)
    from interfaces.audit_cli import add_audit_commands

    add_audit_commands(sub)  # issue 7: audit verify, export, verify-export
    from interfaces.keys_cli import add_keys_commands

    add_keys_commands(sub)  # issue 7: keys issue, list, rotate, revoke
    return p


BATCH_COMMANDS = frozenset({"cmd_contacts_import", "cmd_projections_rebuild", "cmd_projector"})


def main(argv: list[str] | None = None) -> int:
    from infrastructure.gc_tuning import tune_gc

    _setup_logging()
    args = build_parser().parse_args(argv)
    if argv is None and getattr(args.func, "__name__", "") in BATCH_COMMANDS:  # a process of its own
        tune_gc()
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # a clear message, not a traceback, for operator errors
        from domain.errors import DomainError

        if isinstance(exc, (DomainError, ValueError)):
            print(f"gomobile: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
