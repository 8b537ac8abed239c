"""A Twilio SDK HTTP client that talks to the phone network sandbox.

    from twilio.rest import Client
    client = Client(sid, token, http_client=SandboxHttpClient("http://127.0.0.1:8089"))

Every request the SDK would send to ``https://api.twilio.com`` (or a regional
``https://api.<edge>.<region>.twilio.com``) goes to ``base_url`` instead; the
path, query, body and Basic auth are unchanged. It is the production client
(``PooledHttpClient``), so the sandbox exercises the code that talks to Twilio.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import urllib3

from infrastructure.telephony.twilio.http import PooledHttpClient, _retries

_TWILIO_API = re.compile(r"^https://api(\.[A-Za-z0-9-]+)*\.twilio\.com(?=/|$)")

#: A thread's connection is dropped, not reused, once it has been idle this long: well
#: under the sandbox server's keep-alive (uvicorn closes idle connections after 5 s).
IDLE_SECONDS = 1.0


class SandboxHttpClient(PooledHttpClient):
    """``PooledHttpClient`` that sends what is meant for ``https://api.twilio.com`` to
    ``base_url``."""

    def __init__(self, base_url: str, timeout: float = 10.0, **kwargs: Any) -> None:
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self._local = threading.local()
        super().__init__(timeout=timeout, **kwargs)
        self.base_url = base_url.rstrip("/")

    def rewrite(self, url: str) -> str:
        return _TWILIO_API.sub(self.base_url, url, count=1)

    # One connection per thread, reused only while it has been idle for less than
    # IDLE_SECONDS: the server never closes it under a request, so a call create is never
    # lost to a connection the server had just closed (and is never retried blindly
    # either: no retries here). A connection that the server dropped anyway (it
    # restarted) is seen closed by urllib3 before reuse, and a new one is made.
    def _pool(self) -> urllib3.HTTPConnectionPool:
        local = self._local
        pool: urllib3.HTTPConnectionPool | None = getattr(local, "pool", None)
        now = time.monotonic()
        if pool is not None and now - local.used > IDLE_SECONDS:
            pool.close()
            pool = None
        if pool is None:
            pool = local.pool = urllib3.connection_from_url(self.base_url, maxsize=1, block=False, retries=False)
        local.used = now
        return pool

    def _send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float | None, redirect: bool
    ) -> urllib3.BaseHTTPResponse:
        url = self.rewrite(url)
        if not url.startswith(self.base_url + "/"):  # not meant for Twilio's API
            return super()._send(method, url, body, headers, timeout, redirect)
        return self._pool().urlopen(
            method,
            urllib3.util.parse_url(url).request_uri,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout, read=timeout) if timeout else None,
            redirect=redirect,
            retries=_retries(redirect),
            preload_content=True,
        )

    def close(self) -> None:
        pool = getattr(self._local, "pool", None)
        if pool is not None:
            pool.close()
        super().close()
