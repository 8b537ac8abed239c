"""Access (issue 7) through the real server: API keys as events, the permission matrix
over EVERY route of the app (enumerated from litestar, so a new endpoint cannot be left
out) for every role, and another organization's resources answering 404 on every path."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from interfaces.http.app import create_app
from interfaces.http.security import (
    PUBLIC,
    ROLE_PERMISSIONS,
    ROLES,
    ROUTES,
    UNDECLARED,
    allowed,
    app_endpoints,
    rule_for,
)
from tests.e2e.test_assets import wav
from tests.harness import Platform, wait_for

FLOW = {
    "name": "Access flow",
    "graph": {"startNodeId": "d", "nodes": {
        "d": {"type": "dial", "outputs": {"onAnswer": "s"}},
        "s": {"type": "say", "config": {"text": "Hi"}, "outputs": {"onComplete": "h"}},
        "h": {"type": "hangup"},
    }},
}  # fmt: skip
DASHBOARD_COOKIE = "gm_dashboard_key"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = Platform(Path(tmp_path_factory.mktemp("access")) / "var")
    yield p
    p.close()


def endpoints() -> list[tuple[str, str]]:
    return app_endpoints(create_app(None))


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), str(uuid4())), path)


def call(client: httpx.Client, method: str, path: str, *, key: str | None, cookie: bool = False, body: Any = None) -> httpx.Response:
    headers = {} if key is None or cookie else {"x-api-key": key}
    cookies = {DASHBOARD_COOKIE: key} if cookie and key else None
    kwargs: dict[str, Any] = {"headers": headers, "cookies": cookies, "follow_redirects": False}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {} if body is None else body
    return client.request(method, path, **kwargs)


def test_every_route_is_declared_in_the_permission_table() -> None:
    served = {f"{m} {p}" for m, p in endpoints()}
    assert served - set(ROUTES) == set(), "declare these routes in interfaces/http/security.py ROUTES"
    assert set(ROUTES) - served == set(), "these ROUTES entries name no route any more"
    for role in ROLES:
        assert ROLE_PERMISSIONS[role], role
    # A route not declared yet is served to admin keys only (fail closed, but not broken).
    assert [r for r in ROLES if allowed(r, UNDECLARED.permission or "")] == ["admin"]
    # The auditor is read-only: no permission of theirs is served by a write method.
    for route, rule in ROUTES.items():
        method = route.split(" ", 1)[0]
        if rule.permission and method != "GET":
            assert rule.permission not in ROLE_PERMISSIONS["auditor"], route


def issue(client: httpx.Client, role: str, **extra: Any) -> dict[str, Any]:
    r = client.post("/api/keys", json={"role": role, "name": f"{role} key", **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_permission_matrix_over_every_route_and_role(platform: Platform) -> None:
    """Each role against each route, with ids that exist nowhere (so an allowed request
    reaches its handler and answers 404 or 400, and changes nothing): refused with 403
    exactly when the table says so; without a key, 401 (or the dashboard's sign-in)."""
    _, admin = platform.new_org("Matrix")
    with httpx.Client(base_url=platform.base_url, timeout=30) as c:
        with platform.client(admin) as a:
            keys = {role: issue(a, role)["apiKey"] for role in ("manager", "agent", "auditor")}
        keys["admin"] = admin
        problems = []
        for method, path in endpoints():
            rule = rule_for(method, path)
            assert rule is not None
            url = fill(path, {"version": "1", "attempt": "1", "seq": "1", "usage_type": "prompt", "phone": "+212699999999", "name": "nope"})
            cookie = rule.auth == "cookie"
            anonymous = call(c, method, url, key=None, cookie=cookie)
            if rule is PUBLIC or rule.permission is None:
                if anonymous.status_code == 401 and "Missing API key" in anonymous.text:
                    problems.append(f"{method} {path}: public, but 401 without a key")
            elif cookie:
                if anonymous.status_code not in (302, 303, 401):
                    problems.append(f"{method} {path}: dashboard without a key answered {anonymous.status_code}")
            elif anonymous.status_code != 401:
                problems.append(f"{method} {path}: {anonymous.status_code} without a key, not 401")
            if rule.permission is None:
                continue
            for role, key in keys.items():
                r = call(c, method, url, key=key, cookie=cookie)
                may = rule.permission in ROLE_PERMISSIONS[role]
                if r.status_code >= 500:
                    problems.append(f"{method} {path} as {role}: {r.status_code} {r.text[:200]}")
                elif may and r.status_code in (401, 403):
                    problems.append(f"{method} {path} as {role}: {r.status_code} but '{rule.permission}' is granted: {r.text[:200]}")
                elif not may and (r.status_code != 403 or r.json().get("details", {}).get("permission") != rule.permission):
                    problems.append(f"{method} {path} as {role}: {r.status_code}, expected 403 for lacking '{rule.permission}'")
        assert not problems, "\n".join(problems)


def test_keys_issued_rotated_revoked_and_expired(platform: Platform) -> None:
    org_id, admin = platform.new_org("Keys")
    with platform.client(admin) as a:
        issued = issue(a, "manager", prefix="prod", expiresAt="2099-01-01T00:00:00Z")
        key = issued["apiKey"]
        assert key.startswith("prod_") and issued["prefix"] == "prod" and issued["expiresAt"] == "2099-01-01T00:00:00.000Z"
        listed = {k["id"]: k for k in a.get("/api/keys").json()}
        assert listed[issued["id"]]["status"] == "active" and listed[issued["id"]]["role"] == "manager"
        assert all("apiKey" not in k and "hash" not in k for k in listed.values())  # never the secret again
        assert key not in json.dumps(listed) and key[-10:] not in json.dumps(listed)
        assert a.get("/api/users/me", headers={"x-api-key": key}).json()["role"] == "manager"
        bearer = httpx.get(f"{platform.base_url}/api/keys", headers={"Authorization": f"Bearer {key}"})
        assert bearer.status_code == 403  # managers do not manage keys

        rotated = a.post(f"/api/keys/{issued['id']}/rotate")
        assert rotated.status_code == 200, rotated.text
        new_key = rotated.json()["apiKey"]
        assert new_key != key and new_key.startswith("prod_") and rotated.json()["rotatedAt"]
        assert a.get("/api/users/me", headers={"x-api-key": key}).status_code == 401
        assert a.get("/api/users/me", headers={"x-api-key": new_key}).status_code == 200

        revoked = a.delete(f"/api/keys/{issued['id']}")
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        r = a.get("/api/users/me", headers={"x-api-key": new_key})
        assert r.status_code == 401 and r.json()["error"] == "UNAUTHORIZED"
        assert a.post(f"/api/keys/{issued['id']}/rotate").status_code == 409

        soon = issue(a, "agent", expiresAt=(platform.clock.now().replace(microsecond=0) + timedelta(hours=1)).isoformat())
        assert a.get("/api/users/me", headers={"x-api-key": soon["apiKey"]}).status_code == 200
        platform.clock.advance(2 * 3600)
        try:
            assert a.get("/api/users/me", headers={"x-api-key": soon["apiKey"]}).status_code == 401
            assert a.get(f"/api/keys/{soon['id']}").json()["status"] == "expired"
        finally:
            platform.clock.advance(-2 * 3600)

        assert a.post("/api/keys", json={"role": "owner"}).status_code == 400
        bad = a.post("/api/keys", json={"role": "agent", "scope": "all"})
        assert bad.status_code == 400 and "scope" in bad.json()["fieldErrors"]
        assert a.post("/api/keys", json={"role": "agent", "expiresAt": "2001-01-01T00:00:00Z"}).status_code == 400
        # The organization's last admin key cannot be revoked (it would lock the organization out).
        mine = a.get("/api/users/me").json()["id"]
        last = a.delete(f"/api/keys/{mine}")
        assert last.status_code == 409 and "last active admin key" in last.json()["message"]

    events = [type(e).__qualname__ for e in platform.container.campaigns.repository.event_store.get(UUID(org_id))]
    assert events.count("Organization.ApiKeyIssued") == 3 and "Organization.ApiKeyRotated" in events
    assert "Organization.ApiKeyRevoked" in events
    stored = list(platform.container.campaigns.repository.event_store.get(UUID(org_id)))
    rotation = next(e for e in stored if type(e).__qualname__ == "Organization.ApiKeyRotated")
    assert rotation.meta["actor"].startswith("apikey:") and rotation.meta["role"] == "admin"
    assert new_key not in repr(stored) and key not in repr(stored)  # hashed, never stored in clear


def test_keys_cli(tmp_path: Path) -> None:
    from tests.e2e.test_cli import gomobile

    data = tmp_path / "var"
    created = json.loads(gomobile(data, "org", "create", "CLI keys").stdout)
    org = created["organizationId"]
    out = gomobile(data, "keys", "issue", "--org", org, "--role", "auditor", "--prefix", "dev", "--expires-at", "2099-01-01T00:00:00Z")
    assert out.returncode == 0, out.stderr
    issued = json.loads(out.stdout)
    assert issued["apiKey"].startswith("dev_") and issued["role"] == "auditor"
    listed = json.loads(gomobile(data, "keys", "list", "--org", org).stdout)
    assert {k["role"] for k in listed} == {"admin", "auditor"} and all("apiKey" not in k for k in listed)
    rotated = json.loads(gomobile(data, "keys", "rotate", "--org", org, issued["id"]).stdout)
    assert rotated["apiKey"] != issued["apiKey"]
    revoked = json.loads(gomobile(data, "keys", "revoke", "--org", org, issued["id"]).stdout)
    assert revoked["status"] == "revoked"
    unknown = gomobile(data, "keys", "revoke", "--org", org, "nope")
    assert unknown.returncode == 2 and "API key not found" in unknown.stderr

    from infrastructure.bootstrap import Container
    from infrastructure.settings import Settings

    container = Container(Settings(data_dir=data))
    try:
        assert container.campaigns.authenticate(rotated["apiKey"]) is None
        assert container.campaigns.authenticate(created["apiKey"]) is not None
        events = list(container.campaigns.repository.event_store.get(UUID(org)))
        assert [e.meta["actor"] for e in events if type(e).__qualname__ == "Organization.ApiKeyRevoked"] == ["cli"]
    finally:
        container.close()


def _resources_of(platform: Platform, a: httpx.Client) -> dict[str, str]:
    """One of each kind of resource in an organization, by path parameter name."""
    contact = a.post("/api/contact", json={"primaryPhone": "+212612300001", "firstName": "Probe"}).json()
    attribute = a.post("/api/custom-attributes", json={"displayName": "Tier", "type": "text"}).json()
    audience = a.post("/api/audience", json={"name": "Probed"}).json()
    assert a.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [contact["id"]]}).status_code in (200, 201)
    flow = a.post("/api/flows", json=FLOW).json()
    program = a.post("/api/programs", json={"name": "Probed", "audienceId": audience["id"], "flowId": flow["id"],
                                            "startAt": "2030-01-01T00:00:00Z", "didPool": ["+212500000001"],
                                            "retryStrategy": {"type": "none"}}).json()  # fmt: skip
    launched = a.post(f"/api/programs/{program['id']}/launch")
    assert launched.status_code in (200, 201), launched.text
    execution_id = launched.json()["executionId"]
    job = a.post("/api/call-requests", json={"fromNumber": "+212500000009", "contactId": contact["id"], "flowId": flow["id"],
                                            "retry": {"type": "none"}}).json()  # fmt: skip
    def attempted() -> Any:
        j = a.get(f"/api/call-report/{job['jobId']}").json()
        return j if j.get("attempts") else None

    report = wait_for(attempted, 20, what="a call")
    call_id = report["attempts"][0]["callId"]
    audio = a.post("/api/audio-management/upload", files={"file": ("a.wav", wav(0.2), "audio/wav")}, data={"title": "Probe"}).json()
    dictionary = a.post("/api/dictionaries", json={"name": "Probe words", "language": "fr"}).json()
    entry = a.post(f"/api/dictionaries/{dictionary['id']}/entries", files={"file": ("k.wav", wav(0.2), "audio/wav")}, data={"key": "cent"})
    assert entry.status_code == 201, entry.text
    upload = a.post("/api/contact/ingestion/upload", files={"data": ("c.csv", b"phone\n+212612300002\n", "text/csv")}).json()
    assert a.post("/api/suppressions", json={"phone": "+212612300003"}).status_code == 201
    key_id = a.get("/api/users/me").json()["id"]
    return {
        "contact_id": contact["id"], "attribute_id": attribute["id"], "audience_id": audience["id"], "flow_id": flow["id"],
        "program_id": program["id"], "execution_id": execution_id, "job_id": job["jobId"], "call_id": call_id,
        "audio_id": audio["id"], "dictionary_id": dictionary["id"], "key": "cent", "ingestion_id": upload["id"],
        "phone": "+212612300003", "key_id": key_id, "name": FLOW["name"], "version": "1",
    }  # fmt: skip


