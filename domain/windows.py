"""When calls may start: a program's pause windows (weekly, in the organization's time
zone, and absolute ``advanced`` ranges) and the organization's calling hours, evaluated
in each contact's own time zone. Pure functions over aware datetimes; daylight-saving
changes are handled by ``zoneinfo`` (wall-clock rules are applied to each local date).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.errors import ValidationError
from domain.timeparse import parse_instant

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
SEARCH_HORIZON = timedelta(days=400)


def zone(name: str | None, field_name: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError.single(field_name, f"'{name}' is not a known time zone") from None


def _clock(value: Any, where: str) -> tuple[int, int]:
    if not isinstance(value, dict):
        raise ValidationError.single(where, "must be {hour, minute}")
    h, m = value.get("hour"), value.get("minute", 0)
    if not (isinstance(h, int) and 0 <= h <= 23 and isinstance(m, int) and 0 <= m <= 59):
        raise ValidationError.single(where, "hour must be 0-23 and minute 0-59")
    return h, m


def _hhmm(value: Any, where: str) -> tuple[int, int]:
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        raise ValidationError.single(where, "must be 'HH:MM'")
    try:
        h, m = int(value[:2]), int(value[3:])
    except ValueError:
        raise ValidationError.single(where, "must be 'HH:MM'") from None
    if not (0 <= h <= 24 and 0 <= m <= 59) or (h == 24 and m):
        raise ValidationError.single(where, "must be a time of day between 00:00 and 24:00")
    return h, m


@dataclass(frozen=True)
class PauseWindows:
    """Weekly windows (minutes from local midnight, end exclusive) and absolute ranges."""

    weekly: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    advanced: tuple[tuple[datetime, datetime], ...] = ()

    @classmethod
    def parse(cls, data: Any) -> PauseWindows:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValidationError.single("pauseWindows", "must be an object keyed by weekday and 'advanced'")
        unknown = set(data) - set(DAYS) - {"advanced"}
        if unknown:
            raise ValidationError.single("pauseWindows", f"unknown key(s): {', '.join(sorted(unknown))}")
        weekly: dict[int, tuple[tuple[int, int], ...]] = {}
        for index, day in enumerate(DAYS):
            windows = data.get(day) or []
            if not isinstance(windows, list):
                raise ValidationError.single(f"pauseWindows.{day}", "must be a list of windows")
            spans = []
            for i, w in enumerate(windows):
                where = f"pauseWindows.{day}[{i}]"
                if not isinstance(w, dict):
                    raise ValidationError.single(where, "must be {startAt, endAt}")
                sh, sm = _clock(w.get("startAt"), f"{where}.startAt")
                eh, em = _clock(w.get("endAt"), f"{where}.endAt")
                start, end = sh * 60 + sm, eh * 60 + em
                if (eh, em) == (23, 59):
                    end = 24 * 60  # "all day" is written 00:00-23:59
                if end <= start:
                    raise ValidationError.single(where, "endAt must be after startAt")
                spans.append((start, end))
            if spans:
                weekly[index] = tuple(sorted(spans))
        advanced = []
        for i, w in enumerate(data.get("advanced") or []):
            where = f"pauseWindows.advanced[{i}]"
            if not isinstance(w, dict):
                raise ValidationError.single(where, "must be {startAt, endAt}")
            s = parse_instant(w.get("startAt"), f"{where}.startAt")
            e = parse_instant(w.get("endAt"), f"{where}.endAt")
            if e <= s:
                raise ValidationError.single(where, "endAt must be after startAt")
            advanced.append((s, e))
        return cls(weekly, tuple(sorted(advanced)))


@dataclass(frozen=True)
class CallingHours:
    """An organization policy: calls start only between ``start`` and ``end`` in the
    contact's local time (e.g. 08:00-21:00); no program can override it."""

    start: int = 0
    end: int = 24 * 60

    @classmethod
    def parse(cls, data: Any) -> CallingHours:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValidationError.single("callingHours", "must be {start: 'HH:MM', end: 'HH:MM'}")
        sh, sm = _hhmm(data.get("start"), "callingHours.start")
        eh, em = _hhmm(data.get("end"), "callingHours.end")
        start, end = sh * 60 + sm, eh * 60 + em
        if end <= start:
            raise ValidationError.single("callingHours", "end must be after start")
        return cls(start, end)

    @property
    def always(self) -> bool:
        return self.start == 0 and self.end == 24 * 60


