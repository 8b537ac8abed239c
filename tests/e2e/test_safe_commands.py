"""Safe commands (issue 7) through the real server: Idempotency-Key on POST, ETag and
If-Match (412), rate limits per key (429 + Retry-After, shared through Redis by several
API processes), request size limits (413)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from domain.base import expecting_versions
from domain.errors import PreconditionFailed
from tests.harness import Platform

FLOW = {
    "name": "Safe flow",
    "graph": {"startNodeId": "d", "nodes": {
        "d": {"type": "dial", "outputs": {"onAnswer": "h"}},
        "h": {"type": "hangup"},
    }},
}  # fmt: skip


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = Platform(Path(tmp_path_factory.mktemp("safe")) / "var")
    yield p
    p.close()


@contextmanager
def rate_limit(per_minute: int, burst: int) -> Iterator[None]:
    """The rate limit of the platforms created inside (read when an app is created)."""
    saved = {k: os.environ.get(k) for k in ("GOMOBILE_RATE_LIMIT_PER_MINUTE", "GOMOBILE_RATE_LIMIT_BURST")}
    os.environ["GOMOBILE_RATE_LIMIT_PER_MINUTE"] = str(per_minute)
    os.environ["GOMOBILE_RATE_LIMIT_BURST"] = str(burst)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def events_of(platform: Platform, aggregate_id: str) -> list[Any]:
    return list(platform.container.campaigns.repository.event_store.get(UUID(aggregate_id)))


# -- Idempotency-Key -----------------------------------------------------------------


def test_idempotency_key_replays_the_first_response_once(platform: Platform) -> None:
    org_id, key = platform.new_org("Idem")
    with platform.client(key) as c:
        body = {"name": "Once only", "description": "created by a retried POST"}
        first = c.post("/api/audience", json=body, headers={"Idempotency-Key": "create-1"})
        assert first.status_code == 201 and "idempotent-replayed" not in first.headers
        # The same key and body (keys in another order, other whitespace): the first response, nothing done again.
        again = c.post("/api/audience", content=b'{"description": "created by a retried POST",   "name": "Once only"}',
                       headers={"Idempotency-Key": "create-1", "content-type": "application/json"})  # fmt: skip
        assert again.status_code == 201 and again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        audience_id = first.json()["id"]
        assert len(events_of(platform, audience_id)) == 1
        from tests.harness import wait_for

        listed = wait_for(lambda: c.get("/api/audience").json()["meta"]["total"] == 1 and c.get("/api/audience").json(), 10)
        assert [a["id"] for a in listed["data"]] == [audience_id]
        # The same key with another body: 422 naming the problem; nothing created.
        other = c.post("/api/audience", json={"name": "Another"}, headers={"Idempotency-Key": "create-1"})
        assert other.status_code == 422 and other.json()["error"] == "IdempotencyKeyReused"
        assert "Idempotency-Key 'create-1'" in other.json()["message"] and "different request" in other.json()["message"]
        # ... or on another path.
        assert c.post("/api/flows", json=FLOW, headers={"Idempotency-Key": "create-1"}).status_code == 422
        # A new key: a new command.
        second = c.post("/api/audience", json=body, headers={"Idempotency-Key": "create-2"})
        assert second.status_code == 201 and second.json()["id"] != audience_id
        # A refused command is replayed as refused (a 4xx is a response too), and does not run again.
        bad = c.post("/api/audience", json={"name": "ab"}, headers={"Idempotency-Key": "bad-1"})
        assert bad.status_code == 400
        replayed = c.post("/api/audience", json={"name": "ab"}, headers={"Idempotency-Key": "bad-1"})
        assert replayed.status_code == 400 and replayed.headers["idempotent-replayed"] == "true"
        # A nonsense key is refused.
        assert c.post("/api/audience", json=body, headers={"Idempotency-Key": "a key with spaces"}).status_code == 400

        # Keys are scoped per API key: another key of the same organization has its own "create-1".
        other_key = c.post("/api/keys", json={"role": "manager"}).json()["apiKey"]
        mine = c.post("/api/audience", json=body, headers={"Idempotency-Key": "create-1", "x-api-key": other_key})
        assert mine.status_code == 201 and mine.json()["id"] not in (audience_id, second.json()["id"])
        # ... and so per organization.
        _, key_b = platform.new_org("Idem B")
        theirs = c.post("/api/audience", json=body, headers={"Idempotency-Key": "create-1", "x-api-key": key_b})
        assert theirs.status_code == 201 and theirs.json()["organizationId"] != org_id

        # After 24 hours a key is forgotten: the same request runs again.
        platform.clock.advance(24 * 3600 + 60)
        try:
            later = c.post("/api/audience", json=body, headers={"Idempotency-Key": "create-1"})
            assert later.status_code == 201 and "idempotent-replayed" not in later.headers and later.json()["id"] != audience_id
        finally:
            platform.clock.advance(-(24 * 3600 + 60))


def test_concurrent_retries_run_the_command_once(platform: Platform) -> None:
    _, key = platform.new_org("Idem race")
    with platform.client(key) as c:
        contact = c.post("/api/contact", json={"primaryPhone": "+212612355501"}).json()
        flow = c.post("/api/flows", json=FLOW).json()
    body = {"fromNumber": "+212500000009", "contactId": contact["id"], "flowId": flow["id"], "retry": {"type": "none"},
            "startAt": "2030-01-01T00:00:00Z"}  # fmt: skip
    answers: list[httpx.Response] = []

    def post() -> None:
        with platform.client(key) as c:
            answers.append(c.post("/api/call-requests", json=body, headers={"Idempotency-Key": "dial-once"}))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Each answer is the first one (202, replayed) or "still in progress" (409): one job only.
    assert {a.status_code for a in answers} <= {202, 409}, [a.text for a in answers]
    jobs = {a.json()["jobId"] for a in answers if a.status_code == 202}
    assert len(jobs) == 1
    with platform.client(key) as c:
        final = c.post("/api/call-requests", json=body, headers={"Idempotency-Key": "dial-once"})
        assert final.status_code == 202 and final.json()["jobId"] in jobs and final.headers["idempotent-replayed"] == "true"


# -- ETag and If-Match -------------------------------------------------------------------


def test_etag_and_if_match(platform: Platform) -> None:
    _, key = platform.new_org("Etags")
    _, key_b = platform.new_org("Etags B")
    with platform.client(key) as c:
        contact = c.post("/api/contact", json={"primaryPhone": "+212612355601", "firstName": "Amina"}).json()
        url = f"/api/contact/{contact['id']}"
        read = c.get(url)
        etag = read.headers["etag"]
        assert etag == '"1"'
        ok = c.put(url, json={"lastName": "B"}, headers={"If-Match": etag})
        assert ok.status_code == 200 and ok.json()["lastName"] == "B"
        assert c.get(url).headers["etag"] == '"2"'
        # Someone else wrote since: 412, nothing written.
        stale = c.put(url, json={"lastName": "C"}, headers={"If-Match": etag})
        assert stale.status_code == 412 and stale.json()["error"] == "PRECONDITION_FAILED"
        assert stale.json()["details"]["currentETag"] == '"2"' and stale.headers["etag"] == '"2"'
        assert c.get(url).json()["lastName"] == "B" and len(events_of(platform, contact["id"])) == 2
        assert c.delete(url, headers={"If-Match": etag}).status_code == 412
        assert c.put(url, json={"lastName": "C"}, headers={"If-Match": 'W/"2"'}).status_code == 412  # weak never matches
        assert c.put(url, json={"lastName": "C"}, headers={"If-Match": '"9", "2"'}).status_code == 200  # any of a list
        # Without If-Match a write proceeds as before; "*" matches any current version.
        assert c.put(url, json={"lastName": "D"}).status_code == 200
        assert c.put(url, json={"lastName": "E"}, headers={"If-Match": "*"}).status_code == 200
        # Another organization learns nothing from If-Match: 404, not 412.
        theirs = c.put(url, json={"lastName": "X"}, headers={"If-Match": '"1"', "x-api-key": key_b})
        assert theirs.status_code == 404

        # The same on programs (PATCH), flows (PUT), audiences and the organization (PATCH).
        audience = c.post("/api/audience", json={"name": "Etag audience"}).json()
        flow = c.post("/api/flows", json=FLOW).json()
        program = c.post("/api/programs", json={"name": "Etag", "audienceId": audience["id"], "flowId": flow["id"],
                                                "startAt": "2030-01-01T00:00:00Z", "didPool": ["+212500000001"],
                                                "retryStrategy": {"type": "none"}}).json()  # fmt: skip
        for url, method, body in (
            (f"/api/programs/{program['id']}", "PATCH", {"name": "Etag 2"}),
            (f"/api/flows/{flow['id']}", "PUT", {**FLOW, "name": "Safe flow 2"}),
            (f"/api/audience/{audience['id']}", "PUT", {"name": "Etag audience 2"}),
            ("/api/organization", "PATCH", {"maxCallsPerContactPerDay": 3}),
        ):
            tag = c.get(url).headers["etag"]
            assert c.request(method, url, json=body, headers={"If-Match": tag}).status_code == 200, url
            assert c.request(method, url, json=body, headers={"If-Match": tag}).status_code == 412, url


def test_if_match_holds_against_a_writer_in_between(platform: Platform) -> None:
    """The version checked before the handler runs is checked again when the command's
    first event is triggered: a write that got in between is refused, not overwritten."""
    org_id, key = platform.new_org("Etag race")
    with platform.client(key) as c:
        contact = c.post("/api/contact", json={"primaryPhone": "+212612355701"}).json()
    app = platform.container.campaigns
    org = app.organization(UUID(org_id))
    with expecting_versions({UUID(contact["id"]): 1}):
        app.update_contact(org, contact["id"], {"firstName": "First"})  # version 1 -> 2: allowed
    with expecting_versions({UUID(contact["id"]): 1}), pytest.raises(PreconditionFailed):
        app.update_contact(org, contact["id"], {"firstName": "Late"})  # it is at 2 now
    assert app.contact(UUID(org_id), contact["id"]).fields["firstName"] == "First"


# -- rate limits ------------------------------------------------------------------------


def test_rate_limit_per_key_with_retry_after(tmp_path: Path) -> None:
    with rate_limit(per_minute=3, burst=5):
        p = Platform(tmp_path / "var", start_dispatcher=False)
    try:
        _, key = p.new_org("Limited")
        _, other = p.new_org("Other")
        with p.client(key) as c:
            seen = [c.get("/api/users/me") for _ in range(5)]
            assert [r.status_code for r in seen] == [200] * 5
            assert [int(r.headers["x-ratelimit-remaining"]) for r in seen] == [4, 3, 2, 1, 0]
            assert seen[0].headers["x-ratelimit-limit"] == "5"
            refused = c.get("/api/users/me")
            assert refused.status_code == 429 and refused.json()["error"] == "TOO_MANY_REQUESTS"
            assert 1 <= int(refused.headers["retry-after"]) <= 60 and "Retry-After" in refused.json()["message"]
            assert c.post("/api/contact", json={"primaryPhone": "+212612355801"}).status_code == 429  # every method
            # Another key has its own budget.
            assert c.get("/api/users/me", headers={"x-api-key": other}).status_code == 200
            # Health, docs and Twilio's callbacks are not counted against anyone.
            assert httpx.get(f"{p.base_url}/health").status_code == 200
    finally:
        p.close()


class ApiServer:
    """An API process only (as `gomobile api`): its own container and server, no projector,
    worker or dispatcher, on the settings of another platform."""

    def __init__(self, settings: Any) -> None:
        import dataclasses
        import time

        import uvicorn

        from infrastructure.bootstrap import Container
        from interfaces.http.app import create_app
        from tests.harness import free_port

        port = free_port()
        self.container = Container(dataclasses.replace(settings, port=port))
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.container), host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "API server did not start"
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{port}"

    def client(self, api_key: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"x-api-key": api_key}, timeout=30)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.container.close()


@pytest.mark.integration
def test_rate_limits_and_idempotency_are_shared_by_api_processes(tmp_path: Path, postgres_database: str, redis_namespace: tuple[str, str]) -> None:
    """Two API servers on one PostgreSQL and one Redis (as `gomobile api --workers 2`): the
    rate limit counts a key's requests on both, and an Idempotency-Key used on one replays
    on the other (stored in the database, not in a process)."""
    redis_url, namespace = redis_namespace
    with rate_limit(per_minute=4, burst=6):
        one = Platform(tmp_path / "one", database_url=postgres_database, redis_url=redis_url, redis_namespace=namespace, start_dispatcher=False)
        try:
            two = ApiServer(one.settings)
        except BaseException:
            one.close()
            raise
    try:
        _, key = one.new_org("Shared")
        with one.client(key) as a, two.client(key) as b:
            first = a.post("/api/audience", json={"name": "Shared once"}, headers={"Idempotency-Key": "k-shared"})
            assert first.status_code == 201
            replay = b.post("/api/audience", json={"name": "Shared once"}, headers={"Idempotency-Key": "k-shared"})
            assert replay.status_code == 201 and replay.json() == first.json() and replay.headers["idempotent-replayed"] == "true"
            mismatch = b.post("/api/audience", json={"name": "Shared twice"}, headers={"Idempotency-Key": "k-shared"})
            assert mismatch.status_code == 422
            statuses = [a.get("/api/users/me").status_code, b.get("/api/users/me").status_code, a.get("/api/users/me").status_code]
            assert statuses == [200, 200, 200]  # 6 requests in all, the burst
            assert b.get("/api/users/me").status_code == 429 and a.get("/api/users/me").status_code == 429
    finally:
        two.close()
        one.close()


# -- request size ----------------------------------------------------------------------


def test_request_body_too_large_is_a_413(platform: Platform) -> None:
    _, key = platform.new_org("Big")
    with platform.client(key) as c:
        big = b'{"primaryPhone": "+212612355901", "firstName": "' + b"x" * 10_100_000 + b'"}'
        r = c.post("/api/contact", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "PAYLOAD_TOO_LARGE"
        assert "larger than this endpoint accepts" in r.json()["message"]
        assert c.get("/api/contact").json()["meta"]["total"] == 0


# -- unknown fields ----------------------------------------------------------------------


def test_unknown_fields_are_a_400_naming_them(platform: Platform) -> None:
    _, key = platform.new_org("Strict")
    with platform.client(key) as c:
        r = c.post("/api/contact", json={"primaryPhone": "+212612356001", "firstName": "A", "frstName": "typo"})
        assert r.status_code == 400 and r.json()["error"] == "VALIDATION_FAILED"
        assert list(r.json()["fieldErrors"]) == ["frstName"] and "frstName" in r.json()["message"]
        assert c.get("/api/contact").json()["meta"]["total"] == 0  # nothing created
        upsert = c.post("/api/contact/upsert", json={"data": [{"primaryPhone": "+212612356002"}, {"primaryPhone": "+212612356003", "vip": True}]})
        assert upsert.status_code == 400 and list(upsert.json()["fieldErrors"]) == ["data[1].vip"]
        flow = c.post("/api/flows", json={**FLOW, "nodes": []})
        assert flow.status_code == 400 and "nodes" in flow.json()["fieldErrors"]
        audience = c.post("/api/audience", json={"name": "Strict list", "members": []})
        assert audience.status_code == 400 and "members" in audience.json()["fieldErrors"]
        # The documented fields still work.
        ok = c.post("/api/contact", json={"primaryPhone": "+212612356001", "firstName": "A", "city": "Fes", "timezone": "Africa/Casablanca"})
        assert ok.status_code == 201, ok.text


def test_a_claim_left_by_a_dead_process_is_retried(tmp_path: Path) -> None:
    from infrastructure.idempotency_store import (
        STALE_CLAIM_SECONDS,
        IdempotencyStore,
        StoredResponse,
    )

    store = IdempotencyStore(sqlite_path=str(tmp_path / "idempotency.sqlite"))
    assert store.begin("org:key", "k", "fp", 1000.0) == ("new", None)
    assert store.begin("org:key", "k", "fp", 1001.0) == ("in_progress", None)  # still running
    assert store.begin("org:key", "k", "other", 1001.0) == ("mismatch", None)
    # No response ever came (the process died): after a while the key may run again.
    assert store.begin("org:key", "k", "fp", 1000.0 + STALE_CLAIM_SECONDS + 1) == ("new", None)
    store.finish("org:key", "k", StoredResponse(201, [("content-type", "application/json")], b"{}"))
    verdict, stored = store.begin("org:key", "k", "fp", 1000.0 + STALE_CLAIM_SECONDS + 2)
    assert verdict == "replay" and stored is not None and stored.status == 201 and stored.body == b"{}"


def test_bulk_upsert_has_its_documented_10_per_second(tmp_path: Path) -> None:
    with rate_limit(per_minute=1000, burst=2000):
        p = Platform(tmp_path / "var", start_dispatcher=False)
    try:
        _, key = p.new_org("Bulk paced")
        with p.client(key) as c:
            answers = [c.post("/api/contact/upsert", json={"data": []}).status_code for _ in range(12)]
            assert answers[:10] == [400] * 10 and 429 in answers[10:]  # refused as invalid, but counted
            assert c.get("/api/users/me").status_code == 200  # the key's other requests go on
    finally:
        p.close()


def test_a_retried_upload_replays_though_its_multipart_boundary_changed(platform: Platform) -> None:
    from tests.e2e.test_assets import wav

    _, key = platform.new_org("Idem upload")
    with platform.client(key) as c:
        audio = wav(0.3)
        first = c.post("/api/audio-management/upload", files={"file": ("a.wav", audio, "audio/wav")}, data={"title": "Hello"},
                       headers={"Idempotency-Key": "upload-1"})  # fmt: skip
        assert first.status_code == 201, first.text
        # httpx draws a new boundary for each request, as most clients do.
        again = c.post("/api/audio-management/upload", files={"file": ("a.wav", audio, "audio/wav")}, data={"title": "Hello"},
                       headers={"Idempotency-Key": "upload-1"})  # fmt: skip
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true" and again.json()["id"] == first.json()["id"]
        other = c.post("/api/audio-management/upload", files={"file": ("a.wav", wav(0.4), "audio/wav")}, data={"title": "Hello"},
                       headers={"Idempotency-Key": "upload-1"})  # fmt: skip
        assert other.status_code == 422
        from tests.harness import wait_for

        wait_for(lambda: c.get("/api/audio-management/audios").json()["meta"]["total"] >= 1, 10, what="the upload listed")
        assert c.get("/api/audio-management/audios").json()["meta"]["total"] == 1  # one file, not two


def test_an_unreachable_redis_does_not_stop_the_api(tmp_path: Path) -> None:
    """The limiter's store is down (a Redis nobody listens on): requests are served without
    a limit (and a warning is logged), not refused with 500s."""
    import dataclasses

    from tests.harness import free_port

    with rate_limit(per_minute=3, burst=5):
        p = Platform(tmp_path / "var", start_dispatcher=False)
        try:
            broken = ApiServer(dataclasses.replace(p.settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
        except BaseException:
            p.close()
            raise
    try:
        _, key = p.new_org("No Redis")
        with broken.client(key) as c:
            assert [c.get("/api/users/me").status_code for _ in range(7)] == [200] * 7
    finally:
        broken.close()
        p.close()
