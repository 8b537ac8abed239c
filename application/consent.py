"""Consent records and opt-outs: record and withdraw a contact's consent, opt a contact out,
and the check the dialer makes at dial time.

Consent lives on the Contact stream (``ConsentRecorded`` / ``ConsentWithdrawn``; the
rules are domain/consent.py). The dial-time check reads the contact's stored events (the
event store, not a read model) and decodes only its consent events, so a withdrawal saved
a moment ago is already seen by the next dial:

    Consents(campaigns_app).holds(organization_id, contact_id, "calls", now) -> bool

An opt-out (the API's ``POST /api/contact/{id}/opt-out`` or a flow's ``opt_out`` node)
records, in one save (one transaction): the number on the do-not-call list (what every
execution's dial-time check reads), a withdrawal of each of the contact's consents, and
``OptedOut`` on the contact (its history shows who asked, when and how)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from application.campaigns import CampaignsApp
from application.concurrent_appends import load_change_save
from application.suppression import Suppressions
from domain import base
from domain.consent import (
    CONSENT_EVENTS,
    WITHDRAWN,
    ConsentEntry,
    ConsentGrant,
    check_reason,
    check_scope,
    check_source,
    entry_of,
    holds,
    scope_state,
    status,
)
from domain.contact import Contact, contact_id
from domain.errors import NotFound
from domain.organization import Organization
from domain.suppression import Suppression
from domain.timeparse import format_instant

_TOPICS = tuple(f"Contact.{name}" for name in CONSENT_EVENTS)


@dataclass
class OptOutResult:
    contact: Contact | None
    phone: str
    suppression: Suppression
    withdrawn: list[str] = field(default_factory=list)  # the scopes this opt-out withdrew
    recorded: bool = False  # False: already opted out, nothing new to record


class Consents:
    def __init__(self, app: CampaignsApp, now: Callable[[], datetime] = base.now) -> None:
        self.app = app
        self.now = now

    # -- the dial-time check ----------------------------------------------------------

    def entries(self, contact: UUID | str) -> list[ConsentEntry]:
        """The contact's consent records, from its stored events (only those decoded)."""
        out: list[ConsentEntry] = []
        for stored in self.app.recorder.select_events(UUID(str(contact))):
            if stored.topic.endswith(_TOPICS):
                entry = entry_of(self.app.mapper.to_domain_event(stored), len(out))
                if entry is not None:
                    out.append(entry)
        return out

    def holds(self, organization_id: Any, contact: UUID | str, scope: str, at: datetime) -> bool:
        """Does the contact consent to ``scope`` at ``at``? Current state of the event store.
        (Contact ids are derived from the organization, so ``organization_id`` is not read.)"""
        return holds(self.entries(contact), scope, at)

    # -- commands ---------------------------------------------------------------------

    def _contact(self, org_id: UUID, id_: UUID | str) -> Contact:
        return self.app.contact(org_id, id_)

    def _change(self, org_id: UUID, id_: str, change: Callable[[Contact], None]) -> Contact:
        """Load, change, save; again if another command appended to the contact meanwhile
        (an import, a flow's update), unless the request's If-Match named a version."""
        return load_change_save(self.app, lambda: self._contact(org_id, id_), change, "contact")

    def record(self, org: Organization, id_: str, data: Any) -> Contact:
        """Record a consent (body checked by ConsentGrant.parse)."""
        self._contact(org.id, id_)  # 404 first: another organization's id is not a 400
        grant = ConsentGrant.parse(data, self.now())
        return self._change(org.id, id_, lambda contact: contact.record_consent(
            grant.scope, grant.source, grant.obtained_at, grant.evidence, grant.expires_at))  # fmt: skip

    def withdraw(self, org: Organization, id_: str, scope: Any, source: Any = "api", reason: Any = None) -> Contact:
        """Withdraw the consent for ``scope`` now. Already withdrawn: nothing recorded.
        Never recorded for this contact: 404."""
        self._contact(org.id, id_)  # 404 first
        scope_ = check_scope(scope)
        source_ = check_source("api" if source is None else source)
        reason_ = check_reason(reason)

        def withdraw(contact: Contact) -> None:
            if not any(e.scope == scope_ for e in contact.consents):
                raise NotFound(f"No consent recorded for scope '{scope_}'", field="scope")
            now = self.now()
            if status(contact.consents, scope_, now) != WITHDRAWN:
                contact.withdraw_consent(scope_, source_, now, reason_)

        return self._change(org.id, id_, withdraw)

    def opt_out(self, org: Organization, id_: str, source: Any = "api", reason: Any = None) -> OptOutResult:
        """The API's opt-out of a contact (see the module's docstring)."""
        contact = self._contact(org.id, id_)
        return self.opt_out_number(org, contact.phone, check_source("api" if source is None else source), check_reason(reason))

    def opt_out_number(self, org: Organization, e164: str, source: str, reason: str | None) -> OptOutResult:
        """Opt ``e164`` out: on the do-not-call list, and, if it is a contact's number,
        every consent of the contact withdrawn and ``OptedOut`` recorded; one save.
        Idempotent: what is already true records nothing (a flow effect run twice)."""
        suppressions = Suppressions(self.app)
        for attempt in range(4):
            contact = self._find_contact(org.id, e164)
            existing = suppressions._find(org.id, e164)
            staged_suppression = suppressions._stage(org.id, e164, reason, "opt_out", existing)
            now = self.now()
            withdrawn: list[str] = []
            if contact is not None:
                for scope in sorted({e.scope for e in contact.consents}):
                    if status(contact.consents, scope, now) != WITHDRAWN:
                        contact.withdraw_consent(scope, source, now, reason)
                        withdrawn.append(scope)
                if withdrawn or staged_suppression is not None or not contact.opted_out:
                    contact.opt_out(source, reason, e164)
            pending = [a for a in (staged_suppression, contact) if a is not None and a.pending_events]
            suppression = staged_suppression or existing
            assert suppression is not None
            if not pending:
                return OptOutResult(contact, e164, suppression, [], recorded=False)
            try:
                self.app.save(*pending)
            except IntegrityError:
                if attempt == 3:
                    raise
                continue  # the contact or the number changed meanwhile: decide again
            return OptOutResult(contact, e164, suppression, withdrawn, recorded=True)
        raise AssertionError("unreachable")

    def _find_contact(self, org_id: UUID, e164: str) -> Contact | None:
        try:
            found = self.app.repository.get(contact_id(org_id, e164))
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, Contact) and found.organization_id == org_id else None

    # -- reading ----------------------------------------------------------------------

    def view(self, org_id: UUID, id_: str) -> dict[str, Any]:
        """``GET .../consents``: each scope's state now, and every consent event, oldest first."""
        contact = self._contact(org_id, id_)
        now = self.now()
        scopes = sorted({e.scope for e in contact.consents})
        return {
            "contactId": str(contact.id),
            "optedOut": contact.opted_out,  # an opt-out was ever recorded (the history says when)
            # Whether the number is on the do-not-call list now: what the dialer checks (an
            # opt-out is lifted only by removing the number from the list).
            "doNotCall": Suppressions(self.app).is_suppressed(org_id, contact.phone) if contact.phone else False,
            "asOf": format_instant(now),
            "consents": [scope_state(contact.consents, s, now) for s in scopes],
            "history": self.history(org_id, contact.id),
        }

    def history(self, org_id: UUID, id_: UUID) -> list[dict[str, Any]]:
        """The contact's consent and opt-out events, oldest first, with who recorded them."""
        out = []
        for stored in self.app.recorder.select_events(id_):
            if not stored.topic.endswith((*_TOPICS, "Contact.OptedOut")):
                continue
            e: Any = self.app.mapper.to_domain_event(stored)
            meta = dict(getattr(e, "meta", {}) or {})
            out.append({"version": e.originator_version, "type": type(e).__name__,
                        "recordedAt": format_instant(e.timestamp), "actor": meta.get("actor"),
                        "requestId": meta.get("requestId"), **event_fields(e)})  # fmt: skip
        return out


def event_fields(e: Any) -> dict[str, Any]:
    """A consent or opt-out event's own fields, in the API's names."""
    kind = type(e).__name__
    if kind == "ConsentRecorded":
        return {"scope": e.scope, "source": e.source, "obtainedAt": format_instant(e.obtained_at),
                "expiresAt": format_instant(e.expires_at), "evidence": e.evidence}  # fmt: skip
    if kind == "ConsentWithdrawn":
        return {"scope": e.scope, "source": e.source, "withdrawnAt": format_instant(e.at), "reason": e.reason}
    if kind == "OptedOut":
        return {"source": e.source, "reason": e.reason, "phone": e.phone}
    return {}
