"""Settings, from environment variables only (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


@dataclass
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(_env("GOMOBILE_DATA_DIR", "var")))
    database_url: str = field(default_factory=lambda: _env("GOMOBILE_DATABASE_URL"))
    redis_url: str = field(default_factory=lambda: _env("GOMOBILE_REDIS_URL"))
    redis_namespace: str = field(default_factory=lambda: _env("GOMOBILE_REDIS_NAMESPACE", "gomobile"))
    telephony: str = field(default_factory=lambda: _env("GOMOBILE_TELEPHONY", "sandbox"))
    twilio_account_sid: str = field(
        default_factory=lambda: _env("TWILIO_ACCOUNT_SID", "AC" + "0" * 30 + "sandbox"[:2])
    )
    twilio_auth_token: str = field(default_factory=lambda: _env("TWILIO_AUTH_TOKEN", "sandbox-auth-token"))
    host: str = field(default_factory=lambda: _env("GOMOBILE_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: int(_env("GOMOBILE_PORT", "8000")))
    public_base_url: str = field(default_factory=lambda: _env("GOMOBILE_PUBLIC_BASE_URL"))
    sandbox_url: str = field(default_factory=lambda: _env("GOMOBILE_SANDBOX_URL"))
    sandbox_port: int = field(default_factory=lambda: int(_env("GOMOBILE_SANDBOX_PORT", "8089")))
    sandbox_time_scale: float = field(default_factory=lambda: float(_env("GOMOBILE_SANDBOX_TIME_SCALE", "0.2")))
    worker_threads: int = field(default_factory=lambda: int(_env("GOMOBILE_WORKER_THREADS", "8")))
    pool_size: int = field(default_factory=lambda: int(_env("GOMOBILE_POSTGRES_POOL_SIZE", "1")))
    pool_max_overflow: int = field(default_factory=lambda: int(_env("GOMOBILE_POSTGRES_MAX_OVERFLOW", "5")))
    reconcile_after: float = field(default_factory=lambda: float(_env("GOMOBILE_RECONCILE_AFTER", "120")))
    clock_offset_file: str = field(default_factory=lambda: _env("GOMOBILE_CLOCK_OFFSET_FILE"))
    dispatch_interval: float = field(default_factory=lambda: float(_env("GOMOBILE_DISPATCH_INTERVAL", "0.1")))
    projection_interval: float = field(default_factory=lambda: float(_env("GOMOBILE_PROJECTION_INTERVAL", "0.05")))
    # Signs the playback URLs of uploaded audio; unset: derived from the Twilio auth token.
    media_signing_key: str = field(default_factory=lambda: _env("GOMOBILE_MEDIA_SIGNING_KEY"))

    def __post_init__(self) -> None:
        if not self.public_base_url:
            self.public_base_url = f"http://{self.host}:{self.port}"
        self.public_base_url = self.public_base_url.rstrip("/")
        if not self.sandbox_url:
            self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        if self.telephony not in ("sandbox", "twilio"):
            raise ValueError("GOMOBILE_TELEPHONY must be 'sandbox' or 'twilio'")
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("GOMOBILE_DATABASE_URL must be a postgresql:// URL")

    @property
    def uses_postgres(self) -> bool:
        return bool(self.database_url)

    def persistence_env(self) -> dict[str, str]:
        """Environment for eventsourcing's infrastructure factories (apps and views)."""
        if self.uses_postgres:
            url = urlparse(self.database_url)
            return {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
                "POSTGRES_HOST": url.hostname or "127.0.0.1",
                "POSTGRES_PORT": str(url.port or 5432),
                "POSTGRES_USER": unquote(url.username or "postgres"),
                "POSTGRES_PASSWORD": unquote(url.password or ""),
                "POSTGRES_POOL_SIZE": str(self.pool_size),
                # Each process holds one pool per application and read model: keep the
                # resident connections few and let bursts overflow.
                "POSTGRES_MAX_OVERFLOW": str(self.pool_max_overflow),
                "POSTGRES_CONNECT_TIMEOUT": "5",
            }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_LOCK_TIMEOUT": "30"}
        # SQLite recorders share one table name per file, so each application and each
        # read model gets its own file.
        for name in ("campaigns", "calls", "progress", "call_history", "directory", "reports"):
            env[f"{name.upper()}_SQLITE_DBNAME"] = str(self.data_dir / f"{name}.sqlite")
        env["ASSETS_SQLITE_DBNAME"] = str(self.data_dir / "assets.sqlite")  # flow assets (issue 4)
        return env
