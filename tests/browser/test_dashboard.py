"""The dashboard in headless Chromium (Playwright driving the Debian ``chromium``): sign in
with an API key, watch an execution's counters move live over Server-Sent Events,
pause/resume/cancel with the buttons, open a call's timeline, search by phone number."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.scenario import FLOW
from tests.harness import Platform, wait_for

CHROMIUM = "/usr/bin/chromium"


def _browser_or_skip() -> Any:
    required = os.environ.get("CI", "").lower() == "true"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            pytest.fail("playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if required:
            pytest.fail(f"{CHROMIUM} is missing (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} is missing")
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _browser_or_skip()
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture()
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(tmp_path / "var")
    yield p
    p.close()


def _program(client: Any, phones: list[str], name: str, **extra: Any) -> str:
    ids = []
    for i, phone in enumerate(phones):
        r = client.post("/api/contact", json={"firstName": f"B{i}", "lastName": "Rowser", "primaryPhone": phone})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    audience = client.post("/api/audience", json={"name": f"{name} audience", "description": "browser test"}).json()
    assert client.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": ids}).status_code == 200
    flow = client.post("/api/flows", json=FLOW).json()
    program = client.post("/api/programs", json={
        "name": name, "audienceId": audience["id"], "flowId": flow["id"], "startAt": "2025-01-20T09:00:00Z",
        "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}, **extra,
    })  # fmt: skip
    assert program.status_code == 201, program.text
    return str(program.json()["id"])


def _sign_in(page: Any, base: str, key: str) -> None:
    page.goto(base + "/dashboard")
    assert page.url.endswith("/dashboard/login")
    page.fill("input[name=apiKey]", "gm_not_a_key")
    page.click("button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]")
    page.fill("input[name=apiKey]", key)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/dashboard")


def _press(page: Any, action: str) -> None:
    with page.expect_navigation():
        page.click(f"button[value={action}]")


def _counter(page: Any, name: str) -> int:
    return int(page.inner_text(f'[data-counter="{name}"]'))


def test_live_counters_timeline_and_audit(browser: Any, platform: Platform) -> None:
    _, key = platform.new_org()
    phones = [f"+21261200{i:04d}" for i in range(40, 60) if str(i)[-1] in "456789"]
    with platform.client(key) as api:
        # Paced (the organization's calls per second) so that the page opens mid-run.
        assert api.patch("/api/organization", json={"callsPerSecond": 3}).status_code == 200
        program = _program(api, phones, "Live counters")
        page = browser.new_page()
        _sign_in(page, platform.base_url, key)
        eid = api.post(f"/api/programs/{program}/launch").json()["executionId"]
        page.goto(f"{platform.base_url}/dashboard/executions/{eid}")
        page.evaluate("window.__sameDocument = true")
        page.wait_for_function("document.body.dataset.live === 'on'")
        first = _counter(page, "completed")
        assert first < len(phones), "the execution should still be running when the page opens"
        # The counter moves without a reload while calls complete.
        page.wait_for_function(
            f"Number(document.querySelector('[data-counter=completed]').textContent) > {first}", timeout=20000
        )
        seen = {_counter(page, "completed")}
        page.wait_for_function("document.body.dataset.live === 'ended'", timeout=30000)
        seen.add(_counter(page, "completed"))
        assert page.evaluate("window.__sameDocument") is True
        assert len(seen) >= 1 and max(seen) == len(phones)
        assert page.inner_text("#status") == "completed"
        assert _counter(page, "pending") == 0 and _counter(page, "in_progress") == 0
        # The outcomes chart, redrawn as calls ended (the page opened before they all had):
        # its bars add up to every call, its legend says the totals.
        page.wait_for_function(
            "[...document.querySelectorAll('#outcomes-chart rect[data-outcome=completed]')]"
            f".reduce((n, r) => n + Number(r.dataset.count), 0) === {len(phones)}",
            timeout=10000,
        )
        assert page.evaluate("window.__sameDocument") is True
        assert page.inner_text('#outcomes-chart [data-outcome-total="completed"]') == str(len(phones))
        assert page.locator("#outcomes-chart svg g.bar").count() >= 1
        assert page.locator("#outcomes-chart svg").get_attribute("aria-label") == "Outcomes over time"
        # The flow graph carries per-node counts and the keypress split (live-updated too).
        menu = page.locator('g.node[data-node="menu"]')
        assert menu.locator(".node-calls").text_content() == str(len(phones))
        assert menu.locator(".dtmf").text_content() == f"1:{len(phones)}"
        # A call's timeline.
        page.goto(f"{platform.base_url}/dashboard/executions/{eid}")
        page.click("#calls a >> nth=0")
        page.wait_for_selector("#timeline")
        events = page.locator("#timeline td:nth-child(2)").all_inner_texts()
        assert events[0] == "dial" and "answer" in events and "dtmf_collected" in events and events[-1] == "hangup"
        assert page.inner_text("#outcome") == "completed"
        assert "Menu" in page.inner_text("#path")
        # Audit search by phone number, in the local format too.
        page.goto(f"{platform.base_url}/dashboard/audit")
        page.fill("input[name=phone]", "0" + phones[0][4:])
        page.click("main form button")
        page.wait_for_selector("#audit")
        rows = page.locator("#audit tr").count() - 1
        assert rows == 1 and "Live counters" in page.inner_text("#audit")
        page.close()


def test_pause_resume_cancel_buttons_issue_the_commands(browser: Any, platform: Platform) -> None:
    _, key = platform.new_org()
    phones = [f"+21261300000{d}" for d in "456789"]
    with platform.client(key) as api:
        # A pause window that covers now keeps the execution running without calling anyone.
        program = _program(api, phones, "Buttons", pauseWindows={
            "advanced": [{"startAt": "2000-01-01T00:00:00Z", "endAt": "2100-01-01T00:00:00Z"}]})  # fmt: skip
        eid = api.post(f"/api/programs/{program}/launch").json()["executionId"]
        page = browser.new_page()
        _sign_in(page, platform.base_url, key)
        # (once the dispatcher has queued the calls: until then it writes the Execution stream too)
        wait_for(lambda: (platform.container.progress.execution(eid) or {}).get("calls_queued") == 1, what="calls queued")
        page.goto(f"{platform.base_url}/dashboard")
        page.click(f'a[href="/dashboard/executions/{eid}"]')
        assert page.inner_text("#effective-status") == "paused_window"
        _press(page, "pause")
        assert page.inner_text("#status") == "paused"
        assert api.get(f"/api/program-executions/{eid}").json()["status"] == "paused"
        _press(page, "pause")  # pausing twice is refused, and the page says why
        assert "Invalid state transition" in page.inner_text("[role=alert]")
        _press(page, "resume")
        assert page.inner_text("#status") == "running"
        _press(page, "cancel")
        assert page.inner_text("#status") == "cancelled"
        assert api.get(f"/api/program-executions/{eid}").json()["status"] == "cancelled"
        activity = api.get("/api/activity", params={"limit": 100}).json()["data"]
        assert {"Execution.Paused", "Execution.Resumed", "Execution.Cancelled"} <= {a["event"] for a in activity}
        page.close()
