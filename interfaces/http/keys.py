"""API keys of the caller's organization (admin keys only: see interfaces/http/security.py).
The plaintext key is in the answer to issue and rotate, and nowhere else, ever."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post

from application.keys import ApiKeys
from interfaces.http.common import acting, authenticate, body_object, in_thread


def _keys(request: Request[Any, Any, Any]) -> tuple[ApiKeys, Any]:
    c = request.app.state.container
    return ApiKeys(c.campaigns), authenticate(request, c.campaigns)


@get("/api/keys")
@in_thread
def list_keys(request: Request[Any, Any, Any]) -> list[dict[str, Any]]:
    keys, who = _keys(request)
    return keys.list(who.organization_id)


@post("/api/keys", status_code=201)
@in_thread
def issue_key(request: Request[Any, Any, Any], data: Any) -> dict[str, Any]:
    """``{role: admin|manager|agent|auditor, name?, prefix?, expiresAt?}`` → the key,
    with ``apiKey`` (shown once)."""
    keys, who = _keys(request)
    with acting(who, request):
        return keys.issue(who.organization_id, body_object(data))


@get("/api/keys/{key_id:str}")
@in_thread
def get_key(request: Request[Any, Any, Any], key_id: str) -> dict[str, Any]:
    keys, who = _keys(request)
    return keys.get(who.organization_id, key_id)


@post("/api/keys/{key_id:str}/rotate", status_code=200)
@in_thread
def rotate_key(request: Request[Any, Any, Any], key_id: str, data: Any = None) -> dict[str, Any]:
    """A new secret for the key (``{expiresAt?}``); the old one answers 401 from now on."""
    keys, who = _keys(request)
    with acting(who, request):
        return keys.rotate(
            who.organization_id, key_id, body_object(data) if data is not None else {}
        )


@delete("/api/keys/{key_id:str}", status_code=200)
@in_thread
def revoke_key(request: Request[Any, Any, Any], key_id: str) -> dict[str, Any]:
    keys, who = _keys(request)
    with acting(who, request):
        return keys.revoke(who.organization_id, key_id)


KEY_HANDLERS = [list_keys, issue_key, get_key, rotate_key, revoke_key]
