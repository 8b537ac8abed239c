"""Structured logs: JSON lines that carry the request id of the HTTP request they were
written for (the X-Request-Id the client sent, or one generated and echoed), and the
correlation id of the job they belong to, the same ids the events written beside them
carry in their meta."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrastructure.logs import configure_logging
from tests.harness import Platform, wait_for


@pytest.fixture()
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(tmp_path / "var")
    yield p
    p.close()


@pytest.fixture()
def logs(platform: Platform) -> Iterator[io.StringIO]:
    # Once the platform is built: the sandbox's litestar app configures logging as it starts.
    stream = io.StringIO()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    handler = configure_logging("INFO", stream)
    yield stream
    root.removeHandler(handler)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_every_line_is_json_with_the_ids_of_its_request_and_job(
    platform: Platform, logs: io.StringIO
) -> None:
    _, key = platform.new_org()
    with platform.client(key) as api:
        # A request id given by the client is honoured and echoed, with the correlation id.
        r = api.post(
            "/api/contact",
            json={"firstName": "Log", "lastName": "Line", "primaryPhone": "+212612000005"},
            headers={"x-request-id": "req-abc-1", "x-correlation-id": "corr-xyz-1"},
        )
        assert r.status_code == 201, r.text
        assert (
            r.headers["x-request-id"] == "req-abc-1"
            and r.headers["x-correlation-id"] == "corr-xyz-1"
        )
        contact = r.json()["id"]
        # None given: one is generated and echoed, and the correlation starts with it.
        r = api.post("/api/audience", json={"name": "Logs", "description": "log lines"})
        generated = r.headers["x-request-id"]
        assert len(generated) >= 32 and r.headers["x-correlation-id"] == generated
        audience = r.json()["id"]
        # Something that cannot be a plain id (a line break, spaces) is replaced.
        r = api.get("/api/contact", headers={"x-request-id": 'bad id "{}"'})
        assert (
            r.headers["x-request-id"] not in ('bad id "{}"', "")
            and " " not in r.headers["x-request-id"]
        )
        # Errors and unknown paths get one too.
        r = api.get("/api/no-such-thing", headers={"x-request-id": "req-404"})
        assert r.status_code == 404 and r.headers["x-request-id"] == "req-404"

        assert (
            api.post(
                f"/api/audience/{audience}/add-contacts", json={"contacts": [contact]}
            ).status_code
            == 200
        )
        flow = api.post("/api/flows", json={"name": "Hang up", "graph": {"startNodeId": "h", "nodes": [
            {"id": "h", "type": "hangup", "config": {"reason": "x", "hangupType": "normal"}}]}}).json()  # fmt: skip
        program = api.post("/api/programs", json={
            "name": "Logged", "audienceId": audience, "flowId": flow["id"], "startAt": "2025-01-20T09:00:00Z",
            "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}}).json()  # fmt: skip
        launch = api.post(
            f"/api/programs/{program['id']}/launch", headers={"x-request-id": "req-launch-7"}
        )
        assert launch.status_code == 201, launch.text
        eid = launch.json()["executionId"]
        wait_for(
            lambda: api.get(f"/api/program-executions/{eid}").json()["status"] == "completed",
            what="completion",
        )

        # The events of a request carry the ids the response header showed.
        activity = api.get("/api/activity", params={"limit": 100}).json()["data"]
        created = next(a for a in activity if a["event"] == "Contact.Created")
        assert (created["requestId"], created["correlationId"]) == ("req-abc-1", "corr-xyz-1")
        assert (
            next(a for a in activity if a["event"] == "Audience.Created")["requestId"] == generated
        )
        assert (
            next(a for a in activity if a["event"] == "Execution.Created")["requestId"]
            == "req-launch-7"
        )
        with api.stream("GET", "/api/events", params={"type": "Call.DialClaimed"}) as feed:
            claims = [json.loads(x) for x in feed.iter_lines() if x]
    assert len(claims) == 1
    call_id, claim_meta = claims[0]["streamId"], claims[0]["meta"]

    lines = _lines(logs)
    assert lines, "nothing was logged"
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    access = [x for x in lines if x["logger"] == "gomobile.http"]
    by_id = {x["requestId"]: x for x in access}
    assert by_id["req-abc-1"]["status"] == 201 and by_id["req-abc-1"]["method"] == "POST"
    assert (
        by_id["req-abc-1"]["path"] == "/api/contact"
        and by_id["req-abc-1"]["correlationId"] == "corr-xyz-1"
    )
    assert by_id["req-abc-1"]["durationMs"] >= 0
    assert by_id[generated]["correlationId"] == generated
    assert by_id["req-404"]["status"] == 404
    assert all(x.get("requestId") for x in access), "an access line without its request id"
    # The worker's lines for the dial job carry the correlation id of the events it appended.
    jobs = [x for x in lines if x["logger"] == "gomobile.jobs" and call_id in x["msg"]]
    assert jobs, [x for x in lines if x["logger"] != "gomobile.http"]
    assert {x["correlationId"] for x in jobs} == {claim_meta["correlationId"]}
    assert claim_meta["actor"].startswith("worker:")
