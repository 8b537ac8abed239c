"""A Twilio SDK HTTP client that talks to the phone network sandbox.

    from twilio.rest import Client
    client = Client(sid, token, http_client=SandboxHttpClient("http://127.0.0.1:8089"))

Every request the SDK would send to ``https://api.twilio.com`` (or a regional
``https://api.<edge>.<region>.twilio.com``) goes to ``base_url`` instead; the
path, query, body and Basic auth are unchanged.
"""

from __future__ import annotations

import re

from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response

_TWILIO_API = re.compile(r"^https://api(\.[A-Za-z0-9-]+)*\.twilio\.com(?=/|$)")


class SandboxHttpClient(TwilioHttpClient):
    """``TwilioHttpClient`` that rewrites ``https://api.twilio.com`` to ``base_url``."""

    def __init__(self, base_url: str, timeout: float = 10.0, **kwargs):
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        super().__init__(timeout=timeout, **kwargs)
        self.base_url = base_url.rstrip("/")
        if self.session is not None:
            # A loopback peer: no proxy or netrc from the environment to look up (requests
            # read them on every request, a fifth of a dial's HTTP cost).
            self.session.trust_env = False

    def rewrite(self, url: str) -> str:
        return _TWILIO_API.sub(self.base_url, url, count=1)

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        # One connection per request: a pooled keep-alive connection that the sandbox's
        # server closed while idle would fail a POST that may or may not have been
        # received, and a call create must never be blindly retried.
        headers = {**(headers or {}), "Connection": "close"}
        return super().request(
            method,
            self.rewrite(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
