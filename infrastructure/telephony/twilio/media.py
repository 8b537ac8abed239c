"""Recording audio from Twilio (or the sandbox): ``RecordingUrl`` + ``.wav`` with HTTP Basic
auth of the account; Twilio redirects to its media store, and httpx drops the credentials
on a redirect to another host."""

from __future__ import annotations

import httpx

from application.recordings import RecordingMediaError


class TwilioRecordingMedia:
    def __init__(self, account_sid: str, auth_token: str, timeout: float = 30.0) -> None:
        self.auth = (account_sid, auth_token)
        self.timeout = timeout

    def fetch(self, url: str) -> bytes:
        wav_url = url if url.endswith((".wav", ".mp3")) else url + ".wav"
        try:
            r = httpx.get(wav_url, auth=self.auth, timeout=self.timeout, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise RecordingMediaError(f"could not fetch the recording from the phone network: {exc}") from exc
        if r.status_code != 200:
            raise RecordingMediaError(f"the phone network answered {r.status_code} for the recording")
        return r.content
