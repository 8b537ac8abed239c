"""Who may call what, how often, and on which version: one declarative table.

``ROUTES`` names every endpoint of the app ("METHOD /path/{param}", litestar's path
template) with the permission it needs; ``ROLE_PERMISSIONS`` says which role holds which
permission. ``SecurityMiddleware`` (installed on the app, so it runs after routing for
every route) enforces them in this order:

1. authentication: the key (``x-api-key`` or ``Authorization: Bearer``; the dashboard's
   cookie) must be an active, unexpired key of an active organization → else 401;
2. permission: the key's role must hold the route's permission → else 403;
3. rate limit per key (``limits``; Redis when GOMOBILE_REDIS_URL is set, shared by every
   API process; in-process otherwise) → 429 with ``Retry-After``;
4. request size (``Content-Length`` above the route's limit) → 413;
5. ``If-Match`` on PUT/PATCH/DELETE of a versioned resource → 412 when stale; ``ETag``
   on its GET (the aggregate's version);
6. ``Idempotency-Key`` on POST (interfaces/http/idempotency.py).

A route missing from the table is served to admin keys only (fail closed) and the
permission-matrix test (tests/e2e/test_access.py) fails until it is declared.
The README's "Roles and permissions" section is this table in prose.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from litestar.concurrency import sync_to_thread

from domain.base import expecting_versions
from domain.contact import STANDARD_FIELDS
from domain.errors import DomainError

log = logging.getLogger("gomobile.security")

PRINCIPAL = "gomobile_principal"  # scope["state"] key: the authenticated Principal

# -- the permission matrix --------------------------------------------------------------

ROLES = ("admin", "manager", "agent", "auditor")

#: permission -> what it covers (the README lists the same)
PERMISSIONS = {
    "org:read": "read the organization, the caller's key (users/me) and usage",
    "org:settings": "change the organization's dialling policy",
    "keys:manage": "issue, list, rotate and revoke API keys",
    "contacts:read": "read contacts, imports, custom attributes",
    "contacts:write": "create, update, delete, upsert and import contacts",
    "contacts:schema": "define, change and delete custom attributes",
    "contacts:erase": "erase a contact's personal data for good (DELETE /api/contact/{id}?erase=true)",
    "audiences:read": "read audiences and their members",
    "audiences:write": "create, change, delete audiences and their members",
    "flows:read": "read flows and their versions",
    "flows:write": "create, change, delete, validate and simulate flows",
    "assets:read": "read audio files and dictionaries",
    "assets:write": "upload, change and delete audio files and dictionaries",
    "programs:read": "read programs",
    "programs:write": "create, change, delete and launch programs",
    "executions:read": "read executions",
    "executions:control": "pause, resume and cancel executions",
    "call-requests:write": "place and cancel ad-hoc call requests",
    "reports:read": "execution and call reports, a contact's calls, the dashboard",
    "exports:read": "streamed CSV / NDJSON exports",
    "audit:read": "audit trail: activity log, event feed, a contact's history",
    "audit:export": "signed audit exports (JSON) of a contact or an execution",
    "recordings:read": "list, stream and download recordings",
    "recordings:delete": "delete recordings",
    "suppressions:read": "read the do-not-call list",
    "suppressions:write": "add numbers to the do-not-call list (one or imported)",
    "suppressions:delete": "remove a number from the do-not-call list",
    "webhooks:manage": "register, list, rotate and delete webhook endpoints; read their delivery logs",
    "consents:read": "read a contact's consent records and opt-out",
    "consents:write": "record a contact's consent",
    "consents:withdraw": "withdraw a contact's consent; opt a contact out (do-not-call, every consent withdrawn)",
}

_READ = frozenset(p for p in PERMISSIONS if p.endswith(":read"))

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    # everything
    "admin": frozenset(PERMISSIONS),
    # runs campaigns end to end, but neither keys nor the organization's policy
    "manager": frozenset(PERMISSIONS) - {"keys:manage", "org:settings", "audit:export", "contacts:erase"},
    # works contacts, lists, flows and ad-hoc calls; no programs, executions control,
    # exports, audit trail, schema, deletions of recordings or do-not-call entries
    "agent": frozenset(
        {
            "org:read",
            "contacts:read",
            "contacts:write",
            "audiences:read",
            "audiences:write",
            "flows:read",
            "flows:write",
            "assets:read",
            "assets:write",
            "programs:read",
            "executions:read",
            "call-requests:write",
            "reports:read",
            "recordings:read",
            "suppressions:read",
            "suppressions:write",
            # withdrawing and opting out, not recording a consent (which lets calls go out)
            "consents:read",
            "consents:withdraw",
        }
    ),
    # read-only: every read, reports, audit trail and exports included
    "auditor": _READ | {"audit:export"},
}


@dataclass(frozen=True)
class Rule:
    """``permission`` None: no key (public, or authenticated otherwise: a Twilio
    signature, a signed URL). ``auth``: ``key`` (header), ``cookie`` (dashboard), ``signed``
    (key unless the query carries a URL signature), ``public``. ``resource``: the path
    parameter whose aggregate's version is the ETag (``@org``: the caller's organization,
    ``@schema``: its custom-attribute schema)."""

    permission: str | None
    auth: str = "key"
    resource: str | None = None


def R(permission: str, resource: str | None = None) -> Rule:
    return Rule(permission, "key", resource)


PUBLIC = Rule(None, "public")


def DASH(permission: str | None) -> Rule:
    return Rule(permission, "cookie")


ROUTES: dict[str, Rule] = {
    "GET /health": PUBLIC,
    "GET /metrics": PUBLIC,  # Prometheus scrape, aggregate figures only
    # organization and keys
    "GET /api/organization": R("org:read", "@org"),
    "PATCH /api/organization": R("org:settings", "@org"),
    "GET /api/users/me": R("org:read"),
    "GET /api/usage": R("org:read"),
    "GET /api/keys": R("keys:manage"),
    "POST /api/keys": R("keys:manage"),
    "GET /api/keys/{key_id}": R("keys:manage"),
    "POST /api/keys/{key_id}/rotate": R("keys:manage"),
    "DELETE /api/keys/{key_id}": R("keys:manage"),
    # webhooks to client systems
    "GET /api/webhooks": R("webhooks:manage"),
    "POST /api/webhooks": R("webhooks:manage"),
    "GET /api/webhooks/{webhook_id}": R("webhooks:manage", "webhook_id"),
    "DELETE /api/webhooks/{webhook_id}": R("webhooks:manage", "webhook_id"),
    "POST /api/webhooks/{webhook_id}/rotate-secret": R("webhooks:manage"),
    "GET /api/webhooks/{webhook_id}/deliveries": R("webhooks:manage"),
    # contacts
    "GET /api/contact": R("contacts:read"),
    "POST /api/contact": R("contacts:write"),
    "POST /api/contact/upsert": R("contacts:write"),
    "GET /api/contact/{contact_id}": R("contacts:read", "contact_id"),
    "PUT /api/contact/{contact_id}": R("contacts:write", "contact_id"),
    "DELETE /api/contact/{contact_id}": R("contacts:write", "contact_id"),
    "GET /api/contact/{contact_id}/history": R("audit:read"),
    "GET /api/contact/{contact_id}/calls": R("reports:read"),
    "GET /api/contact/{contact_id}/calls/export": R("exports:read"),
    "GET /api/contact/{contact_id}/consents": R("consents:read", "contact_id"),
    "POST /api/contact/{contact_id}/consents": R("consents:write"),
    "DELETE /api/contact/{contact_id}/consents/{consent_scope}": R("consents:withdraw", "contact_id"),
    "POST /api/contact/{contact_id}/opt-out": R("consents:withdraw"),
    "GET /api/custom-attributes": R("contacts:read"),
    "POST /api/custom-attributes": R("contacts:schema"),
    "GET /api/custom-attributes/{attribute_id}": R("contacts:read", "@schema"),
    "PUT /api/custom-attributes/{attribute_id}": R("contacts:schema", "@schema"),
    "DELETE /api/custom-attributes/{attribute_id}": R("contacts:schema", "@schema"),
    "POST /api/contact/ingestion/upload": R("contacts:write"),
    "POST /api/contact/ingestion/validate": R("contacts:write"),
    "POST /api/contact/ingestion/execute": R("contacts:write"),
    "GET /api/contact/ingestion/{ingestion_id}": R("contacts:read"),
    "GET /api/contact/ingestion/{ingestion_id}/rows": R("contacts:read"),
    "GET /api/contact/ingestion/{ingestion_id}/rejected.csv": R("contacts:read"),
    # audiences
    "GET /api/audience": R("audiences:read"),
    "POST /api/audience": R("audiences:write"),
    "POST /api/audience/preview": R("audiences:write"),  # while building one
    "GET /api/audience/{audience_id}": R("audiences:read", "audience_id"),
    "PUT /api/audience/{audience_id}": R("audiences:write", "audience_id"),
    "DELETE /api/audience/{audience_id}": R("audiences:write", "audience_id"),
    "POST /api/audience/{audience_id}/add-contacts": R("audiences:write", "audience_id"),
    "POST /api/audience/{audience_id}/remove-contacts": R("audiences:write", "audience_id"),
    "GET /api/audience/{audience_id}/contacts": R("audiences:read"),
    # do-not-call
    "GET /api/suppressions": R("suppressions:read"),
    "POST /api/suppressions": R("suppressions:write"),
    "POST /api/suppressions/import": R("suppressions:write"),
    "GET /api/suppressions/{phone}": R("suppressions:read"),
    "DELETE /api/suppressions/{phone}": R("suppressions:delete"),
    # flows and their assets
    "GET /api/flows": R("flows:read"),
    "POST /api/flows": R("flows:write"),
    "POST /api/flows/validate": R("flows:write"),
    "POST /api/flows/execute": R("flows:write"),
    "GET /api/flows/latest/{name}": R("flows:read"),
    "GET /api/flows/{flow_id}": R("flows:read", "flow_id"),
    "PUT /api/flows/{flow_id}": R("flows:write", "flow_id"),
    "DELETE /api/flows/{flow_id}": R("flows:write", "flow_id"),
    "DELETE /api/flows/{flow_id}/permanent": R("flows:write", "flow_id"),
    "GET /api/flows/{flow_id}/versions": R("flows:read"),
    "GET /api/flows/{flow_id}/versions/{version}": R("flows:read"),
    "POST /api/audio-management/upload": R("assets:write"),
    "GET /api/audio-management/audios": R("assets:read"),
    "GET /api/audio-management/audios/usage/{usage_type}": R("assets:read"),
    "GET /api/audio-management/audio/{audio_id}": Rule("assets:read", "signed", "audio_id"),
    "PUT /api/audio-management/audio/{audio_id}": R("assets:write", "audio_id"),
    "DELETE /api/audio-management/audio/{audio_id}": R("assets:write", "audio_id"),
    "GET /api/audio-management/audio/{audio_id}/original": R("assets:read"),
    "GET /api/audio-management/audio/{audio_id}/metadata": R("assets:read"),
    "GET /api/audio-management/audio/{audio_id}/details": R("assets:read"),
    "GET /api/audio-management/audio/{audio_id}/playback-url": R("assets:read"),
    "GET /api/dictionaries": R("assets:read"),
    "POST /api/dictionaries": R("assets:write"),
    "GET /api/dictionaries/{dictionary_id}": R("assets:read", "dictionary_id"),
    "DELETE /api/dictionaries/{dictionary_id}": R("assets:write", "dictionary_id"),
    "POST /api/dictionaries/{dictionary_id}/entries": R("assets:write", "dictionary_id"),
    "GET /api/dictionaries/{dictionary_id}/entries/{key}": R("assets:read"),
    "DELETE /api/dictionaries/{dictionary_id}/entries/{key}": R("assets:write", "dictionary_id"),
    # programs and executions
    "GET /api/programs": R("programs:read"),
    "POST /api/programs": R("programs:write"),
    "GET /api/programs/{program_id}": R("programs:read", "program_id"),
    "PATCH /api/programs/{program_id}": R("programs:write", "program_id"),
    "DELETE /api/programs/{program_id}": R("programs:write", "program_id"),
    "POST /api/programs/{program_id}/launch": R("programs:write", "program_id"),
    "GET /api/programs/{program_id}/executions": R("executions:read"),
    "GET /api/program-executions": R("executions:read"),
    "GET /api/program-executions/{execution_id}": R("executions:read", "execution_id"),
    "DELETE /api/program-executions/{execution_id}": R("executions:control", "execution_id"),
    "PATCH /api/program-executions/{execution_id}/pause": R("executions:control", "execution_id"),
    "PATCH /api/program-executions/{execution_id}/resume": R("executions:control", "execution_id"),
    # ad-hoc calls
    "POST /api/call-requests": R("call-requests:write"),
    "DELETE /api/call-requests/{job_id}": R("call-requests:write"),
    # reports, recordings, exports, audit
    "GET /api/program-execution/{execution_id}/report": R("reports:read"),
    "GET /api/program-execution/{execution_id}/report/calls": R("reports:read"),
    "GET /api/program-execution/{execution_id}/report/breakdown": R("reports:read"),
    "GET /api/program-execution/{execution_id}/report/node-stats": R("reports:read"),
    "GET /api/program-execution/{execution_id}/report/outcomes-over-time": R("reports:read"),
    "GET /api/program-execution/{execution_id}/report/calls/export": R("exports:read"),
    "GET /api/call-report/call/{call_id}": R("reports:read"),
    "GET /api/call-report/{job_id}": R("reports:read"),
    "GET /api/recordings": R("recordings:read"),
    "GET /api/recordings/call/{call_id}": R("recordings:read"),
    "GET /api/recordings/{recording_id}": R("recordings:read"),
    "GET /api/recordings/{recording_id}/download": R("recordings:read"),
    "GET /api/recordings/{recording_id}/metadata": R("recordings:read"),
    "DELETE /api/recordings/{recording_id}": R("recordings:delete"),
    "GET /api/activity": R("audit:read"),
    "GET /api/events": R("audit:read"),
    "GET /api/audit/export": R("audit:export"),
    "GET /api/audit/public-key": PUBLIC,  # so that third parties can verify exports
    # the dashboard (API key in an HttpOnly cookie; without one its pages ask for it)
    "GET /dashboard/login": PUBLIC,
    "POST /dashboard/login": PUBLIC,
    "POST /dashboard/logout": PUBLIC,
    "GET /dashboard": DASH("reports:read"),
    "GET /dashboard/executions/{execution_id}": DASH("reports:read"),
    "GET /dashboard/executions/{execution_id}/live": DASH("reports:read"),
    "GET /dashboard/executions/{execution_id}/chart": DASH("reports:read"),
    "POST /dashboard/executions/{execution_id}/pause": DASH("executions:control"),
    "POST /dashboard/executions/{execution_id}/resume": DASH("executions:control"),
    "POST /dashboard/executions/{execution_id}/cancel": DASH("executions:control"),
    "GET /dashboard/calls/{call_id}": DASH("reports:read"),
    "GET /dashboard/audit": DASH("audit:read"),
    # (Twilio's callbacks, POST /twilio/..., are signed by Twilio and served before this
    # table is read: interfaces/webhooks/twilio.py.)
}

# -- accepted body fields ----------------------------------------------------------------

_CONTACT = frozenset({"primaryPhone", *STANDARD_FIELDS, "timezone", "customAttributes"})
_AUDIENCE = frozenset({"name", "description", "type", "rules"})
_FLOW = frozenset({"name", "description", "graph"})
_PROGRAM = frozenset(
    {
        "name",
        "description",
        "audienceId",
        "flowId",
        "startAt",
        "stopAt",
        "didPool",
        "retryStrategy",
        "pauseWindows",
        "autoPauseRules",
        # Pacing per program (issue 5, README "Pace"): calls per second and concurrency.
        "callsPerSecond",
        "maxConcurrentCalls",
        "requireConsent",  # a consent scope each contact must hold at dial time
    }
)

#: The top-level fields a JSON body may carry; any other is a 400 naming it (as NestJS's
#: forbidNonWhitelisted does in the newer API). ``(list field, item fields)`` checks the
#: items of a list too. Routes not named here check their bodies themselves.
BODY_FIELDS: dict[str, frozenset[str] | tuple[frozenset[str], str, frozenset[str]]] = {
    "POST /api/contact": _CONTACT,
    "PUT /api/contact/{contact_id}": _CONTACT,
    "POST /api/contact/upsert": (frozenset({"data"}), "data", _CONTACT),
    "POST /api/custom-attributes": frozenset({"name", "displayName", "description", "type"}),
    "PUT /api/custom-attributes/{attribute_id}": frozenset({"description", "type", "name"}),
    "POST /api/audience": _AUDIENCE,
    "PUT /api/audience/{audience_id}": _AUDIENCE,
    "POST /api/audience/preview": frozenset({"rules", "sampleSize"}),
    "POST /api/audience/{audience_id}/add-contacts": frozenset({"contacts"}),
    "POST /api/audience/{audience_id}/remove-contacts": frozenset({"contacts"}),
    "POST /api/contact/ingestion/validate": frozenset({"ingestionId", "mappings", "audienceId"}),
    "POST /api/contact/ingestion/execute": frozenset({"ingestionId", "mappings", "audienceId"}),
    "POST /api/suppressions": frozenset({"phone", "reason", "source"}),
    "POST /api/contact/{contact_id}/consents": frozenset({"scope", "source", "obtainedAt", "evidence", "expiresAt"}),
    "POST /api/contact/{contact_id}/opt-out": frozenset({"source", "reason"}),
    "POST /api/flows": _FLOW,
    "PUT /api/flows/{flow_id}": _FLOW,
    "POST /api/flows/validate": _FLOW,
    "POST /api/flows/execute": frozenset({"flowId", "version", "graph", "contact", "callee"}),
    "POST /api/programs": _PROGRAM,
    "PATCH /api/programs/{program_id}": frozenset({*_PROGRAM, "status"}),
    "POST /api/call-requests": frozenset({"fromNumber", "contactId", "flowId", "retry", "startAt"}),
    "POST /api/dictionaries": frozenset({"name", "description", "language"}),
    "POST /api/webhooks": frozenset({"url", "events", "description"}),
    "PUT /api/audio-management/audio/{audio_id}": frozenset(
        {"title", "description", "usageType", "tags"}
    ),
}


def unknown_fields(route: str, body: Any) -> dict[str, list[str]]:
    """``{field path: [why]}`` for each field of ``body`` the route does not accept."""
    spec = BODY_FIELDS.get(route)
    if spec is None or not isinstance(body, dict):
        return {}
    top, list_field, item_fields = spec if isinstance(spec, tuple) else (spec, "", frozenset())
    errors = {
        k: [f"unknown field (accepted: {', '.join(sorted(top))})"] for k in body if k not in top
    }
    items = body.get(list_field) if list_field else None
    if isinstance(items, list):
        for i, item in enumerate(items):
            if isinstance(item, dict):
                for k in item:
                    if k not in item_fields:
                        errors[f"{list_field}[{i}].{k}"] = ["unknown field"]
    return errors


#: served to admin keys only until declared in ROUTES (fail closed)
UNDECLARED = Rule("undeclared")


def rule_for(method: str, path_template: str) -> Rule | None:
    """The rule of an endpoint; None for what is not ours to guard (OPTIONS, /docs)."""
    if method == "OPTIONS" or path_template == "/docs" or path_template.startswith("/docs/"):
        return None
    if method == "HEAD":
        method = "GET"
    return ROUTES.get(f"{method} {path_template}", UNDECLARED)


def allowed(role: str, permission: str) -> bool:
    if permission == UNDECLARED.permission:
        return role == "admin"
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


class Forbidden(DomainError):
    code = "FORBIDDEN"
    status = 403


def require_permission(who: Any, permission: str) -> None:
    """A permission some requests of a route need beyond the route's own (``?erase=true``
    on DELETE /api/contact/{id} needs ``contacts:erase``): 403 as the middleware answers."""
    if not allowed(who.role, permission):
        raise Forbidden(
            f"The '{who.role}' role may not do this (it needs the '{permission}' permission)",
            role=who.role, permission=permission,
        )  # fmt: skip


def app_endpoints(app: Any) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves, OPTIONS and /docs aside."""
    out = []
    for route in app.routes:
        for method in getattr(route, "route_handler_map", {}):
            if rule_for(method, route.path_format) is not None:
                out.append((method, route.path_format))
    return sorted(out, key=lambda mp: (mp[1], mp[0]))


