"""MLflow's own trace-metrics routes (API.md §8), at MLflow's paths: what MLflow's UI calls for
an experiment's Overview tab, answered from the same session as every insights endpoint (the
analytics store when it is on)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import Session
from service.models.trace_metrics import (
    CalculateTraceFilterCorrelationRequest,
    CalculateTraceFilterCorrelationResponse,
    QueryTraceMetricsRequest,
    QueryTraceMetricsResponse,
)
from service.queries import filter_correlation as correlation_queries
from service.queries import trace_metrics as queries

router = APIRouter(tags=["MLflow trace metrics"])


@router.post(
    "/metrics",
    summary="MLflow's QueryTraceMetrics",
    response_model_exclude_none=True,
)
async def query_trace_metrics(
    body: QueryTraceMetricsRequest, session: Session
) -> QueryTraceMetricsResponse:
    """One metric of traces, spans or assessments, aggregated (COUNT, SUM, AVG, MIN, MAX,
    PERCENTILE) per group of dimensions and UTC time buckets, exactly as MLflow 3.17's
    `POST /api/3.0/mlflow/traces/metrics` answers it. Both window ends are inclusive."""
    return await queries.query_trace_metrics(session, body)


@router.post(
    "/calculate-filter-correlation",
    summary="MLflow's CalculateTraceFilterCorrelation",
    response_model_exclude_none=True,
)
async def calculate_filter_correlation(
    body: CalculateTraceFilterCorrelationRequest, session: Session
) -> CalculateTraceFilterCorrelationResponse:
    """NPMI between two search_traces filters over the experiments' traces (within
    base_filter when given), with the four counts, as MLflow 3.17 answers it."""
    return await correlation_queries.filter_correlation(session, body)
