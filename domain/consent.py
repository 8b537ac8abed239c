"""Consent: what a contact agreed to be called for, and the rule that decides whether a
consent holds at a given instant.

A consent is recorded per *scope* ("calls", "marketing", or an organization's own slug)
with its *source* (where it was given), the instant it was *obtained*, the *evidence*
(free text or a URL: the form, the recording, the signed paper) and an optional expiry.
A withdrawal names the scope, its source, the instant and why.

Which record decides a scope is the one with the latest *effective* instant (a
consent's ``obtainedAt``, a withdrawal's ``at``), not the latest recorded: a consent
obtained before a withdrawal cannot outweigh it, whatever order the two were recorded
in (an old form imported after the callee withdrew does not bring the consent back). A
consent obtained after the withdrawal does (a re-grant). At the same instant a
withdrawal wins. Records dated after the instant asked about do not count yet.

A consent holds at ``t`` when the deciding record is a consent whose expiry, if any,
is after ``t``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from domain.errors import ValidationError
from domain.timeparse import format_instant, parse_instant

SCOPE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
#: Where a consent was given or withdrawn.
SOURCES = ("api", "web_form", "ivr", "call", "sms", "email", "paper", "import", "opt_out", "other")
MAX_EVIDENCE = 4000
MAX_REASON = 256
#: A client's clock may run a little ahead of ours; further in the future is refused.
CLOCK_SKEW = timedelta(minutes=5)

VALID, EXPIRED, WITHDRAWN, NONE = "valid", "expired", "withdrawn", "none"


def check_scope(value: object, field: str = "scope") -> str:
    if not isinstance(value, str) or not SCOPE_RE.match(value):
        raise ValidationError.single(
            field, "must be a slug: a lower-case letter, then lower-case letters, digits, '_' or '-' (at most 64), e.g. 'calls'"
        )
    return value


def check_source(value: object, field: str = "source") -> str:
    if value not in SOURCES:
        raise ValidationError.single(field, f"must be one of {', '.join(SOURCES)}")
    return str(value)


def _text(value: object, field: str, limit: int, required: bool) -> str | None:
    if value is None or (value == "" and not required):
        if required:
            raise ValidationError.single(field, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError.single(field, f"must be a non-empty string of at most {limit} characters")
    if len(value) > limit:
        raise ValidationError.single(field, f"must be at most {limit} characters")
    if "\x00" in value:
        raise ValidationError.single(field, "must not contain the NUL character (U+0000)")
    return value


def check_reason(value: object, field: str = "reason") -> str | None:
    return _text(value, field, MAX_REASON, required=False)


def _not_future(value: datetime, field: str, now: datetime) -> datetime:
    if value > now + CLOCK_SKEW:
        raise ValidationError.single(field, "must not be in the future")
    return value


@dataclass(frozen=True)
class ConsentGrant:
    """A checked ``POST .../consents`` body."""

    scope: str
    source: str
    obtained_at: datetime
    evidence: str
    expires_at: datetime | None

    @classmethod
    def parse(cls, data: Any, now: datetime) -> ConsentGrant:
        """Every bad field is named in one ValidationError."""
        if not isinstance(data, dict):
            raise ValidationError.single("body", "must be a JSON object")
        errors: dict[str, list[str]] = {}
        values: dict[str, Any] = {}
        checks = {
            "scope": lambda v: check_scope(v),
            "source": lambda v: check_source(v),
            "obtainedAt": lambda v: _not_future(parse_instant(v, "obtainedAt"), "obtainedAt", now),
            "evidence": lambda v: _text(v, "evidence", MAX_EVIDENCE, required=True),
            "expiresAt": lambda v: None if v is None else parse_instant(v, "expiresAt"),
        }
        for name, check in checks.items():
            if name not in data and name != "expiresAt":
                errors[name] = ["is required"]
                continue
            try:
                values[name] = check(data.get(name))
            except ValidationError as exc:
                errors.update(exc.field_errors)
        if not errors and values["expiresAt"] is not None and values["expiresAt"] <= values["obtainedAt"]:
            errors["expiresAt"] = ["must be after obtainedAt"]
        if errors:
            first = next(iter(errors))
            raise ValidationError(f"{first}: {errors[first][0]}", errors)
        return cls(values["scope"], values["source"], values["obtainedAt"], values["evidence"], values["expiresAt"])


@dataclass(frozen=True)
class ConsentEntry:
    """One consent record or withdrawal, in the order it was recorded (``seq``)."""

    kind: str  # "recorded" | "withdrawn"
    scope: str
    source: str
    effective_at: datetime  # obtainedAt of a consent, the instant of a withdrawal
    seq: int
    evidence: str | None = None
    expires_at: datetime | None = None
    reason: str | None = None

    @property
    def withdrawn(self) -> bool:
        return self.kind == "withdrawn"

    def _rank(self) -> tuple[datetime, int, int]:
        return (self.effective_at, 1 if self.withdrawn else 0, self.seq)


def deciding(entries: Iterable[ConsentEntry], scope: str, at: datetime, stored: bool = False) -> ConsentEntry | None:
    """The record that decides ``scope`` at ``at`` (see the module's docstring).
    ``stored``: every withdrawal given counts, even one stamped after ``at``."""
    candidates = [e for e in entries if e.scope == scope and (e.effective_at <= at or (stored and e.withdrawn))]
    return max(candidates, key=ConsentEntry._rank) if candidates else None


def status(entries: Iterable[ConsentEntry], scope: str, at: datetime, stored: bool = False) -> str:
    """``valid``, ``expired``, ``withdrawn`` or ``none`` (nothing recorded, or only records
    dated after ``at``)."""
    decider = deciding(entries, scope, at, stored)
    if decider is None:
        return NONE
    if decider.withdrawn:
        return WITHDRAWN
    if decider.expires_at is not None and decider.expires_at <= at:
        return EXPIRED
    return VALID


def holds(entries: Iterable[ConsentEntry], scope: str, at: datetime) -> bool:
    """May the contact be called for ``scope`` at ``at``, given what is stored? What the
    dialer asks. A withdrawal already stored counts even if stamped a moment after ``at``
    (recorded between the dialer's reading of its clock and its check, or by a process
    whose clock runs ahead): once stored, it has happened."""
    return status(entries, scope, at, stored=True) == VALID


def scope_state(entries: list[ConsentEntry], scope: str, at: datetime) -> dict[str, Any]:
    """A scope as ``GET .../consents`` shows it: its status now, the latest consent counted
    (source, obtainedAt, evidence, expiry) and the withdrawal that ended it, if any."""
    decider = deciding(entries, scope, at)
    grants = [e for e in entries if e.scope == scope and not e.withdrawn and e.effective_at <= at]
    grant = max(grants, key=ConsentEntry._rank) if grants else None
    withdrawal = decider if decider is not None and decider.withdrawn else None
    return {
        "scope": scope,
        "status": status(entries, scope, at),
        "source": grant.source if grant else None,
        "obtainedAt": format_instant(grant.effective_at) if grant else None,
        "expiresAt": format_instant(grant.expires_at) if grant else None,
        "evidence": grant.evidence if grant else None,
        "withdrawnAt": format_instant(withdrawal.effective_at) if withdrawal else None,
        "withdrawalSource": withdrawal.source if withdrawal else None,
        "withdrawalReason": withdrawal.reason if withdrawal else None,
    }


#: The Contact events this module's rules read (their topics end with these names).
CONSENT_EVENTS = ("ConsentRecorded", "ConsentWithdrawn")


def entry_of(event: Any, seq: int) -> ConsentEntry | None:
    """The entry a Contact event records, None for other events."""
    kind = type(event).__name__
    if kind == "ConsentRecorded":
        return ConsentEntry("recorded", event.scope, event.source, event.obtained_at, seq,
                            evidence=event.evidence, expires_at=event.expires_at)  # fmt: skip
    if kind == "ConsentWithdrawn":
        return ConsentEntry("withdrawn", event.scope, event.source, event.at, seq, reason=event.reason)
    return None
