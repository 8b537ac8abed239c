"""The documented resources through the real HTTP server: each CRUD path, tenant scoping,
errors that name the field, roles."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.harness import Platform

FLOW = {
    "name": "Tiny",
    "graph": {"startNodeId": "d", "nodes": {
        "d": {"type": "dial", "outputs": {"onAnswer": "s"}},
        "s": {"type": "say", "config": {"text": "Hi"}, "outputs": {"onComplete": "h"}},
        "h": {"type": "hangup"},
    }},
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = Platform(Path(tmp_path_factory.mktemp("api")) / "var")
    yield p
    p.close()


@pytest.fixture()
def client(platform: Platform) -> Any:
    _, key = platform.new_org()
    with platform.client(key) as c:
        yield c


def test_contact_crud_and_errors(client: Any) -> None:
    assert client.post("/api/custom-attributes", json={"displayName": "Balance", "type": "number"}).status_code == 201
    r = client.post("/api/contact", json={"primaryPhone": "0612345670", "firstName": "Amina", "customAttributes": {"balance": 1500}})
    assert r.status_code == 201, r.text
    contact = r.json()
    assert contact["primaryPhone"] == "+212612345670"  # national number, organization's country
    assert contact["channels"] == [] and contact["organizationId"]
    got = client.get(f"/api/contact/{contact['id']}").json()
    assert got["firstName"] == "Amina"
    assert got["customAttributes"] == [
        {"name": "balance", "displayName": "Balance", "description": None, "type": "number", "value": 1500, "isLocked": False}
    ]
    dup = client.post("/api/contact", json={"primaryPhone": "+212 612-345-670"})
    assert dup.status_code == 409 and dup.json()["message"] == "Phone number already exists"
    bad = client.post("/api/contact", json={"primaryPhone": "12"})
    assert bad.status_code == 400
    assert "primaryPhone" in bad.json()["fieldErrors"] and bad.json()["error"] == "VALIDATION_FAILED"
    missing = client.post("/api/contact", json={"firstName": "x"})
    assert missing.status_code == 400 and "primaryPhone" in missing.json()["fieldErrors"]
    wrong_type = client.post("/api/contact", json={"primaryPhone": "+212612345671", "firstName": 3})
    assert wrong_type.status_code == 400 and "firstName" in wrong_type.json()["fieldErrors"]
    not_object = client.post("/api/contact", json=[1, 2])
    assert not_object.status_code == 400
    upd = client.put(f"/api/contact/{contact['id']}", json={"lastName": "B"})
    assert upd.status_code == 200 and upd.json()["lastName"] == "B" and upd.json()["firstName"] == "Amina"
    deleted = client.delete(f"/api/contact/{contact['id']}")
    assert deleted.status_code == 200 and deleted.json()["deletedAt"]
    assert client.get(f"/api/contact/{contact['id']}").status_code == 404
    # A deleted contact's number can be created again: the same stream is restored.
    again = client.post("/api/contact", json={"primaryPhone": "+212612345670"})
    assert again.status_code == 201 and again.json()["id"] == contact["id"]
    assert client.get("/api/contact/not-a-uuid").status_code == 404


def test_audience_flow_program_paths(client: Any) -> None:
    contact = client.post("/api/contact", json={"primaryPhone": "+212612345672"}).json()
    assert client.post("/api/audience", json={"name": "ab"}).status_code == 400
    audience = client.post("/api/audience", json={"name": "Group", "description": None}).json()
    assert client.get(f"/api/audience/{audience['id']}").json()["name"] == "Group"
    assert client.put(f"/api/audience/{audience['id']}", json={"name": "Group 2"}).json()["name"] == "Group 2"
    missing = client.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [str(UUID(int=1))]})
    assert missing.status_code == 404 and missing.json()["error"] == "ContactNotFoundError"
    ok = client.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [contact["id"], contact["id"]]})
    assert ok.status_code == 200 and ok.json()["added"] == 1
    members = client.get(f"/api/audience/{audience['id']}/contacts").json()
    assert [m["id"] for m in members["data"]] == [contact["id"]] and members["meta"]["total"] == 1
    assert client.get(f"/api/audience/{audience['id']}/contacts", params={"limit": 101}).status_code == 400

    flow = client.post("/api/flows", json=FLOW)
    assert flow.status_code == 201, flow.text
    assert [n["id"] for n in flow.json()["graph"]["nodes"]] == ["d", "s", "h"]
    assert client.get(f"/api/flows/{flow.json()['id']}").json()["version"] == 1
    changed = client.put(f"/api/flows/{flow.json()['id']}", json={"graph": {**FLOW["graph"], "startNodeId": "s"}})
    assert changed.status_code == 400  # 'd' would be unreachable
    assert "graph.nodes.d.id" in changed.json()["fieldErrors"]
    v2 = client.put(f"/api/flows/{flow.json()['id']}", json={"name": "Tiny 2"})
    assert v2.json()["version"] == 1 and v2.json()["name"] == "Tiny 2"
    bad = client.post("/api/flows/validate", json={"graph": {"startNodeId": "a", "nodes": [{"id": "a", "type": "teleport"}]}})
    assert bad.status_code == 201 and bad.json()["valid"] is False
    assert bad.json()["errors"][0]["nodeId"] == "a" and "unknown node type" in bad.json()["errors"][0]["message"]

    body = {"name": "P", "audienceId": audience["id"], "flowId": flow.json()["id"], "startAt": "2030-01-01T09:00:00+01:00",
            "didPool": ["+212500000001"], "retryStrategy": {"type": "fixed_delay", "delayMinutes": 10, "maxRetries": 2}}
    program = client.post("/api/programs", json=body)
    assert program.status_code == 201, program.text
    assert program.json()["startAt"] == "2030-01-01T08:00:00.000Z"
    for field, value, code in [("retryStrategy", {"type": "sometimes"}, "InvalidRetryStrategyError"),
                               ("didPool", [], "VALIDATION_FAILED"), ("startAt", "tomorrow", "VALIDATION_FAILED")]:
        r = client.post("/api/programs", json={**body, field: value})
        assert r.status_code == 400 and r.json()["error"] == code, r.text
    r = client.post("/api/programs", json={k: v for k, v in body.items() if k != "flowId"})
    assert r.status_code == 400 and "flowId" in r.json()["fieldErrors"]
    pid = program.json()["id"]
    assert client.patch(f"/api/programs/{pid}", json={"name": "P2"}).json()["name"] == "P2"
    launched = client.post(f"/api/programs/{pid}/launch")
    assert launched.status_code == 201 and launched.json()["status"] == "scheduled"
    again = client.post(f"/api/programs/{pid}/launch")
    assert again.status_code == 409 and again.json()["error"] == "ExecutionAlreadyRunningError"
    eid = launched.json()["executionId"]
    assert client.patch(f"/api/program-executions/{eid}/pause").status_code == 400  # scheduled, not running
    assert client.delete(f"/api/program-executions/{eid}").status_code == 204
    assert client.patch(f"/api/program-executions/{eid}/resume").status_code == 400
    archived = client.patch(f"/api/programs/{pid}", json={"status": "archived"})
    assert archived.json()["status"] == "archived"
    assert client.post(f"/api/programs/{pid}/launch").status_code == 409


def test_empty_audience_cannot_launch(client: Any) -> None:
    audience = client.post("/api/audience", json={"name": "Empty"}).json()
    flow = client.post("/api/flows", json=FLOW).json()
    program = client.post("/api/programs", json={"name": "P", "audienceId": audience["id"], "flowId": flow["id"],
                                                 "startAt": "2025-01-01T00:00:00Z", "didPool": ["+212500000001"],
                                                 "retryStrategy": {"type": "none"}}).json()
    r = client.post(f"/api/programs/{program['id']}/launch")
    assert r.status_code == 400 and r.json()["error"] == "AudienceEmptyError"


def test_tenants_keys_and_roles(platform: Platform) -> None:
    org_a, key_a = platform.new_org("A")
    _, key_b = platform.new_org("B")
    with platform.client(key_a) as a, platform.client(key_b) as b:
        contact = a.post("/api/contact", json={"primaryPhone": "+212612345673"}).json()
        assert b.get(f"/api/contact/{contact['id']}").status_code == 404
        assert b.post("/api/contact", json={"primaryPhone": "+212612345673"}).status_code == 201  # its own
        assert a.get(f"/api/contact/{contact['id']}", headers={"x-api-key": ""}).status_code == 401
        assert a.get("/api/users/me", headers={"x-api-key": "nonsense"}).status_code == 401
        auditor = platform.container.campaigns.issue_api_key(UUID(org_a), "auditor", "audit")
        r = a.get(f"/api/contact/{contact['id']}", headers={"x-api-key": auditor})
        assert r.status_code == 200
        w = a.post("/api/contact", json={"primaryPhone": "+212612345674"}, headers={"x-api-key": auditor})
        assert w.status_code == 403
    # Every event carries the acting key and a request id.
    events = list(platform.container.campaigns.repository.event_store.get(UUID(contact["id"])))
    assert events[0].meta["actor"].startswith("apikey:") and events[0].meta["requestId"]


def test_openapi_docs(platform: Platform) -> None:
    import httpx

    r = httpx.get(f"{platform.base_url}/docs/openapi.json")
    assert r.status_code == 200 and "/api/programs/{program_id}/launch" in r.json()["paths"]
    assert httpx.get(f"{platform.base_url}/docs").status_code == 200


def test_twilio_webhooks_reject_bad_signatures(platform: Platform) -> None:
    import httpx

    r = httpx.post(f"{platform.base_url}/twilio/status/{UUID(int=5)}/1", data={"CallStatus": "completed"},
                   headers={"X-Twilio-Signature": "forged"})
    assert r.status_code == 403
    r = httpx.post(f"{platform.base_url}/twilio/voice/{UUID(int=5)}/1", data={"CallStatus": "in-progress"})
    assert r.status_code == 403
    assert r.headers["x-request-id"]  # the request-id middleware wraps Twilio's callbacks too


def test_twilio_webhooks_refuse_what_twilio_never_sends(platform: Platform) -> None:
    """Each with a status and a line that name the problem, before any signature check."""
    import httpx

    base = f"{platform.base_url}/twilio"
    r = httpx.get(f"{base}/status/{UUID(int=5)}/1")
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    r = httpx.post(f"{base}/status/{UUID(int=5)}/1", json={"CallStatus": "completed"})
    assert r.status_code == 415 and "x-www-form-urlencoded" in r.text
    r = httpx.post(f"{base}/status/{UUID(int=5)}/1", data={"CallStatus": "x" * 300_000})
    assert r.status_code == 413 and "at most" in r.text
    for path in (f"/status/{UUID(int=5)}/one", f"/voice/{UUID(int=5)}/1/input/x", "/recording/a/1", "/status/a/1/input/2"):
        assert httpx.post(base + path, data={"CallStatus": "completed"}).status_code == 404, path


def test_twilio_webhooks_answer_503_while_the_store_is_unreachable() -> None:
    """Twilio retries a 5xx, then falls back: an outage is a 503 with Retry-After (as the
    API's), a bug a 500 with our error body; neither leaks the exception."""
    import asyncio
    import json
    from types import SimpleNamespace

    import psycopg
    from twilio.request_validator import RequestValidator

    from interfaces.webhooks.twilio import TwilioWebhooks

    class Conversation:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def status(self, *args: Any) -> None:
            raise self.exc

    def post(exc: Exception) -> tuple[int, dict[bytes, bytes], dict[str, Any]]:
        settings = SimpleNamespace(public_base_url="https://calls.example.com", twilio_auth_token="secret", api_threads=2)
        suspected: list[bool] = []
        watch = SimpleNamespace(suspect=lambda: suspected.append(True))
        app = TwilioWebhooks(None, SimpleNamespace(settings=settings, conversation=Conversation(exc)), watch)
        path = f"/twilio/status/{UUID(int=5)}/1"
        form = {"CallStatus": "completed", "CallSid": "CA1"}
        signature = RequestValidator("secret").compute_signature(settings.public_base_url + path, form)
        scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": [
            (b"content-type", b"application/x-www-form-urlencoded"), (b"x-twilio-signature", signature.encode())]}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"CallStatus=completed&CallSid=CA1", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(app(scope, receive, send))
        app.close()
        assert suspected == ([True] if isinstance(exc, psycopg.OperationalError) else [])
        return sent[0]["status"], dict(sent[0]["headers"]), json.loads(sent[1]["body"])

    status, headers, body = post(psycopg.OperationalError("connection refused"))
    assert (status, headers[b"retry-after"], body["error"]) == (503, b"5", "SERVICE_UNAVAILABLE")
    status, headers, body = post(KeyError("a bug"))
    assert (status, body["error"]) == (500, "INTERNAL_ERROR") and "a bug" not in json.dumps(body)


