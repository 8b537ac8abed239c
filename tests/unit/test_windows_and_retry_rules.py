"""Calling windows (pause windows in the organization's zone, calling hours in the
contact's) and per-outcome retry rules: examples, and properties over random zones,
windows and instants (DST transitions included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InvalidRetryStrategyError, ValidationError
from domain.retry import RetryStrategy
from domain.windows import CallingHours, PauseWindows, in_pause_window, is_allowed, next_allowed
from tests.unit.test_dialing_properties import is_open

ZONES = ["Africa/Casablanca", "America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]


def window(h1: int, m1: int, h2: int, m2: int) -> dict:
    return {"startAt": {"hour": h1, "minute": m1}, "endAt": {"hour": h2, "minute": m2}}


def test_weekly_window_in_organization_zone() -> None:
    w = PauseWindows.parse({"monday": [window(12, 0, 14, 0)]})
    # Monday 2026-11-30 12:30 in Casablanca (UTC+1) is 11:30 UTC: paused until 14:00 local.
    at = datetime(2026, 11, 30, 11, 30, tzinfo=UTC)
    assert in_pause_window(at, w, "Africa/Casablanca")
    assert next_allowed(at, w, "Africa/Casablanca") == datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    assert is_allowed(datetime(2026, 11, 30, 13, 0, tzinfo=UTC), w, "Africa/Casablanca")


def test_all_day_is_written_0000_2359_and_advanced_ranges() -> None:
    w = PauseWindows.parse({"sunday": [window(0, 0, 23, 59)], "advanced": [
        {"startAt": "2026-12-01T00:00:00Z", "endAt": "2026-12-02T00:00:00Z"}]})
    sunday = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert next_allowed(sunday, w, "UTC") == datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    assert next_allowed(datetime(2026, 12, 1, 8, 0, tzinfo=UTC), w, "UTC") == datetime(2026, 12, 2, 0, 0, tzinfo=UTC)


def test_calling_hours_follow_the_contacts_zone_across_dst() -> None:
    hours = CallingHours.parse({"start": "09:00", "end": "20:00"})
    # 2026-03-08: New York springs forward at 02:00. 07:00 UTC is 03:00 EDT: hours open at 09:00 EDT = 13:00 UTC.
    assert next_allowed(datetime(2026, 3, 8, 7, 0, tzinfo=UTC), PauseWindows(), "UTC", hours, "America/New_York") == datetime(2026, 3, 8, 13, 0, tzinfo=UTC)
    # The day before, 09:00 EST = 14:00 UTC.
    assert next_allowed(datetime(2026, 3, 7, 7, 0, tzinfo=UTC), PauseWindows(), "UTC", hours, "America/New_York") == datetime(2026, 3, 7, 14, 0, tzinfo=UTC)
    # A wall time skipped by the change resolves to the end of the gap (03:00 EDT), the
    # first instant whose wall time is past 02:30, not 03:30 (its later reading).
    early = CallingHours.parse({"start": "02:30", "end": "20:00"})
    got = next_allowed(datetime(2026, 3, 8, 5, 0, tzinfo=UTC), PauseWindows(), "UTC", early, "America/New_York")
    assert got == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    # So does a pause window that ends inside the gap.
    night = PauseWindows.parse({"sunday": [window(1, 0, 2, 30)]})
    assert next_allowed(datetime(2026, 3, 8, 6, 30, tzinfo=UTC), night, "America/New_York") == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_an_hour_lived_twice_is_open_twice_and_never_traps_the_search() -> None:
    # 2026-02-15: Casablanca falls back from 03:00 (+01) to 02:00 (+00). Hours 02:15-02:30
    # open at 01:15 UTC and again at 02:15 UTC; from inside the second 02:00-02:15 the
    # answer was "never" (the search kept finding the first reading, already past).
    hours = CallingHours.parse({"start": "02:15", "end": "02:30"})
    for at in (datetime(2026, 2, 15, 1, 36, tzinfo=UTC), datetime(2026, 2, 15, 2, 4, tzinfo=UTC)):
        assert next_allowed(at, PauseWindows(), "UTC", hours, "Africa/Casablanca") == datetime(2026, 2, 15, 2, 15, tzinfo=UTC)
    # A pause window in New York's repeated 01:00-02:00 ends where the current reading ends.
    w = PauseWindows.parse({"sunday": [window(1, 0, 1, 30)]})
    assert next_allowed(datetime(2026, 11, 1, 6, 10, tzinfo=UTC), w, "America/New_York") == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    # The clock falling back into the hours opens them, though it never reads their start.
    late = CallingHours.parse({"start": "00:30", "end": "01:30"})
    assert next_allowed(datetime(2026, 11, 1, 5, 40, tzinfo=UTC), PauseWindows(), "UTC", late, "America/New_York") == datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def test_always_paused_has_no_opening() -> None:
    w = PauseWindows.parse({d: [window(0, 0, 23, 59)] for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")})
    assert next_allowed(datetime(2026, 1, 1, tzinfo=UTC), w, "UTC") is None


@pytest.mark.parametrize("bad, field", [
    ({"monday": [window(14, 0, 12, 0)]}, "pauseWindows.monday[0]"),
    ({"funday": []}, "pauseWindows"),
    ({"monday": [{"startAt": {"hour": 24}, "endAt": {"hour": 1}}]}, "pauseWindows.monday[0].startAt"),
    ({"advanced": [{"startAt": "2026-01-02T00:00:00Z", "endAt": "2026-01-01T00:00:00Z"}]}, "pauseWindows.advanced[0]"),
])
def test_bad_windows_name_the_field(bad: dict, field: str) -> None:
    with pytest.raises(ValidationError) as e:
        PauseWindows.parse(bad)
    assert field in e.value.field_errors


minutes = st.integers(min_value=0, max_value=24 * 60 - 1)


@st.composite
def weekly(draw: st.DrawFn) -> dict:
    out: dict = {}
    for day in draw(st.lists(st.sampled_from(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]), max_size=4, unique=True)):
        a, b = sorted(draw(st.lists(minutes, min_size=2, max_size=2, unique=True)))
        out[day] = [window(a // 60, a % 60, b // 60, b % 60)]
    return out


@settings(max_examples=150, deadline=None)
@given(
    at=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)),
    pause=weekly(),
    org_zone=st.sampled_from(ZONES),
    contact_zone=st.sampled_from(ZONES),
    hours=st.one_of(st.none(), st.tuples(st.integers(0, 22), st.integers(1, 23)).filter(lambda t: t[0] < t[1])),
)
def test_property_next_allowed_is_the_first_open_instant(at, pause, org_zone, contact_zone, hours) -> None:
    w = PauseWindows.parse(pause)
    ch = CallingHours.parse({"start": f"{hours[0]:02d}:00", "end": f"{hours[1]:02d}:00"}) if hours else CallingHours()
    got = next_allowed(at, w, org_zone, ch, contact_zone)
    if got is None:
        return
    assert got >= at
    assert is_allowed(got, w, org_zone, ch, contact_zone)  # never a call outside an open window
    # Nothing earlier was open: sample minutes between ``at`` and the answer.
    step = max(timedelta(minutes=1), (got - at) / 50)
    probe = at
    while probe < got - timedelta(seconds=1):
        assert not is_allowed(probe, w, org_zone, ch, contact_zone), (probe, got)
        probe += step


def test_per_outcome_rules_count_their_own_outcome() -> None:
    r = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 30, "maxRetries": 0,
                             "outcomes": {"busy": {"maxRetries": 2, "delayMinutes": 5}, "voicemail": {"maxRetries": 1, "delayMinutes": 60}}})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert r.next_attempt_at(1, "busy", now, ["busy"]) == now + timedelta(minutes=5)
    assert r.next_attempt_at(2, "busy", now, ["busy", "busy"]) == now + timedelta(minutes=5)
    assert r.next_attempt_at(3, "busy", now, ["busy", "busy", "busy"]) is None
    assert r.next_attempt_at(2, "voicemail", now, ["busy", "voicemail"]) == now + timedelta(hours=1)
    assert r.next_attempt_at(1, "no_answer", now, ["no_answer"]) is None  # base: no retries
    assert r.next_attempt_at(1, "incomplete", now, ["incomplete"]) is None  # no completion retry
    assert RetryStrategy.parse(r.to_json()) == r


@settings(max_examples=200, deadline=None)
@given(
    outcomes=st.lists(st.sampled_from(["busy", "no_answer", "failed", "voicemail", "incomplete", "completed"]), min_size=1, max_size=30),
    base=st.integers(0, 3),
    busy=st.integers(0, 3),
)
def test_property_attempts_never_exceed_their_limits(outcomes, base, busy) -> None:
    r = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 1, "maxRetries": base,
                             "outcomes": {"busy": {"maxRetries": busy, "delayMinutes": 1}},
                             "completionRetry": {"maxRetries": 1, "delayMinutes": 1}})
    now = datetime(2026, 1, 1, tzinfo=UTC)
    history: list[str] = []
    for attempt, outcome in enumerate(outcomes, start=1):
        history.append(outcome)
        granted = r.next_attempt_at(attempt, outcome, now, history) is not None
        if outcome == "busy":
            assert granted == (history.count("busy") <= busy)
        elif outcome == "incomplete":
            assert granted == (history.count("incomplete") <= 1)
        elif outcome in ("no_answer", "failed"):
            assert granted == (attempt <= base)
        else:  # completed, and voicemail without a rule: the contact is done
            assert not granted
        if not granted:
            break


def test_bad_rules_are_named() -> None:
    with pytest.raises(InvalidRetryStrategyError) as e:
        RetryStrategy.parse({"type": "none", "outcomes": {"busy": {"maxRetries": -1}}})
    assert "retryStrategy.outcomes.busy.maxRetries" in e.value.message
    with pytest.raises(InvalidRetryStrategyError) as e:
        RetryStrategy.parse({"type": "none", "retryEverything": True})
    assert "retryEverything" in e.value.message


# Daylight-saving changes (zone, instant in UTC): New York, Paris, Lord Howe (half an
# hour), Santiago (at midnight), Casablanca (Ramadan).
TRANSITIONS = [
    ("America/New_York", datetime(2026, 3, 8, 7, 0, tzinfo=UTC)), ("America/New_York", datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),
    ("Europe/Paris", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)), ("Europe/Paris", datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2026, 4, 4, 15, 0, tzinfo=UTC)), ("Australia/Lord_Howe", datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
    ("America/Santiago", datetime(2026, 4, 5, 3, 0, tzinfo=UTC)), ("America/Santiago", datetime(2026, 9, 6, 4, 0, tzinfo=UTC)),
    ("Africa/Casablanca", datetime(2026, 2, 15, 2, 0, tzinfo=UTC)), ("Africa/Casablanca", datetime(2026, 3, 22, 2, 0, tzinfo=UTC)),
]
DST_ZONES = sorted({z for z, _ in TRANSITIONS} | {"UTC"})


@st.composite
def weekly_near(draw: st.DrawFn) -> dict:
    """Weekly windows whose edges often fall in the small hours, where the changes are."""
    edge = st.one_of(st.integers(0, 16).map(lambda q: q * 15), minutes)
    out: dict = {}
    for day in draw(st.lists(st.sampled_from(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]), max_size=3, unique=True)):
        a, b = sorted(draw(st.lists(edge, min_size=2, max_size=2, unique=True)))
        out[day] = [window(a // 60, a % 60, b // 60, b % 60)]
    return out


@settings(max_examples=150, deadline=None)
@given(
    transition=st.sampled_from(TRANSITIONS),
    offset=st.integers(-30 * 60, 6 * 60),
    pause=weekly_near(),
    zones=st.data(),
    # Calling hours in quarter hours, often opening in the small hours (inside a gap).
    hours=st.one_of(st.none(), st.integers(0, 20).flatmap(lambda a: st.tuples(st.just(a * 15), st.integers(a + 1, 96).map(lambda b: b * 15)))),
)
def test_property_around_dst_changes_the_first_open_minute_is_found(transition, offset, pause, zones, hours) -> None:
    """Near each change, every minute from ``at`` to the answer is read literally (DOMAIN.md
    §6.4: the organization's local weekday and minute, the contact's local minute): the
    answer is open and no minute before it was."""
    changing, instant = transition
    org_zone = zones.draw(st.sampled_from([changing, changing, *DST_ZONES]), label="org_zone")
    contact_zone = zones.draw(st.sampled_from([changing, changing, *DST_ZONES]), label="contact_zone")
    at = instant + timedelta(minutes=offset)
    w = PauseWindows.parse(pause)
    ch = CallingHours.parse({"start": f"{hours[0] // 60:02d}:{hours[0] % 60:02d}", "end": f"{hours[1] // 60:02d}:{hours[1] % 60:02d}"}) if hours else CallingHours()
    got = next_allowed(at, w, org_zone, ch, contact_zone)
    horizon = at + timedelta(days=8)
    probe = at
    while probe < (got or horizon) and probe < horizon:
        assert not is_open(probe, pause, org_zone, hours, contact_zone), (probe, got)
        probe += timedelta(minutes=1)
    if got is not None and got < horizon:
        assert is_open(got, pause, org_zone, hours, contact_zone), got
