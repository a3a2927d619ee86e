"""Routes for API.md §4.2 assessments: ``assessments/discovery`` and ``assessments/metrics``."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import AppSettings, Session
from service.models.assessments import (
    AssessmentMetricsRequest,
    AssessmentMetricsResponse,
    AssessmentsDiscoveryResponse,
)
from service.models.common import InsightsRequest
from service.queries import assessments
from service.scope import resolve_scope, resolve_series

router = APIRouter(prefix="/assessments", tags=["Assessments"])


@router.post("/discovery", summary="Every feedback name, with its type")
async def discovery(body: InsightsRequest, session: Session) -> AssessmentsDiscoveryResponse:
    """Every feedback name with valid rows in scope, most traces first: its type (boolean,
    numeric or string, from its stored values), sources, traces, rows and judge failures."""
    scope = await resolve_scope(session, body)
    return await assessments.discovery(session, scope)


@router.post(
    "/metrics",
    summary="Type-aware metrics of one feedback name",
    response_model=AssessmentMetricsResponse,
)
async def metrics(
    body: AssessmentMetricsRequest, session: Session, settings: AppSettings
) -> AssessmentMetricsResponse:
    """Pass/failure counts (boolean), exact percentiles (numeric) or the most frequent values
    (string) of one feedback name, with a time series. Judge failures count only in
    `error_count`. A name with no feedback in the listed experiments is a 404."""
    frame = await resolve_series(session, body, max_buckets=settings.max_buckets)
    return await assessments.metrics(session, frame, body.assessment_name, limit=body.limit)
