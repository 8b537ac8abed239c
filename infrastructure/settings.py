"""Settings, from environment variables only (documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Callable
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
    # How long an idle Dramatiq consumer waits at most between two fetches (it backs off up
    # to that while its queue is empty). On Redis each fetch is a script call, and a worker
    # consumes six queues (three and their delay queues): at 100 ms an idle worker took
    # 4.5% of a core, and four workers cost a quarter more worker CPU a call than at 500 ms
    # (docs/PERFORMANCE.md, session 15). The embedded broker's consumers block on their
    # queue instead: 100 ms there.
    worker_poll_ms: int = field(default_factory=lambda: int(_env("GOMOBILE_WORKER_POLL_MS", "0")))
    # Threads an API process runs Twilio's callbacks in (interfaces/http/handoff.py). They
    # wait on PostgreSQL, so they bound the callbacks in flight and the size of the shared
    # commits: asyncio's default executor, min(32, cores + 4), is 6 here, and 16 gave a
    # quarter more completed calls a second (docs/PERFORMANCE.md, session 15).
    api_threads: int = field(default_factory=lambda: int(_env("GOMOBILE_API_THREADS", "16")))
    # Dial jobs the dispatcher sends in one message (Dialer.dial_many): one load, one
    # claim save and one state read for them all. 1 sends a message a call.
    dial_batch: int = field(default_factory=lambda: int(_env("GOMOBILE_DIAL_BATCH", "8")))
    pool_size: int = field(default_factory=lambda: int(_env("GOMOBILE_POSTGRES_POOL_SIZE", "1")))
    pool_max_overflow: int = field(default_factory=lambda: int(_env("GOMOBILE_POSTGRES_MAX_OVERFLOW", "5")))
    reconcile_after: float = field(default_factory=lambda: float(_env("GOMOBILE_RECONCILE_AFTER", "120")))
    clock_offset_file: str = field(default_factory=lambda: _env("GOMOBILE_CLOCK_OFFSET_FILE"))
    dispatch_interval: float = field(default_factory=lambda: float(_env("GOMOBILE_DISPATCH_INTERVAL", "0.1")))
    # How often a log's head is read for the runners (projections/runner.py HeadWatch): also
    # how many events a round gathers under load. 0.25 s: about half the projector's CPU
    # a call of 0.1 s and a tenth less PostgreSQL's, for a lag p99 of ~415 ms instead of
    # ~225 ms under full load (issue 6's bound is 1 s; docs/PERFORMANCE.md).
    projection_interval: float = field(default_factory=lambda: float(_env("GOMOBILE_PROJECTION_INTERVAL", "0.25")))
    # Signs the playback URLs of uploaded audio; unset: derived from the Twilio auth token.
    media_signing_key: str = field(default_factory=lambda: _env("GOMOBILE_MEDIA_SIGNING_KEY"))
    # The audit trail (issue 7): the chain's HMAC key and the exports' Ed25519 private key
    # (PEM). Unset: generated once into the data dir (set them on multi-host deployments).
    audit_key: str = field(default_factory=lambda: _env("GOMOBILE_AUDIT_KEY"))
    audit_signing_key: str = field(default_factory=lambda: _env("GOMOBILE_AUDIT_SIGNING_KEY"))
    audit_chain: bool = field(default_factory=lambda: _env("GOMOBILE_AUDIT_CHAIN", "on").lower() not in ("off", "0", "false"))
    # Contacts' personal data encrypted at rest, a key per contact (infrastructure/privacy.py).
    contact_encryption: bool = field(default_factory=lambda: _env("GOMOBILE_CONTACT_ENCRYPTION", "on").lower() not in ("off", "0", "false"))
    key_cache_seconds: float = field(default_factory=lambda: float(_env("GOMOBILE_KEY_CACHE_SECONDS", "30")))

    def __post_init__(self) -> None:
        if not self.public_base_url:
            self.public_base_url = f"http://{self.host}:{self.port}"
        self.public_base_url = self.public_base_url.rstrip("/")
        if not self.sandbox_url:
            self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        if self.telephony not in ("sandbox", "twilio"):
            raise ValueError("GOMOBILE_TELEPHONY must be 'sandbox' or 'twilio'")
        if not self.worker_poll_ms:
            self.worker_poll_ms = 500 if self.redis_url else 100
        if not 10 <= self.worker_poll_ms <= 10_000:
            raise ValueError(f"GOMOBILE_WORKER_POLL_MS must be from 10 to 10000, not {self.worker_poll_ms}")
        if not 1 <= self.api_threads <= 256:
            raise ValueError(f"GOMOBILE_API_THREADS must be from 1 to 256, not {self.api_threads}")
        if not 1 <= self.dial_batch <= 100:
            raise ValueError(f"GOMOBILE_DIAL_BATCH must be from 1 to 100, not {self.dial_batch}")
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("GOMOBILE_DATABASE_URL must be a postgresql:// URL")

    @property
    def uses_postgres(self) -> bool:
        return bool(self.database_url)

    def audit_secret(self) -> bytes:
        """The key of the audit chain's HMACs: GOMOBILE_AUDIT_KEY, else the data dir's."""
        if self.audit_key:
            return self.audit_key.encode()
        return _secret_file(self.data_dir / "audit-chain.key", lambda: os.urandom(32).hex().encode())

    def audit_private_key_pem(self) -> bytes:
        """The Ed25519 key that signs audit exports: GOMOBILE_AUDIT_SIGNING_KEY, else the data dir's."""
        if self.audit_signing_key:
            return self.audit_signing_key.replace("\\n", "\n").encode()
        from application.audit_export import new_private_key_pem

        return _secret_file(self.data_dir / "audit-signing-key.pem", new_private_key_pem)

    def persistence_env(self) -> dict[str, str]:
        """Environment for eventsourcing's infrastructure factories (apps and views)."""
        env = self._persistence_env()
        # The library's JSON format, parsed with msgspec (infrastructure/transcoder.py).
        env["TRANSCODER_TOPIC"] = "infrastructure.transcoder:FastJSONTranscoder"
        if self.audit_chain:
            from infrastructure.audit import recorder_topic

            env["APPLICATION_RECORDER_TOPIC"] = recorder_topic(self.uses_postgres, self.audit_secret())
        if self.contact_encryption:
            from infrastructure.privacy import keystore_env, mapper_topic

            env["MAPPER_TOPIC"] = mapper_topic(keystore_env(env, self.data_dir), self.key_cache_seconds)
        return env

    def _persistence_env(self) -> dict[str, str]:
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
                # resident connections few and let bursts overflow. (Not one a handler
                # thread: 16 API threads each with a connection of the calls pool took
                # the test suite's processes past PostgreSQL's 100 connections. A thread
                # that finds the pool busy waits for a connection, a few milliseconds.)
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


def _secret_file(path: Path, generate: Callable[[], bytes]) -> bytes:
    """A secret kept in a file of the data dir, created (mode 0600) on first use."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    try:
        os.link(tmp, path)  # atomic: a process starting beside us uses whichever came first
    except FileExistsError:
        value = path.read_bytes()
    finally:
        tmp.unlink()
    return value.strip()
