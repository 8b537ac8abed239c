"""Script overrides, TwiML verbs, webhook failures and call updates, end to end."""

from __future__ import annotations

import time

import httpx

from .test_calls import ALL_EVENTS, assert_all_signed, place


def put_script(sandbox, number, script):
    r = httpx.put(f"{sandbox.base_url}/_sandbox/scripts/{number}", json=script, timeout=5)
    assert r.status_code == 200, r.text
    return r


def test_script_digits_hangup_and_duplicates(client, sandbox, receiver, number):
    to = number("5")
    put_script(
        sandbox,
        to,
        {
            "attempts": [
                {"behaviour": "busy"},
                {"behaviour": "human", "digits": ["2"], "hangupAfterVerbs": 3},
            ],
            "then": {"behaviour": "human"},
            "duplicateCallbacks": True,
        },
    )
    first = place(client, receiver, to)
    assert sandbox.wait_for_call(first.sid)["status"] == "busy"
    assert receiver.statuses(first.sid) == ["initiated", "initiated", "busy", "busy"]
    seqs = [r.params["SequenceNumber"] for r in receiver.by_sid(first.sid, "/status")]
    assert seqs == ["0", "0", "1", "1"]

    second = place(client, receiver, to)
    report = sandbox.wait_for_call(second.sid)
    assert report["status"] == "completed"
    assert report["digits"] == ["2"]
    assert [g.params["Digits"] for g in receiver.by_sid(second.sid, "/gather")] == ["2"]
    # heard Say, Say (nested prompt), Gather; hung up before "You pressed 2"
    assert [v["verb"] for v in report["verbs"]] == ["Say", "Say", "Gather"]
    assert report["end_reason"] == "callee-hangup"
    statuses = receiver.statuses(second.sid)
    assert statuses == [s for s in ["initiated", "ringing", "in-progress", "completed"] for _ in (0, 1)]
    assert_all_signed(receiver, second.sid)

    third = place(client, receiver, to)  # "then": plain human pressing the default 1
    assert sandbox.wait_for_call(third.sid)["digits"] == ["1"]


def test_script_press_nothing_and_out_of_order(client, sandbox, receiver, number):
    to = number("6")
    put_script(sandbox, to, {"then": {"behaviour": "human", "digits": [""]}, "outOfOrderCallbacks": True})
    call = place(client, receiver, to)
    report = sandbox.wait_for_call(call.sid)
    assert report["digits"] == []
    assert receiver.by_sid(call.sid, "/gather") == []
    assert receiver.statuses(call.sid) == ["initiated", "in-progress", "ringing", "completed"]
    assert [v["verb"] for v in report["verbs"]] == ["Say", "Say", "Gather", "Say", "Hangup"]


def test_script_rejected_and_config_scripts(client, sandbox, receiver, number):
    to = number("8")
    put_script(sandbox, to, {"attempts": [{"behaviour": "rejected"}], "then": {"behaviour": "no_answer"}})
    call = place(client, receiver, to)
    assert sandbox.wait_for_call(call.sid)["status"] == "busy"
    final = receiver.by_sid(call.sid, "/status")[-1].params
    assert final["SipResponseCode"] == "603"
    assert receiver.statuses(call.sid) == ["initiated", "ringing", "busy"]
    again = place(client, receiver, to, timeout=5)
    assert sandbox.wait_for_call(again.sid)["status"] == "no-answer"


def test_bad_script_rejected(sandbox):
    r = httpx.put(f"{sandbox.base_url}/_sandbox/scripts/+15550000009", json={"attempts": [{"behaviour": "sing"}]})
    assert r.status_code == 400


def test_answer_delay_longer_than_timeout_is_no_answer(client, sandbox, receiver, number):
    to = number("4")
    put_script(sandbox, to, {"answerDelayMs": 30000})
    call = place(client, receiver, to, timeout=10)
    assert sandbox.wait_for_call(call.sid)["status"] == "no-answer"


def test_gather_menu_with_relative_redirect(client, sandbox, receiver, number):
    to = number("9")
    put_script(sandbox, to, {"then": {"behaviour": "human", "digits": ["", "", "3"]}})
    call = place(client, receiver, to, path="/menu")
    report = sandbox.wait_for_call(call.sid)
    menu = receiver.by_sid(call.sid, "/menu")
    assert len(menu) == 3  # initial + 2 redirects after the empty Gathers
    gather = receiver.by_sid(call.sid, "/gather")
    assert [g.params["Digits"] for g in gather] == ["3"]
    assert report["digits"] == ["3"]


def test_webhook_error_ends_call_and_is_recorded(client, sandbox, receiver, number):
    call = place(client, receiver, number("4"), path="/error")
    report = sandbox.wait_for_call(call.sid)
    assert report["status"] == "completed"
    assert report["end_reason"] == "application-error"
    assert any(e["code"] == 11200 for e in report["errors"])
    voice = [w for w in report["webhooks"] if w["kind"] == "voice"]
    assert voice[0]["http_status"] == 500
    assert receiver.statuses(call.sid)[-1] == "completed"


def test_redirect_loop_is_capped(client, sandbox, receiver, number):
    call = place(client, receiver, number("4"), path="/loop", events=["completed"])
    report = sandbox.wait_for_call(call.sid, timeout=15)
    assert report["end_reason"] == "too-many-documents"
    assert len(receiver.by_sid(call.sid, "/loop")) == 200
    assert any(e["code"] == 11215 for e in report["errors"])


