"""Ad-hoc call requests (DOMAIN.md §8.4)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, delete, post

from application.call_requests import CallRequests
from interfaces.http.common import acting, authenticate, body_object, in_thread


@post("/api/call-requests", status_code=202)
@in_thread
def create_call_request(request: Request[Any, Any, Any], data: Any) -> Response[Any]:
    c = request.app.state.container
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        job_id, execution = CallRequests(c.campaigns, c.calls).request(who.organization, body_object(data), c.clock.now())
    return Response({"jobId": str(job_id), "status": "queued", "programExecutionId": str(execution.id)}, status_code=202)


@delete("/api/call-requests/{job_id:str}", status_code=204)
@in_thread
def cancel_call_request(request: Request[Any, Any, Any], job_id: str) -> None:
    c = request.app.state.container
    who = authenticate(request, c.campaigns)
    with acting(who, request):
        CallRequests(c.campaigns, c.calls).cancel(who.organization_id, job_id, c.clock.now())


CALL_REQUEST_HANDLERS = [create_call_request, cancel_call_request]
