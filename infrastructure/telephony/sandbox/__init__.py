"""Twilio-compatible phone network sandbox (see ``app.py`` and ``callee.py``)."""

from .app import Sandbox, SandboxConfig, create_sandbox_app
from .http_client import SandboxHttpClient
from .server import SandboxServer, run_sandbox_in_thread, serve

__all__ = [
    "Sandbox",
    "SandboxConfig",
    "SandboxHttpClient",
    "SandboxServer",
    "create_sandbox_app",
    "run_sandbox_in_thread",
    "serve",
]