# Paths with a parameter that is not another organization's resource.
NOT_A_RESOURCE = {
    "/api/audio-management/audios/usage/{usage_type}": "a filter of the caller's own audio list",
}


def test_another_organizations_resources_answer_404_on_every_path(platform: Platform) -> None:
    _, key_a = platform.new_org("Owner")
    _, key_b = platform.new_org("Prober")
    with platform.client(key_a) as a:
        values = _resources_of(platform, a)
    probes = []
    for method, path in endpoints():
        rule = rule_for(method, path)
        if "{" not in path or rule is None or rule.permission is None or path in NOT_A_RESOURCE:
            continue
        probes.append((method, path))
    # Reads first, then writes, deletions last: a leak is reported before it can hide another.
    order = {"GET": 0, "POST": 1, "PUT": 1, "PATCH": 1, "DELETE": 2}
    probes.sort(key=lambda mp: order.get(mp[0], 1))
    problems = []
    with httpx.Client(base_url=platform.base_url, timeout=30) as c:
        for method, path in probes:
            rule = rule_for(method, path)
            assert rule is not None
            url = fill(path, values)
            if path in MULTIPART:
                r = c.request(method, url, headers={"x-api-key": key_b}, files=MULTIPART[path]["files"], data=MULTIPART[path]["data"])
            else:
                r = call(c, method, url, key=key_b, cookie=rule.auth == "cookie", body=_body_for(method, path))
            if rule.auth == "cookie" and r.status_code == 303 and "not%20found" in r.headers.get("location", "").lower():
                continue  # the dashboard's way of saying 404 after a form post: back, with the error
            if r.status_code != 404:
                problems.append(f"{method} {url}: {r.status_code} {r.text[:160]}")
        # A's resources are all still there, unchanged, for A.
        for path in ("/api/contact/{contact_id}", "/api/audience/{audience_id}", "/api/flows/{flow_id}", "/api/programs/{program_id}",
                     "/api/program-executions/{execution_id}", "/api/dictionaries/{dictionary_id}", "/api/keys/{key_id}"):  # fmt: skip
            assert call(c, "GET", fill(path, values), key=key_a).status_code == 200, path
    assert not problems, "another organization's resource must answer 404:\n" + "\n".join(problems)


