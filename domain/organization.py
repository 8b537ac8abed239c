"""An organization (tenant) and the API keys that act on its behalf."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from domain.base import AuditedAggregate, now

ROLES = ("admin", "manager", "agent", "auditor")
PLANS = ("trial", "free", "basic", "advanced", "enterprise")
# Concurrent calls per plan (DOMAIN.md §2.6); enterprise is "custom": 100 unless set.
PLAN_CONCURRENCY = {"trial": 1, "free": 5, "basic": 20, "advanced": 100, "enterprise": 100}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key(organization_id: UUID, prefix: str = "gm") -> str:
    """A key names its organization (so it is checked against one short stream) and a secret."""
    return f"{prefix}_{organization_id.hex}_{secrets.token_urlsafe(24)}"


KEY_RE = re.compile(r"^(?P<prefix>[A-Za-z0-9]{1,16})_(?P<org>[0-9a-f]{32})_(?P<secret>[A-Za-z0-9_\-]{16,})$")


def organization_of_key(key: str) -> UUID | None:
    m = KEY_RE.match(key)
    return UUID(m.group("org")) if m else None


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "org"


class Organization(AuditedAggregate):
    def __init__(self, name: str, slug: str, country: str, timezone: str) -> None:
        self.name = name
        self.slug = slug
        self.country = country
        self.timezone = timezone
        self.status = "active"
        self.plan = "enterprise"
        self.type = "enterprise"
        self.keys: dict[str, dict[str, Any]] = {}
        self.settings: dict[str, Any] = {}

    @event("SettingsChanged")
    def change_settings(self, changes: dict[str, Any]) -> None:
        """Dialling policy: callingHours, maxConcurrentCalls, callsPerSecond,
        maxCallsPerContactPerDay, timezone, plan."""
        for key, value in changes.items():
            if key == "timezone":
                self.timezone = value
            elif key == "plan":
                self.plan = value
            elif value is None:
                self.settings.pop(key, None)
            else:
                self.settings[key] = value

    @property
    def max_concurrent_calls(self) -> int:
        return int(self.settings.get("maxConcurrentCalls") or PLAN_CONCURRENCY.get(self.plan, 100))

    @event("ApiKeyIssued")
    def issue_api_key(
        self,
        key_id: str,
        key_hash: str,
        prefix: str,
        role: str,
        name: str,
        expires_at: str | None = None,
        issued_at: str | None = None,
    ) -> None:
        """``prefix`` is what a listing shows of the key (its chosen prefix and the start
        of the organization part), never enough to use it; ``expires_at`` is ISO 8601 UTC."""
        self.keys[key_id] = {
            "hash": key_hash,
            "prefix": prefix,
            "role": role,
            "name": name,
            "active": True,
            "expiresAt": expires_at,
            "createdAt": issued_at,
            "rotatedAt": None,
            "revokedAt": None,
        }

    @event("ApiKeyRotated")
    def rotate_api_key(
        self, key_id: str, key_hash: str, prefix: str, expires_at: str | None, rotated_at: str
    ) -> None:
        """A new secret for the same key (same id, role and name): the old one stops working."""
        k = self.keys[key_id]
        k.update(hash=key_hash, prefix=prefix, expiresAt=expires_at, rotatedAt=rotated_at)

    @event("ApiKeyRevoked")
    def revoke_api_key(self, key_id: str, revoked_at: str | None = None) -> None:
        self.keys[key_id]["active"] = False
        self.keys[key_id]["revokedAt"] = revoked_at

    def key_status(self, key_id: str, at: datetime | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        k = self.keys[key_id]
        if not k["active"]:
            return "revoked"
        expires = k.get("expiresAt")
        if expires and datetime.fromisoformat(expires) <= (at or now()):
            return "expired"
        return "active"

    def role_for(self, key: str, at: datetime | None = None) -> tuple[str, str] | None:
        """The (key id, role) of a key that is neither revoked nor expired, or None."""
        digest = hash_key(key)
        for key_id, k in self.keys.items():
            if secrets.compare_digest(k["hash"], digest):
                if self.key_status(key_id, at) != "active":
                    return None
                return key_id, str(k["role"])
        return None