def test_lists_search_sort_and_pages(platform: Platform) -> None:
    from tests.harness import wait_for

    _, key = platform.new_org("Lists")
    with platform.client(key) as c:
        names = ["Zineb", "Amal", "Youssef", "Karim", "Salma"]
        for i, name in enumerate(names):
            assert c.post("/api/contact", json={"primaryPhone": f"+21261234568{i}", "firstName": name}).status_code == 201
        listed = wait_for(lambda: c.get("/api/contact").json(), 10, until=lambda b: b["meta"]["total"] == 5)
        assert listed["meta"] == {"page": 1, "limit": 20, "total": 5, "totalPages": 1, "hasNextPage": False, "hasPreviousPage": False}
        by_name = c.get("/api/contact", params={"sortBy": "firstName", "sortOrder": "asc", "limit": 2, "page": 2}).json()
        assert [x["firstName"] for x in by_name["data"]] == ["Salma", "Youssef"]
        assert by_name["meta"]["hasNextPage"] and by_name["meta"]["hasPreviousPage"] and by_name["meta"]["totalPages"] == 3
        assert [x["firstName"] for x in c.get("/api/contact", params={"search": "KAR"}).json()["data"]] == ["Karim"]
        assert c.get("/api/contact", params={"search": "+2126123456"}).json()["meta"]["total"] == 5
        bad = c.get("/api/contact", params={"sortBy": "password"})
        assert bad.status_code == 400 and "sortBy" in bad.json()["fieldErrors"]
        assert c.get("/api/contact", params={"page": 0}).status_code == 400

        audience = c.post("/api/audience", json={"name": "Listed audience"}).json()
        flow = c.post("/api/flows", json={**FLOW, "name": "Listed flow"}).json()
        program = c.post("/api/programs", json={"name": "Listed", "audienceId": audience["id"], "flowId": flow["id"],
                                                "startAt": "2030-01-01T00:00:00Z", "didPool": ["+212500000001"],
                                                "retryStrategy": {"type": "none"}}).json()
        wait_for(lambda: c.get("/api/flows").json()["meta"]["total"] == 1, 10)
        assert c.get("/api/audience", params={"search": "listed"}).json()["data"][0]["id"] == audience["id"]
        assert c.get("/api/flows/latest/Listed flow").json()["id"] == flow["id"]
        assert c.get("/api/flows/latest/Nope").status_code == 404
        programs = wait_for(lambda: c.get("/api/programs").json(), 10)
        assert isinstance(programs, list) and [p["id"] for p in programs] == [program["id"]]

        # Deleting a program answers 204 and cancels its running execution.
        member = c.get("/api/contact").json()["data"][0]["id"]
        c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [member]})
        eid = c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
        assert c.delete(f"/api/programs/{program['id']}").status_code == 204
        assert c.get(f"/api/programs/{program['id']}").status_code == 404
        wait_for(lambda: c.get(f"/api/program-executions/{eid}").json()["status"] == "cancelled", 10)
        assert c.delete(f"/api/flows/{flow['id']}").status_code == 200
        assert c.get(f"/api/flows/{flow['id']}").status_code == 404
        wait_for(lambda: c.get("/api/flows").json()["meta"]["total"] == 0, 10)
