"""A batch of dial jobs (one message, Dialer.dial_many): each job gets the verdict it
would get alone, each call is claimed before it is dialled and dialled at most once, a
claim that loses a race fails alone, and every event is correlated to its own call."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from application.calls import CallsApp
from application.campaigns import CampaignsApp
from application.dialing import Dialer
from application.executions import ExecutionCache
from application.suppression import Suppressions
from domain import base
from domain.call import Call
from tests.unit.test_dialing_properties import FLOW, Clock, PhoneNetwork

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Iterator[Clock]:
    """The platform's clock (the domain's too) at T0 for the test."""
    previous = base._clock[0]
    fake = Clock(T0)
    base.set_clock(fake.now)
    try:
        yield fake
    finally:
        base.set_clock(previous)


class RacedCalls(CallsApp):
    """The calls application, where another worker claims ``rival`` right after this
    worker's batch has loaded it (before its claims are saved)."""

    rival: UUID | None = None

    def load_many(self, ids: list[UUID]) -> dict[UUID, Any]:
        found = super().load_many(ids)
        if self.rival in found:
            theirs = self.call(self.rival)
            theirs.claim(1, T0, "other-worker")
            self.save(theirs)
        return found


def setup(clock: Clock, n: int) -> tuple[CampaignsApp, RacedCalls, Any, list[str], Any]:
    campaigns, calls = CampaignsApp(), RacedCalls()
    org_id, _ = campaigns.create_organization("Batch", "MA", "Africa/Casablanca")
    org = campaigns.organization(org_id)
    contacts = [campaigns.create_contact(org, {"primaryPhone": f"+21261234567{i}"}) for i in range(n)]
    audience = campaigns.create_audience(org.id, {"name": "Batch"})
    campaigns.add_audience_contacts(org.id, str(audience.id), [str(c.id) for c in contacts])
    flow = campaigns.create_flow(org.id, {"name": "Batch", "graph": FLOW})
    program = campaigns.create_program(org, {
        "name": "Batch", "audienceId": str(audience.id), "flowId": str(flow.id),
        "startAt": (T0 - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"), "didPool": ["+212500000001"],
        "retryStrategy": {"type": "none"},
    })
    execution = campaigns.launch_program(org, str(program.id), clock.now())
    calls.queue_calls(execution, contacts, execution.scheduled_start_at, org.country, org.timezone)
    ids = [str(Call.create_id(execution.id, c.id)) for c in contacts]
    return campaigns, calls, org, ids, execution


def test_each_job_of_a_batch_gets_its_own_verdict_and_its_own_correlation(clock: Clock) -> None:
    campaigns, calls, org, ids, _ = setup(clock, 5)
    network = PhoneNetwork(clock)
    dnc = Suppressions(campaigns)
    dialer = Dialer(campaigns, calls, ExecutionCache(campaigns), network, clock, "w1", suppressions=dnc)
    dnc.add(org, calls.call(ids[3]).to, "asked")  # on the do-not-call list
    calls.rival = UUID(ids[2])  # claimed by another worker while this batch runs
    jobs = [(ids[0], 1), (ids[1], 2), (ids[2], 1), (ids[3], 1), (ids[4], 1), ("not-a-call-id", 1)]

    results = [r.status for r in dialer.dial_many(jobs)]

    assert results == ["placed", "stale", "claimed_elsewhere", "suppressed", "placed", "stale"]
    assert sorted(c for _, c, _ in network.placed) == sorted([ids[0], ids[4]])
    for cid in ids:
        claims = [e for e in list(calls.events.get(UUID(cid))) if type(e).__name__ == "DialClaimed"]
        assert len(claims) <= 1, cid  # never claimed twice
        for e in list(calls.events.get(UUID(cid)))[1:]:
            if getattr(e, "worker", "w1") == "w1":  # (not the rival's claim)
                assert e.meta.get("correlationId") == cid, (cid, type(e).__name__, e.meta)
    assert [e.worker for e in list(calls.events.get(UUID(ids[2]))) if type(e).__name__ == "DialClaimed"] == ["other-worker"]
    assert calls.call(ids[0]).status == calls.call(ids[4]).status == "dialing"
    assert calls.call(ids[3]).status == "finished"
    # Delivered again (a worker died after dialling): nobody is dialled twice.
    calls.rival = None
    again = [r.status for r in dialer.dial_many(jobs)]
    assert again[0] == again[4] == "stale" and len(network.placed) == 2


def test_a_batch_paused_between_its_check_and_its_claims_dials_nobody(clock: Clock) -> None:
    """The pause lands after the batch's first read: every claim is released, nothing
    is dialled, and the dispatcher is told each job was declined."""
    campaigns, calls, _, ids, execution = setup(clock, 3)
    network = PhoneNetwork(clock)
    declined: list[tuple[str, int]] = []

    class PausingCalls:
        """Pauses the execution when the claims are saved (as an API request would)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(calls, name)

        def save_all_or_each(self, claims: list[Call]) -> set[UUID]:
            e = campaigns.execution(None, execution.id)
            e.pause()
            campaigns.save(e)
            return calls.save_all_or_each(claims)

    dialer = Dialer(campaigns, PausingCalls(), ExecutionCache(campaigns), network, clock, "w1",  # type: ignore[arg-type]
                    declined=lambda c, a: declined.append((c, a)))
    results = [r.status for r in dialer.dial_many([(i, 1) for i in ids])]

    assert results == ["not_running"] * 3
    assert network.placed == []
    assert sorted(declined) == sorted((i, 1) for i in ids)
    for cid in ids:
        names = [type(e).__name__ for e in list(calls.events.get(UUID(cid)))]
        assert names[-2:] == ["DialClaimed", "ClaimReleased"], names
        assert calls.call(cid).status == "pending"


def test_the_dial_is_recorded_on_the_claimed_call_brought_forward_past_the_callbacks(clock: Clock) -> None:
    """The claimed call is handed over before the dial: the provider's ringing callback,
    stored while the dial request is answered, and then the dial's record both land on
    it, with no replay of the stream."""
    campaigns, calls, _, ids, _ = setup(clock, 2)
    loads: list[Any] = []
    full_load = calls.call
    calls.call = lambda id_: loads.append(id_) or full_load(id_)  # type: ignore[method-assign]

    class RingingNetwork(PhoneNetwork):
        def place_call(self, **kw: Any) -> str:
            sid = super().place_call(**kw)
            calls.update(kw["call_id"], lambda c: c.record_ringing(kw["attempt"]))  # the callback
            return sid

    dialer = Dialer(campaigns, calls, ExecutionCache(campaigns), RingingNetwork(clock), clock, "w1")
    assert [r.status for r in dialer.dial_many([(i, 1) for i in ids])] == ["placed", "placed"]
    assert loads == []  # no stream replayed after the batch's load
    for cid in ids:
        names = [type(e).__name__ for e in calls.events.get(UUID(cid))]
        assert names[-3:] == ["DialClaimed", "Ringing", "Placed"], names
        assert full_load(cid).provider_call_id is not None