def undeclared_endpoints(app: Any) -> list[str]:
    return [f"{m} {p}" for m, p in app_endpoints(app) if f"{m} {p}" not in ROUTES]


# -- rate limits ----------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimitConfig:
    """GOMOBILE_RATE_LIMIT_PER_MINUTE (default 100, 0: off) sustained, with bursts up to
    GOMOBILE_RATE_LIMIT_BURST (default 200) within any minute; the sustained rate is
    enforced over a window of GOMOBILE_RATE_LIMIT_WINDOW_MINUTES (default 10)."""

    per_minute: int = 100
    burst: int = 200
    window_minutes: int = 10

    @classmethod
    def from_env(cls) -> RateLimitConfig:
        def num(name: str, default: int) -> int:
            raw = os.environ.get(name, "").strip()
            return int(raw) if raw else default

        per_minute = num("GOMOBILE_RATE_LIMIT_PER_MINUTE", 100)
        return cls(
            per_minute,
            max(num("GOMOBILE_RATE_LIMIT_BURST", 2 * per_minute), per_minute),
            num("GOMOBILE_RATE_LIMIT_WINDOW_MINUTES", 10),
        )

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0


#: Tighter limits of their own for some routes, per key, on top of the key's (DOMAIN.md §2.4:
#: "10 requests/s for bulk upsert batches"); ``limits`` notation.
ROUTE_RATE_LIMITS = {"POST /api/contact/upsert": "10/second"}


