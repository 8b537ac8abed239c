"""Assembles the litestar application: routes, error bodies, OpenAPI."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, get
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from domain.errors import DomainError
from interfaces.http.assets import ASSET_HANDLERS
from interfaces.http.audiences import AUDIENCE_HANDLERS
from interfaces.http.call_requests import CALL_REQUEST_HANDLERS
from interfaces.http.common import (
    RequestIdMiddleware,
    domain_error_handler,
    http_error_handler,
    internal_error_handler,
)
from interfaces.http.contacts import CONTACT_HANDLERS
from interfaces.http.dashboard import DASHBOARD_HANDLERS
from interfaces.http.events import EVENT_HANDLERS
from interfaces.http.executions import EXECUTION_HANDLERS
from interfaces.http.exports import EXPORT_HANDLERS
from interfaces.http.flows import FLOW_HANDLERS
from interfaces.http.ingestion import INGESTION_HANDLERS
from interfaces.http.metrics import METRICS_HANDLERS, observe_request
from interfaces.http.organization import ORGANIZATION_HANDLERS
from interfaces.http.outage import OutageGate, StoreWatch, outage_handlers
from interfaces.http.problem import document_errors
from interfaces.http.recordings import RECORDING_HANDLERS
from interfaces.http.reports import REPORT_HANDLERS
from interfaces.http.resources import RESOURCE_HANDLERS
from interfaces.http.suppression import SUPPRESSION_HANDLERS
from interfaces.webhooks.twilio import TwilioWebhooks


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def create_app(container: Any) -> Litestar:
    handlers = [health, *ORGANIZATION_HANDLERS, *CALL_REQUEST_HANDLERS, *CONTACT_HANDLERS, *AUDIENCE_HANDLERS, *INGESTION_HANDLERS, *SUPPRESSION_HANDLERS, *RESOURCE_HANDLERS, *FLOW_HANDLERS, *EXECUTION_HANDLERS, *REPORT_HANDLERS, *EVENT_HANDLERS, *DASHBOARD_HANDLERS, *METRICS_HANDLERS]
    handlers += [*ASSET_HANDLERS, *RECORDING_HANDLERS]  # flow assets and recordings (issue 4)
    handlers += EXPORT_HANDLERS  # streamed CSV / NDJSON exports (issue 6)
    from interfaces.http.audit import AUDIT_HANDLERS

    handlers += AUDIT_HANDLERS  # signed audit exports and their public key (issue 7)
    from interfaces.http.keys import KEY_HANDLERS
    from interfaces.http.security import SecurityMiddleware, install

    handlers += KEY_HANDLERS  # API keys issued, rotated, revoked (issue 7)
    from interfaces.http.client_webhooks import CLIENT_WEBHOOK_HANDLERS

    handlers += CLIENT_WEBHOOK_HANDLERS  # webhooks to client systems (issue 7)
    from interfaces.http.consents import CONSENT_HANDLERS

    handlers += CONSENT_HANDLERS  # consent records and opt-outs (issue 7)
    for handler in handlers:
        # Handlers run in threads; name operations after the handler, not its wrapper.
        if handler.operation_id is None:
            handler.operation_id = _camel(handler.handler_name)
        document_errors(handler)  # our error body, not litestar's default 400
    app = Litestar(
        route_handlers=handlers,
        exception_handlers={
            DomainError: domain_error_handler,
            HTTPException: http_error_handler,
            **outage_handlers(),  # an unreachable store: 503 + Retry-After, not a 500
            Exception: internal_error_handler,
        },
        openapi_config=OpenAPIConfig(
            title="Gomobile-compatible voice campaigns API",
            version="0.1.0",
            path="/docs",
        ),
        debug=False,
        # Logging is the process's (infrastructure.logs: JSON lines with request ids);
        # litestar's default would replace the root handlers at startup.
        logging_config=None,
        # Keys, roles, rate limits, If-Match/ETag, Idempotency-Key: one table for every route.
        middleware=[SecurityMiddleware],
    )
    app.state.container = container
    install(app, container)
    # Outside litestar's routing, so that unknown paths and errors get a request id too.
    settings = getattr(container, "settings", None)
    if settings is not None and settings.uses_postgres:
        # While PostgreSQL is down, 503 + Retry-After at once (not after the store's retries).
        app.state.store_watch = StoreWatch(settings.database_url).start()
        app.asgi_handler = OutageGate(app.asgi_handler, app.state.store_watch)  # type: ignore[method-assign]
    # Twilio's callbacks, before litestar's routing (interfaces/webhooks/twilio.py says why).
    webhooks = TwilioWebhooks(app.asgi_handler, container, getattr(app.state, "store_watch", None))
    app.asgi_handler = webhooks  # type: ignore[method-assign]
    app.on_shutdown.append(webhooks.close)
    app.asgi_handler = RequestIdMiddleware(app.asgi_handler, observe_request)  # type: ignore[method-assign]
    return app
