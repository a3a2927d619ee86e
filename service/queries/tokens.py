"""Token usage (API.md §4.1 ``traffic-cost/tokens``), from the token columns MLflow 3.17+
writes on ``trace_info`` (``input_tokens``, ``output_tokens``, ``total_tokens``, ...).

A trace *reports usage* when any of its token columns is set: exactly when MLflow shows a
``mlflow.trace.tokenUsage`` entry in its metadata. Token sums are integers, exact on every
database; an empty sum is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlTraceInfo
from sqlalchemy import func, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from service.dialects import P50, P90, P99
from service.models.cost import TokensPoint, TokensResponse, TokensSummary
from service.queries.stats import distributions, empty_distribution
from service.scope import SeriesFrame

TOKEN_QUANTILES = (P50, P90, P99)

# Summed per trace; the order is the order of ``TokenSums`` below.
_SUMMED: tuple[ColumnElement[Any], ...] = (
    SqlTraceInfo.input_tokens,
    SqlTraceInfo.output_tokens,
    SqlTraceInfo.total_tokens,
    SqlTraceInfo.cache_read_input_tokens,
    SqlTraceInfo.cache_creation_input_tokens,
)
_USAGE_COLUMNS: tuple[ColumnElement[Any], ...] = (
    *_SUMMED,
    SqlTraceInfo.cache_creation_input_tokens_above_1hr,
)


def reports_usage() -> ColumnElement[bool]:
    """The trace has at least one token column set."""
    return or_(*(column.is_not(None) for column in _USAGE_COLUMNS))


@dataclass(frozen=True)
class TokenSums:
    trace_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    def __add__(self, other: TokenSums) -> TokenSums:
        return TokenSums(
            self.trace_count + other.trace_count,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )


async def _sums_by_bucket(session: AsyncSession, frame: SeriesFrame) -> dict[int, TokenSums]:
    bucket = frame.bucket_key(SqlTraceInfo.timestamp_ms).label("bucket")
    stmt = (
        frame.scope.traces(
            bucket,
            func.count().label("trace_count"),
            *[func.sum(column).label(column.key) for column in _SUMMED],
        )
        .where(reports_usage())
        .group_by(bucket)
    )
    return {
        row.bucket: TokenSums(int(row.trace_count), *(int(row[i + 2] or 0) for i in range(5)))
        for row in await session.execute(stmt)
    }


async def tokens(session: AsyncSession, frame: SeriesFrame) -> TokensResponse:
    """Token sums per bucket and overall, and the distribution of total tokens per trace.

    Round trips: 2 (sums per bucket, one row per bucket; the total-token distribution), none
    when the frame is empty (no trace in scope).
    """
    by_bucket: dict[int, TokenSums] = {}
    dist = empty_distribution(TOKEN_QUANTILES)
    if frame.keys:
        by_bucket = await _sums_by_bucket(session, frame)
        total_tokens: ColumnElement[Any] = SqlTraceInfo.total_tokens
        source = frame.scope.traces(total_tokens.label("v")).where(total_tokens.is_not(None))
        dist = (await distributions(session, source.subquery(), quantiles=TOKEN_QUANTILES))[()]
    # Every trace in scope falls in exactly one bucket of the frame: bucket sums are exact.
    total = sum(by_bucket.values(), TokenSums())

    def point(start: int, sums: TokenSums | None) -> TokensPoint:
        s = sums or TokenSums()
        return TokensPoint(
            time_bucket=start,
            trace_count=s.trace_count,
            input_tokens=s.input_tokens,
            output_tokens=s.output_tokens,
            total_tokens=s.total_tokens,
        )

    return TokensResponse(
        summary=TokensSummary(
            trace_count=total.trace_count,
            input_tokens=total.input_tokens,
            output_tokens=total.output_tokens,
            total_tokens=total.total_tokens,
            cache_read_input_tokens=total.cache_read_input_tokens,
            cache_creation_input_tokens=total.cache_creation_input_tokens,
            # An exact integer sum over the same traces the percentiles describe.
            avg_total_tokens=total.total_tokens / dist.count if dist.count else None,
            p50_total_tokens=dist.p("p50"),
            p90_total_tokens=dist.p("p90"),
            p99_total_tokens=dist.p("p99"),
        ),
        time_series=frame.fill(by_bucket, point),
    )
