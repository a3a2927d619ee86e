"""Render every failure as MLflow's error JSON: ``{"error_code": ..., "message": ...}``.

The SQL and stack trace of an unexpected error go to the log, never to the client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.dialects import STORE_DIALECT, DialectPolicy, policy_for
from service.errors import ErrorCode, InsightsError
from service.http.answering_path import answer_of
from service.models.common import ErrorResponse

logger = logging.getLogger("service.errors")

_CLIENT_MESSAGES = {
    ErrorCode.TEMPORARILY_UNAVAILABLE: "The tracking database cannot be reached; retry later.",
    ErrorCode.DEADLINE_EXCEEDED: (
        "The query ran past the configured statement timeout and was cancelled; "
        "narrow the time window or the filter, or raise INSIGHTS_STATEMENT_TIMEOUT_SECONDS."
    ),
    ErrorCode.INTERNAL_ERROR: "Internal error; the details are in the service log.",
}
# The same failures when the analytics store answered: the tracking database is fine, and a
# request with ``Cache-Control: no-cache`` is answered from it.
_STORE_MESSAGES = {
    **_CLIENT_MESSAGES,
    ErrorCode.TEMPORARILY_UNAVAILABLE: (
        "The analytics store could not answer this request (it ran out of memory, or its file "
        "could not be read); retry later, narrow the time window, or send "
        "'Cache-Control: no-cache' to be answered from the tracking database. Operators: "
        "INSIGHTS_STORE_MEMORY_LIMIT sets the store's memory."
    ),
}


def database_error_message(code: ErrorCode, *, answered_by_store: bool) -> str:
    """What the client is told of a database failure, by which database failed."""
    return (_STORE_MESSAGES if answered_by_store else _CLIENT_MESSAGES)[code]


# Documents every error status of an endpoint in /openapi.json (its presence also keeps FastAPI
# from documenting a 422 with its own error shape, which this service never sends).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "default": {
        "model": ErrorResponse,
        "description": "Error, in MLflow's shape: 400 INVALID_PARAMETER_VALUE, 404 "
        "RESOURCE_DOES_NOT_EXIST, 401/403/429 when access control or rate limiting is on, "
        "503 TEMPORARILY_UNAVAILABLE, 504 DEADLINE_EXCEEDED, 500 INTERNAL_ERROR.",
    }
}


# FastAPI's detail when decoding the body failed other than as malformed JSON.
_FASTAPI_UNREADABLE_BODY = "There was an error parsing the body"
_UNREADABLE_BODY = (
    "The request body could not be read as JSON (not UTF-8, or nested too deeply); send a "
    'JSON object such as {"experiment_ids": ["1"]}'
)


def error_response(error: InsightsError) -> JSONResponse:
    return JSONResponse(error.to_json(), status_code=error.http_status, headers=error.headers)


def _field_name(loc: Sequence[Any]) -> str:
    name = ".".join(str(p) for p in loc if p != "body")
    # An unknown field's name is the client's own text: keep the message readable.
    return name if len(name) <= 100 else name[:100] + "..."


def describe_validation_error(error: dict[str, Any]) -> str:
    """One error of pydantic's list as a sentence a user can act on."""
    kind, field = error.get("type", ""), _field_name(error.get("loc", ()))
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "json_invalid":
        return f"Malformed JSON in request body: {error.get('ctx', {}).get('error', message)}"
    if kind == "extra_forbidden":
        return f"Unknown field '{field}'; see /docs for the fields this endpoint accepts"
    if kind == "missing" and not field:
        return "The request body must be a JSON object"
    if kind == "missing":
        return f"Missing required field '{field}'"
    if not field and kind in ("model_attributes_type", "dict_type", "model_type"):
        return "The request body must be a JSON object"
    if not field:
        return message
    return f"Invalid value for '{field}': {message}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InsightsError)
    async def _insights_error(_request: Request, exc: InsightsError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI opens the session before it validates the body: a refused body was decided
        # by the request's own rules, not by the store that was about to answer it.
        answer = answer_of(request.scope)
        if answer is not None and answer.answered_by == "store":
            answer.answered_by, answer.as_of_ms = "live", time.time_ns() // 1_000_000
        errors = list(exc.errors())
        messages = list(dict.fromkeys(describe_validation_error(e) for e in errors))
        return error_response(
            InsightsError(
                ErrorCode.INVALID_PARAMETER_VALUE, "; ".join(messages) or "Invalid request"
            )
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            code, message = ErrorCode.ENDPOINT_NOT_FOUND, f"No endpoint at {request.url.path}"
        elif exc.status_code == 405:
            code = ErrorCode.ENDPOINT_NOT_FOUND
            message = f"{request.method} is not allowed on {request.url.path}; use POST"
        elif exc.detail == _FASTAPI_UNREADABLE_BODY:  # e.g. nested too deeply to decode
            code, message = ErrorCode.INVALID_PARAMETER_VALUE, _UNREADABLE_BODY
        else:
            code, message = ErrorCode.INVALID_PARAMETER_VALUE, str(exc.detail)
        return JSONResponse(
            {"error_code": code.value, "message": message},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        policy, by_store = _policy_of_answer(request)
        code = policy.classify_error(exc) or ErrorCode.INTERNAL_ERROR
        logger.error("database error on %s (%s)", request.url.path, code.value, exc_info=exc)
        message = database_error_message(code, answered_by_store=by_store)
        return error_response(InsightsError(code, message))

    @app.exception_handler(PoolTimeoutError)
    async def _pool_exhausted(request: Request, exc: PoolTimeoutError) -> JSONResponse:
        # Every pooled connection stayed busy for the pool timeout: the service is saturated,
        # not broken. The client should come back, as for a rate limit.
        logger.warning("connection pool exhausted on %s: %s", request.url.path, exc)
        message = (
            "Every database connection of the service stayed busy with other requests; retry "
            "shortly. Operators: INSIGHTS_POOL_SIZE and INSIGHTS_MAX_OVERFLOW set how many "
            "queries run at once."
        )
        return error_response(
            InsightsError(ErrorCode.TEMPORARILY_UNAVAILABLE, message, headers={"Retry-After": "5"})
        )

    @app.exception_handler(OSError)
    async def _connection_error(request: Request, exc: OSError) -> JSONResponse:
        # Raised by the drivers before SQLAlchemy wraps anything, e.g. connection refused.
        code = ErrorCode.TEMPORARILY_UNAVAILABLE
        logger.warning("database unreachable on %s: %s", request.url.path, exc)
        return error_response(InsightsError(code, _CLIENT_MESSAGES[code]))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error on %s", request.url.path, exc_info=exc)
        code = ErrorCode.INTERNAL_ERROR
        return error_response(InsightsError(code, _CLIENT_MESSAGES[code]))


def _policy_of_answer(request: Request) -> tuple[DialectPolicy, bool]:
    """The policy of the database that answered, and whether it is the analytics store."""
    answer = answer_of(request.scope)
    if answer is not None and answer.answered_by == "store":
        # By name, not through the runner's store: a failing sync may have closed it meanwhile
        # (DuckDB out of memory fails the sync too), and its error is still the store's.
        return policy_for(STORE_DIALECT), True
    policy: DialectPolicy = request.app.state.database.policy
    return policy, False
