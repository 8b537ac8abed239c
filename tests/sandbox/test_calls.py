"""End-to-end: real SDK -> sandbox -> real signed webhooks -> real TwiML."""

from __future__ import annotations

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from infrastructure.telephony.sandbox import SandboxHttpClient

from .conftest import ACCOUNT_SID, AUTH_TOKEN

ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


def place(client, receiver, to, path="/voice", events=ALL_EVENTS, **kw):
    return client.calls.create(
        to=to,
        from_="+15557654321",
        url=receiver.base_url + path,
        status_callback=receiver.base_url + "/status",
        status_callback_event=events,
        **kw,
    )


def assert_all_signed(receiver, sid):
    reqs = receiver.by_sid(sid)
    assert reqs, "no webhook received"
    assert all(r.valid for r in reqs), [(r.path, r.signature) for r in reqs if not r.valid]


def test_person_answers_and_presses_1(client, sandbox, receiver, number):
    call = place(client, receiver, number("5"))
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert call.status == "queued"
    report = sandbox.wait_for_call(call.sid)
    assert report["status"] == "completed"
    assert report["digits"] == ["1"]
    assert receiver.statuses(call.sid) == ["initiated", "ringing", "in-progress", "completed"]
    assert_all_signed(receiver, call.sid)
    voice = receiver.by_sid(call.sid, "/voice")
    assert len(voice) == 1
    assert voice[0].params["CallStatus"] == "in-progress"
    assert voice[0].params["Direction"] == "outbound-api"
    assert "AnsweredBy" not in voice[0].params
    gather = receiver.by_sid(call.sid, "/gather")
    assert [g.params["Digits"] for g in gather] == ["1"]
    final = receiver.by_sid(call.sid, "/status")[-1].params
    assert int(final["CallDuration"]) > 0
    assert final["CallbackSource"] == "call-progress-events"
    assert [r.params["SequenceNumber"] for r in receiver.by_sid(call.sid, "/status")] == [
        "0", "1", "2", "3"
    ]
    verbs = [v["verb"] for v in report["verbs"]]
    assert verbs == ["Say", "Say", "Gather", "Say", "Hangup"]
    fetched = client.calls(call.sid).fetch()
    assert fetched.status == "completed"
    assert int(fetched.duration) == int(final["CallDuration"])


def test_busy_first_attempt_then_answers(client, sandbox, receiver, number):
    to = number("0")
    first = place(client, receiver, to)
    report = sandbox.wait_for_call(first.sid)
    assert report["status"] == "busy"
    assert receiver.statuses(first.sid) == ["initiated", "busy"]
    assert receiver.by_sid(first.sid, "/status")[-1].params["SipResponseCode"] == "486"
    assert receiver.by_sid(first.sid, "/voice") == []
    assert client.calls(first.sid).fetch().status == "busy"

    second = place(client, receiver, to)
    report = sandbox.wait_for_call(second.sid)
    assert report["status"] == "completed"
    assert report["digits"] == ["1"]
    assert receiver.statuses(second.sid)[-1] == "completed"


def test_no_answer_after_timeout(client, sandbox, receiver, number):
    call = place(client, receiver, number("1"), timeout=15)
    report = sandbox.wait_for_call(call.sid)
    assert report["status"] == "no-answer"
    assert receiver.statuses(call.sid) == ["initiated", "ringing", "no-answer"]
    final = receiver.by_sid(call.sid, "/status")[-1].params
    assert final["SipResponseCode"] == "487"
    assert "CallDuration" not in final
    assert client.calls(call.sid).fetch().status == "no-answer"
    assert_all_signed(receiver, call.sid)


def test_machine_with_amd(client, sandbox, receiver, number):
    call = place(client, receiver, number("2"), machine_detection="Enable")
    report = sandbox.wait_for_call(call.sid)
    assert report["status"] == "completed"
    assert report["answered_by"] == "machine_start"
    assert report["digits"] == []
    voice = receiver.by_sid(call.sid, "/voice")[0]
    assert voice.params["AnsweredBy"] == "machine_start"
    assert receiver.by_sid(call.sid, "/gather") == []  # never presses keys
    # after the Gather timed out the machine heard the rest of the document
    assert [v["verb"] for v in report["verbs"]] == ["Say", "Say", "Gather", "Say", "Hangup"]
    final = receiver.by_sid(call.sid, "/status")[-1].params
    assert final["AnsweredBy"] == "machine_start"
    assert client.calls(call.sid).fetch().answered_by == "machine_start"


def test_machine_detect_message_end_and_human_amd(client, sandbox, receiver, number):
    m = place(client, receiver, number("2"), machine_detection="DetectMessageEnd")
    h = place(client, receiver, number("7"), machine_detection="DetectMessageEnd")
    sandbox.wait_for_call(m.sid)
    sandbox.wait_for_call(h.sid)
    assert receiver.by_sid(m.sid, "/voice")[0].params["AnsweredBy"] == "machine_end_beep"
    assert receiver.by_sid(h.sid, "/voice")[0].params["AnsweredBy"] == "human"