MULTIPART = {
    "/api/dictionaries/{dictionary_id}/entries": {"files": {"file": ("k.wav", wav(0.2), "audio/wav")}, "data": {"key": "mille"}},
}


def _body_for(method: str, path: str) -> Any:
    """A body that would be valid for the owner, so that a 404 is not a 400 in disguise."""
    if method not in ("POST", "PUT", "PATCH"):
        return None
    bodies = {
        "/api/contact/{contact_id}": {"lastName": "Changed"},
        "/api/custom-attributes/{attribute_id}": {"description": "Changed"},
        "/api/audience/{audience_id}": {"name": "Changed"},
        "/api/audience/{audience_id}/add-contacts": {"contacts": [str(uuid4())]},
        "/api/audience/{audience_id}/remove-contacts": {"contacts": [str(uuid4())]},
        "/api/flows/{flow_id}": FLOW,
        "/api/programs/{program_id}": {"name": "Changed"},
        "/api/audio-management/audio/{audio_id}": {"title": "Changed"},
        "/api/contact/{contact_id}/consents": {"scope": "calls", "source": "api", "obtainedAt": "2025-01-01T00:00:00Z",
                                               "evidence": "probe"},
        "/api/contact/{contact_id}/opt-out": {"reason": "probe"},
    }
    return bodies.get(path, {})


def test_readme_documents_the_matrix_the_code_enforces() -> None:
    from interfaces.http.security import PERMISSIONS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "### Roles and permissions" in readme
    for permission, what in PERMISSIONS.items():
        row = f"| `{permission}` | {what} | " + " | ".join("✓" if permission in ROLE_PERMISSIONS[r] else "" for r in ROLES) + " |"
        assert row in readme, f"README's matrix disagrees with interfaces/http/security.py on {permission}: {row}"


def test_openapi_names_the_key_schemes(platform: Platform) -> None:
    spec = httpx.get(f"{platform.base_url}/docs/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKeyAuth"] == {**schemes["ApiKeyAuth"], "type": "apiKey", "name": "x-api-key", "in": "header"}
    assert schemes["BearerAuth"]["scheme"] == "bearer"
    assert {"ApiKeyAuth": []} in spec["security"]