class RateLimiter:
    """Sliding windows per key (``limits``' sliding-window counters: two counts a window,
    O(1) a request, where its moving windows keep and scan every request): at most
    ``burst`` in a minute and ``per_minute × window`` in ``window`` minutes. In Redis when a URL is given (every
    API process shares the counts), in this process otherwise."""

    def __init__(
        self, config: RateLimitConfig, redis_url: str = "", namespace: str = "gomobile"
    ) -> None:
        from limits import RateLimitItemPerMinute, parse
        from limits.aio.storage import MemoryStorage, RedisStorage
        from limits.aio.strategies import SlidingWindowCounterRateLimiter

        self.config = config
        self.items = [RateLimitItemPerMinute(config.burst, 1)]
        if config.window_minutes > 1:
            self.items.append(
                RateLimitItemPerMinute(
                    config.per_minute * config.window_minutes, config.window_minutes
                )
            )
        if redis_url:
            uri = "async+" + redis_url if not redis_url.startswith("async+") else redis_url
            storage: Any = RedisStorage(
                uri, implementation="redispy", key_prefix=f"{namespace}:ratelimit"
            )
        else:
            storage = MemoryStorage()
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.route_items = {route: parse(spec) for route, spec in ROUTE_RATE_LIMITS.items()}

    async def hit(self, identity: str, route: str = "") -> tuple[bool, list[tuple[bytes, bytes]]]:
        """(allowed, headers): X-RateLimit-Limit/-Remaining/-Reset of the tightest window,
        plus Retry-After when refused."""
        ok = True
        worst: tuple[int, int, float] | None = None  # remaining, limit, reset epoch
        windows = [(item, identity) for item in self.items]
        if route in self.route_items:
            windows.append((self.route_items[route], f"{identity}:{route}"))
        for item, who in windows:
            identity = who
            if ok and not await self.limiter.hit(item, identity):
                ok = False
            stats = await self.limiter.get_window_stats(item, identity)
            if not ok and stats.remaining > 0:
                continue  # a window that is not the one refusing
            candidate = (stats.remaining, item.amount, stats.reset_time)
            if worst is None or (candidate[0], -candidate[2]) < (worst[0], -worst[2]):
                worst = candidate
        assert worst is not None
        remaining, limit, reset = worst
        wait = max(1, math.ceil(reset - time.time()))
        headers = [
            (b"x-ratelimit-limit", str(limit).encode()),
            (b"x-ratelimit-remaining", str(max(0, remaining)).encode()),
            (b"x-ratelimit-reset", str(wait).encode()),
        ]
        if not ok:
            headers.append((b"retry-after", str(wait).encode()))
        return ok, headers


