"""The webhook signature check: the SDK's RequestValidator, trying our own URL first.
It accepts exactly what the SDK accepts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from infrastructure.telephony.twilio.signature import Validator
from interfaces.webhooks.twilio import _Validator

TOKEN = "12345"
PARAMS = {"CallSid": "CA1", "CallStatus": "ringing", "To": "+212612345678", "Empty": ""}


def test_the_validator_agrees_with_the_sdks_on_every_variant() -> None:
    sdk, ours = RequestValidator(TOKEN), _Validator(TOKEN)
    for url in ("https://calls.example.com/twilio/status/a/1", "https://calls.example.com:8443/twilio/status/a/1?x=1",
                "http://127.0.0.1:8000/twilio/voice/a/1"):
        signed_as = [url, url.replace("calls.example.com/", "calls.example.com:443/")]
        for signed in signed_as:
            good = sdk.compute_signature(signed, PARAMS)
            assert ours.validate(url, PARAMS, good) == sdk.validate(url, PARAMS, good)
        assert ours.validate(url, PARAMS, sdk.compute_signature(url, PARAMS)) is True
        tampered = {**PARAMS, "CallStatus": "completed"}
        for sig in (sdk.compute_signature(url, PARAMS), "forged", "", sdk.compute_signature(url + "x", PARAMS)):
            assert ours.validate(url, tampered if sig != "forged" else PARAMS, sig) is False
    # A URL Twilio signed with the default port written out still passes, as with the SDK.
    url = "https://calls.example.com/twilio/status/a/1"
    with_port = sdk.compute_signature("https://calls.example.com:443/twilio/status/a/1", PARAMS)
    assert ours.validate(url, PARAMS, with_port) is True
    assert RequestValidator(TOKEN + "x").validate(url, PARAMS, with_port) is False


@settings(max_examples=200, deadline=None)
@given(params=st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=25),
       url=st.sampled_from(["https://calls.example.com/twilio/status/a/1", "http://127.0.0.1:8000/v?x=1&y=é"]))
def test_the_shared_validator_signs_a_form_exactly_as_the_sdk_does(params: dict[str, str], url: str) -> None:
    # A plain dict (a webhook's form) goes straight to its value; the string signed and
    # the signature are the SDK's, whatever the keys and values (empty, non-ASCII, many).
    sdk, ours = RequestValidator(TOKEN), Validator(TOKEN)
    assert ours.compute_signature(url, params) == sdk.compute_signature(url, params)
    assert ours.compute_signature(url, params, "HMAC_SHA256") == sdk.compute_signature(url, params, "HMAC_SHA256")


def test_the_shared_validator_still_reads_multi_valued_forms_as_the_sdk_does() -> None:
    class MultiDict(dict):  # Flask's: several values under one name
        def getall(self, name: str) -> list[str]:
            return {"Digits": ["2", "1"]}.get(name, [self[name]])

    form = MultiDict(PARAMS, Digits="2")
    sdk, ours = RequestValidator(TOKEN), Validator(TOKEN)
    url = "https://calls.example.com/twilio/voice/a/1"
    assert ours.compute_signature(url, form) == sdk.compute_signature(url, form)
    assert ours.compute_signature(url, form) != ours.compute_signature(url, dict(form))
