"""The Twilio SDK's HTTP client on urllib3 alone.

    from twilio.rest import Client
    client = Client(sid, token, http_client=PooledHttpClient(timeout=10))

The SDK's own ``TwilioHttpClient`` goes through requests: a ``Request`` prepared by a
``Session`` (hooks, cookies, environment settings merged each time, the body encoded
through requests' runtime-checked protocols), and a copy of each request kept "for
tests". That was half of the CPU a dial costs a worker in the SDK (bench/calls_e2e.py).
This client sends the same request (method, URL, query, form or JSON body, headers,
Basic auth) through a thread-safe urllib3 pool and answers the SDK's ``Response``.

As the SDK's client: no retries (a call create that timed out must not be sent again
blindly: the reconciler asks Twilio what became of it), redirects only when asked, TLS
checked against certifi's bundle (the one requests uses). A proxy is ``proxy=`` (a URL);
``bootstrap`` keeps the SDK's client when the environment names one (requests reads
``HTTPS_PROXY``/``NO_PROXY`` and netrc, which this client does not).
"""

from __future__ import annotations

import json
import logging
from base64 import b64encode
from typing import Any
from urllib.parse import urlencode

import urllib3
from twilio.http import HttpClient
from twilio.http.response import Response

_logger = logging.getLogger("twilio.http_client")

#: Environment variables through which requests (so the SDK's client) finds a proxy.
#: What requests adds to every request (the SDK gives the rest: user agent, accept-charset).
DEFAULT_HEADERS = {"Accept-Encoding": "gzip, deflate", "Accept": "*/*", "Connection": "keep-alive"}
PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _encode(values: Any) -> str:
    """A query or form the way requests encodes it: a list is the key repeated, None is
    left out (the SDK sends ``StatusCallbackEvent`` as a list)."""
    if not values:
        return ""
    if isinstance(values, (str, bytes)):
        return values.decode() if isinstance(values, bytes) else values
    pairs = []
    for key, value in values.items() if hasattr(values, "items") else values:
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if v is not None:
                pairs.append((key, v))
    return urlencode(pairs)


class PooledHttpClient(HttpClient):
    """``twilio.http.HttpClient`` on a urllib3 pool (see the module)."""

    def __init__(
        self,
        timeout: float | None = None,
        *,
        pool_size: int = 32,
        proxy: str | None = None,
        logger: logging.Logger = _logger,
    ) -> None:
        super().__init__(logger, False, timeout)
        self.pool_size = pool_size
        self.proxy = proxy
        self.manager = self._manager()

    def _manager(self) -> urllib3.PoolManager:
        import certifi

        options: dict[str, Any] = {
            "num_pools": 8,
            "maxsize": self.pool_size,
            "block": False,  # a burst beyond the pool opens extra connections, not a wait
            "retries": False,
            "ca_certs": certifi.where(),
        }
        if self.proxy:
            return urllib3.ProxyManager(self.proxy, **options)
        return urllib3.PoolManager(**options)

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
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        method = method.upper()
        out = {**DEFAULT_HEADERS, **headers} if headers else dict(DEFAULT_HEADERS)
        query = _encode(params)
        if query:
            url += ("&" if "?" in url else "?") + query
        body: bytes | None = None
        content_type = out.get("Content-Type")
        if content_type in ("application/json", "application/scim+json"):
            if data is not None:
                body = json.dumps(data).encode()
        elif data:
            body = _encode(data).encode()
            if content_type is None:
                out["Content-Type"] = "application/x-www-form-urlencoded"
        if body is None and method not in ("GET", "HEAD"):
            out.setdefault("Content-Length", "0")
        if auth is not None:
            out["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        if self.logger.isEnabledFor(logging.INFO):
            self.log_request({"method": method, "url": url, "params": None, "headers": headers})
        answer = self._send(method, url, body, out, timeout, allow_redirects)
        text = answer.data.decode(_charset(answer.headers.get("Content-Type")), "replace")
        response = Response(int(answer.status), text, answer.headers)
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info("Response Status Code: %s", answer.status)
        self._test_only_last_response = response
        return response

    def _send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float | None, redirect: bool
    ) -> urllib3.BaseHTTPResponse:
        return self.manager.request(
            method,
            url,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout, read=timeout) if timeout else None,
            redirect=redirect,
            retries=_retries(redirect),
        )

    def close(self) -> None:
        self.manager.clear()


def _retries(redirect: bool) -> Any:
    """Never a retry; redirects followed only when asked (``retries=False`` follows none)."""
    if not redirect:
        return False
    return urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=10, raise_on_redirect=False)


def _charset(content_type: str | None) -> str:
    if content_type:
        for part in content_type.split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                return value.strip('"')
    return "utf-8"
