"""Cost in USD (API.md §4.1 ``traffic-cost/cost``), from the cost columns MLflow 3.17+ writes
on ``trace_info`` (summary and time series) and on ``spans`` (``by_model``).

A trace *reports cost* when any of its cost columns is set (when MLflow shows a
``mlflow.trace.cost`` metadata entry); a span *carries cost* likewise. Costs are doubles: their
sums are computed exactly (``service.queries.exact_sums``), so every database gives the same
digits, the correctly rounded true sum. An empty sum is 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlSpan, SqlTraceInfo
from sqlalchemy import column, func, or_, select, table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.expression import TableClause

from service.dialects import exact_text
from service.dialects.expressions import (
    MODEL_COST_HOURS,
    TRACE_COST_HOURS,
    TRACE_EXPERIMENT_COPY,
    kept_span_sets,
)
from service.models.cost import CostPoint, CostResponse, CostSummary, ModelCost
from service.queries import hourly
from service.queries.exact_sums import ExactSum, read_sum, sum_column_names, sum_columns
from service.scope import SeriesFrame

# The cost columns of trace_info and spans, in the order of every cost row.
COST_KINDS = ("total_cost", "input_cost", "output_cost")


def carries_cost(entity: Any) -> ColumnElement[bool]:
    """A trace (``SqlTraceInfo``) or span (``SqlSpan``) with any cost column set."""
    return or_(*(getattr(entity, kind).is_not(None) for kind in COST_KINDS))


def cost_columns(entity: Any) -> list[ColumnElement[Any]]:
    """The exact sums' columns of the three cost columns (``sum_columns``), in ``COST_KINDS``
    order."""
    return [column for kind in COST_KINDS for column in sum_columns(getattr(entity, kind), kind)]


@dataclass(frozen=True)
class CostSums:
    count: int = 0
    total_cost: ExactSum = field(default_factory=ExactSum)
    input_cost: ExactSum = field(default_factory=ExactSum)
    output_cost: ExactSum = field(default_factory=ExactSum)

    @classmethod
    def read(cls, row: Mapping[Any, Any], count: int) -> CostSums:
        return cls(count, *(read_sum(row, kind) for kind in COST_KINDS))

    def __add__(self, other: CostSums) -> CostSums:
        return CostSums(
            self.count + other.count,
            self.total_cost + other.total_cost,
            self.input_cost + other.input_cost,
            self.output_cost + other.output_cost,
        )

    def usd(self) -> dict[str, float]:
        return {kind: getattr(self, kind).value for kind in COST_KINDS}


# The store's rollups (service/store/rollups.py): per (experiment, hour), and per model.
_LIMBS = [name for kind in COST_KINDS for name in sum_column_names(kind)]
_trace_cost_hours = table(
    TRACE_COST_HOURS,
    *(column(name) for name in (TRACE_EXPERIMENT_COPY, "hour_ms", "n", *_LIMBS)),
)
_model_cost_hours = table(
    MODEL_COST_HOURS,
    *(
        column(name)
        for name in (TRACE_EXPERIMENT_COPY, "hour_ms", "model_name", "model_provider", "n")
    ),
    *(column(name) for name in _LIMBS),
)


def _summed(
    rollup: TableClause, keys: Sequence[ColumnElement[Any]], frame: SeriesFrame
) -> Select[Any]:
    """The rollup's rows of the frame summed per ``keys``: the same columns as the grouping
    they stand for (exact sums' limbs add up)."""
    return (
        select(
            *keys,
            func.sum(rollup.c.n).label("n"),
            *(func.sum(rollup.c[name]).label(name) for name in _LIMBS),
        )
        .where(hourly.in_scope(rollup, frame))
        .group_by(*keys)
    )


def _kept(grouped: Select[Any], rollup: Select[Any], name: str) -> Select[Any]:
    """``grouped``'s rows; the store reads the rollup's in their place."""
    return select(kept_span_sets.of(grouped, rollup, name=name))


async def _trace_costs_by_bucket(session: AsyncSession, frame: SeriesFrame) -> dict[int, CostSums]:
    bucket = frame.bucket_key(SqlTraceInfo.timestamp_ms).label("bucket")
    stmt = (
        frame.scope.traces(bucket, func.count().label("n"), *cost_columns(SqlTraceInfo))
        .where(carries_cost(SqlTraceInfo))
        .group_by(bucket)
    )
    if hourly.usable(frame):
        rollup = _summed(_trace_cost_hours, [hourly.bucket(_trace_cost_hours, frame)], frame)
        stmt = _kept(stmt, rollup, "trace_costs")
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
        select(model_name, model_provider, func.count().label("n"), *cost_columns(span))
        .where(carries_cost(span), frame.scope.owns(span.trace_id))
        .group_by(model_name, model_provider)
    )
    if hourly.usable(frame):
        m = _model_cost_hours.c
        keys = [m.model_name.label("model_name"), m.model_provider.label("model_provider")]
        stmt = _kept(stmt, _summed(_model_cost_hours, keys, frame), "model_costs")
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
