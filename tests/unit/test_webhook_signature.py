"""The webhook signature check: the SDK's RequestValidator, trying our own URL first.
It accepts exactly what the SDK accepts."""

from __future__ import annotations

from twilio.request_validator import RequestValidator

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
