"""Start the whole platform in-process for tests: the real API server (uvicorn), the
sandbox phone network, Dramatiq worker, dispatcher and projections, on a fresh store."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from infrastructure.bootstrap import Container
from infrastructure.clock import OffsetClock
from infrastructure.settings import Settings
from infrastructure.telephony.sandbox.app import SandboxConfig
from infrastructure.telephony.sandbox.server import SandboxServer, run_sandbox_in_thread
from interfaces.http.app import create_app

# Tests poll the API faster than a client may: no rate limit unless a test sets one
# (tests/e2e/test_safe_commands.py) before it creates its platform.
os.environ.setdefault("GOMOBILE_RATE_LIMIT_PER_MINUTE", "0")

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token"


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port free now, for a server started a moment later (a subprocess, which cannot be
    handed a bound socket). Taken below the kernel's ephemeral range: no connection's local
    port and no other ``bind(0)`` can take it in between, as CI once saw happen."""
    low, _ = _ephemeral_ports()
    if low > 20_000 + 100:
        for port in random.sample(range(20_000, low), 50):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Platform:
    def __init__(self, data_dir: Path, *, database_url: str = "", redis_url: str = "", redis_namespace: str = "gomobile-test", time_scale: float = 0.01, start_dispatcher: bool = True) -> None:
        # The API's socket is bound now and handed to uvicorn: a port only looked up here
        # and bound seconds later (after the sandbox, the stores' connections and the
        # worker) could be taken meanwhile, by another bind or a connection's local port.
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.clock = OffsetClock()
        self.sandbox: SandboxServer = run_sandbox_in_thread(
            SandboxConfig(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, time_scale=time_scale), "127.0.0.1", 0
        )
        self.settings = Settings(
            data_dir=data_dir,
            database_url=database_url,
            redis_url=redis_url,
            redis_namespace=redis_namespace,
            telephony="sandbox",
            twilio_account_sid=ACCOUNT_SID,
            twilio_auth_token=AUTH_TOKEN,
            host="127.0.0.1",
            port=self.port,
            public_base_url=f"http://127.0.0.1:{self.port}",
            sandbox_url=self.sandbox.base_url,
            worker_threads=4,
            dispatch_interval=0.05,
            projection_interval=0.02,
            reconcile_after=5.0,
        )
        self.container = Container(self.settings, clock=self.clock)
        self.container.start_projections()
        self.container.start_worker()
        if start_dispatcher:
            self.container.start_dispatcher()
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.container), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("API server did not start")
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def client(self, api_key: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"x-api-key": api_key}, timeout=30)

    def new_org(self, name: str = "Test Org") -> tuple[str, str]:
        org_id, key = self.container.campaigns.create_organization(name)
        return str(org_id), key

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self._socket.close()
        self.container.close()
        self.sandbox.stop()


def wait_for(
    predicate: Any, timeout: float = 30.0, interval: float = 0.05, what: str = "condition", until: Any = None
) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; with ``until``,
    poll until ``until(value)`` holds and return the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if (value if until is None else until(value)):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)
