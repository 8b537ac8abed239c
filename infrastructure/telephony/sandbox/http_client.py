"""A Twilio SDK HTTP client that talks to the phone network sandbox.

    from twilio.rest import Client
    client = Client(sid, token, http_client=SandboxHttpClient("http://127.0.0.1:8089"))

Every request the SDK would send to ``https://api.twilio.com`` (or a regional
``https://api.<edge>.<region>.twilio.com``) goes to ``base_url`` instead; the
path, query, body and Basic auth are unchanged.
"""

from __future__ import annotations

import re
import threading
import time

from requests import Session
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response

_TWILIO_API = re.compile(r"^https://api(\.[A-Za-z0-9-]+)*\.twilio\.com(?=/|$)")

#: A thread's connection is dropped, not reused, once it has been idle this long: well
#: under the sandbox server's keep-alive (uvicorn closes idle connections after 5 s).
IDLE_SECONDS = 1.0


class SandboxHttpClient(TwilioHttpClient):
    """``TwilioHttpClient`` that rewrites ``https://api.twilio.com`` to ``base_url``."""

    def __init__(self, base_url: str, timeout: float = 10.0, **kwargs):
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self._local = threading.local()
        super().__init__(timeout=timeout, **kwargs)
        self.base_url = base_url.rstrip("/")

    # One session (so one kept-alive connection) per thread, and the connection is
    # reused only while it has been idle for less than IDLE_SECONDS: the server never
    # closes it under a request, so a call create is never lost to a connection the
    # server had just closed (and is never retried blindly either: no retries here).
    # A connection that the server dropped anyway (it restarted) is seen closed by
    # urllib3 before reuse, and a new one is made.
    @property  # type: ignore[override]
    def session(self) -> Session:
        local = self._local
        session: Session | None = getattr(local, "session", None)
        now = time.monotonic()
        if session is None:
            session = local.session = Session()
            # A loopback peer: no proxy or netrc from the environment to look up (requests
            # read them on every request, a fifth of a dial's HTTP cost).
            session.trust_env = False
        elif now - local.used > IDLE_SECONDS:
            session.close()  # drops its idle connection; the session makes a new one
        local.used = now
        return session

    @session.setter
    def session(self, value: object) -> None:
        pass  # TwilioHttpClient's own (shared) session: ours are per thread

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
