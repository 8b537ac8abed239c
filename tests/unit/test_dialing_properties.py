"""Dial-time properties of the execution engine (hypothesis), through the real
applications and the worker's Dialer, over random organization and contact time zones,
pause windows (weekly and absolute), calling hours, retry rules and outcomes, starting
close to daylight-saving changes: no call is ever placed outside an open window or
beyond the attempts its retry rules allow, and the contact ends in one final state.

"Open" is checked by a plain reading of DOMAIN.md §6.4 at the instant of each dial (the
organization's local weekday and minute against the weekly windows, the absolute ranges,
the contact's local minute against the calling hours), not by domain.windows. The phone
network is a recorder of the calls asked of it (the Telephony port)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from application.calls import CallsApp
from application.campaigns import CampaignsApp
from application.dialing import Dialer
from application.executions import ExecutionCache
from domain import base
from domain.call import Call
from tests.unit.test_call_stateful import CallModel, retry_strategies

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ZONES = ["Africa/Casablanca", "America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo"]
# Daylight-saving changes (and Casablanca's Ramadan change) of those zones, in UTC.
TRANSITIONS = [
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # New York springs forward
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),  # New York falls back
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Paris springs forward
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Paris falls back
    datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Lord Howe: half an hour back
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Lord Howe: half an hour forward
    datetime(2026, 2, 15, 2, 0, tzinfo=UTC),  # Casablanca: Ramadan
]
FLOW = {"startNodeId": "dial", "nodes": [
    {"id": "dial", "type": "dial", "config": {"timeout": 30000, "enableAMD": True}, "outputs": {"onAnswer": "bye"}},
    {"id": "bye", "type": "hangup", "config": {"reason": "done"}},
]}


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


class PhoneNetwork:
    """The Telephony port: records every call the platform asks for."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.placed: list[tuple[datetime, str, int]] = []

    def place_call(self, *, to: str, from_: str, call_id: str, attempt: int, timeout_seconds: int, machine_detection: bool) -> str:
        self.placed.append((self.clock.now(), call_id, attempt))
        return f"CA{len(self.placed):032d}"


