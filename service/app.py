"""The FastAPI application: lifespan (engine, schema check), routers under both prefixes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from sqlalchemy.exc import DBAPIError

from service.api import (
    assessments,
    correlations,
    cost,
    dimensions,
    operations,
    tags,
    tools,
    traffic,
)
from service.api.docs import install_docs
from service.db import Database, UnsupportedSchemaError
from service.http.access import AccessChecker, AccessControlMiddleware
from service.http.body import JSONBodyMiddleware
from service.http.error_responses import ERROR_RESPONSES, install_error_handlers
from service.http.rate_limit import RateLimiter, RateLimitMiddleware
from service.http.request_log import RequestLogMiddleware
from service.settings import Settings, get_settings

logger = logging.getLogger("service")

API_PREFIX = "/api/3.0/mlflow/traces/insights"
# The MLflow web UI calls its own server under /ajax-api; the same handlers answer there.
AJAX_PREFIX = "/ajax-api/3.0/mlflow/traces/insights"

DESCRIPTION = """
Analytics over the GenAI traces in an MLflow tracking database: traffic, latency, errors,
cost, assessments, tools, tags and NPMI correlations. Every endpoint is a `POST` taking JSON
and answers under both `/api/3.0/mlflow/traces/insights/` and
`/ajax-api/3.0/mlflow/traces/insights/` (only the first is listed here).

Errors use MLflow's shape: `{"error_code": "INVALID_PARAMETER_VALUE", "message": "..."}`.
The service only reads: its database connections are read-only.
"""


def insights_router() -> APIRouter:
    router = APIRouter()
    router.include_router(traffic.router)
    router.include_router(cost.router)
    router.include_router(assessments.router)
    router.include_router(tools.router)
    router.include_router(tags.router)
    router.include_router(dimensions.router)
    router.include_router(correlations.router)
    return router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    access_checker = AccessChecker.from_settings(settings)  # None: access control off
    rate_limiter = RateLimiter.from_settings(settings)  # None: rate limiting off

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        app.state.database = database
        try:
            status = await database.check_schema()
        except (DBAPIError, OSError) as exc:
            # Serve anyway: /ready says 503 and requests retry the check until the DB is back.
            logger.warning("tracking database not reachable at start: %s", exc)
        else:
            if not status.ok:
                await database.dispose()
                raise UnsupportedSchemaError(status.reason)
            logger.info("serving %s", status.reason)
        try:
            yield
        finally:
            await database.dispose()
            if access_checker is not None:
                await access_checker.aclose()

    app = FastAPI(
        title="MLflow Trace Insights",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # install_docs serves /docs and /redoc from local assets
        redoc_url=None,
    )
    install_docs(app)
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(JSONBodyMiddleware)
    # Added last runs first: rate limit, then access control, then the JSON body fix.
    prefixes = (API_PREFIX, AJAX_PREFIX)
    if access_checker is not None:
        app.state.access_checker = access_checker
        app.add_middleware(AccessControlMiddleware, checker=access_checker, prefixes=prefixes)
    if rate_limiter is not None:
        app.state.rate_limiter = rate_limiter
        app.add_middleware(RateLimitMiddleware, limiter=rate_limiter, prefixes=prefixes)
    # Outermost: every request is logged once, whatever answered it.
    app.add_middleware(RequestLogMiddleware)
    app.include_router(operations.router)
    app.include_router(insights_router(), prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(insights_router(), prefix=AJAX_PREFIX, include_in_schema=False)
    return app
