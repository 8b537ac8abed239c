"""Retry strategies (DOMAIN.md §6.3): how many attempts a contact gets and when each is due."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import InvalidRetryStrategyError
from domain.retry import RetryStrategy

T0 = datetime(2025, 1, 20, 10, 0, tzinfo=UTC)


def schedule(strategy: RetryStrategy, outcome: str, *, call_minutes: int = 1) -> list[datetime]:
    """Start times of every attempt when each one ends with ``outcome`` after ``call_minutes``."""
    starts = [T0]
    attempt = 1
    while True:
        ended = starts[-1] + timedelta(minutes=call_minutes)
        nxt = strategy.next_attempt_at(attempt, outcome, ended)
        if nxt is None:
            return starts
        assert len(starts) < 50, "retries never stop"
        starts.append(nxt)
        attempt += 1


def test_fixed_delay_max_retries_3_gives_exactly_4_attempts_spaced_by_the_delay():
    strategy = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 30, "maxRetries": 3})
    starts = schedule(strategy, "busy", call_minutes=1)
    assert len(starts) == 4
    assert [b - a for a, b in itertools.pairwise(starts)] == [timedelta(minutes=31)] * 3


def test_fixed_delay_counts_from_the_end_of_the_attempt():
    strategy = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 15, "maxRetries": 1})
    ended = T0 + timedelta(seconds=42)
    assert strategy.next_attempt_at(1, "no_answer", ended) == ended + timedelta(minutes=15)
    assert strategy.next_attempt_at(2, "no_answer", ended) is None


def test_fractional_and_zero_delays():
    half = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 0.5, "maxRetries": 1})
    assert half.next_attempt_at(1, "busy", T0) == T0 + timedelta(seconds=30)
    now = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 0, "maxRetries": 2})
    assert schedule(now, "failed", call_minutes=0) == [T0, T0, T0]


@pytest.mark.parametrize("outcome", ["busy", "no_answer", "rejected", "failed"])
def test_retryable_outcomes(outcome):
    strategy = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 5, "maxRetries": 1})
    assert strategy.next_attempt_at(1, outcome, T0) == T0 + timedelta(minutes=5)


@pytest.mark.parametrize("outcome", ["completed", "voicemail", "cancelled"])
def test_outcomes_that_are_not_retried_by_default(outcome):
    strategy = RetryStrategy.parse({"type": "fixed_delay", "delayMinutes": 5, "maxRetries": 3})
    assert strategy.next_attempt_at(1, outcome, T0) is None


def test_voicemail_is_retried_only_when_asked():
    asked = RetryStrategy.parse(
        {"type": "fixed_delay", "delayMinutes": 5, "maxRetries": 2, "retryOnVoicemail": True}
    )
    assert len(schedule(asked, "voicemail")) == 3
    assert asked.next_attempt_at(1, "completed", T0) is None


def test_none_never_retries():
    strategy = RetryStrategy.parse({"type": "none"})
    assert schedule(strategy, "busy") == [T0]
    assert strategy.to_json() == {"type": "none"}


def test_scheduled_uses_the_dates_in_order():
    strategy = RetryStrategy.parse(
        {"type": "scheduled", "retryDates": ["2025-01-21T09:00:00Z", "2025-01-20T18:00:00+01:00"]}
    )
    assert strategy.max_retries == 2
    assert schedule(strategy, "no_answer") == [
        T0,
        datetime(2025, 1, 20, 17, 0, tzinfo=UTC),
        datetime(2025, 1, 21, 9, 0, tzinfo=UTC),
    ]


def test_scheduled_date_already_past_is_due_at_once():
    strategy = RetryStrategy.parse({"type": "scheduled", "retryDates": ["2025-01-20T09:00:00Z"]})
    late = T0 + timedelta(hours=3)
    assert strategy.next_attempt_at(1, "busy", late) == late


def test_scheduled_does_not_retry_a_completed_call():
    strategy = RetryStrategy.parse({"type": "scheduled", "retryDates": ["2025-01-21T09:00:00Z"]})
    assert strategy.next_attempt_at(1, "completed", T0) is None


@pytest.mark.parametrize(
    "data",
    [
        {"type": "none"},
        {"type": "fixed_delay", "delayMinutes": 30, "maxRetries": 3},
        {"type": "fixed_delay", "delayMinutes": 2.5, "maxRetries": 0, "retryOnVoicemail": True},
        {"type": "scheduled", "retryDates": ["2025-01-21T09:00:00.000Z", "2025-01-22T09:00:00.000Z"]},
    ],
)
def test_to_json_round_trips(data):
    strategy = RetryStrategy.parse(data)
    assert strategy.to_json() == data
    assert RetryStrategy.parse(strategy.to_json()) == strategy


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (None, "retryStrategy"),
        ("fixed_delay", "retryStrategy"),
        ({"delayMinutes": 5}, "retryStrategy"),
        ({"type": "exponential"}, "retryStrategy.type"),
        ({"type": "fixed_delay", "maxRetries": 3}, "retryStrategy.delayMinutes"),
        ({"type": "fixed_delay", "delayMinutes": -1, "maxRetries": 3}, "retryStrategy.delayMinutes"),
        ({"type": "fixed_delay", "delayMinutes": "30", "maxRetries": 3}, "retryStrategy.delayMinutes"),
        ({"type": "fixed_delay", "delayMinutes": True, "maxRetries": 3}, "retryStrategy.delayMinutes"),
        ({"type": "fixed_delay", "delayMinutes": 30}, "retryStrategy.maxRetries"),
        ({"type": "fixed_delay", "delayMinutes": 30, "maxRetries": 2.5}, "retryStrategy.maxRetries"),
        ({"type": "fixed_delay", "delayMinutes": 30, "maxRetries": -1}, "retryStrategy.maxRetries"),
        ({"type": "fixed_delay", "delayMinutes": 30, "maxRetries": 21}, "retryStrategy.maxRetries"),
        ({"type": "fixed_delay", "delayMinutes": 30, "maxRetries": False}, "retryStrategy.maxRetries"),
        ({"type": "scheduled"}, "retryStrategy.retryDates"),
        ({"type": "scheduled", "retryDates": []}, "retryStrategy.retryDates"),
        ({"type": "scheduled", "retryDates": "2025-01-21T09:00:00Z"}, "retryStrategy.retryDates"),
        ({"type": "scheduled", "retryDates": ["tomorrow"]}, "retryStrategy.retryDates"),
        ({"type": "scheduled", "retryDates": ["2025-01-21T09:00:00"]}, "retryStrategy.retryDates"),
        ({"type": "none", "retryOnVoicemail": "yes"}, "retryStrategy.retryOnVoicemail"),
    ],
)
def test_invalid_shapes_name_the_field(data, field):
    with pytest.raises(InvalidRetryStrategyError) as caught:
        RetryStrategy.parse(data)
    assert caught.value.code == "InvalidRetryStrategyError"
    assert caught.value.status == 400
    assert caught.value.message.startswith(field)
