"""Audiences through the real server: static remove-contacts and contactCount, live
audiences whose membership follows rules (each join and exit on the contact's history),
previews, rule errors naming the rule, and the refusal to delete a linked audience."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import Platform, wait_for

FLOW = {"name": "F", "graph": {"startNodeId": "h", "nodes": {"h": {"type": "hangup"}}}}
RICH = {"combinator": "AND", "rules": [
    {"field": "city", "operator": "equals", "value": "Rabat"},
    {"combinator": "OR", "rules": [
        {"field": "custom.balance", "operator": "gte", "value": 1000},
        {"field": "custom.vip", "operator": "equals", "value": True},
    ]},
]}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = Platform(Path(tmp_path_factory.mktemp("aud")) / "var", start_dispatcher=False)
    yield p
    p.close()


@pytest.fixture()
def client(platform: Platform) -> Any:
    _, key = platform.new_org()
    with platform.client(key) as c:
        c.post("/api/custom-attributes", json={"displayName": "Balance", "type": "number"})
        c.post("/api/custom-attributes", json={"displayName": "VIP", "type": "boolean"})
        yield c


def _listed(client: Any, n: int) -> None:
    wait_for(lambda: client.get("/api/contact", params={"limit": 1}).json()["meta"]["total"] == n, what=f"{n} contacts")


def test_static_remove_and_count(client: Any) -> None:
    ids = [client.post("/api/contact", json={"primaryPhone": f"+21261200030{i}"}).json()["id"] for i in range(3)]
    a = client.post("/api/audience", json={"name": "Static"}).json()
    assert a["type"] == "static" and a["contactCount"] == 0
    client.post(f"/api/audience/{a['id']}/add-contacts", json={"contacts": ids})
    removed = client.post(f"/api/audience/{a['id']}/remove-contacts", json={"contacts": [ids[0], ids[0]]})
    assert removed.status_code == 200 and removed.json()["removed"] == 1
    assert client.get(f"/api/audience/{a['id']}").json()["contactCount"] == 2
    wait_for(lambda: (d := client.get("/api/audience").json()["data"]) and d[0]["contactCount"] == 2, what="list count")
    assert client.put(f"/api/audience/{a['id']}", json={"rules": RICH}).status_code == 400


def test_live_audience_follows_contact_changes(platform: Platform, client: Any) -> None:
    amina = client.post("/api/contact", json={"primaryPhone": "+212612000401", "city": "Rabat", "customAttributes": {"balance": 1500}}).json()
    omar = client.post("/api/contact", json={"primaryPhone": "+212612000402", "city": "Rabat", "customAttributes": {"balance": 10}}).json()
    client.post("/api/contact", json={"primaryPhone": "+212612000403", "city": "Fes", "customAttributes": {"vip": True}})
    _listed(client, 3)
    preview = client.post("/api/audience/preview", json={"rules": RICH, "sampleSize": 5})
    assert preview.status_code == 200, preview.text
    assert preview.json()["contactCount"] == 1 and [c["id"] for c in preview.json()["sample"]] == [amina["id"]]

    bad = client.post("/api/audience/preview", json={"rules": {"combinator": "AND", "rules": [
        {"field": "city", "operator": "equals", "value": "Rabat"},
        {"combinator": "OR", "rules": [{"field": "custom.vip", "operator": "gt", "value": True}]}]}})
    assert bad.status_code == 400 and list(bad.json()["fieldErrors"]) == ["rules[1].rules[0]"]

    live = client.post("/api/audience", json={"name": "Rich in Rabat", "type": "live", "rules": RICH})
    assert live.status_code == 201, live.text
    aid = live.json()["id"]
    wait_for(lambda: client.get(f"/api/audience/{aid}").json()["contactCount"] == 1, what="one member")
    # Omar becomes VIP: he joins; Amina moves to Fes: she exits.
    client.put(f"/api/contact/{omar['id']}", json={"customAttributes": {"vip": True}})
    client.put(f"/api/contact/{amina['id']}", json={"city": "Fes"})
    members = wait_for(lambda: (m := client.get(f"/api/audience/{aid}/contacts").json())["meta"]["total"] == 1
                       and m["data"][0]["id"] == omar["id"] and m, what="omar only")
    assert members["data"][0]["primaryPhone"] == "+212612000402"
    kinds = [(h["type"], h["changes"]) for h in client.get(f"/api/contact/{amina['id']}/history").json()["data"]]
    assert ("JoinedAudience", {"audienceId": aid}) in kinds and kinds[-1] == ("ExitedAudience", {"audienceId": aid})
    # New rules: everyone in Fes.
    changed = client.put(f"/api/audience/{aid}", json={"rules": {"combinator": "AND", "rules": [
        {"field": "city", "operator": "equals", "value": "Fes"}]}})
    assert changed.status_code == 200
    wait_for(lambda: client.get(f"/api/audience/{aid}").json()["contactCount"] == 2, what="two in Fes")
    assert client.post(f"/api/audience/{aid}/add-contacts", json={"contacts": [omar["id"]]}).status_code == 400
    assert client.put(f"/api/audience/{aid}", json={"type": "static"}).status_code == 400

    # Linked to a program: deleting is refused; a program on a live audience launches its members.
    flow = client.post("/api/flows", json=FLOW).json()
    program = client.post("/api/programs", json={"name": "P", "audienceId": aid, "flowId": flow["id"],
                                                  "startAt": "2099-01-01T00:00:00Z", "didPool": ["+212500000001"],
                                                  "retryStrategy": {"type": "none"}}).json()
    wait_for(lambda: client.get("/api/programs").json(), what="program listed")
    refused = client.delete(f"/api/audience/{aid}")
    assert refused.status_code == 409 and refused.json()["details"]["programIds"] == [program["id"]]
    launched = client.post(f"/api/programs/{program['id']}/launch")
    assert launched.status_code == 201, launched.text
    execution = client.get(f"/api/program-executions/{launched.json()['executionId']}").json()
    assert execution["totalContacts"] == 2
    client.delete(f"/api/programs/{program['id']}")
    assert client.delete(f"/api/audience/{aid}").status_code == 200


def test_live_audience_created_right_after_its_contacts_enrolls_them(client: Any) -> None:
    # No waiting for the directory: the audience comes within milliseconds of the contacts.
    ids = [client.post("/api/contact", json={"primaryPhone": f"+21261200050{i}", "city": "Rabat",
                                             "customAttributes": {"balance": 1000 + i}}).json()["id"] for i in range(3)]
    client.post("/api/contact", json={"primaryPhone": "+212612000509", "city": "Fes", "customAttributes": {"balance": 5000}})
    live = client.post("/api/audience", json={"name": "Just now", "type": "live", "rules": RICH})
    assert live.status_code == 201, live.text
    aid = live.json()["id"]
    members = wait_for(lambda: (m := client.get(f"/api/audience/{aid}/contacts").json())["meta"]["total"] == 3 and m,
                       what="three members")
    assert sorted(m["id"] for m in members["data"]) == sorted(ids)
    assert client.get(f"/api/audience/{aid}").json()["contactCount"] == 3


def test_list_and_get_carry_the_same_audience_fields(client: Any) -> None:
    static = client.post("/api/audience", json={"name": "Plain list", "description": "by hand"}).json()
    live = client.post("/api/audience", json={"name": "Rule list", "type": "live", "rules": RICH}).json()
    flow = client.post("/api/flows", json=FLOW).json()
    client.post("/api/programs", json={"name": "P", "audienceId": live["id"], "flowId": flow["id"],
                                       "startAt": "2099-01-01T00:00:00Z", "didPool": ["+212500000001"],
                                       "retryStrategy": {"type": "none"}})

    def listed() -> Any:
        rows = {a["id"]: a for a in client.get("/api/audience").json()["data"]}
        return rows if rows.get(live["id"], {}).get("linkedCampaignsCount") == 1 else None

    rows = wait_for(listed, what="the program counted on the live audience")
    for a in (static, live):
        got = client.get(f"/api/audience/{a['id']}").json()
        assert rows[a["id"]] == got
    assert rows[static["id"]]["type"] == "static" and rows[static["id"]]["rules"] is None
    assert rows[live["id"]]["type"] == "live" and rows[live["id"]]["rules"] == client.get(f"/api/audience/{live['id']}").json()["rules"]
    assert rows[static["id"]]["linkedCampaignsCount"] == 0 and rows[live["id"]]["linkedCampaignsCount"] == 1
    assert set(rows[live["id"]]) >= {"id", "organizationId", "name", "description", "type", "contactCount",
                                     "linkedCampaignsCount", "createdAt", "updatedAt"}
