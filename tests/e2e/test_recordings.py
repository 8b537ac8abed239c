"""Recordings through the real stack: a record node's recording is listed, its audio is
fetched from the phone network's RecordingUrl (with the account's credentials) into the
file store on first use, and deleting hides it."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.harness import Platform, wait_for

GRAPH = {"startNodeId": "dial", "nodes": {
    "dial": {"type": "dial", "config": {"enableAMD": False}, "outputs": {"onAnswer": "rec"}},
    "rec": {"type": "record", "config": {"variable": "msg", "maxDurationMs": 30000}, "outputs": {"onComplete": "bye", "onTimeout": "bye"}},
    "bye": {"type": "hangup"}}}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, httpx.Client]]:
    platform = Platform(tmp_path_factory.mktemp("recordings") / "var")
    _, key = platform.new_org()
    with platform.client(key) as client:
        yield platform, client
    platform.close()


def test_record_list_stream_download_delete(world: tuple[Platform, httpx.Client]) -> None:
    platform, c = world
    phone = "+212618000004"
    contact = c.post("/api/contact", json={"primaryPhone": phone}).json()
    audience = c.post("/api/audience", json={"name": "rec"}).json()
    c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [contact["id"]]})
    flow = c.post("/api/flows", json={"name": "rec", "graph": GRAPH}).json()
    program = c.post("/api/programs", json={
        "name": "rec", "audienceId": audience["id"], "flowId": flow["id"], "startAt": datetime.now(UTC).isoformat(),
        "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}}).json()  # fmt: skip
    eid = c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
    wait_for(lambda: c.get(f"/api/program-executions/{eid}").json()["status"] == "completed", 30, what="the call")

    listed: list[dict[str, Any]] = wait_for(lambda: c.get("/api/recordings").json(), 10, what="the recording")
    assert len(listed) == 1
    rec = listed[0]
    assert rec["nodeId"] == "rec" and rec["recordingType"] == "segment" and rec["durationMs"] > 0
    assert [r["id"] for r in c.get(f"/api/recordings/call/{rec['callId']}").json()] == [rec["id"]]
    assert c.get("/api/recordings", params={"offset": 1}).json() == []
    assert c.get("/api/recordings", params={"limit": 0}).status_code == 400
    assert c.get(f"/api/recordings/{rec['id']}/metadata").json()["file"]["fileSize"] is None  # not fetched yet

    who = platform.container.campaigns.authenticate(c.headers["x-api-key"])
    url = platform.container.history.recording(str(who.organization_id), rec["id"])["url"]  # the provider's RecordingUrl
    assert url.startswith(platform.sandbox.base_url) and httpx.get(url + ".wav").status_code == 401
    streamed = c.get(f"/api/recordings/{rec['id']}")
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"] == "audio/wav" and streamed.headers["cache-control"] == "public, max-age=3600"
    with wave.open(io.BytesIO(streamed.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() / 8000 == rec["durationMs"] / 1000
    stored = list((platform.settings.data_dir / "files" / "recordings").rglob("*.wav"))
    assert len(stored) == 1 and stored[0].read_bytes() == streamed.content  # kept in the file store
    download = c.get(f"/api/recordings/{rec['id']}/download")
    assert download.content == streamed.content and download.headers["content-disposition"].startswith("attachment")
    assert c.get(f"/api/recordings/{rec['id']}/metadata").json()["file"]["fileSize"] == len(streamed.content)

    _, other_key = platform.new_org("Other")
    with platform.client(other_key) as other:
        assert other.get(f"/api/recordings/{rec['id']}").status_code == 404
        assert other.get("/api/recordings").json() == []

    assert c.delete(f"/api/recordings/{rec['id']}").json() == {"message": "Recording deleted"}
    assert c.get(f"/api/recordings/{rec['id']}").status_code == 404
    assert c.delete(f"/api/recordings/{rec['id']}").status_code == 404
    wait_for(lambda: c.get("/api/recordings").json() == [], 10, what="the deleted recording to leave the list")