def clock_of(minute: int) -> dict[str, int]:
    return {"hour": minute // 60, "minute": minute % 60}


@st.composite
def pause_windows(draw: st.DrawFn, around: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for day in draw(st.lists(st.sampled_from(DAYS), max_size=4, unique=True)):
        spans = []
        for _ in range(draw(st.integers(1, 2))):
            a, b = sorted(draw(st.lists(st.integers(0, 24 * 60 - 1), min_size=2, max_size=2, unique=True)))
            spans.append({"startAt": clock_of(a), "endAt": clock_of(b)})
        out[day] = spans
    advanced = []
    for _ in range(draw(st.integers(0, 2))):
        start = around + timedelta(minutes=draw(st.integers(-24 * 60, 3 * 24 * 60)))
        advanced.append({"startAt": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "endAt": (start + timedelta(minutes=draw(st.integers(1, 24 * 60)))).strftime("%Y-%m-%dT%H:%M:%SZ")})
    if advanced:
        out["advanced"] = advanced
    return out


def is_open(at: datetime, windows: dict[str, Any], org_zone: str, hours: tuple[int, int] | None, contact_zone: str) -> bool:
    """DOMAIN.md §6.4 read literally, at one instant (minute resolution; "all day" is 00:00-23:59)."""
    local = at.astimezone(ZoneInfo(org_zone))
    minute = local.hour * 60 + local.minute
    for w in windows.get(DAYS[local.weekday()], []):
        start = w["startAt"]["hour"] * 60 + w["startAt"]["minute"]
        end = w["endAt"]["hour"] * 60 + w["endAt"]["minute"]
        end = 24 * 60 if end == 23 * 60 + 59 else end
        if start <= minute < end:
            return False
    for w in windows.get("advanced", []):
        if datetime.fromisoformat(w["startAt"]) <= at < datetime.fromisoformat(w["endAt"]):
            return False
    if hours is not None:  # (start, end) in minutes of the contact's local day
        there = at.astimezone(ZoneInfo(contact_zone))
        if not hours[0] <= there.hour * 60 + there.minute < hours[1]:
            return False
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    transition=st.sampled_from(TRANSITIONS),
    offset=st.integers(-36 * 60, 12 * 60),
    org_zone=st.sampled_from(ZONES),
    contact_zone=st.sampled_from(ZONES),
    hours=st.one_of(st.none(), st.integers(0, 22).flatmap(lambda a: st.tuples(st.just(a), st.integers(a + 1, 24)))),
    strategy=retry_strategies(),
    data=st.data(),
)
def test_no_call_outside_an_open_window_or_beyond_its_attempts(
    transition: datetime, offset: int, org_zone: str, contact_zone: str, hours: tuple[int, int] | None,
    strategy: dict[str, Any], data: st.DataObject,
) -> None:
    start = (transition + timedelta(minutes=offset)).replace(second=0, microsecond=0)
    windows = data.draw(pause_windows(start), label="pauseWindows")
    clock = Clock(start)
    previous = base._clock[0]
    base.set_clock(clock.now)
    try:
        campaigns, calls, network = CampaignsApp(), CallsApp(), PhoneNetwork(clock)
        org_id, _ = campaigns.create_organization("Props", "MA", org_zone)
        if hours is not None:
            campaigns.update_organization_settings(org_id, {"callingHours": {"start": f"{hours[0]:02d}:00", "end": f"{hours[1]:02d}:00"}})
        org = campaigns.organization(org_id)
        contact = campaigns.create_contact(org, {"primaryPhone": "+212612345674", "timezone": contact_zone})
        audience = campaigns.create_audience(org.id, {"name": "Props"})
        campaigns.add_audience_contacts(org.id, str(audience.id), [str(contact.id)])
        flow = campaigns.create_flow(org.id, {"name": "Props", "graph": FLOW})
        program = campaigns.create_program(org, {
            "name": "Props", "audienceId": str(audience.id), "flowId": str(flow.id),
            "startAt": (start - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "didPool": ["+212500000001"],
            "retryStrategy": strategy, "pauseWindows": windows,
        })
        execution = campaigns.launch_program(org, str(program.id), clock.now())
        executions = ExecutionCache(campaigns)
        calls.queue_calls(execution, [contact], execution.scheduled_start_at, org.country, org.timezone)
        call_id = str(Call.create_id(execution.id, contact.id))
        dialer = Dialer(campaigns, calls, executions, network, clock)
        model = CallModel(strategy, start)
        for step in range(data.draw(st.integers(5, 40), label="steps")):
            call = calls.call(call_id)
            if call.status == "finished":
                break
            result = dialer.dial(call_id, call.attempt)
            if result.status == "placed":
                at, _, attempt = network.placed[-1]
                assert is_open(at, windows, org_zone, hours and (hours[0] * 60, hours[1] * 60), contact_zone), (at, windows, hours)
                assert attempt <= model.max_attempts()
                outcome = data.draw(st.sampled_from(["completed", "busy", "no_answer", "rejected", "failed"]), label=f"outcome{step}")
                answered_by = data.draw(st.sampled_from(["human", "machine"]), label=f"answeredBy{step}")
                flow_completed = data.draw(st.booleans(), label=f"flowCompleted{step}")
                info = executions.get(execution.id)

                def end(c: Call, o: str = outcome, by: str = answered_by, done: bool = flow_completed, rules: Any = info.retry) -> None:
                    if o == "completed":
                        c.record_answered(c.attempt, by)
                    c.end_attempt(c.attempt, o, None, 1000, clock.now(), rules, flow_completed=done)

                calls.update(call_id, end)
            else:
                # outside_window: closed now; claimed_elsewhere: the retry is not due yet.
                assert result.status in ("outside_window", "claimed_elsewhere"), result
                event(f"declined: {result.status}")
            clock.at += timedelta(minutes=data.draw(st.integers(1, 6 * 60), label=f"wait{step}"))
        attempts = [a for _, _, a in network.placed]
        event(f"attempts dialled: {len(attempts)}")
        assert attempts == list(range(1, len(attempts) + 1)), "each attempt dialled once, in order"
        final = calls.call(call_id)
        assert final.attempt <= model.max_attempts()
        if final.status == "finished":
            assert final.result in ("completed", "failed")
            assert [type(e).__name__ for e in calls.repository.event_store.get(final.id)].count("Finished") == 1
    finally:
        base.set_clock(previous)
