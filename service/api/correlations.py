"""Route for API.md §4.6: correlations."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import Session
from service.models.correlations import CorrelationsRequest, CorrelationsResponse
from service.queries import correlations as queries
from service.scope import resolve_scope

router = APIRouter(tags=["Correlations"])


@router.post("/correlations", summary="What goes with a slice of the traces")
async def correlations(body: CorrelationsRequest, session: Session) -> CorrelationsResponse:
    """Explain a slice of the traces (filter_string, e.g. `status = 'ERROR'`): every status,
    span type, tool used, failing tool, tag value and feedback value in scope is scored by
    NPMI against "in the slice", and the most positively correlated come first, with their
    support. Values the slice itself pins (its `=` clauses) are left out; values seen in fewer
    than min_count slice traces too. The window and experiments set the traces compared."""
    return await queries.correlations(
        session,
        await resolve_scope(session, body),
        kinds=body.correlation_dimensions,
        limit=body.limit,
        min_count=body.min_count,
        include_system_tags=body.include_system_tags,
    )