def _at_minute(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """The instant of local ``day`` + ``minute`` in ``tz`` (a wall time skipped by a DST
    change resolves to just after the gap)."""
    if minute >= 24 * 60:
        return _at_minute(day + timedelta(days=1), minute - 24 * 60, tz)
    local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=tz)
    instant = local.astimezone(UTC)
    wall = local.replace(tzinfo=None)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    # A wall time skipped by a DST change does not round-trip. Its two readings fall on
    # either side of the gap; the answer is the gap's end (the first instant whose wall
    # time is at or after it: 02:30 on the night New York skips 02:00-03:00 is 03:00 EDT,
    # not 03:30, the later reading).
    lo, hi = sorted(int(x.timestamp()) for x in (instant, local.replace(fold=1).astimezone(UTC)))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _readings(day: date, minute: int, tz: ZoneInfo) -> list[datetime]:
    """Every instant whose wall time in ``tz`` is local ``day`` + ``minute``: one, two
    when the clock falls back over it (the hour is lived twice), or the gap's end when
    the clock springs over it."""
    if minute >= 24 * 60:
        return _readings(day + timedelta(days=1), minute - 24 * 60, tz)
    first = _at_minute(day, minute, tz)
    local = datetime.combine(day, time(minute // 60, minute % 60, fold=1), tzinfo=tz)
    second = local.astimezone(UTC)
    if second != first and second.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        return sorted((first, second))
    return [first]


def _next_reading(at: datetime, days: list[date], minute: int, tz: ZoneInfo) -> datetime | None:
    later = [r for day in days for r in _readings(day, minute, tz) if r > at]
    return min(later) if later else None


def _offset_change(after: datetime, until: datetime, tz: ZoneInfo) -> datetime | None:
    """The first instant in (after, until] when ``tz`` changes its UTC offset, if it does
    (at most once within a day and a half, in every zone there is)."""
    if after.astimezone(tz).utcoffset() == until.astimezone(tz).utcoffset():
        return None
    offset = after.astimezone(tz).utcoffset()
    lo, hi = int(after.timestamp()), int(until.timestamp()) + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == offset:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)


def _pause_end(at: datetime, windows: PauseWindows, org_tz: ZoneInfo) -> datetime | None:
    """If ``at`` falls in a pause window, when that window ends (in a lived-twice hour,
    the end of the one ``at`` is in)."""
    for s, e in windows.advanced:
        if s <= at < e:
            return e
    local = at.astimezone(org_tz)
    minute = local.hour * 60 + local.minute
    for start, end in windows.weekly.get(local.weekday(), ()):
        if start <= minute < end:
            return _next_reading(at, [local.date()], end, org_tz) or _at_minute(local.date(), end, org_tz)
    return None


def _hours_next(at: datetime, hours: CallingHours, contact_tz: ZoneInfo) -> datetime | None:
    """If ``at`` is outside the contact's calling hours, when they next open: the next
    time the wall clock reads ``start`` (today's, a lived-twice hour's second reading, or
    tomorrow's), unless the clock falls back into the hours before that."""
    if hours.always:
        return None
    local = at.astimezone(contact_tz)
    minute = local.hour * 60 + local.minute
    if hours.start <= minute < hours.end:
        return None
    opening = _next_reading(at, [local.date(), local.date() + timedelta(days=1)], hours.start, contact_tz)
    if opening is None:  # unreachable for real zones; keep the old answer
        day = local.date() if minute < hours.start else local.date() + timedelta(days=1)
        return _at_minute(day, hours.start, contact_tz)
    change = _offset_change(at, opening, contact_tz)
    if change is not None and change < opening:
        there = change.astimezone(contact_tz)
        if hours.start <= there.hour * 60 + there.minute < hours.end:
            return change
    return opening


def next_allowed(
    at: datetime,
    windows: PauseWindows,
    org_timezone: str,
    hours: CallingHours | None = None,
    contact_timezone: str | None = None,
) -> datetime | None:
    """The first instant at or after ``at`` when a call may start, or None if there is
    none within a year (every moment paused)."""
    org_tz = zone(org_timezone)
    contact_tz = zone(contact_timezone or org_timezone)
    hours = hours or CallingHours()
    candidate = at
    limit = at + SEARCH_HORIZON
    for _ in range(10_000):  # each step jumps to a window's end or the next opening
        if candidate >= limit:
            return None
        moved = _pause_end(candidate, windows, org_tz) or _hours_next(candidate, hours, contact_tz)
        if moved is None:
            return candidate
        candidate = max(moved, candidate + timedelta(microseconds=1))
    return None


def is_allowed(at: datetime, windows: PauseWindows, org_timezone: str, hours: CallingHours | None = None, contact_timezone: str | None = None) -> bool:
    return next_allowed(at, windows, org_timezone, hours, contact_timezone) == at


def in_pause_window(at: datetime, windows: PauseWindows, org_timezone: str) -> bool:
    return _pause_end(at, windows, zone(org_timezone)) is not None