def test_machine_without_amd_has_no_answered_by(client, sandbox, receiver, number):
    call = place(client, receiver, number("2"))
    report = sandbox.wait_for_call(call.sid)
    assert report["status"] == "completed"
    assert "AnsweredBy" not in receiver.by_sid(call.sid, "/voice")[0].params
    assert client.calls(call.sid).fetch().answered_by is None


def test_unreachable_fails_without_ringing(client, sandbox, receiver, number):
    call = place(client, receiver, number("3"))
    report = sandbox.wait_for_call(call.sid)
    assert report["status"] == "failed"
    assert receiver.statuses(call.sid) == ["initiated", "failed"]
    assert receiver.by_sid(call.sid, "/status")[-1].params["SipResponseCode"] == "404"
    assert client.calls(call.sid).fetch().status == "failed"


def test_final_callback_sent_even_if_not_requested(client, sandbox, receiver, number):
    call = place(client, receiver, number("1"), events=["answered"], timeout=5)
    sandbox.wait_for_call(call.sid)
    assert receiver.statuses(call.sid) == ["no-answer"]


def test_wrong_auth_raises_401(sandbox, receiver):
    bad = Client(ACCOUNT_SID, "wrong-token", http_client=SandboxHttpClient(sandbox.base_url))
    with pytest.raises(TwilioRestException) as exc:
        bad.calls.create(to="+15551234567", from_="+15557654321", url=receiver.base_url + "/voice")
    assert exc.value.status == 401
    assert exc.value.code == 20003


def test_other_account_is_404_and_missing_to_is_400(sandbox):
    other = "AC" + "f" * 32
    r = httpx.post(
        f"{sandbox.base_url}/2010-04-01/Accounts/{other}/Calls.json",
        data={"To": "+15551234567", "From": "+15557654321", "Url": "http://x/"},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    )
    assert r.status_code == 404
    r = httpx.post(
        f"{sandbox.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
        data={"From": "+15557654321", "Url": "http://x/"},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    )
    assert r.status_code == 400
    assert r.json()["code"] == 21201


