"""Traffic: how many traces, how slow, how many errors (API.md §4.1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlTraceInfo
from sqlalchemy import case, func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from service.models.traffic import (
    ErrorCounts,
    ErrorsPoint,
    ErrorsResponse,
    LatencyPoint,
    LatencyResponse,
    LatencySummary,
    VolumeCounts,
    VolumePoint,
    VolumeResponse,
)
from service.queries.stats import (
    Distribution,
    distributions,
    distributions_by_level,
    empty_distribution,
    rate,
)
from service.scope import SeriesFrame
from service.traces import TRACE_ERROR, TRACE_OK


@dataclass(frozen=True)
class StatusCounts:
    count: int = 0
    ok_count: int = 0
    error_count: int = 0


async def _status_counts_by_bucket(
    session: AsyncSession, frame: SeriesFrame
) -> dict[int, StatusCounts]:
    if not frame.keys:
        return {}
    bucket = frame.bucket_key(SqlTraceInfo.timestamp_ms).label("bucket")
    stmt = frame.scope.traces(
        bucket,
        func.count().label("count"),
        func.sum(case((SqlTraceInfo.status == TRACE_OK, 1), else_=0)).label("ok_count"),
        func.sum(case((SqlTraceInfo.status == TRACE_ERROR, 1), else_=0)).label("error_count"),
    ).group_by(bucket)
    return {
        row.bucket: StatusCounts(int(row.count), int(row.ok_count), int(row.error_count))
        for row in await session.execute(stmt)
    }


def _total(counts: dict[int, StatusCounts]) -> StatusCounts:
    # Every trace in scope falls in exactly one bucket of the frame, so bucket sums are exact.
    return StatusCounts(
        sum(c.count for c in counts.values()),
        sum(c.ok_count for c in counts.values()),
        sum(c.error_count for c in counts.values()),
    )


async def volume(session: AsyncSession, frame: SeriesFrame) -> VolumeResponse:
    by_bucket = await _status_counts_by_bucket(session, frame)
    total = _total(by_bucket)

    def point(start: int, counts: StatusCounts | None) -> VolumePoint:
        c = counts or StatusCounts()
        return VolumePoint(
            time_bucket=start, count=c.count, ok_count=c.ok_count, error_count=c.error_count
        )

    return VolumeResponse(
        summary=VolumeCounts(
            count=total.count, ok_count=total.ok_count, error_count=total.error_count
        ),
        time_series=frame.fill(by_bucket, point),
    )


async def errors(session: AsyncSession, frame: SeriesFrame) -> ErrorsResponse:
    by_bucket = await _status_counts_by_bucket(session, frame)
    total = _total(by_bucket)

    def point(start: int, counts: StatusCounts | None) -> ErrorsPoint:
        c = counts or StatusCounts()
        return ErrorsPoint(
            time_bucket=start,
            total_count=c.count,
            error_count=c.error_count,
            error_rate=rate(c.error_count, c.count),
        )

    return ErrorsResponse(
        summary=ErrorCounts(
            total_count=total.count,
            error_count=total.error_count,
            error_rate=rate(total.error_count, total.count),
        ),
        time_series=frame.fill(by_bucket, point),
    )


async def latency(session: AsyncSession, frame: SeriesFrame) -> LatencyResponse:
    scope = frame.scope
    latency_ms: ColumnElement[Any] = SqlTraceInfo.execution_time_ms
    by_bucket: dict[int, Distribution] = {}
    if frame.keys and not frame.summary_only:
        # The summary and each bucket's distribution from one read of the traces, where the
        # database can group at both levels at once.
        bucket = frame.bucket_key(SqlTraceInfo.timestamp_ms).label("bucket")
        source = scope.traces(bucket, latency_ms.label("v")).where(latency_ms.is_not(None))
        # A day or a week holds many traces: few large groups.
        large = frame.buckets is not None and frame.buckets.size != "hour"
        grouped, overall = await distributions_by_level(
            session, source.subquery(), levels=[["bucket"], []], large_groups=large
        )
        by_bucket = {key[0]: dist for key, dist in grouped.items()}
    else:
        source = scope.traces(latency_ms.label("v")).where(latency_ms.is_not(None))
        overall = await distributions(session, source.subquery())

    def point(start: int, dist: Distribution | None) -> LatencyPoint:
        d = dist or empty_distribution()
        return LatencyPoint(time_bucket=start, count=d.count, avg_latency=d.avg, **_percentiles(d))

    summary = overall[()]
    return LatencyResponse(
        summary=LatencySummary(
            count=summary.count,
            avg_latency=summary.avg,
            min_latency=summary.minimum,
            max_latency=summary.maximum,
            **_percentiles(summary),
        ),
        time_series=frame.fill(by_bucket, point),
    )


def _percentiles(dist: Distribution) -> dict[str, float | None]:
    return {f"{name}_latency": value for name, value in dist.percentiles.items()}
