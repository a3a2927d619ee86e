"""Cost in USD (API.md §4.1 ``traffic-cost/cost``), from the cost columns MLflow 3.17+ writes
on ``trace_info`` (summary and time series) and on ``spans`` (``by_model``).

A trace *reports cost* when any of its cost columns is set (when MLflow shows a
``mlflow.trace.cost`` metadata entry); a span *carries cost* likewise. Costs are doubles: their
sums are computed exactly (``service.queries.exact_sums``), so every database gives the same
digits, the correctly rounded true sum. An empty sum is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlSpan, SqlTraceInfo
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement

from service.dialects import exact_text
from service.models.cost import CostPoint, CostResponse, CostSummary, ModelCost
from service.queries.exact_sums import ExactSum, read_sum, sum_columns
from service.scope import SeriesFrame

_KINDS = ("total_cost", "input_cost", "output_cost")


def _carries_cost(entity: Any) -> ColumnElement[bool]:
    return or_(*(getattr(entity, kind).is_not(None) for kind in _KINDS))


def _cost_columns(entity: Any) -> list[ColumnElement[Any]]:
    return [column for kind in _KINDS for column in sum_columns(getattr(entity, kind), kind)]


@dataclass(frozen=True)
class CostSums:
    count: int = 0
    total_cost: ExactSum = field(default_factory=ExactSum)
    input_cost: ExactSum = field(default_factory=ExactSum)
    output_cost: ExactSum = field(default_factory=ExactSum)

    @classmethod
    def read(cls, row: Mapping[Any, Any], count: int) -> CostSums:
        return cls(count, *(read_sum(row, kind) for kind in _KINDS))

    def __add__(self, other: CostSums) -> CostSums:
        return CostSums(
            self.count + other.count,
            self.total_cost + other.total_cost,
            self.input_cost + other.input_cost,
            self.output_cost + other.output_cost,
        )

    def usd(self) -> dict[str, float]:
        return {kind: getattr(self, kind).value for kind in _KINDS}


async def _trace_costs_by_bucket(session: AsyncSession, frame: SeriesFrame) -> dict[int, CostSums]:
    bucket = frame.bucket_key(SqlTraceInfo.timestamp_ms).label("bucket")
    stmt = (
        frame.scope.traces(bucket, func.count().label("n"), *_cost_columns(SqlTraceInfo))
        .where(_carries_cost(SqlTraceInfo))
        .group_by(bucket)
    )
    return {
        row["bucket"]: CostSums.read(row, int(row["n"]))
        for row in (await session.execute(stmt)).mappings()
    }


async def _costs_by_model(session: AsyncSession, frame: SeriesFrame) -> list[ModelCost]:
    span = aliased(SqlSpan)
    model_name = exact_text(span.model_name).label("model_name")
    model_provider = exact_text(span.model_provider).label("model_provider")
    # Membership only (no column of the trace is read): the store answers it from its copies.
    # By trace only: a span's experiment is its trace's (MLflow writes it from the trace), and
    # leaving spans.experiment_id out lets PostgreSQL use MLflow's covering index
    # idx_spans_cost_trace_time_cover instead of reading the spans heap.
    stmt = (
        select(model_name, model_provider, func.count().label("n"), *_cost_columns(span))
        .where(_carries_cost(span), frame.scope.owns(span.trace_id))
        .group_by(model_name, model_provider)
    )
    models = [
        ModelCost(
            model_name=row["model_name"],
            model_provider=row["model_provider"],
            span_count=int(row["n"]),
            **CostSums.read(row, int(row["n"])).usd(),
        )
        for row in (await session.execute(stmt)).mappings()
    ]
    # Most expensive first; ties by model and provider, ascending, unknown ones last.
    return sorted(
        models,
        key=lambda m: (
            -m.total_cost,
            m.model_name is None,
            m.model_name or "",
            m.model_provider is None,
            m.model_provider or "",
        ),
    )


async def cost(session: AsyncSession, frame: SeriesFrame) -> CostResponse:
    """Trace cost per bucket and overall, and span cost per model.

    Round trips: 2 (trace cost sums per bucket, one row per bucket; span cost sums per
    model), none when the frame is empty (no trace in scope).
    """
    by_bucket: dict[int, CostSums] = {}
    by_model: list[ModelCost] = []
    if frame.keys:
        by_bucket = await _trace_costs_by_bucket(session, frame)
        if not frame.summary_only:  # the spans per model are no part of the summary
            by_model = await _costs_by_model(session, frame)
    # Every trace in scope falls in exactly one bucket; exact sums add up exactly.
    total = sum(by_bucket.values(), CostSums())

    def point(start: int, sums: CostSums | None) -> CostPoint:
        return CostPoint(time_bucket=start, **(sums or CostSums()).usd())

    return CostResponse(
        summary=CostSummary(trace_count=total.count, **total.usd()),
        time_series=frame.fill(by_bucket, point),
        by_model=by_model,
    )
