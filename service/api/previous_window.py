"""Answer a summary-bearing endpoint, and with ``compare_previous`` the previous window's summary
beside it (API.md §9): the same query over the window of the same length that ends where the
request's starts, so it equals a second request made with that window."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from service.models.common import ComparableSeriesRequest, WithPreviousSummary
from service.scope import SeriesFrame, resolve_series

R = TypeVar("R", bound=WithPreviousSummary)


async def answer(
    session: AsyncSession,
    body: ComparableSeriesRequest,
    query: Callable[[AsyncSession, SeriesFrame], Awaitable[R]],
    *,
    max_buckets: int,
) -> R:
    result = await query(session, await resolve_series(session, body, max_buckets=max_buckets))
    if not body.compare_previous:
        return result
    frame = await resolve_series(session, body.previous(), max_buckets=max_buckets)
    previous = await query(session, replace(frame, summary_only=True))
    return result.model_copy(update={"previous_summary": getattr(previous, "summary")})  # noqa: B009
