"""Routes for API.md §4.1 token usage and cost, under the same ``/traffic-cost`` prefix as
the traffic routes (``service.api.traffic``)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api import previous_window
from service.api.deps import AppSettings, Session
from service.models.common import ComparableSeriesRequest
from service.models.cost import CostResponse, TokensResponse
from service.queries import cost as cost_queries
from service.queries import tokens as token_queries

router = APIRouter(prefix="/traffic-cost", tags=["Traffic and cost"])


@router.post("/tokens", summary="Token usage")
async def tokens(
    body: ComparableSeriesRequest, session: Session, settings: AppSettings
) -> TokensResponse:
    """Sums of the token columns MLflow writes on each trace (input, output, total, cache read
    and cache creation), per time bucket, with the mean and exact p50/p90/p99 of total tokens
    per trace. Only traces that report token usage count."""
    return await previous_window.answer(
        session, body, token_queries.tokens, max_buckets=settings.max_buckets
    )


@router.post("/cost", summary="Cost in USD")
async def cost(
    body: ComparableSeriesRequest, session: Session, settings: AppSettings
) -> CostResponse:
    """Total, input and output cost in USD of the traces in scope, per time bucket, and the
    cost of the spans that carry one, per model (most expensive first). Sums are exact: every
    database gives the same digits."""
    return await previous_window.answer(
        session, body, cost_queries.cost, max_buckets=settings.max_buckets
    )
