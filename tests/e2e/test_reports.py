"""Execution reports, per-contact history, usage and activity, read over the real API after
a campaign through every sandbox callee (last digits 0-9, one retry)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.scenario import run_campaign
from tests.harness import Platform, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Any:
    platform = Platform(Path(tmp_path_factory.mktemp("reports")) / "var")
    _org, key = platform.new_org()
    client = platform.client(key)
    result = run_campaign(client, platform.clock.advance, n=10)
    # The reports view follows the same logs as progress; let it catch up.
    runner = platform.container.runner("reports")
    wait_for(lambda: not any(runner.lag().values()), what="reports view to catch up")
    yield platform, client, result
    client.close()
    platform.close()


def test_summary_report_counts_contacts_and_calls(campaign: Any) -> None:
    _platform, client, result = campaign
    r = client.get(f"/api/program-execution/{result['executionId']}/report")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["status"] == "completed" and report["effectiveStatus"] == "completed"
    assert report["isInPauseWindow"] is False
    assert report["metadata"]["flowName"] == "Survey"
    assert report["metadata"]["retryStrategy"]["type"] == "fixed_delay"
    # 0 busy then answers; 1 never answers; 2 voicemail; 3 fails; 4-9 answer.
    assert report["contactMetrics"] == {
        "totalContacts": 10, "pending": 0, "queued": 0, "calling": 0, "pendingRetry": 0,
        "completed": 7, "failed": 3, "skipped": 0, "reachRate": 70.0,
    }  # fmt: skip
    calls = report["callMetrics"]
    assert calls["totalCalls"] == 13
    assert (calls["answered"], calls["completed"], calls["voicemail"]) == (8, 7, 1)
    assert (calls["noAnswer"], calls["busy"], calls["failed"], calls["rejected"]) == (2, 1, 2, 0)
    assert calls["answerRate"] == round(8 * 100 / 13, 2)
    assert calls["completionRate"] == 87.5
    assert report["durationMs"] > 0


def test_breakdown_per_attempt_number(campaign: Any) -> None:
    _platform, client, result = campaign
    body = client.get(f"/api/program-execution/{result['executionId']}/report/breakdown").json()
    first, second = body["perAttempt"]
    assert (first["attemptNumber"], first["callsAttempted"], first["callsAnswered"], first["callsCompleted"]) == (1, 10, 7, 6)
    assert (first["callsVoicemail"], first["callsNoAnswer"], first["callsBusy"], first["callsFailed"]) == (1, 1, 1, 1)
    assert (second["attemptNumber"], second["callsAttempted"], second["callsAnswered"], second["callsCompleted"]) == (2, 3, 1, 1)
    assert first["answeredPercentage"] == 70.0 and first["completedPercentage"] == 60.0
    assert first["averageDurationMs"] >= 0
    assert body["total"]["attemptNumber"] == 0 and body["total"]["callsAttempted"] == 13


def test_node_stats_with_keypress_split(campaign: Any) -> None:
    _platform, client, result = campaign
    body = client.get(f"/api/program-execution/{result['executionId']}/report/node-stats").json()
    nodes = {n["nodeId"]: n for n in body["nodes"]}
    assert list(nodes)[:3] == ["dial", "greet", "menu"], "flow order"
    assert nodes["dial"]["uniqueCalls"] == 13 and nodes["dial"]["percentage"] == 100.0
    # 6 people and the machine, greeted before asynchronous AMD told it apart, + the one
    # who was busy first.
    assert nodes["greet"]["uniqueCalls"] == 8 and nodes["greet"]["nodeLabel"] == "Greeting"
    assert nodes["menu"]["dtmfBreakdown"] == {"1": 7} and nodes["menu"]["dtmfPercentages"] == {"1": 100.0}
    assert nodes["thanks"]["uniqueCalls"] == 7 and nodes["done"]["totalExecutions"] == 7
    assert nodes["vm"]["uniqueCalls"] == 1
    assert nodes["bye-na"]["uniqueCalls"] == 2 and nodes["bye-err"]["uniqueCalls"] == 2
    assert nodes["bye"]["uniqueCalls"] == 1  # after the voicemail message
    assert (body["totalCalls"], body["completedCalls"]) == (13, 7)


def test_calls_report_filters_by_status(campaign: Any) -> None:
    _platform, client, result = campaign
    eid = result["executionId"]
    busy = client.get(f"/api/program-execution/{eid}/report/calls", params={"status": "busy"}).json()
    assert [r["to"][-1] for r in busy["data"]] == ["0"] and busy["meta"]["total"] == 1
    no_answer = client.get(f"/api/program-execution/{eid}/report/calls", params={"status": "no_answer"}).json()
    assert no_answer["meta"]["total"] == 2


def test_contact_calls_across_programs(campaign: Any) -> None:
    platform, client, result = campaign
    contact = next(cid for cid, phone in result["contacts"].items() if phone.endswith("0"))
    body = client.get(f"/api/contact/{contact}/calls").json()
    assert [a["outcome"] for a in body["data"]] == ["busy", "completed"]
    second = body["data"][1]
    assert second["keypresses"] == ["1"]
    assert second["call"]["from"] in ("+212500000001", "+212500000002")
    assert second["program"]["name"] == "Hundred calls"
    assert second["program"]["launchedBy"] and second["program"]["launchedBy"] != "system"
    assert [s["nodeId"] for s in second["flowExecution"]["executionPath"]][:3] == ["dial", "greet", "menu"]
    assert client.get("/api/contact/00000000-0000-0000-0000-000000000000/calls").status_code == 404
    # another organization sees nothing of it
    _, other_key = platform.new_org("Other")
    with platform.client(other_key) as other:
        assert other.get(f"/api/contact/{contact}/calls").status_code == 404
        assert other.get(f"/api/program-execution/{result['executionId']}/report").status_code == 404


def test_usage_and_activity_log(campaign: Any) -> None:
    _platform, client, _result = campaign
    usage = client.get("/api/usage").json()["data"]
    assert len(usage) == 1
    assert (usage[0]["calls"], usage[0]["answeredCalls"]) == (13, 8)
    assert usage[0]["billableMinutes"] >= 8  # each answered call is at least one minute
    assert client.get("/api/usage", params={"month": "2025/01"}).status_code == 400
    log = client.get("/api/activity", params={"limit": 100}).json()
    events = {e["event"] for e in log["data"]}
    assert {"Execution.Created", "Program.Created", "Flow.Created"} <= events
    assert all(e["actor"] != "system" and e["requestId"] for e in log["data"])


def test_report_of_an_execution_in_a_pause_window(tmp_path: Path) -> None:
    platform = Platform(tmp_path / "var")
    try:
        _, key = platform.new_org()
        with platform.client(key) as c:
            contact = c.post("/api/contact", json={"firstName": "P", "lastName": "W", "primaryPhone": "+212612000004"}).json()
            audience = c.post("/api/audience", json={"name": "Window audience", "description": "in a pause window"}).json()
            c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [contact["id"]]})
            flow = c.post("/api/flows", json={"name": "Hang up", "graph": {"startNodeId": "h", "nodes": [
                {"id": "h", "type": "hangup", "config": {"reason": "x", "hangupType": "normal"}}]}}).json()  # fmt: skip
            program = c.post("/api/programs", json={
                "name": "Paused", "audienceId": audience["id"], "flowId": flow["id"], "startAt": "2025-01-20T09:00:00Z",
                "didPool": ["+212500000001"], "retryStrategy": {"type": "none"},
                "pauseWindows": {"advanced": [{"startAt": "2000-01-01T00:00:00Z", "endAt": "2100-01-01T00:00:00Z"}]},
            }).json()  # fmt: skip
            eid = c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
            report = wait_for(
                lambda: c.get(f"/api/program-execution/{eid}/report").json(),
                what="execution to run", until=lambda r: r["status"] == "running")
            assert report["effectiveStatus"] == "paused_window" and report["isInPauseWindow"] is True
            assert report["contactMetrics"]["pending"] + report["contactMetrics"]["queued"] == 1, report
            assert report["callMetrics"]["totalCalls"] == 0
            # Due but held by the pause window: /metrics counts it as waiting to be dialled.
            wait_for(lambda: 'gomobile_calls_waiting{state="due"} 1.0' in httpx.get(platform.base_url + "/metrics").text,
                     what="the due call in /metrics")  # fmt: skip
            # Pause once the dispatcher has queued the calls: it writes the Execution stream
            # until then, and a PATCH racing that write answers 500 (a version conflict).
            wait_for(lambda: (platform.container.progress.execution(eid) or {}).get("calls_queued") == 1, what="calls queued")
            assert c.patch(f"/api/program-executions/{eid}/pause").status_code == 200
            assert c.get(f"/api/program-execution/{eid}/report").json()["effectiveStatus"] == "paused_manual"
    finally:
        platform.close()


def _feed(client: Any, **params: Any) -> list[dict[str, Any]]:
    with client.stream("GET", "/api/events", params=params) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line]


def test_event_feed_pages_with_a_cursor_and_filters(campaign: Any) -> None:
    platform, client, _result = campaign
    everything = _feed(client, limit=10000)
    assert {e["organizationId"] for e in everything} == {everything[0]["organizationId"]}
    assert sum(e["type"] == "Call.AttemptEnded" for e in everything) == 13
    assert sum(e["type"] == "Contact.Created" for e in everything) == 10
    assert all(e["data"].get("key_hash") in (None, "[redacted]") for e in everything)
    # Paging with the cursor of the last line gives the same events, none twice.
    paged: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = _feed(client, limit=7, **({"cursor": cursor} if cursor else {}))
        if not page:
            break
        paged.extend(page)
        cursor = page[-1]["cursor"]
    key = lambda e: (e["application"], e["position"])
    assert [key(e) for e in paged] == [key(e) for e in everything]
    assert len(set(map(key, paged))) == len(paged)
    ended = _feed(client, type="AttemptEnded")
    assert len(ended) == 13 and {e["data"]["outcome"] for e in ended} >= {"busy", "completed", "voicemail"}
    cut = everything[len(everything) // 2]["timestamp"]
    assert all(e["timestamp"] >= cut for e in _feed(client, since=cut, limit=10000))
    assert all(e["timestamp"] < cut for e in _feed(client, until=cut, limit=10000))
    assert client.get("/api/events", params={"cursor": "nope"}).status_code == 400
    # Another organization's feed holds none of these streams.
    _, other_key = platform.new_org("Feed other")
    with platform.client(other_key) as other:
        theirs = _feed(other, limit=10000)
    assert not {e["streamId"] for e in theirs} & {e["streamId"] for e in everything}


def test_events_export_cli_writes_ndjson(campaign: Any, tmp_path: Path) -> None:
    platform, client, _result = campaign
    org = _feed(client, limit=1)[0]["organizationId"]
    env = {**os.environ, "GOMOBILE_DATA_DIR": str(platform.settings.data_dir)}
    env.pop("GOMOBILE_DATABASE_URL", None)
    out = tmp_path / "events.ndjson"
    done = subprocess.run(
        [sys.executable, "-m", "interfaces.cli", "events", "export", "--org", org, "--type", "Call.AttemptEnded",
         "--format", "ndjson", "-o", str(out)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 13 and all(x["type"] == "Call.AttemptEnded" and x["organizationId"] == org for x in lines)
    assert json.loads(done.stderr.strip().splitlines()[-1]) == {"organizationId": org, "events": 13}


def test_prometheus_metrics(campaign: Any) -> None:
    platform, _client, _result = campaign
    r = httpx.get(platform.base_url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines() if line and not line.startswith("#")}
    assert samples["gomobile_calls_dialled_total"] == 13
    assert samples["gomobile_calls_answered_total"] == 8
    assert samples['gomobile_call_outcomes_total{outcome="busy"}'] == 1
    assert samples['gomobile_call_outcomes_total{outcome="completed"}'] == 7
    assert samples['gomobile_projection_lag_events{application="calls",projection="reports"}'] >= 0
    # Nothing left to dial once the campaign is over.
    assert samples['gomobile_calls_waiting{state="due"}'] == 0 and samples['gomobile_calls_waiting{state="queued"}'] == 0
    # Every webhook this process answered is timed, by kind (the sandbox called them).
    assert samples['gomobile_webhook_seconds_count{kind="voice"}'] >= 8  # one per answered call at least
    assert samples['gomobile_webhook_seconds_count{kind="status"}'] >= 13
    assert samples['gomobile_webhook_seconds_bucket{kind="status",le="+Inf"}'] == samples['gomobile_webhook_seconds_count{kind="status"}']


def test_reports_view_rebuilt_from_the_events_equals_the_live_one(campaign: Any) -> None:
    platform, _client, _result = campaign
    view = platform.container.views["reports"]
    tables = ["report_streams", "report_calls", "report_attempts", "report_nodes", "report_visits", "report_digits", "report_usage", "report_activity"]

    def snapshot() -> dict[str, list[Any]]:
        return {t: sorted((tuple(sorted(r.items())) for r in view.rows(f"SELECT * FROM {t}")), key=repr) for t in tables}

    before = snapshot()
    assert all(before.values())
    for r in platform.container.runners:
        if r.name == "reports":
            r.stop()
    view.reset()
    assert not any(snapshot().values())
    platform.container.runner("reports").catch_up()
    assert snapshot() == before


def _export(client: Any, path: str, **params: Any) -> tuple[httpx.Response, bytes]:
    with client.stream("GET", path, params=params) as r:
        return r, r.read()


def test_call_report_export_streams_csv_and_ndjson(campaign: Any) -> None:
    import csv
    import io

    platform, client, result = campaign
    eid = result["executionId"]
    listed = client.get(f"/api/program-execution/{eid}/report/calls", params={"limit": 100}).json()["data"]
    r, body = _export(client, f"/api/program-execution/{eid}/report/calls/export", format="csv")
    assert r.status_code == 200, body
    assert r.headers["content-type"].startswith("text/csv")
    assert f'filename="execution-{eid}-calls.csv"' in r.headers["content-disposition"]
    # Streamed: sent in chunks as it is written, with no length known up front.
    assert "content-length" not in r.headers and r.headers.get("transfer-encoding") == "chunked"
    text = body.decode()
    assert text.count("\r\n") >= 14, "RFC 4180 line ends"
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == 13 == len(listed)
    assert {r["callId"] for r in rows} == {x["callId"] for x in listed}
    by_call = {r["callId"]: r for r in rows}
    for x in listed:
        row = by_call[x["callId"]]
        assert (row["to"], row["status"], row["outcome"], row["attempt"]) == (x["to"], x["status"], x["outcome"] or "", str(x["attempt"]))
    answered = [r for r in rows if r["outcome"] == "completed"]
    assert len(answered) == 7 and all(r["keypresses"] == "1" for r in answered)
    assert all(r["path"].startswith("dial > greet > menu") for r in answered)
    assert all(r["programName"] == "Hundred calls" and r["launchedBy"] for r in rows)
    # A cell holding commas and quotes (the final variables, as JSON) is quoted, its quotes
    # doubled, and reads back whole.
    report = client.get(f"/api/call-report/call/{answered[0]['callId']}").json()
    assert json.loads(by_call[answered[0]["callId"]]["finalVariables"]) == report["flowExecution"]["finalVariables"]
    assert '"{""' in text
    # NDJSON: one full CallAttemptReport per line, the same calls.
    r, body = _export(client, f"/api/program-execution/{eid}/report/calls/export", format="ndjson")
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert {x["callId"] for x in lines} == set(by_call)
    line = next(x for x in lines if x["callId"] == answered[0]["callId"])
    assert line["flowExecution"] == report["flowExecution"] and line["events"] == report["events"]
    # The status filter, a bad format, another organization.
    r, body = _export(client, f"/api/program-execution/{eid}/report/calls/export", format="csv", status="no_answer")
    assert len(list(csv.DictReader(io.StringIO(body.decode(), newline="")))) == 2
    assert client.get(f"/api/program-execution/{eid}/report/calls/export", params={"format": "xml"}).status_code == 400
    _, other_key = platform.new_org("Export other")
    with platform.client(other_key) as other:
        assert other.get(f"/api/program-execution/{eid}/report/calls/export").status_code == 404


def test_contact_history_export(campaign: Any) -> None:
    import csv
    import io

    platform, client, result = campaign
    contact = next(cid for cid, phone in result["contacts"].items() if phone.endswith("0"))
    history = client.get(f"/api/contact/{contact}/calls").json()["data"]
    r, body = _export(client, f"/api/contact/{contact}/calls/export", format="ndjson")
    assert r.status_code == 200 and "content-length" not in r.headers
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert [x["outcome"] for x in lines] == ["busy", "completed"]
    assert lines == history
    r, body = _export(client, f"/api/contact/{contact}/calls/export")  # CSV unless asked otherwise
    rows = list(csv.DictReader(io.StringIO(body.decode(), newline="")))
    assert [(x["attempt"], x["outcome"], x["to"]) for x in rows] == [("1", "busy", result["contacts"][contact]), ("2", "completed", result["contacts"][contact])]
    assert rows[1]["keypresses"] == "1" and rows[1]["from"] in ("+212500000001", "+212500000002")
    assert client.get("/api/contact/00000000-0000-0000-0000-000000000000/calls/export").status_code == 404
    _, other_key = platform.new_org("Export other 2")
    with platform.client(other_key) as other:
        assert other.get(f"/api/contact/{contact}/calls/export").status_code == 404


def test_report_as_of_an_instant_is_replayed_from_the_events(tmp_path: Path) -> None:
    from tests.e2e.scenario import FLOW

    platform = Platform(tmp_path / "var")
    try:
        _, key = platform.new_org()
        with platform.client(key) as c:
            ids = []
            for i in range(16):  # every sandbox behaviour (last digit), some twice
                r = c.post("/api/contact", json={"firstName": f"A{i}", "lastName": "Sof", "primaryPhone": f"+2126120030{i:02d}"})
                ids.append(r.json()["id"])
            audience = c.post("/api/audience", json={"name": "As of", "description": "replayed"}).json()
            c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": ids})
            flow = c.post("/api/flows", json=FLOW).json()
            # Paced (the organization's calls per second), so that it can be caught mid-run.
            assert c.patch("/api/organization", json={"callsPerSecond": 4}).status_code == 200
            program = c.post("/api/programs", json={
                "name": "As of", "audienceId": audience["id"], "flowId": flow["id"], "startAt": "2025-01-20T09:00:00Z",
                "didPool": ["+212500000001"], "retryStrategy": {"type": "none"},
            }).json()  # fmt: skip
            eid = c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
            before_launch = "2000-01-01T00:00:00Z"
            report = lambda **p: c.get(f"/api/program-execution/{eid}/report", params=p)
            wait_for(lambda: report().json()["contactMetrics"]["completed"] >= 3, what="a few calls done")
            wait_for(lambda: (platform.container.progress.execution(eid) or {}).get("calls_queued") == 1, what="calls queued")
            assert c.patch(f"/api/program-executions/{eid}/pause").status_code == 200
            # Mid-run, once the calls in flight have ended and every read model caught up:
            # what the live report said then.
            runners = [platform.container.runner(n) for n in ("progress", "reports")]

            def settled() -> dict[str, Any] | None:
                now = report().json()
                m = now["contactMetrics"]
                quiet = m["calling"] == 0 and m["queued"] == 0 and not any(v for r in runners for v in r.lag().values())
                return now if quiet and report().json()["callMetrics"] == now["callMetrics"] else None

            wait_for(settled, what="calls in flight to end")
            live = report().json()
            live_breakdown = c.get(f"/api/program-execution/{eid}/report/breakdown").json()
            live_nodes = c.get(f"/api/program-execution/{eid}/report/node-stats").json()
            assert live["status"] == "paused" and 0 < live["contactMetrics"]["completed"] < 16
            assert live["contactMetrics"]["pending"] > 0, "the execution should be mid-run"
            at = live["asOf"]
            assert c.patch(f"/api/program-executions/{eid}/resume").status_code == 200
            wait_for(lambda: report().json()["status"] == "completed", what="completion")
            wait_for(lambda: not any(v for r in runners for v in r.lag().values()), what="read models")
            now = report().json()
            assert now["contactMetrics"]["completed"] > live["contactMetrics"]["completed"]
            # Asked later, as of that instant: the same report, replayed from the events.
            past = report(asOf=at)
            assert past.status_code == 200, past.text
            assert past.json() == live
            assert c.get(f"/api/program-execution/{eid}/report/breakdown", params={"asOf": at}).json() == live_breakdown
            assert c.get(f"/api/program-execution/{eid}/report/node-stats", params={"asOf": at}).json() == live_nodes
            # As of now it is the current report; before the launch there was none.
            assert report(asOf=now["asOf"]).json() == now
            assert report(asOf=before_launch).status_code == 404
            assert report(asOf="yesterday").status_code == 400
    finally:
        platform.close()


def test_outcomes_over_time(campaign: Any) -> None:
    _platform, client, result = campaign
    eid = result["executionId"]
    body = client.get(f"/api/program-execution/{eid}/report/outcomes-over-time").json()
    assert body["totals"] == {"completed": 7, "voicemail": 1, "no_answer": 2, "busy": 1, "failed": 2}
    assert body["outcomes"] == ["completed", "voicemail", "no_answer", "busy", "failed"]
    assert body["bucketSeconds"] >= 1 and 1 <= len(body["buckets"]) <= 40
    for o, n in body["totals"].items():
        assert sum(b["counts"][o] for b in body["buckets"]) == n
    starts = [b["start"] for b in body["buckets"]]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    one = client.get(f"/api/program-execution/{eid}/report/outcomes-over-time", params={"buckets": 1}).json()
    assert len(one["buckets"]) == 1 and one["buckets"][0]["counts"] == body["totals"]
    assert client.get(f"/api/program-execution/{eid}/report/outcomes-over-time", params={"buckets": 0}).status_code == 400


def test_reports_view_applied_in_batches_equals_event_by_event(campaign: Any, tmp_path: Path) -> None:
    """The view sums a batch's call events in memory and writes them at its end: the rows
    must be those of applying each event alone."""
    from projections.reports import ReportsView
    from projections.store import make_view

    platform, _client, _result = campaign
    live = platform.container.views["reports"]
    tables = ["report_streams", "report_calls", "report_attempts", "report_nodes", "report_visits", "report_digits", "report_usage", "report_activity"]

    def snapshot(view: Any) -> dict[str, list[Any]]:
        return {t: sorted((tuple(sorted(r.items())) for r in view.rows(f"SELECT * FROM {t}")), key=repr) for t in tables}

    one_by_one = make_view(ReportsView, "reports", {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "r.sqlite")})
    try:
        # The order the live runner applies them in: the campaigns log first, then the calls log.
        for app in (platform.container.campaigns, platform.container.calls):
            for n in app.recorder.select_notifications(start=1, limit=1_000_000):
                with one_by_one.transaction() as c:
                    one_by_one.handle(c, app.mapper.to_domain_event(n))
        expected = snapshot(one_by_one)
    finally:
        one_by_one.datastore.close()
    assert expected["report_visits"] and expected["report_nodes"] and expected["report_digits"]
    # The live view, caught up with the same events (its runner may have been stopped by
    # the rebuild test above: then catch up once more by hand).
    running = [r for r in platform.container.runners if r.name == "reports" and r._thread and r._thread.is_alive()]
    runner = platform.container.runner("reports")
    if running:
        wait_for(lambda: not any(runner.lag().values()), what="reports view to catch up")
    else:
        runner.catch_up()
    assert snapshot(live) == expected
