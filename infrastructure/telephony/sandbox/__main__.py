"""``python -m infrastructure.telephony.sandbox`` runs the sandbox in the foreground.

Options default to the environment: ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``,
``SANDBOX_HOST`` (127.0.0.1), ``SANDBOX_PORT`` (8089), ``SANDBOX_TIME_SCALE`` (1.0).
``--scripts FILE`` loads ``{"+number": script, ...}`` (see ``callee.py``).
"""

from __future__ import annotations

import argparse
import json
import os

from .app import SandboxConfig
from .server import serve


def main(argv: list[str] | None = None) -> None:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="sandbox", description="Twilio-compatible phone network sandbox")
    p.add_argument("--account-sid", default=env("TWILIO_ACCOUNT_SID", "AC" + "0" * 32))
    p.add_argument("--auth-token", default=env("TWILIO_AUTH_TOKEN", "sandbox-auth-token"))
    p.add_argument("--host", default=env("SANDBOX_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("SANDBOX_PORT", "8089")))
    p.add_argument("--time-scale", type=float, default=float(env("SANDBOX_TIME_SCALE", "1.0")))
    p.add_argument("--ring-seconds", type=float, default=2.0)
    p.add_argument("--webhook-timeout", type=float, default=10.0)
    p.add_argument("--scripts", help="JSON file mapping numbers to callee scripts")
    args = p.parse_args(argv)
    scripts = {}
    if args.scripts:
        with open(args.scripts, encoding="utf-8") as fh:
            scripts = json.load(fh)
    config = SandboxConfig(
        account_sid=args.account_sid,
        auth_token=args.auth_token,
        time_scale=args.time_scale,
        ring_seconds=args.ring_seconds,
        webhook_timeout=args.webhook_timeout,
        scripts=scripts,
    )
    serve(config, args.host, args.port)


if __name__ == "__main__":
    main()
