"""Webhooks to client systems: endpoints registered, listed, rotated and deleted (each an
event on a WebhookEndpoint), and the delivery of one event to one endpoint, signed.

Signature: ``X-Gomobile-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``
under the endpoint's secret (``whsec_...``, shown once, when registered or rotated).
Receivers check the HMAC and that ``t`` is recent (README: "Webhooks to client systems").

Retries are Dramatiq's (the job raises ``DeliveryFailed``); this module records each
attempt in the delivery log and says when the last one has failed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.application import AggregateNotFoundError

from domain.base import now
from domain.errors import NotFound, ValidationError
from domain.timeparse import format_instant
from domain.webhook_endpoint import EVENT_TYPES, WebhookEndpoint

SIGNATURE_HEADER = "X-Gomobile-Signature"
FIELDS = {"url", "events", "description"}


@dataclass(frozen=True)
class WebhookConfig:
    """GOMOBILE_WEBHOOK_MAX_RETRIES (8), GOMOBILE_WEBHOOK_MIN_BACKOFF_MS (10,000: then
    doubling), GOMOBILE_WEBHOOK_MAX_BACKOFF_MS (3,600,000), GOMOBILE_WEBHOOK_TIMEOUT
    (seconds, 5), GOMOBILE_ALLOW_INSECURE_WEBHOOKS (1: http:// to 127.0.0.1/localhost
    accepted, for tests and local development)."""

    max_retries: int = 8
    min_backoff_ms: int = 10_000
    max_backoff_ms: int = 3_600_000
    timeout: float = 5.0
    allow_insecure: bool = False

    @classmethod
    def from_env(cls) -> WebhookConfig:
        def env(name: str, default: str) -> str:
            return os.environ.get(name, "").strip() or default

        return cls(
            max_retries=int(env("GOMOBILE_WEBHOOK_MAX_RETRIES", "8")),
            min_backoff_ms=int(env("GOMOBILE_WEBHOOK_MIN_BACKOFF_MS", "10000")),
            max_backoff_ms=int(env("GOMOBILE_WEBHOOK_MAX_BACKOFF_MS", "3600000")),
            timeout=float(env("GOMOBILE_WEBHOOK_TIMEOUT", "5")),
            allow_insecure=env("GOMOBILE_ALLOW_INSECURE_WEBHOOKS", "0").lower()
            in ("1", "true", "yes", "on"),
        )


# -- signing and sealing ----------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header's value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: str, header: str, body: bytes, tolerance: int = 300, at: float | None = None
) -> bool:
    """What a receiver does (the README shows the same in a few lines)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((at or time.time()) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


class SecretBox:
    """Seals endpoint secrets (AES-GCM) so that the event store, the event feed and audit
    exports never hold them in clear; the key is derived from the platform's audit key,
    which every process shares."""

    def __init__(self, master: bytes) -> None:
        self._aead = AESGCM(hmac.new(master, b"gomobile-webhook-secrets", hashlib.sha256).digest())

    def seal(self, secret: str, endpoint_id: UUID) -> str:
        nonce = os.urandom(12)
        return base64.urlsafe_b64encode(
            nonce + self._aead.encrypt(nonce, secret.encode(), endpoint_id.bytes)
        ).decode()

    def open(self, sealed: str, endpoint_id: UUID) -> str:
        raw = base64.urlsafe_b64decode(sealed.encode())
        return self._aead.decrypt(raw[:12], raw[12:], endpoint_id.bytes).decode()


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


# -- validation -------------------------------------------------------------------------

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def check_url(value: Any, allow_insecure: bool) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 2048:
        raise ValidationError.single(
            "url", "is required: an https:// URL of at most 2048 characters"
        )
    url = value.strip()
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 (a port that is not a number raises here, not at delivery)
    except ValueError:
        raise ValidationError.single("url", "is not a valid URL") from None
    if not host or parts.username or parts.password:
        raise ValidationError.single(
            "url", "must be an absolute https:// URL with a host and no credentials"
        )
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and allow_insecure and host in LOOPBACK_HOSTS:
        return url
    raise ValidationError.single("url", "must use https:// (deliveries carry call data)")


def check_events(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValidationError.single(
            "events", f"must be a non-empty list of event types: {', '.join(EVENT_TYPES)}"
        )
    unknown = [v for v in value if v not in EVENT_TYPES]
    if unknown:
        raise ValidationError.single(
            "events", f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}"
        )
    return list(dict.fromkeys(value))


# -- endpoints --------------------------------------------------------------------------


def endpoint_dto(e: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": str(e.id),
        "organizationId": str(e.organization_id),
        "url": e.url,
        "events": list(e.events),
        "description": e.description,
        "status": "deleted" if e.deleted else "active",
        "secretRotations": e.secret_rotations,
        "createdAt": format_instant(e.created_on),
        "updatedAt": format_instant(e.modified_on),
    }


class ClientWebhooks:
    """Endpoint commands on the campaigns application, and the delivery job's work."""

    def __init__(self, campaigns: Any, view: Any, box: SecretBox, config: WebhookConfig | None = None,
                 post: Callable[..., Any] | None = None) -> None:  # fmt: skip
        self.campaigns = campaigns
        self.view = view
        self.box = box
        self.config = config or WebhookConfig.from_env()
        self.post = post

    @classmethod
    def for_container(cls, container: Any) -> ClientWebhooks:
        from infrastructure.jobs import post_webhook

        return cls(
            container.campaigns,
            container.views["client_webhooks"],
            SecretBox(container.settings.audit_secret()),
            post=post_webhook,
        )

    def _endpoint(self, organization_id: UUID, endpoint_id: UUID | str) -> WebhookEndpoint:
        try:
            e = self.campaigns.repository.get(UUID(str(endpoint_id)))
        except (AggregateNotFoundError, ValueError):
            raise NotFound("Webhook endpoint not found") from None
        if not isinstance(e, WebhookEndpoint) or e.organization_id != organization_id or e.deleted:
            raise NotFound("Webhook endpoint not found")
        return e

    def register(self, organization_id: UUID, data: dict[str, Any]) -> dict[str, Any]:
        """``{url, events, description?}`` → the endpoint, with ``secret`` (shown once)."""
        unknown = sorted(set(data) - FIELDS)
        if unknown:
            raise ValidationError(
                f"Unknown field(s): {', '.join(unknown)}", {k: ["unknown field"] for k in unknown}
            )
        url = check_url(data.get("url"), self.config.allow_insecure)
        events = check_events(data.get("events"))
        description = data.get("description") or ""
        if not isinstance(description, str) or len(description) > 500:
            raise ValidationError.single("description", "must be a text of at most 500 characters")
        endpoint_id = uuid4()
        secret = new_secret()
        # The id is chosen first: the sealed secret is bound to it.
        e = WebhookEndpoint._create(
            WebhookEndpoint.Created, id=endpoint_id, organization_id=organization_id, url=url,
            events=events, description=description, sealed_secret=self.box.seal(secret, endpoint_id),
        )  # fmt: skip
        self.campaigns.save(e)
        return {**endpoint_dto(e), "secret": secret}

    def list(self, organization_id: UUID) -> list[dict[str, Any]]:
        ids = [r["id"] for r in self.view.rows(
            "SELECT id FROM webhook_endpoints WHERE organization_id = ? AND active = 1 ORDER BY created_at", (str(organization_id),)
        )]  # fmt: skip
        out = []
        for i in ids:
            try:
                out.append(endpoint_dto(self._endpoint(organization_id, i)))
            except NotFound:
                continue  # deleted since the view last moved
        return out

    def get(self, organization_id: UUID, endpoint_id: str) -> dict[str, Any]:
        return endpoint_dto(self._endpoint(organization_id, endpoint_id))

    def rotate_secret(self, organization_id: UUID, endpoint_id: str) -> dict[str, Any]:
        e = self._endpoint(organization_id, endpoint_id)
        secret = new_secret()
        e.rotate_secret(self.box.seal(secret, e.id))
        self.campaigns.save(e)
        return {**endpoint_dto(e), "secret": secret}

    def delete(self, organization_id: UUID, endpoint_id: str) -> dict[str, Any]:
        e = self._endpoint(organization_id, endpoint_id)
        e.delete()
        self.campaigns.save(e)
        return endpoint_dto(e)

    def deliveries(
        self, organization_id: UUID, endpoint_id: str, page: int, limit: int, status: str | None
    ) -> tuple[list[dict[str, Any]], int]:
        self._endpoint(organization_id, endpoint_id)
        rows, total = self.view.deliveries(str(endpoint_id), page, limit, status)
        return [delivery_dto(r) for r in rows], total

    # -- the job ------------------------------------------------------------------------

    def deliver(self, did: str) -> str:
        """One attempt at delivery ``did``; raises ``DeliveryFailed`` for Dramatiq to retry.
        Idempotent: a delivered, failed or cancelled delivery is left alone."""
        row = self.view.delivery(did)
        if row is None:
            raise DeliveryFailed(
                f"delivery {did} is not recorded yet"
            )  # its batch has not committed
        if row["status"] in ("delivered", "failed", "cancelled"):
            return row["status"]
        started = now()
        claimed = self.view.claim(
            did,
            format_instant(started),
            format_instant(started + timedelta(seconds=self.config.timeout * 4 + 30)),
        )
        if claimed is None:
            # Another job of this delivery is sending it (a redelivered or re-sent copy):
            # look again later, when it has finished or its claim has lapsed.
            if (self.view.delivery(did) or {}).get("status") in (
                "delivered",
                "failed",
                "cancelled",
            ):
                return "finished elsewhere"
            raise DeliveryFailed(f"delivery {did} is being sent by another job")
        try:
            e = self.campaigns.repository.get(UUID(claimed["endpoint_id"]))
        except AggregateNotFoundError:
            e = None
        if e is None or e.deleted:
            self.view.cancel(did, format_instant(now()), "the endpoint was deleted")
            return "cancelled"
        body = claimed["payload"].encode()
        try:
            secret = self.box.open(e.sealed_secret, e.id)
        except Exception:  # noqa: BLE001 (InvalidTag: sealed under another key)
            why = "the endpoint's secret cannot be opened (was GOMOBILE_AUDIT_KEY changed?): rotate it"
            self.view.record_attempt(
                did, int(claimed["attempts"]) + 1, format_instant(now()), "failed", None, why, 0
            )
            return "failed"
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Gomobile-Webhooks/1.0",
            "X-Gomobile-Event": claimed["event_type"],
            "X-Gomobile-Delivery": did,
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
        }
        attempt = int(claimed["attempts"]) + 1
        t0 = time.monotonic()
        assert self.post is not None, "no HTTP client wired"
        code, error = self.post(e.url, body, headers, self.config.timeout)
        ms = int((time.monotonic() - t0) * 1000)
        if code is not None and 200 <= code < 300:
            self.view.record_attempt(
                did, attempt, format_instant(now()), "delivered", code, None, ms
            )
            return "delivered"
        error = error or f"HTTP {code}"
        last = attempt > self.config.max_retries
        self.view.record_attempt(
            did, attempt, format_instant(now()), "failed" if last else "retrying", code, error, ms
        )
        if last:
            return "failed"
        raise DeliveryFailed(f"delivery {did} attempt {attempt}: {error}")


class DeliveryFailed(Exception):
    """Retried by Dramatiq with backoff."""


class WebhookPoster(Protocol):
    def __call__(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int | None, str | None]: ...


def delivery_dto(r: dict[str, Any]) -> dict[str, Any]:
    payload = json.loads(r["payload"])
    return {
        "id": r["id"],
        "endpointId": r["endpoint_id"],
        "event": r["event_type"],
        "status": r["status"],
        "attempts": r["attempts"],
        "lastResponseCode": r["last_status_code"],
        "lastError": r["last_error"],
        "createdAt": r["created_at"],
        "updatedAt": r["updated_at"],
        "deliveredAt": r["delivered_at"],
        "payload": payload,
        "attemptLog": [
            {
                "attempt": a["attempt"],
                "at": a["at"],
                "responseCode": a["status_code"],
                "error": a["error"],
                "durationMs": a["duration_ms"],
            }
            for a in r.get("attempt_log", [])
        ],
    }
