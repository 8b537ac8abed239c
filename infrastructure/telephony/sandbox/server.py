"""Run the phone network sandbox: embedded (daemon thread) or standalone (blocking)."""

from __future__ import annotations

import threading
import time
from typing import Self

import httpx
import uvicorn

from .app import Sandbox, SandboxConfig, create_sandbox_app


class SandboxServer:
    """Handle of a sandbox running in a daemon thread (see :func:`run_sandbox_in_thread`)."""

    def __init__(self, config: SandboxConfig, host: str, port: int):
        self.config = config
        self.host = host
        self.sandbox = Sandbox(config)
        self.app = create_sandbox_app(config, sandbox=self.sandbox)
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, host=host, port=port, log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(
            target=self._server.run, name=f"twilio-sandbox-{port}", daemon=True
        )
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, ready_timeout: float = 10.0) -> SandboxServer:
        self._thread.start()
        self.wait_until_ready(ready_timeout)
        return self

    def wait_until_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"sandbox failed to start on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"sandbox not ready after {timeout}s")
            time.sleep(0.01)
        if self.port == 0:  # learn the port the OS picked
            for server in self._server.servers:
                for sock in server.sockets:
                    self.port = sock.getsockname()[1]
                    break
        if self.config.public_base_url == SandboxConfig.public_base_url:
            self.config.public_base_url = self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    # -- convenience for tests / tooling (go through HTTP, thread-safe) ---
    def calls(self) -> list[dict]:
        return httpx.get(f"{self.base_url}/_sandbox/calls", timeout=10).json()

    def call(self, sid: str) -> dict:
        return httpx.get(f"{self.base_url}/_sandbox/calls/{sid}", timeout=10).json()

    def wait_for_call(self, sid: str, timeout: float = 10.0) -> dict:
        """Block until the call has ended and all its callbacks were delivered."""
        deadline = time.monotonic() + timeout
        while True:
            report = self.call(sid)
            if report.get("finished"):
                return report
            if time.monotonic() > deadline:
                raise TimeoutError(f"call {sid} not finished after {timeout}s: {report}")
            time.sleep(0.02)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_sandbox_in_thread(
    config: SandboxConfig, host: str = "127.0.0.1", port: int = 8089, ready_timeout: float = 10.0
) -> SandboxServer:
    """Start the sandbox in a daemon thread; returns once it accepts connections.

    ``port=0`` picks a free port (see ``handle.port`` / ``handle.base_url``).
    Stop it with ``handle.stop()`` (or use the handle as a context manager).
    """
    return SandboxServer(config, host, port).start(ready_timeout)


def serve(config: SandboxConfig, host: str = "127.0.0.1", port: int = 8089) -> None:
    """Run the sandbox in the foreground until interrupted (for ``gomobile sandbox``)."""
    if config.public_base_url == SandboxConfig.public_base_url:
        config.public_base_url = f"http://{host}:{port}"
    # No access log: a line per request was a tenth of the sandbox's CPU under load.
    uvicorn.run(create_sandbox_app(config), host=host, port=port, log_level="info", access_log=False)
