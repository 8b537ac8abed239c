"""A contact's consent records and opt-out over HTTP (our extension, DOMAIN.md §10.12):
record, read, withdraw, opt out. HTTP to commands and back (application/consent.py)."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post

from application.consent import Consents, OptOutResult
from domain.consent import check_reason, check_source
from interfaces.http.common import acting, authenticate, body_object, in_thread, iso


def _consents(request: Request[Any, Any, Any]) -> tuple[Any, Consents]:
    c = request.app.state.container
    return c, Consents(c.campaigns, c.clock.now)


@get("/api/contact/{contact_id:str}/consents")
@in_thread
def get_consents(request: Request[Any, Any, Any], contact_id: str) -> dict[str, Any]:
    """Each consent scope's state now (``valid``, ``expired``, ``withdrawn``) and every
    consent and opt-out event of the contact, oldest first, with who recorded it."""
    c, consents = _consents(request)
    who = authenticate(request, c.campaigns)
    return consents.view(who.organization_id, contact_id)


@post("/api/contact/{contact_id:str}/consents", status_code=201)
@in_thread
def record_consent(request: Request[Any, Any, Any], contact_id: str, data: Any) -> dict[str, Any]:
    """Record a consent: ``{scope, source, obtainedAt, evidence, expiresAt?}``."""
    c, consents = _consents(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        consents.record(who.organization, contact_id, data)
    return consents.view(who.organization_id, contact_id)


@delete("/api/contact/{contact_id:str}/consents/{consent_scope:str}", status_code=200)
@in_thread
def withdraw_consent(
    request: Request[Any, Any, Any], contact_id: str, consent_scope: str, source: str | None = None, reason: str | None = None
) -> dict[str, Any]:
    """Withdraw the consent for ``consent_scope`` now (``?source=`` where it was asked, default
    ``api``; ``?reason=``). Already withdrawn: answered as it is, nothing recorded."""
    c, consents = _consents(request)
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        consents.withdraw(who.organization, contact_id, consent_scope, source, reason)
    return consents.view(who.organization_id, contact_id)


@post("/api/contact/{contact_id:str}/opt-out", status_code=201)
@in_thread
def opt_out_contact(request: Request[Any, Any, Any], contact_id: str, data: Any = None) -> dict[str, Any]:
    """The contact asked not to be called: ``{reason?, source?}``. Its number goes on the
    do-not-call list and every consent is withdrawn, before the next dial in any execution."""
    c, consents = _consents(request)
    who = authenticate(request, c.campaigns)
    contact = consents.app.contact(who.organization_id, contact_id)  # 404 before any 400
    body = body_object({} if data is None else data)
    source, reason = check_source(body.get("source") or "api"), check_reason(body.get("reason"))
    with acting(who, request):
        result = consents.opt_out(who.organization, str(contact.id), source, reason)
    return opt_out_dto(result)


def opt_out_dto(r: OptOutResult) -> dict[str, Any]:
    s = r.suppression
    return {
        "contactId": str(r.contact.id) if r.contact is not None else None,
        "phone": r.phone,
        "optedOut": True,
        "recorded": r.recorded,
        "withdrawnScopes": r.withdrawn,
        "suppression": {
            "phone": s.phone, "active": s.active, "source": s.source, "reason": s.reason, "updatedAt": iso(s.modified_on),
        },
    }


CONSENT_HANDLERS = [get_consents, record_consent, withdraw_consent, opt_out_contact]
