"""Routes of the dimensions endpoints (API.md §4.5): dimensions/discovery and calculate-npmi."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import Session
from service.models.dimensions import (
    CalculateNpmiRequest,
    CalculateNpmiResponse,
    DimensionsDiscoveryRequest,
    DimensionsDiscoveryResponse,
)
from service.queries import dimensions as queries
from service.scope import resolve_scope

router = APIRouter(prefix="/dimensions", tags=["Dimensions and NPMI"])


@router.post("/discovery", summary="Dimensions the data offers")
async def discovery(
    body: DimensionsDiscoveryRequest, session: Session
) -> DimensionsDiscoveryResponse:
    """Every yes/no property of a trace that dimensions/calculate-npmi can correlate, built
    from the data in scope: status, span.type, span.name and latency, then one dimension per
    tool (tools.<name>), tag key (tags.<key>) and feedback name (assessment.<name>, typed
    boolean, numeric or string as in assessments/discovery), each with its parameters."""
    scope = await resolve_scope(session, body)
    return await queries.discovery(session, scope, include_system_tags=body.include_system_tags)


@router.post("/calculate-npmi", summary="NPMI between two dimensions")
async def calculate_npmi(body: CalculateNpmiRequest, session: Session) -> CalculateNpmiResponse:
    """How strongly two dimensions go together over the traces in scope: their counts, the
    count of traces with both, and NPMI (-1 never together, 0 independent, 1 always together)
    as MLflow's calculate_trace_filter_correlation computes it. Each dimension comes back with
    its MLflow filter string (null where MLflow's syntax cannot say it), to open its traces in
    MLflow."""
    first = queries.prepare(body.dimension1.name, body.dimension1.parameters)
    second = queries.prepare(body.dimension2.name, body.dimension2.parameters)
    scope = await resolve_scope(session, body)
    return await queries.calculate_npmi(session, scope, first, second)
