"""API keys of an organization: issued, listed, rotated and revoked, each an event on the
Organization aggregate (ApiKeyIssued, ApiKeyRotated, ApiKeyRevoked).

Only a key's SHA-256 is stored; the plaintext is shown once, when it is issued or rotated.
A key reads ``PREFIX_ORGHEX_SECRET``: the prefix is the issuer's (``prod``, ``dev``; ``gm``
by default), the organization part lets authentication read one short stream."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from domain.base import now
from domain.errors import Conflict, NotFound, ValidationError
from domain.organization import ROLES, Organization, hash_key, new_api_key
from domain.timeparse import format_instant, parse_instant

PREFIX_RE = re.compile(r"^[A-Za-z0-9]{1,16}$")
ISSUE_FIELDS = {"role", "name", "prefix", "expiresAt"}
ROTATE_FIELDS = {"expiresAt"}


def key_dto(org: Organization, key_id: str) -> dict[str, Any]:
    k = org.keys[key_id]
    preview = str(k.get("prefix") or "")
    return {
        "id": key_id,
        "name": k.get("name"),
        "role": k["role"],
        "prefix": preview.split("_", 1)[0],
        "preview": preview,
        "status": org.key_status(key_id),
        "isActive": org.key_status(key_id) == "active",
        "expiresAt": k.get("expiresAt"),
        # keys issued with the organization (before issue 7) did not record when: then
        "createdAt": k.get("createdAt") or format_instant(org.created_on),
        "rotatedAt": k.get("rotatedAt"),
        "revokedAt": k.get("revokedAt"),
    }


def _reject_unknown(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError(
            f"Unknown field(s): {', '.join(unknown)}",
            {k: [f"unknown field (allowed: {', '.join(sorted(allowed))})"] for k in unknown},
        )


def _expiry(value: Any) -> str | None:
    if value is None:
        return None
    at: datetime = parse_instant(value, "expiresAt")
    if at <= now():
        raise ValidationError.single("expiresAt", "must be in the future")
    return format_instant(at)


class ApiKeys:
    """Key management on the campaigns application (where Organization aggregates live)."""

    def __init__(self, campaigns: Any) -> None:
        self.campaigns = campaigns

    def _org(self, organization_id: UUID) -> Organization:
        org = self.campaigns.organization(organization_id)
        assert isinstance(org, Organization)
        return org

    def _key(self, org: Organization, key_id: str) -> dict[str, Any]:
        if key_id not in org.keys:
            raise NotFound("API key not found")
        return org.keys[key_id]

    def list(self, organization_id: UUID) -> list[dict[str, Any]]:
        org = self._org(organization_id)
        return [key_dto(org, key_id) for key_id in org.keys]

    def get(self, organization_id: UUID, key_id: str) -> dict[str, Any]:
        org = self._org(organization_id)
        self._key(org, key_id)
        return key_dto(org, key_id)

    def issue(self, organization_id: UUID, data: dict[str, Any]) -> dict[str, Any]:
        """``{role, name?, prefix?, expiresAt?}`` → the key's listing plus ``apiKey`` (shown once)."""
        _reject_unknown(data, ISSUE_FIELDS)
        role = data.get("role")
        if role not in ROLES:
            raise ValidationError.single("role", f"is required, one of {', '.join(ROLES)}")
        name = data.get("name", f"{role} key")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise ValidationError.single("name", "must be a text of 1 to 100 characters")
        prefix = data.get("prefix", "gm")
        if not isinstance(prefix, str) or not PREFIX_RE.match(prefix):
            raise ValidationError.single("prefix", "must be 1 to 16 letters or digits")
        expires_at = _expiry(data.get("expiresAt"))
        org = self._org(organization_id)
        key = new_api_key(org.id, prefix)
        key_id = uuid4().hex[:12]
        org.issue_api_key(
            key_id,
            hash_key(key),
            _preview(key),
            role,
            name.strip(),
            expires_at,
            format_instant(now()),
        )
        self.campaigns.save(org)
        return {**key_dto(org, key_id), "apiKey": key}

    def rotate(
        self, organization_id: UUID, key_id: str, data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A new secret for the key (same id, role, name and prefix); the old secret stops
        working at once. ``{expiresAt?}`` sets a new expiry (kept otherwise)."""
        data = data or {}
        _reject_unknown(data, ROTATE_FIELDS)
        org = self._org(organization_id)
        k = self._key(org, key_id)
        if not k["active"]:
            raise Conflict("A revoked API key cannot be rotated")
        expires_at = _expiry(data["expiresAt"]) if "expiresAt" in data else k.get("expiresAt")
        if "expiresAt" not in data and org.key_status(key_id) == "expired":
            raise ValidationError.single(
                "expiresAt", "the key has expired: give a new expiry (or null) to rotate it"
            )
        prefix = str(k.get("prefix") or "gm").split("_", 1)[0] or "gm"
        key = new_api_key(org.id, prefix if PREFIX_RE.match(prefix) else "gm")
        org.rotate_api_key(
            key_id, hash_key(key), _preview(key), expires_at, str(format_instant(now()))
        )
        self.campaigns.save(org)
        return {**key_dto(org, key_id), "apiKey": key}

    def revoke(self, organization_id: UUID, key_id: str) -> dict[str, Any]:
        """Revoked keys answer 401 from then on. Revoking a revoked key changes nothing;
        the organization's last usable admin key cannot be revoked (it would lock it out)."""
        org = self._org(organization_id)
        k = self._key(org, key_id)
        if not k["active"]:
            return key_dto(org, key_id)
        admins = [
            i for i, x in org.keys.items() if x["role"] == "admin" and org.key_status(i) == "active"
        ]
        if admins == [key_id]:
            raise Conflict(
                "This is the organization's last active admin key: issue another admin key before revoking it"
            )
        org.revoke_api_key(key_id, format_instant(now()))
        self.campaigns.save(org)
        return key_dto(org, key_id)


def _preview(key: str) -> str:
    """Enough to recognise a key in a list, never enough to use it."""
    prefix, org, secret = key.split("_", 2)
    return f"{prefix}_{org[:8]}…{secret[-4:]}"
