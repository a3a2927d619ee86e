"""Operational endpoints (API.md §5): liveness and readiness."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from service.api.deps import get_database
from service.db import Database

router = APIRouter(tags=["Operations"])


class HealthResponse(BaseModel):
    status: str


@router.get("/health", summary="Liveness")
async def health() -> HealthResponse:
    """200 while the process runs."""
    return HealthResponse(status="ok")


@router.get(
    "/ready",
    summary="Readiness",
    responses={503: {"description": "The database is unreachable or its schema is unsupported"}},
)
async def ready(database: Annotated[Database, Depends(get_database)]) -> JSONResponse:
    """200 when the database answers and its MLflow schema revision is supported."""
    try:
        await database.ping()
        status = await database.check_schema()
    except (DBAPIError, OSError) as exc:
        reason = f"The tracking database cannot be reached: {type(exc).__name__}"
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    if not status.ok:
        return JSONResponse({"status": "unsupported_schema", "reason": status.reason}, 503)
    return JSONResponse({"status": "ready", "reason": status.reason})
