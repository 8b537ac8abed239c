"""Structured logs: one JSON object per line, each carrying the request id and the
correlation id of the work it belongs to.

The ids come from two context variables, read when the line is written:
- the HTTP request being served (set by the API's request-id middleware), and
- the audit context (``domain.base.audit_context``) that also stamps the ``meta`` of
  every event appended, so a log line and the events written beside it carry the same
  ``requestId`` / ``correlationId`` / ``actor``: a worker dialling a call, the webhooks of
  that call and the dispatcher's work on an execution all log under the ids their events
  carry, and an operator can go from a log line to the events and back.

Standard library only (``logging`` with a formatter); ``configure_logging`` is what the
processes call at start.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from domain.base import current_audit

_request: ContextVar[dict[str, str] | None] = ContextVar("log_request", default=None)

# The attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
CONTEXT_KEYS = ("requestId", "correlationId", "actor")

# An id taken from a client's header must be safe to print in a log line and to store.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")


def safe_id(value: str | None) -> str | None:
    """The client's id when it is a plain token (no spaces, quotes, line breaks), else None."""
    if value and _SAFE_ID.match(value):
        return value
    return None


def new_id() -> str:
    return str(uuid.uuid4())


@contextmanager
def request_context(request_id: str, correlation_id: str) -> Iterator[None]:
    """Log lines written inside (in this task and the threads it hands work to) carry the ids."""
    token = _request.set({"requestId": request_id, "correlationId": correlation_id})
    try:
        yield
    finally:
        _request.reset(token)


def current_ids() -> dict[str, str]:
    """requestId, correlationId and actor in effect here (the innermost context wins)."""
    out: dict[str, str] = dict(_request.get() or {})
    audit = current_audit()
    for key in CONTEXT_KEYS:
        if audit.get(key):
            out[key] = audit[key]
    return out


class ContextFilter(logging.Filter):
    """Stamps the ids on the record when it is created (in the thread that logs it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_ids().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            + "Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = value
        out["process"] = record.process
        out["thread"] = record.threadName
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def json_handler(
    stream: IO[str] | None = None, level: int | str = logging.NOTSET
) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    handler.setLevel(level)
    return handler


def configure_logging(level: str = "WARNING", stream: IO[str] | None = None) -> logging.Handler:
    """JSON lines on stderr for the root logger (uvicorn's and dramatiq's loggers included),
    in place of whatever handlers it had: a litestar app built with its default logging
    config (the sandbox's) installs its own text handler there, so a process calls this
    again once its parts are built."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = json_handler(stream)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
