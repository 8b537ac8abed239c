"""The audit trail over HTTP (issue 7): signed exports for auditors and admins, and the
public key that verifies them (published, unauthenticated)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Request, get
from litestar.exceptions import HTTPException

from domain.errors import ValidationError
from interfaces.http.common import authenticate, in_thread

EXPORT_ROLES = ("auditor", "admin")


def _trail(request: Request[Any, Any, Any]) -> Any:
    from infrastructure.audit import AuditTrail

    return AuditTrail(request.app.state.container)


@get("/api/audit/public-key")
@in_thread
def audit_public_key(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The Ed25519 public key (PEM) that verifies audit exports."""
    from application.audit_export import fingerprint

    pem = _trail(request).public_key_pem()
    return {"algorithm": "Ed25519", "publicKey": pem.decode(), "fingerprint": fingerprint(pem)}


@get("/api/audit/export")
@in_thread
def audit_export(
    request: Request[Any, Any, Any], contactId: str | None = None, executionId: str | None = None
) -> dict[str, Any]:
    """A contact's or an execution's stored events with their audit-chain entries, signed."""
    c = request.app.state.container
    who = authenticate(request, c.campaigns)
    if who.role not in EXPORT_ROLES:
        raise HTTPException(
            status_code=403, detail=f"The '{who.role}' role cannot read the audit trail"
        )
    if (contactId is None) == (executionId is None):
        raise ValidationError(
            "Name one of contactId or executionId",
            {"contactId": ["give exactly one of contactId and executionId"]},
        )
    for field, value in (("contactId", contactId), ("executionId", executionId)):
        if value is not None:
            try:
                UUID(value)
            except ValueError:
                raise ValidationError.single(field, "must be a UUID") from None
    doc: dict[str, Any] = _trail(request).export(
        who.organization_id, contact_id=contactId, execution_id=executionId
    )
    return doc


AUDIT_HANDLERS = [audit_public_key, audit_export]
