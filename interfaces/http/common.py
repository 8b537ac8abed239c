"""What every HTTP handler shares: the caller's identity, error bodies, list envelopes."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from litestar import Request, Response
from litestar.concurrency import sync_to_thread
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.exceptions import ValidationException as LitestarValidationException

from application.campaigns import CampaignsApp, Principal
from domain.base import audit_context
from domain.errors import DomainError, ValidationError
from infrastructure.logs import new_id, request_context, safe_id

READ_ONLY_ROLES = {"auditor"}


def in_thread(fn: Callable[..., Any]) -> Any:
    """Run a blocking handler (eventsourcing is synchronous) in litestar's thread pool.

    litestar 2.25's own ``sync_to_thread=True`` breaks when a GET, a PUT and a DELETE
    share a path (the first one returns an un-awaited coroutine), so handlers are
    async wrappers of their sync bodies instead."""

    @functools.wraps(fn)
    async def handler(*args: Any, **kwargs: Any) -> Any:
        return await sync_to_thread(fn, *args, **kwargs)

    return handler


def api_key_of(request: Request[Any, Any, Any]) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authenticate(request: Request[Any, Any, Any], campaigns: CampaignsApp) -> Principal:
    # Already authenticated and authorised by interfaces/http/security.py's table.
    known = request.scope.get("state", {}).get("gomobile_principal")
    if known is not None:
        return known  # type: ignore[no-any-return]
    key = api_key_of(request)
    if not key:
        raise NotAuthorizedException("Missing API key: send 'x-api-key: KEY' or 'Authorization: Bearer KEY'")
    principal = campaigns.authenticate(key)
    if principal is None:
        raise NotAuthorizedException("Invalid, expired or revoked API key")
    if request.method not in ("GET", "HEAD") and principal.role in READ_ONLY_ROLES:
        raise HTTPException(status_code=403, detail=f"The '{principal.role}' role is read-only")
    return principal


def acting(principal: Principal, request: Request[Any, Any, Any]) -> Any:
    """Audit context for commands issued by this request: its events carry the request
    and correlation ids the response header and the request's log lines show."""
    ids = request.scope.get("state", {}).get(REQUEST_IDS) or {}
    where: dict[str, str] = {}
    if request.client is not None and request.client.host:
        where["sourceAddress"] = request.client.host  # the peer: a proxy's, behind one
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        where["forwardedFor"] = forwarded[:200]  # as the proxy said it, not trusted as the source
    return audit_context(
        actor=principal.actor,
        organizationId=str(principal.organization_id),
        requestId=ids.get("requestId") or safe_id(request.headers.get("x-request-id")) or new_id(),
        correlationId=ids.get("correlationId") or safe_id(request.headers.get("x-correlation-id")),
        role=principal.role,
        **where,
    )


REQUEST_IDS = "gomobile_request_ids"
_ID_HEADERS = (b"x-request-id", b"x-correlation-id")
access_log = logging.getLogger("gomobile.http")


def _latin1(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


class RequestIdMiddleware:
    """Gives every HTTP request an id: the client's ``X-Request-Id`` when it is a plain
    token, a new one otherwise, echoed in the response with the correlation id
    (``X-Correlation-Id``, the request id unless the client sent one). Every log line
    written while serving the request carries both, as do the events it appends; one
    access line per request says how it ended and how long it took.

    Wraps the whole ASGI handler (not a route), so 404s and errors are covered too."""

    def __init__(self, app: Any, observe: Callable[[str, int, float], None] | None = None) -> None:
        self.app = app
        self.observe = observe  # (path, status, seconds) of every request answered

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # (ASGI header names are lower-case bytes; only these two are decoded.)
        sent = {k: v for k, v in scope.get("headers") or [] if k in _ID_HEADERS}
        request_id = safe_id(_latin1(sent.get(b"x-request-id"))) or new_id()
        correlation_id = safe_id(_latin1(sent.get(b"x-correlation-id"))) or request_id
        scope.setdefault("state", {})[REQUEST_IDS] = {"requestId": request_id, "correlationId": correlation_id}
        status = [500]
        started = time.perf_counter()

        async def send_with_ids(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                extra = [(b"x-request-id", request_id.encode()), (b"x-correlation-id", correlation_id.encode())]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        with request_context(request_id, correlation_id):
            try:
                await self.app(scope, receive, send_with_ids)
            finally:
                if self.observe is not None:
                    self.observe(scope.get("path") or "", status[0], time.perf_counter() - started)
                if access_log.isEnabledFor(logging.INFO):
                    access_log.info(
                        "%s %s %s", scope.get("method"), scope.get("path"), status[0],
                        extra={"method": scope.get("method"), "path": scope.get("path"), "status": status[0],
                               "durationMs": round((time.perf_counter() - started) * 1000, 1)},
                    )  # fmt: skip


def body_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError.single("body", "must be a JSON object")
    return data


MAX_PAGE = 10_000_000  # (page - 1) * limit must stay a 64-bit offset


def paging(page: Any, limit: Any) -> tuple[int, int]:
    errors: dict[str, list[str]] = {}
    try:
        p = int(page) if page is not None else 1
        if not 1 <= p <= MAX_PAGE:
            raise ValueError
    except (TypeError, ValueError):
        errors["page"] = [f"must be an integer from 1 to {MAX_PAGE:,}"]
        p = 1
    try:
        lim = int(limit) if limit is not None else 20
        if not 1 <= lim <= 100:
            raise ValueError
    except (TypeError, ValueError):
        errors["limit"] = ["must be an integer from 1 to 100"]
        lim = 20
    if errors:
        raise ValidationError("Invalid pagination", errors)
    return p, lim


def envelope(data: list[Any], page: int, limit: int, total: int) -> dict[str, Any]:
    pages = math.ceil(total / limit) if total else 0
    return {
        "data": data,
        "meta": {
            "page": page,
            "limit": limit,
            "total": total,
            "totalPages": pages,
            "hasNextPage": page < pages,
            "hasPreviousPage": page > 1,
        },
    }


def problem_body(path: str | None, status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The error body of DOMAIN.md §10.11, for every error this API answers."""
    return {
        "statusCode": status,
        "error": code,
        "message": message,
        **extra,
        "type": f"https://docs.gomobile.ma/errors/{code}",
        "title": code,
        "status": status,
        "detail": message,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "path": path,
    }


def _problem(request: Request[Any, Any, Any], status: int, code: str, message: str, **extra: Any) -> Response[Any]:
    body = problem_body(request.url.path, status, code, message, **extra)
    return Response(body, status_code=status, media_type="application/json")


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationError):
        extra["fieldErrors"] = exc.field_errors
    if exc.details:
        extra["details"] = exc.details
    return _problem(request, exc.status, exc.code, exc.message, **extra)


CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 412: "PRECONDITION_FAILED", 413: "PAYLOAD_TOO_LARGE", 429: "TOO_MANY_REQUESTS"}


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if isinstance(exc, LitestarValidationException):
        return _problem(request, 400, "VALIDATION_FAILED", "Invalid request: " + str(exc.detail), fieldErrors={"body": [str(exc.extra or exc.detail)]})
    return _problem(request, status, CODES.get(status, "ERROR"), str(exc.detail))


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logging.getLogger("gomobile.api").exception("unhandled error on %s", request.url.path)
    return _problem(request, 500, "INTERNAL_ERROR", "Internal server error")


def iso(value: datetime | None) -> str | None:
    from domain.timeparse import format_instant

    return format_instant(value)
