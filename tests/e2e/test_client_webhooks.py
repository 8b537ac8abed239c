"""Webhooks to client systems (issue 7), on the embedded default: endpoints registered
through the API, a small campaign run through the sandbox, and a real HTTP receiver on
loopback that checks every delivery's signature and can refuse the first requests."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from application.client_webhooks import verify
from tests.e2e.scenario import FLOW
from tests.harness import Platform, wait_for

ENV = {
    "GOMOBILE_ALLOW_INSECURE_WEBHOOKS": "1",  # the receiver is http://127.0.0.1
    "GOMOBILE_WEBHOOK_MIN_BACKOFF_MS": "50",
    "GOMOBILE_WEBHOOK_MAX_BACKOFF_MS": "400",
    "GOMOBILE_WEBHOOK_MAX_RETRIES": "3",
}


class Receiver:
    """Records every request; ``fail[path] = n`` answers the next n requests to path 500,
    ``down`` paths always 503, ``redirect[path]`` answers 307 to that location."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail: dict[str, int] = {}
        self.down: set[str] = set()
        self.redirect: dict[str, str] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    left = receiver.fail.get(self.path, 0)
                    code = 503 if self.path in receiver.down else 500 if left > 0 else 200
                    code = 307 if self.path in receiver.redirect else code
                    if left > 0:
                        receiver.fail[self.path] = left - 1
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "answered": code,
                        }
                    )
                self.send_response(code)
                if code == 307:
                    self.send_header("Location", receiver.redirect[self.path])
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def to(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def env() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def platform(env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(Path(tmp_path_factory.mktemp("client_webhooks")) / "var")
    yield p
    p.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def readme_verify() -> Any:
    """The verification snippet of the README, as a receiver would paste it."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## Webhooks to client systems", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 (our own README)
    return namespace["verify"]


def register(
    client: httpx.Client, url: str, events: list[str], description: str = ""
) -> dict[str, Any]:
    r = client.post(
        "/api/webhooks", json={"url": url, "events": events, "description": description}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def run_small_campaign(client: httpx.Client) -> str:
    """Three contacts: two answer (completed), one never does (failed, no retry)."""
    ids = []
    for phone in ("+212612000004", "+212612000005", "+212612000001"):
        r = client.post(
            "/api/contact", json={"firstName": "W", "lastName": "Hook", "primaryPhone": phone}
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    audience = client.post("/api/audience", json={"name": "Hooked"}).json()
    assert (
        client.post(
            f"/api/audience/{audience['id']}/add-contacts", json={"contacts": ids}
        ).status_code
        == 200
    )
    flow = client.post("/api/flows", json=FLOW)
    assert flow.status_code == 201, flow.text
    program = client.post("/api/programs", json={
        "name": "Hooked calls", "audienceId": audience["id"], "flowId": flow.json()["id"],
        "startAt": "2025-01-20T09:00:00Z", "didPool": ["+212500000001"], "retryStrategy": {"type": "none"},
    })  # fmt: skip
    assert program.status_code == 201, program.text
    launched = client.post(f"/api/programs/{program.json()['id']}/launch")
    assert launched.status_code == 201, launched.text
    eid = str(launched.json()["executionId"])
    wait_for(
        lambda: client.get(f"/api/program-executions/{eid}").json()["status"] == "completed",
        90,
        what="the execution to complete",
    )
    return eid


@pytest.fixture(scope="module")
def campaign(platform: Platform, receiver: Receiver) -> dict[str, Any]:
    """One organization with three endpoints (one healthy, one that refuses its first two
    requests, one down), and a campaign that gives each of them events."""
    org_id, key = platform.new_org("Hooks")
    with platform.client(key) as a:
        ok = register(
            a,
            f"{receiver.url}/ok",
            [
                "call.completed",
                "call.failed",
                "call.attempt_ended",
                "execution.started",
                "execution.completed",
            ],
            "all of it",
        )
        flaky = register(a, f"{receiver.url}/flaky", ["call.completed", "execution.completed"])
        down = register(a, f"{receiver.url}/down", ["execution.started"])
        receiver.fail["/flaky"] = 2
        receiver.down.add("/down")
        eid = run_small_campaign(a)
    return {"org": org_id, "key": key, "ok": ok, "flaky": flaky, "down": down, "execution": eid}


def deliveries(client: httpx.Client, endpoint_id: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/api/webhooks/{endpoint_id}/deliveries", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def all_delivered(client: httpx.Client, endpoint_id: str, n: int) -> dict[str, Any] | None:
    """The endpoint's log once it holds ``n`` deliveries, all delivered."""
    log = deliveries(client, endpoint_id)
    return (
        log
        if log["meta"]["total"] == n and all(d["status"] == "delivered" for d in log["data"])
        else None
    )


def first_failed(client: httpx.Client, endpoint_id: str) -> dict[str, Any] | None:
    log = deliveries(client, endpoint_id)
    return log if log["data"] and log["data"][0]["status"] == "failed" else None


def listed(client: httpx.Client, n: int) -> list[dict[str, Any]] | None:
    found = client.get("/api/webhooks").json()
    return list(found) if len(found) == n else None


def test_each_selected_event_is_delivered_once_and_signed(
    platform: Platform, receiver: Receiver, campaign: dict[str, Any]
) -> None:
    eid = campaign["execution"]
    expected = {
        "call.attempt_ended": 3,
        "call.completed": 2,
        "call.failed": 1,
        "execution.started": 1,
        "execution.completed": 1,
    }
    wait_for(
        lambda: len(receiver.to("/ok")) >= sum(expected.values()), 30, what="the deliveries to /ok"
    )
    time.sleep(1.0)  # nothing more arrives: no event twice
    got = receiver.to("/ok")
    assert len(got) == sum(expected.values()), [json.loads(r["body"])["type"] for r in got]
    secret = campaign["ok"]["secret"]
    assert secret.startswith("whsec_")
    seen: dict[str, int] = {}
    documented = readme_verify()
    for r in got:
        body = r["body"]
        assert verify(secret, r["headers"]["X-Gomobile-Signature"], body), r["headers"]
        assert documented(secret, r["headers"]["X-Gomobile-Signature"], body)
        assert not documented(
            secret, r["headers"]["X-Gomobile-Signature"], body.replace(b'"type":"', b'"type":"x', 1)
        )
        assert not verify(
            campaign["flaky"]["secret"], r["headers"]["X-Gomobile-Signature"], body
        )  # per-endpoint secrets
        assert not verify(
            secret, r["headers"]["X-Gomobile-Signature"], body + b" "
        )  # the body is what is signed
        payload = json.loads(body)
        assert r["headers"]["X-Gomobile-Event"] == payload["type"]
        assert r["headers"]["X-Gomobile-Delivery"] == payload["id"]
        assert (
            payload["organizationId"] == campaign["org"] and payload["data"]["executionId"] == eid
        )
        seen[payload["type"]] = seen.get(payload["type"], 0) + 1
    assert seen == expected
    ids = [json.loads(r["body"])["id"] for r in got]
    assert len(set(ids)) == len(ids)
    ended = [
        json.loads(r["body"])["data"]
        for r in got
        if json.loads(r["body"])["type"] == "call.attempt_ended"
    ]
    assert sorted(d["outcome"] for d in ended) == ["completed", "completed", "no_answer"]
    with platform.client(campaign["key"]) as a:
        log = deliveries(a, campaign["ok"]["id"], limit=100)
    assert log["meta"]["total"] == sum(expected.values())
    assert all(
        d["status"] == "delivered" and d["attempts"] == 1 and d["lastResponseCode"] == 200
        for d in log["data"]
    ), log
    assert all(d["deliveredAt"] and len(d["attemptLog"]) == 1 for d in log["data"])


def test_a_failing_receiver_gets_retries_then_success(
    platform: Platform, receiver: Receiver, campaign: dict[str, Any]
) -> None:
    with platform.client(campaign["key"]) as a:
        log = wait_for(
            lambda: all_delivered(a, campaign["flaky"]["id"], 3),
            30,
            what="the flaky endpoint's deliveries",
        )
    got = receiver.to("/flaky")
    assert [r["answered"] for r in got].count(500) == 2
    assert [r["answered"] for r in got].count(
        200
    ) == 3  # each event delivered once, after the refusals
    assert sum(d["attempts"] for d in log["data"]) == 5
    retried = [d for d in log["data"] if d["attempts"] > 1]
    assert retried, log
    for d in retried:
        assert [x["responseCode"] for x in d["attemptLog"]] == [500] * (d["attempts"] - 1) + [200]
        assert d["lastResponseCode"] == 200
    for r in got:
        assert verify(campaign["flaky"]["secret"], r["headers"]["X-Gomobile-Signature"], r["body"])
    assert sorted(json.loads(r["body"])["type"] for r in got if r["answered"] == 200) == [
        "call.completed",
        "call.completed",
        "execution.completed",
    ]


def test_a_job_sent_again_or_a_rebuilt_follower_sends_nothing_twice(
    platform: Platform, receiver: Receiver, campaign: dict[str, Any]
) -> None:
    """The job is idempotent per delivery, and rebuilding the follower from the first
    event finds every delivery already made (the log is not part of what is rebuilt)."""
    with platform.client(campaign["key"]) as a:
        before = wait_for(
            lambda: all_delivered(a, campaign["ok"]["id"], 8), 30, what="the deliveries to /ok"
        )
    sent = len(receiver.to("/ok"))
    for d in before["data"]:
        platform.container.webhook_queue.send(d["id"])  # a duplicate of each job
    c = platform.container
    (runner,) = [r for r in c.runners if r.name == "client_webhooks"]
    runner.stop()
    c.runners.remove(runner)
    c.views["client_webhooks"].reset()
    assert c.runner("client_webhooks").catch_up() > 0
    c.runners.append(c.runner("client_webhooks").start())
    time.sleep(1.5)
    assert len(receiver.to("/ok")) == sent
    with platform.client(campaign["key"]) as a:
        after = deliveries(a, campaign["ok"]["id"])
    assert [(d["id"], d["status"], d["attempts"]) for d in after["data"]] == [
        (d["id"], d["status"], d["attempts"]) for d in before["data"]
    ]


def test_a_receiver_that_stays_down_ends_failed_after_the_last_retry(
    platform: Platform, receiver: Receiver, campaign: dict[str, Any]
) -> None:
    with platform.client(campaign["key"]) as a:
        log = wait_for(
            lambda: first_failed(a, campaign["down"]["id"]),
            30,
            what="the delivery to the endpoint that is down to fail",
        )
        assert deliveries(a, campaign["down"]["id"], status="failed")["meta"]["total"] == 1
    (d,) = log["data"]
    retries = int(ENV["GOMOBILE_WEBHOOK_MAX_RETRIES"])
    assert d["event"] == "execution.started" and d["attempts"] == retries + 1
    assert d["lastResponseCode"] == 503 and "503" in d["lastError"]
    assert [x["responseCode"] for x in d["attemptLog"]] == [503] * (retries + 1)
    time.sleep(0.5)
    assert len(receiver.to("/down")) == retries + 1  # no attempt after the last


def test_endpoints_are_listed_without_their_secret_rotated_and_deleted(
    platform: Platform, receiver: Receiver, campaign: dict[str, Any]
) -> None:
    with platform.client(campaign["key"]) as a:
        endpoints = wait_for(lambda: listed(a, 3), 10, what="the endpoints' list")
        assert {e["id"] for e in endpoints} == {campaign[k]["id"] for k in ("ok", "flaky", "down")}
        text = json.dumps(endpoints) + a.get(f"/api/webhooks/{campaign['ok']['id']}").text
        for k in ("ok", "flaky", "down"):
            assert campaign[k]["secret"] not in text
        one = a.get(f"/api/webhooks/{campaign['down']['id']}").json()
        assert (
            one["url"] == f"{receiver.url}/down"
            and one["events"] == ["execution.started"]
            and one["status"] == "active"
        )
        rotated = a.post(f"/api/webhooks/{campaign['down']['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        assert (
            rotated.json()["secret"].startswith("whsec_")
            and rotated.json()["secret"] != campaign["down"]["secret"]
        )
        assert a.delete(f"/api/webhooks/{campaign['down']['id']}").status_code == 200
        assert a.get(f"/api/webhooks/{campaign['down']['id']}").status_code == 404
        wait_for(lambda: listed(a, 2), 10, what="the deleted endpoint to leave the list")
        # Each change is an event on the endpoint's stream, with who did it.
        events = list(
            platform.container.campaigns.repository.event_store.get(UUID(campaign["down"]["id"]))
        )
        assert [type(e).__qualname__ for e in events] == [
            "WebhookEndpoint.Created",
            "WebhookEndpoint.SecretRotated",
            "WebhookEndpoint.Deleted",
        ]
        assert all(e.meta.get("actor") for e in events)
        assert all(
            campaign["down"]["secret"] not in json.dumps(vars(e), default=str) for e in events
        )  # sealed, never in clear


def test_another_organization_cannot_see_or_delete_an_endpoint(
    platform: Platform, campaign: dict[str, Any]
) -> None:
    _, other = platform.new_org("Other")
    hook = campaign["ok"]["id"]
    with platform.client(other) as b:
        assert b.get("/api/webhooks").json() == []
        assert b.get(f"/api/webhooks/{hook}").status_code == 404
        assert b.get(f"/api/webhooks/{hook}/deliveries").status_code == 404
        assert b.post(f"/api/webhooks/{hook}/rotate-secret").status_code == 404
        assert b.delete(f"/api/webhooks/{hook}").status_code == 404
    with platform.client(campaign["key"]) as a:
        assert a.get(f"/api/webhooks/{hook}").status_code == 200  # still there for its owner


def test_a_url_that_is_not_https_is_refused_naming_url(
    platform: Platform, campaign: dict[str, Any]
) -> None:
    with platform.client(campaign["key"]) as a:
        for url in (
            "http://example.com/hook",
            "ftp://example.com/hook",
            "example.com",
            "https://user:pw@example.com/",
        ):
            r = a.post("/api/webhooks", json={"url": url, "events": ["call.completed"]})
            assert r.status_code == 400, (url, r.text)
            assert "url" in r.json()["fieldErrors"], r.text
        r = a.post(
            "/api/webhooks", json={"url": "https://example.com/hook", "events": ["call.exploded"]}
        )
        assert r.status_code == 400 and "events" in r.json()["fieldErrors"], r.text
        r = a.post(
            "/api/webhooks",
            json={
                "url": "https://example.com/hook",
                "events": ["call.completed"],
                "secret": "mine",
            },
        )
        assert r.status_code == 400 and "secret" in r.json()["fieldErrors"], r.text
        # A manager may register endpoints; an agent may not.
        manager = a.post("/api/keys", json={"role": "manager"}).json()["apiKey"]
        agent = a.post("/api/keys", json={"role": "agent"}).json()["apiKey"]
    with platform.client(manager) as m:
        assert (
            m.post(
                "/api/webhooks",
                json={"url": "https://example.com/hook", "events": ["execution.completed"]},
            ).status_code
            == 201
        )
    with platform.client(agent) as g:
        assert g.get("/api/webhooks").status_code == 403


class RetryOn503(httpx.HTTPTransport):
    """A client that honours 503 + Retry-After (the API's answer while PostgreSQL refuses
    connections: the test server is shared, and its connection slots run out at times)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(10):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.read()
            time.sleep(min(float(response.headers.get("retry-after", "1")), 2.0))
        return response


def test_on_postgresql_and_redis_deliveries_are_retried_by_the_redis_broker(
    env: None,
    receiver: Receiver,
    postgres_database: str,
    redis_namespace: tuple[str, str],
    tmp_path: Path,
) -> None:
    """The production topology's engines: the follower's rows in PostgreSQL, the jobs and
    their retries in Redis."""
    redis_url, namespace = redis_namespace
    p = Platform(
        tmp_path / "var",
        database_url=postgres_database,
        redis_url=redis_url,
        redis_namespace=namespace,
    )
    try:
        _, key = p.new_org("Hooks on PostgreSQL")
        with httpx.Client(
            base_url=p.base_url, headers={"x-api-key": key}, timeout=30, transport=RetryOn503()
        ) as a:
            hook = register(
                a, f"{receiver.url}/pg", ["call.completed", "call.failed", "execution.completed"]
            )
            receiver.fail["/pg"] = 1
            run_small_campaign(a)
            log = wait_for(
                lambda: all_delivered(a, hook["id"], 4), 60, what="the deliveries on PostgreSQL"
            )
        time.sleep(0.5)
        got = receiver.to("/pg")
        assert [r["answered"] for r in got].count(200) == 4 and [r["answered"] for r in got].count(
            500
        ) == 1
        assert all(
            verify(hook["secret"], r["headers"]["X-Gomobile-Signature"], r["body"]) for r in got
        )
        assert sorted(json.loads(r["body"])["type"] for r in got if r["answered"] == 200) == [
            "call.completed", "call.completed", "call.failed", "execution.completed",
        ]  # fmt: skip
        assert sum(d["attempts"] for d in log["data"]) == 5
    finally:
        p.close()


def test_redirects_are_followed_on_the_same_host_only(receiver: Receiver) -> None:
    """The HTTP client of the deliveries, against the real receiver."""
    from infrastructure.jobs import post_webhook

    other_host = receiver.url.replace("127.0.0.1", "localhost")  # the same server, another host
    receiver.redirect["/moved-here"] = "/landed"
    receiver.redirect["/moved-away"] = f"{other_host}/landed-away"
    code, error = post_webhook(
        f"{receiver.url}/moved-here", b"{}", {"Content-Type": "application/json"}, 2.0
    )
    assert (code, error) == (200, None)
    assert [r["body"] for r in receiver.to("/landed")] == [b"{}"]  # still a POST, with its body
    code, error = post_webhook(
        f"{receiver.url}/moved-away", b"{}", {"Content-Type": "application/json"}, 2.0
    )
    assert code == 307 and error and "another host" in error
    assert receiver.to("/landed-away") == []
    code, error = post_webhook("http://127.0.0.1:9/nothing-listens", b"{}", {}, 1.0)
    assert code is None and error and "Connect" in error


def test_a_delivery_left_unfinished_by_a_stopped_process_is_sent_by_the_next(
    env: None, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded broker keeps its queue in memory: a restart loses the jobs waiting for
    a retry. The next process's follower sends every unfinished delivery again, before
    any new event arrives."""
    monkeypatch.setenv("GOMOBILE_WEBHOOK_MAX_RETRIES", "1000")
    receiver.fail["/restart"] = 1_000_000
    first = Platform(tmp_path / "var")
    try:
        _, key = first.new_org("Restarted")
        with first.client(key) as a:
            hook = register(a, f"{receiver.url}/restart", ["execution.completed"])
            run_small_campaign(a)
            wait_for(lambda: deliveries(a, hook["id"])["data"], 30, what="the delivery")
            wait_for(
                lambda: deliveries(a, hook["id"])["data"][0]["attempts"] >= 2, 30, what="a retry"
            )
    finally:
        first.close()
    receiver.fail["/restart"] = 0
    refused = len(receiver.to("/restart"))
    second = Platform(tmp_path / "var")
    try:
        with second.client(key) as a:
            log = wait_for(
                lambda: all_delivered(a, hook["id"], 1), 30, what="the delivery after the restart"
            )
    finally:
        second.close()
    (d,) = log["data"]
    assert d["event"] == "execution.completed" and d["lastResponseCode"] == 200
    assert d["attempts"] == refused + 1
    assert [r["answered"] for r in receiver.to("/restart")] == [500] * refused + [200]