def test_record_and_dial(client, sandbox, receiver, number):
    rec = place(client, receiver, number("4"), path="/record")
    dial = place(client, receiver, number("4"), path="/dial")
    r1 = sandbox.wait_for_call(rec.sid)
    r2 = sandbox.wait_for_call(dial.sid)
    recorded = receiver.by_sid(rec.sid, "/recorded")[0].params
    assert recorded["Digits"] == "hangup"
    assert recorded["RecordingSid"].startswith("RE")
    assert recorded["RecordingUrl"].startswith(sandbox.base_url)
    assert int(recorded["RecordingDuration"]) == 3
    assert r1["end_reason"] == "callee-hangup"
    dialed = receiver.by_sid(dial.sid, "/dialed")[0].params
    assert dialed["DialCallStatus"] == "completed"
    assert dialed["DialCallDuration"] == "5"
    assert [v["verb"] for v in r2["verbs"]] == ["Dial", "Say"]


def test_hangup_live_call_via_update(client, sandbox, receiver, number):
    call = place(client, receiver, number("4"), path="/long")
    deadline = time.monotonic() + 5
    while client.calls(call.sid).fetch().status != "in-progress":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    updated = client.calls(call.sid).update(status="completed")
    assert updated.status == "completed"
    report = sandbox.wait_for_call(call.sid)
    assert report["status"] == "completed"
    assert report["end_reason"] == "api-hangup"
    assert receiver.statuses(call.sid)[-1] == "completed"


def test_cancel_ringing_call(client, sandbox, receiver, number):
    call = place(client, receiver, number("1"), timeout=60)
    deadline = time.monotonic() + 5
    while client.calls(call.sid).fetch().status != "ringing":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert client.calls(call.sid).update(status="canceled").status == "canceled"
    report = sandbox.wait_for_call(call.sid)
    assert report["status"] == "canceled"
    assert receiver.statuses(call.sid) == ["initiated", "ringing", "canceled"]


def test_get_status_callback_is_signed(client, sandbox, receiver, number):
    call = client.calls.create(
        to=number("5"),
        from_="+15557654321",
        url=receiver.base_url + "/voice",
        method="GET",
        status_callback=receiver.base_url + "/status",
        status_callback_method="GET",
        status_callback_event=ALL_EVENTS,
    )
    sandbox.wait_for_call(call.sid)
    reqs = receiver.by_sid(call.sid)
    assert {r.method for r in reqs if r.path in ("/status", "/voice")} == {"GET"}
    assert_all_signed(receiver, call.sid)


def test_control_endpoints(sandbox):
    assert httpx.get(f"{sandbox.base_url}/_sandbox/health").json()["status"] == "ok"
    calls = httpx.get(f"{sandbox.base_url}/_sandbox/calls").json()
    assert isinstance(calls, list)
    assert httpx.delete(f"{sandbox.base_url}/_sandbox/scripts").status_code == 200


def test_redirect_live_call_via_update(client, sandbox, receiver, number):
    call = place(client, receiver, number("4"), path="/long")
    deadline = time.monotonic() + 5
    while not receiver.by_sid(call.sid, "/long"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client.calls(call.sid).update(url=receiver.base_url + "/other", method="POST")
    report = sandbox.wait_for_call(call.sid)
    assert len(receiver.by_sid(call.sid, "/other")) == 1
    assert report["verbs"][-2:] == [
        {"verb": "Say", "text": "Redirected by the API.", "voice": None, "language": None},
        {"verb": "Hangup"},
    ]
    assert report["end_reason"] == "twiml-hangup"


def test_webhook_timeout_and_config_scripts(receiver, number):
    from twilio.rest import Client

    from infrastructure.telephony.sandbox import (
        SandboxConfig,
        SandboxHttpClient,
        run_sandbox_in_thread,
    )

    from .conftest import ACCOUNT_SID, AUTH_TOKEN

    to = number("4")
    config = SandboxConfig(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        time_scale=0.01,
        webhook_timeout=0.3,
        scripts={to: {"then": {"behaviour": "machine"}}},
    )
    with run_sandbox_in_thread(config, "127.0.0.1", 0) as sb:
        c = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=SandboxHttpClient(sb.base_url, timeout=5))
        slow = place(c, receiver, number("5"), path="/slow")
        scripted = place(c, receiver, to, machine_detection="Enable")
        report = sb.wait_for_call(slow.sid)
        assert report["status"] == "completed"
        assert report["end_reason"] == "application-error"
        # Status callbacks are delivered concurrently, so the failed voice request is not
        # at a fixed position in the list.
        assert any("timeout" in (w.get("error") or "") for w in report["webhooks"]) or "timeout" in str(report["errors"])
        assert receiver.statuses(slow.sid)[-1] == "completed"
        assert sb.wait_for_call(scripted.sid)["answered_by"] == "machine_start"


def test_invalid_twiml_ends_call(client, sandbox, receiver, number):
    call = place(client, receiver, number("4"), path="/garbage")
    report = sandbox.wait_for_call(call.sid)
    assert report["status"] == "completed"
    assert report["end_reason"] == "application-error"
    assert [e["code"] for e in report["errors"]] == [12100]
