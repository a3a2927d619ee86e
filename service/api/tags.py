"""Routes for API.md §4.4 tags: ``tags/discovery`` and ``tags/metrics``."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import Session
from service.models.tags import (
    TagMetricsRequest,
    TagMetricsResponse,
    TagsDiscoveryRequest,
    TagsDiscoveryResponse,
)
from service.queries import tags
from service.scope import resolve_scope

router = APIRouter(prefix="/tags", tags=["Tags"])


@router.post("/discovery", summary="Every tag key")
async def discovery(body: TagsDiscoveryRequest, session: Session) -> TagsDiscoveryResponse:
    """Every tag key of the traces in scope, most traces first, with its number of distinct
    values. System tags (`mlflow.*`, including `mlflow.traceName`, the trace name) only with
    `include_system_tags: true`."""
    scope = await resolve_scope(session, body)
    return await tags.discovery(session, scope, include_system=body.include_system_tags)


@router.post("/metrics", summary="Value distribution of one tag key")
async def metrics(body: TagMetricsRequest, session: Session) -> TagMetricsResponse:
    """How many traces in scope carry the key, how many distinct values it has, and its most
    frequent values (ties broken by value, ascending); `percentage` is of the traces that carry
    the key. A key no trace of the listed experiments carries is a 404; a system key needs
    `include_system_tags: true`."""
    scope = await resolve_scope(session, body)
    return await tags.metrics(
        session,
        scope,
        body.tag_key,
        include_system=body.include_system_tags,
        limit=body.limit,
    )
