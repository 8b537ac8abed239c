"""``format_instant`` (every read model's instants) is written with ``isoformat``; it must
give exactly the text the ``strftime`` form gave, for any instant in any offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.timeparse import format_instant


def _strftime_form(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


offsets = st.one_of(
    st.just(UTC),
    st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
)


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)), offsets)
def test_format_instant_is_the_strftime_form(naive: datetime, tz: timezone) -> None:
    value = naive.replace(tzinfo=tz)
    assert format_instant(value) == _strftime_form(value)


def test_none_and_a_known_instant() -> None:
    assert format_instant(None) is None
    assert format_instant(datetime(2026, 1, 5, 9, 0, 0, 1999, tzinfo=UTC)) == "2026-01-05T09:00:00.001Z"
    assert format_instant(datetime(2026, 1, 5, 10, 30, tzinfo=timezone(timedelta(hours=1)))) == "2026-01-05T09:30:00.000Z"
