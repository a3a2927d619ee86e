"""Operational endpoints (API.md §5, §7): liveness, readiness and metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from service.api.deps import AppSettings, get_database, get_store_runner
from service.db import Database
from service.http.metrics import Metrics
from service.store.routing import store_state
from service.store.runner import SyncRunner, now_ms

router = APIRouter(tags=["Operations"])


class HealthResponse(BaseModel):
    status: str


@router.get("/health", summary="Liveness")
async def health() -> HealthResponse:
    """200 while the process runs."""
    return HealthResponse(status="ok")


def store_readiness(
    runner: Annotated[SyncRunner | None, Depends(get_store_runner)], settings: AppSettings
) -> dict[str, object]:
    """The store's state (off, building, ready, lagging) and lag; it never decides 200/503:
    while it is not fresh, requests are answered live."""
    if runner is None:
        return {"state": "off"}
    status, at_ms = runner.status, now_ms()
    lag_ms = status.lag_ms(at_ms)
    max_lag_ms = round(settings.store_max_lag_seconds * 1000)
    state = store_state(status, max_lag_ms=max_lag_ms, at_ms=at_ms)
    readiness: dict[str, object] = {
        "state": state,
        "lag_seconds": None if lag_ms is None else lag_ms / 1000,
        "as_of_ms": status.as_of_ms,
        "max_lag_seconds": settings.store_max_lag_seconds,
        "failed_cycles": status.failures,
        "last_error": status.last_error,
    }
    store = runner.store
    if state == "building" and store is not None:
        # The first sync's copy so far (rows of every table), as its log reports it too.
        progress = store.progress
        readiness["progress"] = {
            "rows_copied": progress.done,
            "rows_total": progress.total,
            "percent": progress.percent,
        }
    return readiness


StoreReadiness = Annotated[dict[str, object], Depends(store_readiness)]


@router.get(
    "/ready",
    summary="Readiness",
    responses={503: {"description": "The database is unreachable or its schema is unsupported"}},
)
async def ready(
    database: Annotated[Database, Depends(get_database)], store: StoreReadiness
) -> JSONResponse:
    """200 when the database answers and its MLflow schema revision is supported; ``store``
    says whether the analytics store answers (API.md §7)."""
    try:
        await database.ping()
        status = await database.check_schema()
    except (DBAPIError, OSError) as exc:
        reason = f"The tracking database cannot be reached: {type(exc).__name__}"
        return JSONResponse(
            {"status": "unavailable", "reason": reason, "store": store}, status_code=503
        )
    if not status.ok:
        return JSONResponse(
            {"status": "unsupported_schema", "reason": status.reason, "store": store}, 503
        )
    return JSONResponse({"status": "ready", "reason": status.reason, "store": store})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Request durations per endpoint and answering path; the store's lag, sync cycles, rows
    synced and sync errors (Prometheus text format)."""
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
