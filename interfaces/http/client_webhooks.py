"""Webhook endpoints of the caller's organization and their delivery logs (admin and
manager keys: ``webhooks:manage`` in interfaces/http/security.py). The signing secret
is in the answers to register and rotate-secret, and nowhere else."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post

from application.client_webhooks import ClientWebhooks
from domain.errors import ValidationError
from interfaces.http.common import acting, authenticate, body_object, envelope, in_thread, paging

STATUSES = ("pending", "retrying", "delivered", "failed", "cancelled")


def _hooks(request: Request[Any, Any, Any]) -> tuple[ClientWebhooks, Any]:
    c = request.app.state.container
    return ClientWebhooks.for_container(c), authenticate(request, c.campaigns)


@post("/api/webhooks", status_code=201)
@in_thread
def register_webhook(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    """``{url: https://..., events: ["call.completed", ...], description?}`` → the
    endpoint, with ``secret`` (shown once: it signs every delivery)."""
    hooks, who = _hooks(request)
    with acting(who, request):
        return hooks.register(who.organization_id, body_object(data))


@get("/api/webhooks")
@in_thread
def list_webhooks(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    hooks, who = _hooks(request)
    return hooks.list(who.organization_id)


@get("/api/webhooks/{webhook_id:str}")
@in_thread
def get_webhook(request: Request[Any, Any, Any], webhook_id: str) -> dict[str, Any]:
    hooks, who = _hooks(request)
    return hooks.get(who.organization_id, webhook_id)


@delete("/api/webhooks/{webhook_id:str}", status_code=200)
@in_thread
def delete_webhook(request: Request[Any, Any, Any], webhook_id: str) -> dict[str, Any]:
    """No more deliveries to it; those not yet delivered are cancelled."""
    hooks, who = _hooks(request)
    with acting(who, request):
        return hooks.delete(who.organization_id, webhook_id)


@post("/api/webhooks/{webhook_id:str}/rotate-secret", status_code=200)
@in_thread
def rotate_webhook_secret(request: Request[Any, Any, Any], webhook_id: str) -> dict[str, Any]:
    """A new signing secret (in ``secret``, shown once); the old one signs nothing more."""
    hooks, who = _hooks(request)
    with acting(who, request):
        return hooks.rotate_secret(who.organization_id, webhook_id)


@get("/api/webhooks/{webhook_id:str}/deliveries")
@in_thread
def list_webhook_deliveries(
    request: Request[Any, Any, Any],
    webhook_id: str,
    page: int | None = None,
    limit: int | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """Newest first: event, status (pending, retrying, delivered, failed, cancelled),
    attempts, last response code and error, timestamps, and each attempt."""
    hooks, who = _hooks(request)
    p, lim = paging(page, limit)
    if status is not None and status not in STATUSES:
        raise ValidationError.single("status", f"must be one of {', '.join(STATUSES)}")
    rows, total = hooks.deliveries(who.organization_id, webhook_id, p, lim, status)
    return envelope(rows, p, lim, total)


CLIENT_WEBHOOK_HANDLERS = [
    register_webhook, list_webhooks, get_webhook, delete_webhook, rotate_webhook_secret, list_webhook_deliveries,
]  # fmt: skip