# -- the middleware ---------------------------------------------------------------------


def _headers(scope: Any) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name and v:
            return v.strip('"')
    return None


def api_key_from(headers: dict[str, str]) -> str | None:
    key = headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def send_problem(
    scope: Any,
    send: Any,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    **extra: Any,
) -> None:
    """The error body of DOMAIN.md §10.11, sent from ASGI middleware."""
    from interfaces.http.common import problem_body

    raw = json.dumps(problem_body(scope.get("path"), status, code, message, **extra)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


async def _buffered(receive: Any) -> tuple[bytes, Any]:
    """The whole body, and a receive that hands it over again (then the client's)."""
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    raw = b"".join(parts)
    given = [False]

    async def again() -> Any:
        if not given[0]:
            given[0] = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return raw, again


def _signed_query(scope: Any) -> bool:
    """A playback URL's ``expires``/``signature`` (the handler checks them instead of a key)."""
    from urllib.parse import parse_qs

    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return "signature" in query or "expires" in query


def etag_of(version: int) -> str:
    return f'"{version}"'


def _if_match_ok(header: str, current: str) -> bool:
    if header.strip() == "*":
        return True
    return any(tag.strip() == current for tag in header.split(","))


class SecurityState:
    """What the middleware keeps per app (litestar makes one middleware per route): the
    rate limiter and the idempotency store, configured when the app is created."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.rate_config = RateLimitConfig.from_env()
        self._limiter: RateLimiter | None = None
        self._idempotency: Any = None
        self._lock = threading.Lock()

    def limiter(self) -> RateLimiter | None:
        if self._limiter is None and self.rate_config.enabled:
            s = self.container.settings
            self._limiter = RateLimiter(self.rate_config, s.redis_url, s.redis_namespace)
        return self._limiter

    def idempotency(self) -> Any:
        with self._lock:
            if self._idempotency is None:
                from interfaces.http.idempotency import Idempotency

                self._idempotency = Idempotency.for_container(self.container)
        return self._idempotency

    def close(self) -> None:
        if self._idempotency is not None:
            self._idempotency.store.close()


def install(app: Any, container: Any) -> None:
    """Give the app its security state (the middleware itself is in its ``middleware``)."""
    app.state.security = SecurityState(container)
    app.on_shutdown.append(app.state.security.close)
    _document(app)


def _document(app: Any) -> None:
    """The OpenAPI schema names the two ways to send a key (DOMAIN.md §1.1: ApiKeyAuth)."""
    from litestar.openapi.spec import Components, SecurityScheme

    cfg = app.openapi_config
    if cfg is None:
        return
    schemes = {
        "ApiKeyAuth": SecurityScheme(
            type="apiKey", name="x-api-key", security_scheme_in="header",
            description="An API key of the organization; its role decides what it may do (README: Roles and permissions)",
        ),
        "BearerAuth": SecurityScheme(type="http", scheme="bearer", description="The same key as a bearer token"),
    }  # fmt: skip
    existing = cfg.components if isinstance(cfg.components, list) else [cfg.components]
    cfg.components = [*existing, Components(security_schemes=schemes)]
    if cfg.security is None:
        cfg.security = [{"ApiKeyAuth": []}, {"BearerAuth": []}]


class SecurityMiddleware:
    """The table above, enforced for every route (see the module's docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        rule = rule_for(method, scope.get("path_template") or scope["path"])
        if rule is None or rule.auth == "public":
            await self.app(scope, receive, send)
            return
        state: SecurityState = scope["app"].state.security
        container = state.container
        headers = _headers(scope)
        if rule.auth == "signed" and _signed_query(scope):
            await self.app(scope, receive, send)  # the handler checks the URL's signature
            return
        if rule.auth == "cookie":
            from interfaces.http.dashboard import COOKIE

            key = _cookie(headers, COOKIE)
            if not key:
                await self.app(scope, receive, send)  # the page asks to sign in
                return
        else:
            key = api_key_from(headers)
            if not key:
                await send_problem(
                    scope,
                    send,
                    401,
                    "UNAUTHORIZED",
                    "Missing API key: send 'x-api-key: KEY' or 'Authorization: Bearer KEY'",
                )
                return
        # One trip to a thread for the key and, where an ETag or If-Match needs it, the
        # resource's version (both are reads of the event store).
        wants_version = rule.resource is not None and (
            method in ("GET", "HEAD")
            or (method in ("PUT", "PATCH", "DELETE") and "if-match" in headers)
        )
        principal, aggregate_id, version = await sync_to_thread(
            self._identify, container, key, rule.resource if wants_version else None, scope
        )
        if principal is None:
            if rule.auth == "cookie":
                await self.app(scope, receive, send)  # the page asks to sign in again
                return
            await send_problem(
                scope, send, 401, "UNAUTHORIZED", "Invalid, expired or revoked API key"
            )
            return
        permission = rule.permission or "undeclared"
        if not allowed(principal.role, permission):
            if permission == "undeclared":
                log.warning(
                    "no permission declared for %s %s: admin keys only",
                    method,
                    scope.get("path_template"),
                )
                message = f"{method} {scope.get('path_template')} is open to admin keys only until its permission is declared"
            else:
                message = f"The '{principal.role}' role may not do this (it needs the '{permission}' permission)"
            await send_problem(
                scope,
                send,
                403,
                "FORBIDDEN",
                message,
                details={"role": principal.role, "permission": permission},
            )
            return
        scope.setdefault("state", {})[PRINCIPAL] = principal

        extra_headers: list[tuple[bytes, bytes]] = []
        limiter = state.limiter()
        if limiter is not None:
            try:
                ok, extra_headers = await limiter.hit(
                    route=f"{method} {scope.get('path_template')}",
                    identity=f"{principal.organization_id.hex}:{principal.key_id}",
                )
            except Exception:  # Redis unreachable: serve, unlimited, and say so
                log.warning(
                    "rate limiter unavailable: request served without a limit", exc_info=True
                )
                ok, extra_headers = True, []
            if not ok:
                await send_problem(
                    scope, send, 429, "TOO_MANY_REQUESTS",
                    f"Rate limit exceeded for this API key ({limiter.config.per_minute} requests/min, bursts up to "
                    f"{limiter.config.burst}): retry after the number of seconds in Retry-After",
                    headers=extra_headers,
                )  # fmt: skip
                return

        too_big = self._too_big(scope, headers)
        if too_big:
            await send_problem(
                scope, send, 413, "PAYLOAD_TOO_LARGE", too_big, headers=extra_headers
            )
            return

        etag: str | None = None
        expected: dict[UUID, int] = {}
        if aggregate_id is not None:
            if version is not None:
                etag = etag_of(version)
            if method in ("PUT", "PATCH", "DELETE") and "if-match" in headers:
                if etag is not None and _if_match_ok(headers["if-match"], etag):
                    expected[aggregate_id] = version  # type: ignore[assignment]
                elif await sync_to_thread(self._owned, container, aggregate_id, principal):
                    await send_problem(
                        scope, send, 412, "PRECONDITION_FAILED",
                        f"The resource changed since it was read: If-Match {headers['if-match']} does not match "
                        f"its current ETag {etag}; read it again and retry",
                        headers=[*extra_headers, (b"etag", (etag or "").encode())],
                        details={"currentETag": etag},
                    )  # fmt: skip
                    return
                # else: not this organization's (or no such resource): the handler's 404

        if extra_headers or (etag and method in ("GET", "HEAD")):
            send = self._adding(send, extra_headers, etag if method in ("GET", "HEAD") else None)

        route = f"{method} {scope.get('path_template')}"
        if route in BODY_FIELDS and "json" in headers.get("content-type", ""):
            raw, receive = await _buffered(receive)
            try:
                errors = unknown_fields(route, json.loads(raw or b"null"))
            except ValueError:
                errors = {}  # not JSON: the handler says so
            if errors:
                names = ", ".join(errors)
                await send_problem(
                    scope,
                    send,
                    400,
                    "VALIDATION_FAILED",
                    f"Unknown field(s): {names}",
                    headers=extra_headers,
                    fieldErrors=errors,
                )
                return

        with expecting_versions(expected):
            if method == "POST" and "idempotency-key" in headers:
                await state.idempotency().handle(
                    self.app, scope, receive, send, principal, headers["idempotency-key"]
                )
            else:
                await self.app(scope, receive, send)

    @staticmethod
    def _adding(send: Any, extra: list[tuple[bytes, bytes]], etag: str | None) -> Any:
        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start":
                add = list(extra)
                if etag and message["status"] == 200:
                    add.append((b"etag", etag.encode()))
                message = {**message, "headers": [*message.get("headers", []), *add]}
            await send(message)

        return wrapped

    @staticmethod
    def _too_big(scope: Any, headers: dict[str, str]) -> str | None:
        raw = headers.get("content-length")
        if not raw or not raw.isdigit():
            return None
        handler = scope.get("route_handler")
        limit = handler.resolve_request_max_body_size() if handler is not None else None
        if limit and int(raw) > limit:
            return f"The request body ({int(raw)} bytes) is larger than this endpoint accepts ({limit} bytes)"
        return None

    @staticmethod
    def _resource_id(resource: str, scope: Any, principal: Any) -> UUID | None:
        if resource == "@org":
            return UUID(str(principal.organization_id))
        if resource == "@schema":
            from domain.contact_schema import schema_id

            return UUID(str(schema_id(principal.organization_id)))
        try:
            return UUID(str(scope.get("path_params", {}).get(resource)))
        except ValueError:
            return None

    @classmethod
    def _identify(
        cls, container: Any, key: str, resource: str | None, scope: Any
    ) -> tuple[Any, UUID | None, int | None]:
        principal = container.campaigns.authenticate(key)
        if principal is None or resource is None:
            return principal, None, None
        aggregate_id = cls._resource_id(resource, scope, principal)
        return (
            principal,
            aggregate_id,
            cls._version(container, aggregate_id) if aggregate_id else None,
        )

    @staticmethod
    def _version(container: Any, aggregate_id: UUID) -> int | None:
        """The aggregate's version: its last stored event's (one indexed read)."""
        events = container.campaigns.recorder.select_events(aggregate_id, desc=True, limit=1)
        return int(events[0].originator_version) if events else None

    @staticmethod
    def _owned(container: Any, aggregate_id: UUID, principal: Any) -> bool:
        """Whether the caller's organization may know this resource exists (412 vs 404)."""
        if aggregate_id == principal.organization_id:
            return True
        try:
            agg = container.campaigns.repository.get(aggregate_id)
        except Exception:  # noqa: BLE001 (absent or not decodable: the handler answers)
            return False
        if getattr(agg, "deleted", False):
            return False
        return getattr(agg, "organization_id", None) == principal.organization_id