@pytest.mark.parametrize(
    ("form", "code", "message"),
    [
        ({"To": "phone", "From": "+15557654321", "Url": "http://x/"}, 21211, "Invalid 'To' Phone Number: phone"),
        ({"To": "+15551234567", "Url": "http://x/"}, 21603, "A 'From' phone number is required."),
        ({"To": "+15551234567", "From": "+15557654321", "Url": "http://x/", "Method": "PUT"}, 21207, "Method must be GET or POST"),
        ({"To": "+15551234567", "From": "+15557654321", "Url": "http://x/", "MachineDetection": "Maybe"}, 21626,
         "MachineDetection must be Enable or DetectMessageEnd"),
        ({"To": "+15551234567", "From": "+15557654321", "Url": "http://x/", "AsyncAmd": "yes"}, 21263, "AsyncAmd must be true or false"),
    ],
)
def test_a_bad_create_is_twilios_400_and_places_nothing(sandbox, form, code, message):
    before = len(sandbox.calls())
    r = httpx.post(f"{sandbox.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json", data=form, auth=(ACCOUNT_SID, AUTH_TOKEN))
    assert (r.status_code, r.headers["content-type"]) == (400, "application/json")
    assert r.json() == {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": 400}
    assert len(sandbox.calls()) == before


def test_no_credentials_is_401_with_a_basic_challenge(sandbox):
    r = httpx.post(f"{sandbox.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
                   data={"To": "+15551234567", "From": "+15557654321", "Url": "http://x/"})
    assert r.status_code == 401 and r.json()["code"] == 20003
    assert r.headers["www-authenticate"] == 'Basic realm="Twilio API"'


def test_a_created_call_is_twilios_resource(sandbox, receiver):
    r = httpx.post(f"{sandbox.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
                   data={"To": "+15551234567", "From": "+15557654321", "Url": receiver.base_url + "/voice"},
                   auth=(ACCOUNT_SID, AUTH_TOKEN))
    assert (r.status_code, r.headers["content-type"]) == (201, "application/json")
    body = r.json()
    assert body["sid"].startswith("CA") and body["to"] == "+15551234567" and body["from"] == "+15557654321"
    assert body["uri"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{body['sid']}.json"
    assert any(c["sid"] == body["sid"] for c in sandbox.calls())


def test_missing_url_raises_via_sdk(client):
    with pytest.raises(TwilioRestException) as exc:
        client.calls.create(to="+15551234567", from_="+15557654321")
    assert exc.value.status == 400


def test_async_amd_posts_the_verdict_while_the_call_plays_and_honours_a_redirect(client, sandbox, receiver, number):
    """AsyncAmd=true: the voice webhook comes at once (no AnsweredBy), the verdict is
    posted, signed, to its own callback while the TwiML plays, and a call update with
    new TwiML replaces what the machine hears."""
    import time

    amd = {"machine_detection": "Enable", "async_amd": "true", "async_amd_status_callback": receiver.base_url + "/amd"}
    machine = place(client, receiver, number("2"), path="/long", **amd)
    human = place(client, receiver, number("7"), path="/long", **amd)
    deadline = time.monotonic() + 10
    while not receiver.by_sid(machine.sid, "/amd"):
        assert time.monotonic() < deadline, "no AMD callback"
        time.sleep(0.01)
    verdict = receiver.by_sid(machine.sid, "/amd")[0]
    assert verdict.params["AnsweredBy"] == "machine_start" and int(verdict.params["MachineDetectionDuration"]) > 0
    assert "AnsweredBy" not in receiver.by_sid(machine.sid, "/long")[0].params  # the flow did not wait
    client.calls(machine.sid).update(twiml="<Response><Say>Please call us back.</Say><Hangup/></Response>")

    report = sandbox.wait_for_call(machine.sid)
    assert report["status"] == "completed" and report["answered_by"] == "machine_start"
    verbs = [(v["verb"], v.get("text")) for v in report["verbs"]]
    assert ("Say", "Please call us back.") in verbs and verbs[-1][0] == "Hangup"
    assert sum(1 for v, _ in verbs if v == "Pause") < 30  # the long document was cut short
    assert_all_signed(receiver, machine.sid)

    client.calls(human.sid).update(status="completed")
    sandbox.wait_for_call(human.sid)
    assert [r.params["AnsweredBy"] for r in receiver.by_sid(human.sid, "/amd")] == ["human"]



def test_the_platform_adapter_asks_for_asynchronous_amd(client, sandbox, receiver, number):
    """TwilioTelephony.place_call over the real SDK: AMD on means MachineDetection with
    AsyncAmd and its own signed callback; a mode may be named (DetectMessageEnd)."""
    from infrastructure.telephony.twilio.provider import TwilioTelephony

    telephony = TwilioTelephony(client, receiver.base_url)
    common = {"from_": "+15557654321", "timeout_seconds": 20}
    on = telephony.place_call(to=number("7"), call_id="c-on", attempt=1, machine_detection=True, **common)
    beep = telephony.place_call(to=number("8"), call_id="c-beep", attempt=2, machine_detection="DetectMessageEnd", **common)
    off = telephony.place_call(to=number("9"), call_id="c-off", attempt=1, machine_detection=False, **common)
    reports = {sid: sandbox.wait_for_call(sid) for sid in (on, beep, off)}
    assert (reports[on]["machine_detection"], reports[on]["async_amd"]) == ("Enable", True)
    assert (reports[beep]["machine_detection"], reports[beep]["async_amd"]) == ("DetectMessageEnd", True)
    assert (reports[off]["machine_detection"], reports[off]["async_amd"]) == (None, False)


def test_dials_reuse_a_kept_alive_connection_until_it_idles(sandbox, receiver, number, monkeypatch):
    """Each thread keeps its connection to the sandbox between dials (no TCP set-up a
    dial); one idle for IDLE_SECONDS is dropped before the server could close it under a
    request, and a dial on it then makes a new connection. A server restart under a kept
    connection costs no dial either."""
    import urllib3.connection

    from infrastructure.telephony.sandbox import http_client
    from infrastructure.telephony.sandbox.server import run_sandbox_in_thread

    opened: list[int] = []
    new_conn = urllib3.connection.HTTPConnection._new_conn

    def counting(self):  # a spy: the real connection is made
        opened.append(self.port)
        return new_conn(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "_new_conn", counting)
    monkeypatch.setattr(http_client, "IDLE_SECONDS", 0.3)
    c = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=SandboxHttpClient(sandbox.base_url, timeout=10))
    for _ in range(3):
        place(c, receiver, number("5"))
    assert len(opened) == 1
    import time

    time.sleep(0.4)
    place(c, receiver, number("5"))
    assert len(opened) == 2

    # Another sandbox, stopped and started again on its port while a connection is kept.
    first = run_sandbox_in_thread(sandbox.config, "127.0.0.1", 0)
    port = first.port
    other = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=SandboxHttpClient(first.base_url, timeout=10))
    place(other, receiver, number("5"))
    first.stop()
    again = run_sandbox_in_thread(sandbox.config, "127.0.0.1", port)
    try:
        assert place(other, receiver, number("5")).sid.startswith("CA")
    finally:
        again.stop()
    assert opened[2:] == [port, port]
