"""Errors the user can act on. Each carries a stable code and, for bad input, the field."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "DomainError"
    status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ValidationError(DomainError):
    """Bad input; ``field_errors`` maps each offending field to its messages."""

    code = "VALIDATION_FAILED"
    status = 400

    def __init__(self, message: str, field_errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.field_errors = field_errors or {}

    @classmethod
    def single(cls, field: str, message: str) -> ValidationError:
        return cls(f"{field}: {message}", {field: [message]})


class NotFound(DomainError):
    code = "NOT_FOUND"
    status = 404


class Conflict(DomainError):
    code = "CONFLICT"
    status = 409


class PreconditionFailed(DomainError):
    """``If-Match`` named a version the resource has moved past (optimistic concurrency)."""

    code = "PRECONDITION_FAILED"
    status = 412


class ExecutionAlreadyRunningError(DomainError):
    code = "ExecutionAlreadyRunningError"
    status = 409


class AudienceEmptyError(DomainError):
    code = "AudienceEmptyError"
    status = 400


class FlowNotFoundError(NotFound):
    code = "FlowNotFoundError"


class ContactNotFoundError(NotFound):
    code = "ContactNotFoundError"


class InvalidRetryStrategyError(DomainError):
    code = "InvalidRetryStrategyError"
    status = 400


class InvalidStateTransition(DomainError):
    code = "InvalidStateTransition"
    status = 400


class InvalidStartTimeError(DomainError):
    code = "InvalidStartTimeError"
    status = 400


class CallRequestValidationError(ValidationError):
    code = "CallRequestValidationError"
