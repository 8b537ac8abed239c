"""The consent rules (domain/consent.py) on the Contact aggregate: a consent holds from the
instant it was obtained until it expires or is withdrawn; a later consent re-grants; a
consent obtained before a withdrawal never outweighs it, whatever the recording order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.base import audit_context
from domain.consent import EXPIRED, NONE, VALID, WITHDRAWN, ConsentGrant, holds, scope_state, status
from domain.contact import Contact
from domain.errors import ValidationError

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


def contact() -> Contact:
    return Contact(uuid4(), "+212612345678", "0612345678", {})


def test_a_consent_holds_from_when_it_was_obtained_until_it_expires() -> None:
    c = contact()
    c.record_consent("calls", "web_form", T0, "https://forms.example/submissions/81", T0 + 24 * H)
    assert status(c.consents, "calls", T0 - H) == NONE  # not obtained yet at that instant
    assert holds(c.consents, "calls", T0)
    assert holds(c.consents, "calls", T0 + 23 * H)
    assert status(c.consents, "calls", T0 + 24 * H) == EXPIRED  # the expiry instant is excluded
    assert not holds(c.consents, "calls", T0 + 25 * H)
    assert status(c.consents, "marketing", T0 + H) == NONE  # scopes are separate


def test_withdraw_then_re_grant() -> None:
    c = contact()
    c.record_consent("calls", "ivr", T0, "pressed 1 at the consent prompt, call 5b1e", None)
    c.withdraw_consent("calls", "api", T0 + 2 * H, "asked by email")
    assert status(c.consents, "calls", T0 + H) == VALID  # a withdrawal does not rewrite the past
    assert not holds(c.consents, "calls", T0 + H)  # but once stored, no dial is made whatever the clock says
    assert status(c.consents, "calls", T0 + 2 * H) == WITHDRAWN
    assert status(c.consents, "calls", T0 + 100 * H) == WITHDRAWN  # until a new consent
    c.record_consent("calls", "paper", T0 + 3 * H, "signed form #1142", None)
    assert status(c.consents, "calls", T0 + 3 * H) == VALID
    state = scope_state(c.consents, "calls", T0 + 4 * H)
    assert (state["status"], state["source"], state["evidence"], state["withdrawnAt"]) == (VALID, "paper", "signed form #1142", None)


def test_a_consent_obtained_before_a_withdrawal_cannot_outweigh_it() -> None:
    c = contact()
    c.withdraw_consent("calls", "api", T0, "do not call me")
    # An old form imported afterwards: recorded later, but obtained earlier.
    c.record_consent("calls", "import", T0 - 30 * 24 * H, "crm export row 17", None)
    assert status(c.consents, "calls", T0 + H) == WITHDRAWN
    state = scope_state(c.consents, "calls", T0 + H)
    assert (state["withdrawnAt"], state["withdrawalReason"]) == ("2026-03-01T09:00:00.000Z", "do not call me")
    # At the same instant, the withdrawal wins.
    c.record_consent("calls", "api", T0, "same instant", None)
    assert status(c.consents, "calls", T0 + H) == WITHDRAWN


def test_a_re_grant_replaces_the_expiry_of_the_previous_consent() -> None:
    c = contact()
    c.record_consent("marketing", "web_form", T0, "form A", T0 + 10 * H)
    c.record_consent("marketing", "web_form", T0 + H, "form B, no expiry", None)
    assert holds(c.consents, "marketing", T0 + 100 * H)
    c.record_consent("marketing", "web_form", T0 + 2 * H, "form C", T0 + 3 * H)
    assert status(c.consents, "marketing", T0 + 4 * H) == EXPIRED  # the latest consent decides


def test_consent_events_carry_the_actor_and_request() -> None:
    with audit_context(actor="apikey:abc", requestId="req-1"):
        c = contact()
        c.record_consent("calls", "api", T0, "e", None)
        c.withdraw_consent("calls", "api", T0 + H, None)
        c.opt_out("api", "asked", c.phone)
    events = c.collect_events()
    assert [type(e).__name__ for e in events] == ["Created", "ConsentRecorded", "ConsentWithdrawn", "OptedOut"]
    assert all(e.meta["actor"] == "apikey:abc" and e.meta["requestId"] == "req-1" for e in events)
    assert c.opted_out
    # Replayed from its events, the contact holds the same consent records.
    replayed = None
    for e in events:
        replayed = e.mutate(replayed)
    assert isinstance(replayed, Contact) and replayed.consents == c.consents


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "api", "obtainedAt": "2026-03-01T09:00:00Z", "evidence": "x"}, "scope"),
        ({"scope": "Calls!", "source": "api", "obtainedAt": "2026-03-01T09:00:00Z", "evidence": "x"}, "scope"),
        ({"scope": "calls", "source": "fax", "obtainedAt": "2026-03-01T09:00:00Z", "evidence": "x"}, "source"),
        ({"scope": "calls", "source": "api", "obtainedAt": "yesterday", "evidence": "x"}, "obtainedAt"),
        ({"scope": "calls", "source": "api", "obtainedAt": "2026-03-02T09:00:00Z", "evidence": "x"}, "obtainedAt"),
        ({"scope": "calls", "source": "api", "obtainedAt": "2026-03-01T09:00:00Z"}, "evidence"),
        ({"scope": "calls", "source": "api", "obtainedAt": "2026-03-01T09:00:00Z", "evidence": "  "}, "evidence"),
        ({"scope": "calls", "source": "api", "obtainedAt": "2026-03-01T09:00:00Z", "evidence": "x", "expiresAt": "2026-03-01T08:00:00Z"}, "expiresAt"),
    ],
)
def test_a_bad_consent_names_its_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ConsentGrant.parse(body, T0 + H)
    assert field in exc.value.field_errors, exc.value.field_errors


def test_a_good_consent_parses() -> None:
    g = ConsentGrant.parse({"scope": "calls", "source": "web_form", "obtainedAt": "2026-03-01T10:02:00+00:00",
                            "evidence": "https://forms.example/s/1", "expiresAt": None}, T0 + H)  # fmt: skip
    assert (g.scope, g.obtained_at, g.expires_at) == ("calls", T0 + H + timedelta(minutes=2), None)  # 2 min of clock skew
