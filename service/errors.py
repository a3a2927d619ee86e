"""One exception type carrying an MLflow error code, one table from code to HTTP status.

Every error the service returns has MLflow's shape: ``{"error_code": ..., "message": ...}``
(plus an optional ``details`` object). Handlers that render it live in
``service.http.error_responses``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
    RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
    ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
    TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL_ERROR = "INTERNAL_ERROR"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_PARAMETER_VALUE: 400,
    ErrorCode.RESOURCE_DOES_NOT_EXIST: 404,
    ErrorCode.ENDPOINT_NOT_FOUND: 404,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.REQUEST_LIMIT_EXCEEDED: 429,
    ErrorCode.TEMPORARILY_UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.INTERNAL_ERROR: 500,
}


class InsightsError(Exception):
    """An error with an MLflow error code; rendered as MLflow's error JSON."""

    def __init__(
        self,
        error_code: ErrorCode,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.details = details
        self.headers = headers

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.error_code]

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error_code": self.error_code.value, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


def invalid_parameter(message: str, **details: Any) -> InsightsError:
    return InsightsError(ErrorCode.INVALID_PARAMETER_VALUE, message, details=details or None)


def does_not_exist(message: str, **details: Any) -> InsightsError:
    return InsightsError(ErrorCode.RESOURCE_DOES_NOT_EXIST, message, details=details or None)
