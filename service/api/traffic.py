"""Routes for API.md §4.1 traffic: volume, latency, errors."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import previous_window
from service.api.deps import AppSettings, Session
from service.models.common import ComparableSeriesRequest
from service.models.traffic import ErrorsResponse, LatencyResponse, VolumeResponse
from service.queries import traffic

router = APIRouter(prefix="/traffic-cost", tags=["Traffic and cost"])


@router.post("/volume", summary="Trace counts by status")
async def volume(
    body: ComparableSeriesRequest, session: Session, settings: AppSettings
) -> VolumeResponse:
    """How many traces are in scope, how many ended OK and how many in ERROR, per time bucket."""
    return await previous_window.answer(
        session, body, traffic.volume, max_buckets=settings.max_buckets
    )


@router.post("/latency", summary="Trace latency percentiles")
async def latency(
    body: ComparableSeriesRequest, session: Session, settings: AppSettings
) -> LatencyResponse:
    """Exact p50/p90/p95/p99, average, min and max of finished traces' execution time (ms)."""
    return await previous_window.answer(
        session, body, traffic.latency, max_buckets=settings.max_buckets
    )


@router.post("/errors", summary="Trace error rate")
async def errors(
    body: ComparableSeriesRequest, session: Session, settings: AppSettings
) -> ErrorsResponse:
    """Share of traces in scope whose status is ERROR, in percent, per time bucket."""
    return await previous_window.answer(
        session, body, traffic.errors, max_buckets=settings.max_buckets
    )
