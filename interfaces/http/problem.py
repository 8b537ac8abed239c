"""The error body every endpoint answers with (DOMAIN.md §10.11), documented in OpenAPI.

litestar documents a 400 of its own by default (``status_code``/``detail``/``extra``),
which is not what this API sends; every handler documents this body instead, for each
error status it can answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi.datastructures import ResponseSpec


@dataclass
class Problem:
    statusCode: int
    error: str
    message: str
    type: str
    title: str
    status: int
    detail: str
    timestamp: str
    path: str
    fieldErrors: dict[str, list[str]] | None = None
    details: dict[str, Any] | None = None


ERROR_STATUSES = {
    400: "Invalid request: the body, a parameter or a field is wrong (fieldErrors names each)",
    401: "Missing, unknown, expired or revoked API key",
    403: "The key's role may not do this",
    404: "No such resource in this organization",
    409: "Conflicts with the current state",
    412: "If-Match does not match the current version",
    413: "The request body is too large",
    422: "Idempotency-Key reused with another request",
    429: "Rate limit exceeded (see Retry-After)",
    503: "A data store is unavailable (see Retry-After)",
}


def document_errors(handler: Any) -> None:
    """Add the Problem body for every error status to ``handler``'s documented responses
    (statuses the handler documents itself are kept)."""
    responses = dict(handler.responses or {})
    for status, description in ERROR_STATUSES.items():
        responses.setdefault(status, ResponseSpec(data_container=Problem, description=description, generate_examples=False))
    handler.responses = responses
