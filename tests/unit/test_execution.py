"""Execution lifecycle (DOMAIN.md §7.3): scheduled → running ⇄ paused → completed/cancelled;
every other move is a 400 "Invalid state transition"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from domain.errors import InvalidStateTransition
from domain.execution import Execution

T0 = datetime(2025, 1, 20, 10, 0, tzinfo=UTC)


def new_execution() -> Execution:
    return Execution(
        organization_id=uuid4(),
        program_id=uuid4(),
        program={"name": "My First Campaign", "retryStrategy": {"type": "none"}},
        flow={"id": "f", "version": 1},
        contact_ids=["c1", "c2", "c3"],
        scheduled_start_at=T0,
        scheduled_stop_at=None,
    )


MOVES: dict[str, Callable[[Execution], None]] = {
    "start": lambda e: e.start(T0),
    "pause": lambda e: e.pause(),
    "resume": lambda e: e.resume(),
    "complete": lambda e: e.complete(T0 + timedelta(hours=1)),
    "cancel": lambda e: e.cancel(T0 + timedelta(hours=1)),
}


def in_state(*moves: str) -> Execution:
    execution = new_execution()
    for move in moves:
        MOVES[move](execution)
    return execution


def test_walkthrough_lifecycle_scheduled_running_completed():
    execution = new_execution()
    assert execution.status == "scheduled"
    assert execution.total_contacts == 3
    execution.start(T0 + timedelta(seconds=1))
    assert (execution.status, execution.actual_start_at) == ("running", T0 + timedelta(seconds=1))
    execution.record_calls_queued(3)
    execution.complete(T0 + timedelta(minutes=5))
    assert (execution.status, execution.actual_end_at) == ("completed", T0 + timedelta(minutes=5))
    assert execution.calls_queued
    kinds = [type(e).__name__ for e in execution.collect_events()]
    assert kinds == ["Created", "Started", "CallsQueued", "Completed"]


def test_pause_and_resume():
    execution = in_state("start", "pause")
    assert execution.status == "paused"
    execution.resume()
    assert execution.status == "running"
    execution.pause()
    execution.resume()
    assert execution.status == "running"


@pytest.mark.parametrize("before", [(), ("start",), ("start", "pause")])
def test_cancel_from_any_active_state(before):
    execution = in_state(*before)
    execution.cancel(T0 + timedelta(minutes=3))
    assert (execution.status, execution.actual_end_at) == ("cancelled", T0 + timedelta(minutes=3))


@pytest.mark.parametrize(
    ("before", "move", "message"),
    [
        ((), "pause", "Invalid state transition: scheduled -> paused"),
        ((), "resume", "Invalid state transition: scheduled -> running"),
        ((), "complete", "Invalid state transition: scheduled -> completed"),
        (("start",), "start", "Invalid state transition: running -> running"),
        (("start",), "resume", "Invalid state transition: running -> running"),
        (("start", "pause"), "pause", "Invalid state transition: paused -> paused"),
        (("start", "pause"), "start", "Invalid state transition: paused -> running"),
        (("start", "pause"), "complete", "Invalid state transition: paused -> completed"),
        (("start", "complete"), "pause", "Invalid state transition: completed -> paused"),
        (("start", "complete"), "cancel", "Invalid state transition: completed -> cancelled"),
        (("cancel",), "resume", "Invalid state transition: cancelled -> running"),
        (("cancel",), "start", "Invalid state transition: cancelled -> running"),
        (("start", "cancel"), "cancel", "Invalid state transition: cancelled -> cancelled"),
    ],
)
def test_invalid_transitions_are_refused_and_append_nothing(before, move, message):
    execution = in_state(*before)
    status = execution.status
    execution.collect_events()
    with pytest.raises(InvalidStateTransition) as caught:
        MOVES[move](execution)
    assert caught.value.message == message
    assert (caught.value.status, caught.value.code) == (400, "InvalidStateTransition")
    assert execution.status == status
    assert execution.collect_events() == []


def test_threshold_pause_can_be_resumed():
    execution = in_state("start")
    execution.status = "paused_threshold"  # set by an auto-pause rule (not modelled here yet)
    execution.resume()
    assert execution.status == "running"


# -- large launches: the snapshot by reference and the bulk reads behind it -----------------


def test_an_audience_of_few_versions_but_many_members_is_snapshotted_by_reference():
    from application.campaigns import SMALL_AUDIENCE_MEMBERS, CampaignsApp
    from application.dispatcher import MemberIds
    from domain.audience import Audience
    from domain.contact import Contact

    app = CampaignsApp()
    org_id, _ = app.create_organization("Big", "MA", "Africa/Casablanca")
    org = app.organization(org_id)
    n = SMALL_AUDIENCE_MEMBERS + 1
    people = [Contact(org.id, f"+2126{1000000 + i:07d}{4 + i % 6}", "", {"firstName": f"P{i}"}) for i in range(n)]
    app.save(*people)
    audience = Audience(org.id, "One import", None)
    audience.add_members([str(p.id) for p in people])  # one version, many members
    app.save(audience)
    flow = app.create_flow(org.id, {"name": "F", "graph": {"startNodeId": "h", "nodes": [{"id": "h", "type": "hangup", "config": {}}]}})
    program = app.create_program(org, {"name": "P", "audienceId": str(audience.id), "flowId": str(flow.id),
                                       "startAt": "2025-01-01T00:00:00Z", "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}})
    execution = app.launch_program(org, str(program.id), T0)
    assert execution.contact_ids == []
    assert execution.audience_ref == {"audienceId": str(audience.id), "version": audience.version}

    # Members as of the pinned version, in order: a later removal or addition is not in it.
    later = Contact(org.id, "+212699999994", "", {})
    app.save(later)
    audience.remove_members([str(people[0].id)])
    audience.add_members([str(later.id)])
    app.save(audience)
    members = app.audience_members_at(audience.id, execution.audience_ref["version"], page=1)
    assert members == [str(p.id) for p in people]
    assert app.audience_members_at(audience.id, audience.version) == [str(p.id) for p in people[1:]] + [str(later.id)]

    # Bulk contact reads keep the order asked for and leave out deleted contacts and others'.
    other_org, _ = app.create_organization("Other", "MA", "Africa/Casablanca")
    stranger = Contact(other_org, "+212611111114", "", {})
    app.save(stranger)
    app.delete_contact(org.id, str(people[1].id))
    asked = [str(people[3].id), str(stranger.id), str(people[1].id), str(people[2].id), "00000000-0000-0000-0000-000000000000"]
    assert [str(c.id) for c in app.contacts_of(org.id, asked)] == [str(people[3].id), str(people[2].id)]
    assert app.contacts_of(org.id, [str(people[2].id)])[0].snapshot() == app.contact(org.id, people[2].id).snapshot()

    packed = MemberIds(members)
    assert len(packed) == n and packed[0] == members[0] and packed[-1] == members[-1]
    assert packed[5:9] == members[5:9] and packed[n - 1 : n + 5] == members[n - 1 :]


def test_an_audience_keeps_its_members_in_joining_order_once_each():
    """Members kept in an ordered dict: a member added again keeps its place, one removed
    and added again joins at the end, and removing a stranger changes nothing."""
    from uuid import uuid4

    from application.dispatcher import MemberIds
    from domain.audience import Audience

    a, b, c, d = (str(uuid4()) for _ in range(4))
    audience = Audience(uuid4(), "Order", None)
    audience.add_members([a, b, c, b])
    audience.add_members([b, d])
    assert audience.members == [a, b, c, d] and audience.member_count == 4
    audience.remove_members([b, str(uuid4())])
    assert audience.members == [a, c, d] and not audience.has_member(b)
    audience.add_members([b])
    assert audience.members == [a, c, d, b]
    assert audience.members_slice(1, 3) == [c, d] and audience.members_slice(3, 99) == [b]
    # Packed ids read back the same, whether given in the canonical form or not.
    assert list(MemberIds(audience.members)) == [a, c, d, b]
    assert list(MemberIds([x.upper() for x in audience.members])) == [a, c, d, b]
    assert list(MemberIds([x.replace("-", "") for x in audience.members])) == [a, c, d, b]


def test_a_launch_is_queued_in_batches_that_start_small_and_grow():
    """The first batches are small, so the first calls are stored, projected and sent
    soon; then 2,000 a batch. Every member is queued once, in order."""
    from application.dispatcher import QUEUE_BATCH, queue_batch_size

    sizes, queued = [], 0
    while queued < 10_000:
        sizes.append(queue_batch_size(queued))
        queued += sizes[-1]
    assert sizes[:6] == [200, 200, 400, 800, 1600, 2000]
    assert set(sizes[5:]) == {QUEUE_BATCH}
