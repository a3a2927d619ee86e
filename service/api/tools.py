"""Routes for API.md §4.3 tools: ``tools/discovery`` and ``tools/metrics``."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import AppSettings, Session
from service.models.tools import (
    ToolMetricsRequest,
    ToolMetricsResponse,
    ToolsDiscoveryResponse,
    ToolsRequest,
)
from service.queries import tools
from service.scope import resolve_series

router = APIRouter(prefix="/tools", tags=["Tools"])


@router.post("/discovery", summary="Every tool, with its statistics")
async def discovery(
    body: ToolsRequest, session: Session, settings: AppSettings
) -> ToolsDiscoveryResponse:
    """Every tool called in scope (a tool call is a span of type TOOL, the tool its name), most
    invocations first, each with its traces, calls, errors, exact latency percentiles (ms) and
    volume, latency and error series (the latency series empty with
    `include_latency_series: false`)."""
    frame = await resolve_series(session, body, max_buckets=settings.max_buckets)
    return await tools.discovery(session, frame, latency_series=body.include_latency_series)


@router.post("/metrics", summary="One tool, or all tools together")
async def metrics(
    body: ToolMetricsRequest, session: Session, settings: AppSettings
) -> ToolMetricsResponse:
    """The statistics and series of one tool; with no `tool_name` (or `""`), of all tool calls
    together (`tool_name: null`). A tool never called in the listed experiments is a 404; one
    called outside the window answers zero counts and null statistics."""
    frame = await resolve_series(session, body, max_buckets=settings.max_buckets)
    return await tools.metrics(
        session, frame, body.tool_name or None, latency_series=body.include_latency_series
    )
