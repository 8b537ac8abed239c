"""Contacts at scale through the real HTTP server: custom attribute definitions, bulk
upsert matched on the number, time zones, and each contact's change history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import Platform, wait_for


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = Platform(Path(tmp_path_factory.mktemp("contacts")) / "var", start_dispatcher=False)
    yield p
    p.close()


@pytest.fixture()
def client(platform: Platform) -> Any:
    _, key = platform.new_org()
    with platform.client(key) as c:
        yield c


def test_custom_attribute_definitions(client: Any) -> None:
    created = client.post("/api/custom-attributes", json={"displayName": "Account Balance", "type": "number"})
    assert created.status_code == 201, created.text
    attr = created.json()
    assert attr["name"] == "account_balance" and attr["type"] == "number" and attr["id"] and attr["createdAt"]
    dup = client.post("/api/custom-attributes", json={"displayName": "account balance", "type": "text"})
    assert dup.status_code == 409 and "account_balance" in dup.json()["message"]
    bad = client.post("/api/custom-attributes", json={"displayName": "X", "type": "money"})
    assert bad.status_code == 400 and "type" in bad.json()["fieldErrors"]
    assert client.get(f"/api/custom-attributes/{attr['id']}").json()["displayName"] == "Account Balance"
    immutable = client.put(f"/api/custom-attributes/{attr['id']}", json={"type": "text"})
    assert immutable.status_code == 400 and "type" in immutable.json()["fieldErrors"]
    described = client.put(f"/api/custom-attributes/{attr['id']}", json={"description": "MAD owed"})
    assert described.status_code == 200 and described.json()["description"] == "MAD owed"
    assert [a["name"] for a in client.get("/api/custom-attributes").json()] == ["account_balance"]

    wrong = client.post("/api/contact", json={"primaryPhone": "+212612000001", "customAttributes": {"account_balance": "lots"}})
    assert wrong.status_code == 400
    assert wrong.json()["fieldErrors"] == {"customAttributes.account_balance": ["number value must be a number"]}
    ok = client.post("/api/contact", json={"primaryPhone": "+212612000001", "customAttributes": {"account_balance": 12.5}})
    assert ok.status_code == 201, ok.text
    bad_update = client.put(f"/api/contact/{ok.json()['id']}", json={"customAttributes": {"account_balance": True}})
    assert bad_update.status_code == 400

    assert client.delete(f"/api/custom-attributes/{attr['id']}").status_code == 200
    assert client.get(f"/api/custom-attributes/{attr['id']}").status_code == 404
    # The value stays on the contact but can no longer be read.
    assert client.get(f"/api/contact/{ok.json()['id']}").json()["customAttributes"] == []


def test_upsert_matches_on_the_number_and_is_all_or_nothing(platform: Platform, client: Any) -> None:
    client.post("/api/custom-attributes", json={"displayName": "Tier", "type": "text"})
    first = client.post("/api/contact", json={"primaryPhone": "+212612000110", "firstName": "Old"}).json()  # just created: not yet in the read model
    batch = [{"primaryPhone": f"06120001{i:02d}", "firstName": f"P{i}", "customAttributes": {"tier": "gold"}} for i in range(10, 60)]
    r = client.post("/api/contact/upsert", json={"data": batch})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["created"], body["updated"], body["unchanged"]) == (49, 1, 0)
    assert body["data"][0] == {"index": 0, "id": first["id"], "status": "updated"}
    again = client.post("/api/contact/upsert", json={"data": batch}).json()
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 50)  # nothing recorded twice
    assert len(client.get(f"/api/contact/{first['id']}/history").json()["data"]) == 2

    broken = [{"primaryPhone": "+212612000070"}, {"primaryPhone": "nope"}, {"primaryPhone": "+212612000071", "customAttributes": {"tier": 5}}]
    refused = client.post("/api/contact/upsert", json={"data": broken})
    assert refused.status_code == 400
    assert set(refused.json()["fieldErrors"]) == {"data[1].primaryPhone", "data[2].customAttributes.tier"}
    too_many = client.post("/api/contact/upsert", json={"data": [{"primaryPhone": "+212612000072"}] * 1001})
    assert too_many.status_code == 400 and "data" in too_many.json()["fieldErrors"]
    total = wait_for(lambda: (t := client.get("/api/contact", params={"limit": 1}).json()["meta"]["total"]) == 50 and t, what="50 contacts listed")
    assert total == 50  # none of the refused batch was stored


def test_time_zone_is_derived_and_settable(client: Any) -> None:
    ma = client.post("/api/contact", json={"primaryPhone": "0612000100"}).json()
    assert ma["timezone"] == "Africa/Casablanca"
    us = client.post("/api/contact", json={"primaryPhone": "+14155552671", "timezone": "America/Denver"}).json()
    assert us["timezone"] == "America/Denver"
    moved = client.put(f"/api/contact/{ma['id']}", json={"timezone": "Europe/Paris"})
    assert moved.json()["timezone"] == "Europe/Paris"
    bad = client.put(f"/api/contact/{ma['id']}", json={"timezone": "Mars/Olympus"})
    assert bad.status_code == 400 and "timezone" in bad.json()["fieldErrors"]


def test_history_lists_every_change_oldest_first_with_the_actor(platform: Platform, client: Any) -> None:
    c = client.post("/api/contact", json={"primaryPhone": "+212612000200", "firstName": "A"}, headers={"x-request-id": "req-1"}).json()
    client.put(f"/api/contact/{c['id']}", json={"firstName": "B"})
    client.put(f"/api/contact/{c['id']}", json={"firstName": "B"})  # no change, nothing recorded
    client.delete(f"/api/contact/{c['id']}")
    history = client.get(f"/api/contact/{c['id']}/history").json()["data"]
    assert [h["type"] for h in history] == ["Created", "Updated", "Deleted"]
    assert history[0]["changes"]["primaryPhone"] == "+212612000200" and history[0]["meta"]["requestId"] == "req-1"
    assert history[1]["changes"] == {"firstName": "B"}
    assert all(h["actor"].startswith("apikey:") for h in history)
    assert [h["version"] for h in history] == [1, 2, 3]
    _, other_key = platform.new_org("Other")
    with platform.client(other_key) as other:
        assert other.get(f"/api/contact/{c['id']}/history").status_code == 404


def test_concurrent_updates_of_one_contact_all_take_effect(client: Any, platform: Platform) -> None:
    """Updates sent at the same moment to one contact (one stream) are each retried on the
    contact's new version: every one answers 200, none is lost, the history has each once."""
    from concurrent.futures import ThreadPoolExecutor

    writers = range(16)
    for i in writers:
        assert client.post("/api/custom-attributes", json={"displayName": f"w{i}", "type": "number"}).status_code == 201
    cid = client.post("/api/contact", json={"primaryPhone": "+212612000300", "firstName": "Nobody"}).json()["id"]
    key = client.headers["x-api-key"]

    def put(i: int) -> int:
        with platform.client(key) as own:
            body = {"firstName": f"Writer {i}", "customAttributes": {f"w{i}": i}}
            return int(own.put(f"/api/contact/{cid}", json=body).status_code)

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(put, writers))
    assert statuses == [200] * 16, statuses

    history = client.get(f"/api/contact/{cid}/history").json()["data"]
    assert [h["type"] for h in history] == ["Created"] + ["Updated"] * 16
    assert [h["version"] for h in history] == list(range(1, 18))
    assert sorted((h["changes"]["firstName"], h["changes"]["customAttributes"]) for h in history[1:]) == sorted(
        (f"Writer {i}", {f"w{i}": i}) for i in writers)
    got = client.get(f"/api/contact/{cid}").json()
    assert got["firstName"] == history[-1]["changes"]["firstName"]  # the last update recorded wins
    assert {a["name"]: a["value"] for a in got["customAttributes"]} == {f"w{i}": i for i in writers}


