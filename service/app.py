"""The FastAPI application: lifespan (engine, schema check, store sync), routers under both
prefixes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError

from service.api import (
    assessments,
    correlations,
    cost,
    dimensions,
    experiments,
    operations,
    tags,
    tools,
    trace_metrics,
    traffic,
)
from service.api.docs import install_docs
from service.db import Database, UnsupportedSchemaError
from service.gc_tuning import settle_after_startup
from service.http.access import AccessChecker, AccessControlMiddleware
from service.http.answering_path import AnsweringPathMiddleware
from service.http.body import JSONBodyMiddleware
from service.http.error_responses import ERROR_RESPONSES, install_error_handlers
from service.http.metrics import Metrics, RequestMetricsMiddleware
from service.http.rate_limit import RateLimiter, RateLimitMiddleware
from service.http.request_log import RequestLogMiddleware
from service.settings import Settings, get_settings
from service.store.runner import StoreStatus, SyncRunner
from service.ui import install_ui

logger = logging.getLogger("service")

API_PREFIX = "/api/3.0/mlflow/traces/insights"
# The MLflow web UI calls its own server under /ajax-api; the same handlers answer there.
AJAX_PREFIX = "/ajax-api/3.0/mlflow/traces/insights"
# MLflow's own trace-metrics routes (API.md §8) live at MLflow's paths, next to ``insights``.
MLFLOW_TRACES_PREFIXES = ("/api/3.0/mlflow/traces", "/ajax-api/3.0/mlflow/traces")
MLFLOW_TRACES_PATHS = tuple(
    f"{prefix}{route.path}"
    for prefix in MLFLOW_TRACES_PREFIXES
    for route in trace_metrics.router.routes
    if isinstance(route, APIRoute)
)

DESCRIPTION = """
Analytics over the GenAI traces in an MLflow tracking database: traffic, latency, errors,
cost, assessments, tools, tags and NPMI correlations. Every endpoint is a `POST` taking JSON
and answers under both `/api/3.0/mlflow/traces/insights/` and
`/ajax-api/3.0/mlflow/traces/insights/` (only the first is listed here).

Errors use MLflow's shape: `{"error_code": "INVALID_PARAMETER_VALUE", "message": "..."}`.
The service only reads: its database connections are read-only.
"""


INSIGHTS_ROUTERS = (
    traffic.router,
    cost.router,
    assessments.router,
    tools.router,
    tags.router,
    dimensions.router,
    correlations.router,
    experiments.router,
)


def insights_router() -> APIRouter:
    router = APIRouter()
    for area in INSIGHTS_ROUTERS:
        router.include_router(area)
    return router


def insights_endpoints() -> frozenset[str]:
    """Every insights path below a prefix, e.g. ``/traffic-cost/volume`` (metric labels)."""
    return frozenset(
        r.path for area in INSIGHTS_ROUTERS for r in area.routes if isinstance(r, APIRoute)
    )


def mlflow_traces_endpoints() -> frozenset[str]:
    """MLflow's trace-metrics paths below ``/api/3.0/mlflow/traces``, e.g. ``/metrics``."""
    return frozenset(r.path for r in trace_metrics.router.routes if isinstance(r, APIRoute))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    access_checker = AccessChecker.from_settings(settings)  # None: access control off
    rate_limiter = RateLimiter.from_settings(settings)  # None: rate limiting off

    def store_status() -> StoreStatus | None:
        runner: SyncRunner | None = app.state.store_runner
        return runner.status if runner is not None else None

    metrics = Metrics(store_status)

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
        runner = None
        if settings.store == "on":
            runner = SyncRunner.from_settings(settings, database, observer=metrics)
            app.state.store_runner = runner
            runner.start()
        settle_after_startup()
        try:
            yield
        finally:
            if runner is not None:
                app.state.store_runner = None
                await runner.stop()
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
    app.state.store_runner = None  # set in the lifespan while the store is on
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(JSONBodyMiddleware)
    # Added last runs first: rate limit, then access control, then the JSON body fix.
    prefixes = (API_PREFIX, AJAX_PREFIX, *MLFLOW_TRACES_PATHS)
    if access_checker is not None:
        app.state.access_checker = access_checker
        app.add_middleware(AccessControlMiddleware, checker=access_checker, prefixes=prefixes)
    if rate_limiter is not None:
        app.state.rate_limiter = rate_limiter
        app.add_middleware(RateLimitMiddleware, limiter=rate_limiter, prefixes=prefixes)
    # Every insights response is timed and says which path answered it, 429s and 403s too.
    # MLflow's routes are labelled by their path below /api/3.0/mlflow/traces (e.g. /metrics).
    app.add_middleware(
        RequestMetricsMiddleware,
        metrics=metrics,
        prefixes=(API_PREFIX, AJAX_PREFIX, *MLFLOW_TRACES_PREFIXES),
        endpoints=insights_endpoints() | mlflow_traces_endpoints(),
    )
    app.add_middleware(AnsweringPathMiddleware, prefixes=prefixes)
    # Outermost: every request is logged once, whatever answered it.
    app.add_middleware(RequestLogMiddleware)
    app.include_router(operations.router)
    app.include_router(insights_router(), prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(insights_router(), prefix=AJAX_PREFIX, include_in_schema=False)
    app.include_router(
        trace_metrics.router, prefix=MLFLOW_TRACES_PREFIXES[0], responses=ERROR_RESPONSES
    )
    app.include_router(
        trace_metrics.router, prefix=MLFLOW_TRACES_PREFIXES[1], include_in_schema=False
    )
    install_ui(app)  # the Insights page at /insights/
    return app
