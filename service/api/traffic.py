"""Routes for API.md §4.1 traffic: volume, latency, errors."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import AppSettings, Session
from service.models.common import SeriesRequest
from service.models.traffic import ErrorsResponse, LatencyResponse, VolumeResponse
from service.queries import traffic
from service.scope import resolve_series

router = APIRouter(prefix="/traffic-cost", tags=["Traffic and cost"])


@router.post("/volume", summary="Trace counts by status")
async def volume(body: SeriesRequest, session: Session, settings: AppSettings) -> VolumeResponse:
    """How many traces are in scope, how many ended OK and how many in ERROR, per time bucket."""
    frame = await resolve_series(session, body, max_buckets=settings.max_buckets)
    return await traffic.volume(session, frame)


@router.post("/latency", summary="Trace latency percentiles")
async def latency(body: SeriesRequest, session: Session, settings: AppSettings) -> LatencyResponse:
    """Exact p50/p90/p95/p99, average, min and max of finished traces' execution time (ms)."""
    frame = await resolve_series(session, body, max_buckets=settings.max_buckets)
    return await traffic.latency(session, frame)


@router.post("/errors", summary="Trace error rate")
async def errors(body: SeriesRequest, session: Session, settings: AppSettings) -> ErrorsResponse:
    """Share of traces in scope whose status is ERROR, in percent, per time bucket."""
    frame = await resolve_series(session, body, max_buckets=settings.max_buckets)
    return await traffic.errors(session, frame)