def test_concurrent_updates_with_one_if_match_one_wins_the_others_412(client: Any, platform: Platform) -> None:
    """With If-Match the client asked for no retry: of the updates naming the same version,
    one is recorded and every other answers 412 (never a 500), whichever check stops it."""
    from concurrent.futures import ThreadPoolExecutor

    cid = client.post("/api/contact", json={"primaryPhone": "+212612000301"}).json()["id"]
    etag = client.get(f"/api/contact/{cid}").headers["etag"]
    key = client.headers["x-api-key"]

    def put(i: int) -> int:
        with platform.client(key) as own:
            return int(own.put(f"/api/contact/{cid}", json={"firstName": f"Writer {i}"}, headers={"If-Match": etag}).status_code)

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(put, range(16)))
    assert sorted(statuses) == [200] + [412] * 15, statuses
    assert [h["type"] for h in client.get(f"/api/contact/{cid}/history").json()["data"]] == ["Created", "Updated"]


def test_concurrent_deletes_of_one_contact_one_deletes_the_others_404(client: Any, platform: Platform) -> None:
    """A delete that meets a concurrent one is decided again: the contact is gone, so 404
    (as a second delete sent later would be), not a 500; the history records one Deleted."""
    from concurrent.futures import ThreadPoolExecutor

    cid = client.post("/api/contact", json={"primaryPhone": "+212612000302"}).json()["id"]
    key = client.headers["x-api-key"]

    def delete(_: int) -> int:
        with platform.client(key) as own:
            return int(own.delete(f"/api/contact/{cid}").status_code)

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(delete, range(16)))
    assert sorted(statuses) == [200] + [404] * 15, statuses
    assert [h["type"] for h in client.get(f"/api/contact/{cid}/history").json()["data"]] == ["Created", "Deleted"]
