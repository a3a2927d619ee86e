"""Assessments (API.md §4.2): valid feedback in scope, summarised by its type.

Rows: valid feedback, joined to their trace, which must be in scope; they are bucketed by the
trace's ``timestamp_ms``. What a judge failure, a value, a type, a pass and a failure are is
``service.queries.assessment_types``; names are matched byte-wise (``NameMatch.EXACT``). Numeric
statistics read MLflow's ``aggregate_value`` (the number as a double).
``assessments.experiment_id`` (MLflow's denormalised copy of the trace's) lets the database use
MLflow's index on (experiment, name).

String values are shown as text: a JSON string's content, any other JSON as written; they are
compared, counted and ordered by their code points, the same way on every database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlTraceInfo
from sqlalchemy import and_, case, func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Select

from service.dialects import P50, P90, P99, exact_text, json_text_value
from service.errors import does_not_exist
from service.models.assessments import (
    AssessmentInfo,
    AssessmentsDiscoveryResponse,
    BooleanMetrics,
    BooleanPoint,
    BooleanSummary,
    NumericMetrics,
    NumericPoint,
    NumericSummary,
    StringMetrics,
    StringPoint,
    StringSummary,
)
from service.models.tags import ValueCount
from service.queries.assessment_types import (
    NameMatch,
    counts_as_value,
    feedback_types,
    is_false,
    is_feedback,
    is_judge_failure,
    is_numeric,
)
from service.queries.exact_sums import ExactSum, read_sum, sum_columns
from service.queries.stats import Distribution, distributions, empty_distribution, rate
from service.scope import SeriesFrame, TraceScope

VALUE_QUANTILES = (P50, P90, P99)
# Feedback names are compared, grouped and ordered by code points, like tag keys and tool names.
NAMES = NameMatch.EXACT

# An alias, so that filter_string subqueries over ``assessments`` never correlate with it.
_fb = aliased(SqlAssessments, name="feedback")


def _count_if(condition: ColumnElement[bool], label: str) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0)).label(label)


def _feedback_in_scope(scope: TraceScope, *columns: Any) -> Select[Any]:
    """``SELECT columns`` over the valid feedback rows whose trace is in scope."""
    return (
        scope.traces(*columns)
        .join(_fb, _fb.trace_id == SqlTraceInfo.request_id)
        .where(_fb.experiment_id.in_(scope.experiment_ids), *is_feedback(_fb))
    )


# -- discovery -------------------------------------------------------------------------------


async def discovery(session: AsyncSession, scope: TraceScope) -> AssessmentsDiscoveryResponse:
    """Every feedback name with valid rows in scope.

    Round trips: 3 (counts per name; distinct sources per name; the type of each name).
    """
    name_col = NAMES.key(_fb.name).label("assessment_name")
    counts = _feedback_in_scope(
        scope,
        name_col,
        func.count().label("assessment_count"),
        _count_if(is_judge_failure(_fb), "error_count"),
        func.count(func.distinct(_fb.trace_id)).label("trace_count"),
    ).group_by(name_col)
    rows = (await session.execute(counts)).all()
    if not rows:
        return AssessmentsDiscoveryResponse(data=[])

    source_col = exact_text(_fb.source_type).label("source_type")
    sources: dict[str, set[str]] = {}
    for row in await session.execute(_feedback_in_scope(scope, name_col, source_col).distinct()):
        sources.setdefault(row.assessment_name, set()).add(row.source_type)
    types = await feedback_types(session, scope.experiment_ids, match=NAMES)

    data = [
        AssessmentInfo(
            assessment_name=row.assessment_name,
            assessment_type=types.get(row.assessment_name, "string"),
            sources=sorted(sources.get(row.assessment_name, ())),
            trace_count=int(row.trace_count),
            assessment_count=int(row.assessment_count),
            error_count=int(row.error_count),
        )
        for row in rows
    ]
    data.sort(key=lambda info: (-info.trace_count, info.assessment_name))
    return AssessmentsDiscoveryResponse(data=data)


# -- metrics ---------------------------------------------------------------------------------


@dataclass
class BucketCounts:
    value_count: int = 0
    error_count: int = 0
    failure_count: int = 0
    value_sum: ExactSum = field(default_factory=ExactSum)

    def add(self, other: BucketCounts) -> None:
        self.value_count += other.value_count
        self.error_count += other.error_count
        self.failure_count += other.failure_count
        self.value_sum = self.value_sum + other.value_sum


async def _counts_by_bucket(
    session: AsyncSession, frame: SeriesFrame, name: str, *, with_sum: bool
) -> tuple[dict[int, BucketCounts], list[str]]:
    """Counts (and the exact sum of numeric values) per bucket, and the sources seen."""
    bucket = frame.bucket_key(SqlTraceInfo.timestamp_ms).label("bucket")
    source = exact_text(_fb.source_type).label("source_type")
    sums = sum_columns(_fb.aggregate_value, "value_sum") if with_sum else []
    stmt = (
        _feedback_in_scope(
            frame.scope,
            bucket,
            source,
            _count_if(counts_as_value(_fb), "value_count"),
            _count_if(is_judge_failure(_fb), "error_count"),
            _count_if(and_(counts_as_value(_fb), is_false(_fb)), "failure_count"),
            *sums,
        )
        .where(NAMES.equals(_fb.name, name))
        .group_by(bucket, source)
    )
    by_bucket: dict[int, BucketCounts] = {}
    sources: set[str] = set()
    for row in (await session.execute(stmt)).mappings():
        sources.add(row["source_type"])
        by_bucket.setdefault(row["bucket"], BucketCounts()).add(
            BucketCounts(
                int(row["value_count"]),
                int(row["error_count"]),
                int(row["failure_count"]),
                read_sum(row, "value_sum") if with_sum else ExactSum(),
            )
        )
    return by_bucket, sorted(sources)


def _total(by_bucket: dict[int, BucketCounts]) -> BucketCounts:
    # Every row falls in the one bucket of its trace: bucket sums are exact.
    total = BucketCounts()
    for counts in by_bucket.values():
        total.add(counts)
    return total


async def metrics(
    session: AsyncSession, frame: SeriesFrame, name: str, *, limit: int
) -> BooleanMetrics | NumericMetrics | StringMetrics:
    """Type-aware metrics of one feedback name.

    Round trips: 1 (the name's type, which also tells whether it exists), then, unless the
    frame is empty, 1 (counts per bucket and source) plus, by type: boolean 0; numeric 3
    (overall distribution, distribution per bucket, count below p50); string 2 (top values
    with the number of distinct values, top-value counts per bucket).
    """
    assessment_type = (
        await feedback_types(session, frame.scope.experiment_ids, [name], match=NAMES)
    ).get(name)
    if assessment_type is None:
        ids = ", ".join(str(i) for i in frame.scope.experiment_ids)
        raise does_not_exist(
            f"No feedback named {name!r} in experiment(s) {ids}; assessments/discovery lists "
            "the feedback names (expectations are not analysed)",
            assessment_name=name,
        )
    by_bucket: dict[int, BucketCounts] = {}
    sources: list[str] = []
    if frame.keys:
        by_bucket, sources = await _counts_by_bucket(
            session, frame, name, with_sum=assessment_type == "numeric"
        )
    if assessment_type == "boolean":
        return _boolean(frame, name, sources, by_bucket)
    if assessment_type == "numeric":
        return await _numeric(session, frame, name, sources, by_bucket)
    return await _string(session, frame, name, sources, by_bucket, limit)


def _boolean(
    frame: SeriesFrame, name: str, sources: list[str], by_bucket: dict[int, BucketCounts]
) -> BooleanMetrics:
    total = _total(by_bucket)

    def point(start: int, counts: BucketCounts | None) -> BooleanPoint:
        c = counts or BucketCounts()
        return BooleanPoint(
            time_bucket=start,
            total_count=c.value_count,
            failure_count=c.failure_count,
            failure_rate=rate(c.failure_count, c.value_count),
        )

    return BooleanMetrics(
        assessment_name=name,
        assessment_type="boolean",
        sources=sources,
        summary=BooleanSummary(
            total_count=total.value_count,
            pass_count=total.value_count - total.failure_count,
            failure_count=total.failure_count,
            failure_rate=rate(total.failure_count, total.value_count),
            error_count=total.error_count,
        ),
        time_series=frame.fill(by_bucket, point),
    )


async def _numeric(
    session: AsyncSession,
    frame: SeriesFrame,
    name: str,
    sources: list[str],
    by_bucket: dict[int, BucketCounts],
) -> NumericMetrics:
    total = _total(by_bucket)
    overall = empty_distribution(VALUE_QUANTILES)
    dists: dict[int, Distribution] = {}
    below_p50 = 0
    if by_bucket:
        value: ColumnElement[Any] = _fb.aggregate_value

        def values(*columns: Any) -> Select[Any]:
            return _feedback_in_scope(frame.scope, *columns).where(
                NAMES.equals(_fb.name, name), counts_as_value(_fb), is_numeric(_fb)
            )

        overall = (
            await distributions(
                session, values(value.label("v")).subquery(), quantiles=VALUE_QUANTILES
            )
        )[()]
        bucket = frame.bucket_key(SqlTraceInfo.timestamp_ms).label("bucket")
        grouped = await distributions(
            session,
            values(bucket, value.label("v")).subquery(),
            keys=["bucket"],
            quantiles=VALUE_QUANTILES,
        )
        dists = {key[0]: dist for key, dist in grouped.items()}
        p50 = overall.p("p50")
        if p50 is not None:
            below_p50 = int(
                (await session.execute(values(func.count()).where(value < p50))).scalar() or 0
            )

    def point(start: int, pair: tuple[BucketCounts, Distribution] | None) -> NumericPoint:
        c, d = pair or (BucketCounts(), empty_distribution(VALUE_QUANTILES))
        return NumericPoint(
            time_bucket=start,
            count=c.value_count,
            avg_value=c.value_sum.mean(c.value_count),
            p50_value=d.p("p50"),
            p90_value=d.p("p90"),
            p99_value=d.p("p99"),
        )

    empty = empty_distribution(VALUE_QUANTILES)
    per_bucket = {key: (counts, dists.get(key, empty)) for key, counts in by_bucket.items()}
    return NumericMetrics(
        assessment_name=name,
        assessment_type="numeric",
        sources=sources,
        summary=NumericSummary(
            total_count=total.value_count,
            avg_value=total.value_sum.mean(total.value_count),
            p50_value=overall.p("p50"),
            p90_value=overall.p("p90"),
            p99_value=overall.p("p99"),
            min_value=overall.minimum,
            max_value=overall.maximum,
            below_p50_count=below_p50,
            error_count=total.error_count,
        ),
        time_series=frame.fill(per_bucket, point),
    )


async def _string(
    session: AsyncSession,
    frame: SeriesFrame,
    name: str,
    sources: list[str],
    by_bucket: dict[int, BucketCounts],
    limit: int,
) -> StringMetrics:
    total = _total(by_bucket)
    top: list[tuple[str, int]] = []
    unique_values = 0
    top_by_bucket: dict[int, dict[str, int]] = {}
    if total.value_count:
        display = exact_text(json_text_value(_fb.value)).label("display_value")
        n = func.count()
        stmt = (
            _feedback_in_scope(frame.scope, display, n.label("n"), func.count().over().label("u"))
            .where(NAMES.equals(_fb.name, name), counts_as_value(_fb))
            .group_by(display)
            .order_by(n.desc(), display)
            .limit(limit)
        )
        rows = (await session.execute(stmt)).all()
        top = [(row.display_value, int(row.n)) for row in rows]
        unique_values = int(rows[0].u) if rows else 0
        bucket = frame.bucket_key(SqlTraceInfo.timestamp_ms).label("bucket")
        per_bucket = (
            _feedback_in_scope(frame.scope, bucket, display, func.count().label("n"))
            .where(
                NAMES.equals(_fb.name, name),
                counts_as_value(_fb),
                exact_text(json_text_value(_fb.value)).in_([value for value, _ in top]),
            )
            .group_by(bucket, display)
        )
        for row in await session.execute(per_bucket):
            top_by_bucket.setdefault(row.bucket, {})[row.display_value] = int(row.n)

    def point(start: int, pair: tuple[BucketCounts, dict[str, int]] | None) -> StringPoint:
        c, seen = pair or (BucketCounts(), {})
        return StringPoint(
            time_bucket=start,
            total_count=c.value_count,
            counts={value: seen.get(value, 0) for value, _ in top},
        )

    pairs = {key: (counts, top_by_bucket.get(key, {})) for key, counts in by_bucket.items()}
    return StringMetrics(
        assessment_name=name,
        assessment_type="string",
        sources=sources,
        summary=StringSummary(
            total_count=total.value_count,
            unique_values=unique_values,
            top_values=[
                ValueCount(
                    value=value, count=count, percentage=rate(count, total.value_count) or 0.0
                )
                for value, count in top
            ],
            other_count=total.value_count - sum(count for _, count in top),
            error_count=total.error_count,
        ),
        time_series=frame.fill(pairs, point),
    )
