"""The ``webhook`` node's HTTP client (httpx), with its own timeout per request."""

from __future__ import annotations

from typing import Any

import httpx

from application.flow_requests import HttpTimeout


class HttpxFlowHttp:
    def __init__(self) -> None:
        self.client = httpx.Client(follow_redirects=False, headers={"User-Agent": "gomobile-flows/1"})

    def request(
        self, method: str, url: str, headers: dict[str, str], body: Any, timeout_seconds: float
    ) -> tuple[int, str]:
        kwargs: dict[str, Any] = {"headers": headers, "timeout": timeout_seconds}
        if body is not None and method != "GET":
            if isinstance(body, str):
                kwargs["content"] = body.encode()
            else:
                kwargs["json"] = body
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise HttpTimeout(str(exc)) from exc
        except httpx.HTTPError as exc:
            raise OSError(str(exc)) from exc
        return response.status_code, response.text

    def close(self) -> None:
        self.client.close()
