"""Assessments (API.md §4.2): valid feedback in scope, summarised by its type.

Rows: valid feedback whose trace is in scope, bucketed by the trace's ``timestamp_ms``; they are
read through MLflow's denormalised ``assessments.experiment_id`` / ``trace_timestamp_ms`` (see
``_feedback_in_scope``). What a judge failure, a value, a type, a pass and a failure are is
``service.feedback_types``; names are matched byte-wise (``NameMatch.EXACT``). Numeric
statistics read MLflow's ``aggregate_value`` (the number as a double).

String values are shown as text: a JSON string's content, any other JSON as written; they are
compared, counted and ordered by their code points, the same way on every database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlTraceInfo
from sqlalchemy import and_, case, func, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Select, Subquery

from service.dialects import P50, P90, P99, exact_text, json_text_value
from service.dialects.expressions import kept_span_sets, repeated_feedback
from service.errors import does_not_exist
from service.feedback_types import (
    NameMatch,
    counts_as_value,
    feedback_types,
    is_false,
    is_feedback,
    is_judge_failure,
    is_numeric,
)
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


def _window(ts: ColumnElement[Any], scope: TraceScope) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if scope.start_time is not None:
        conditions.append(ts >= scope.start_time)
    if scope.end_time is not None:
        conditions.append(ts < scope.end_time)
    return conditions


def _feedback_in_scope(scope: TraceScope, *where: ColumnElement[bool]) -> Subquery:
    """The valid feedback rows (of ``where``, conditions on ``_fb``) whose trace is in scope.

    Columns: ``name``, ``trace_id``, ``source_type``, ``value``, ``error``,
    ``aggregate_value``, ``is_numeric_value`` and ``ts``, the trace's ``timestamp_ms``.

    The rows are selected by MLflow's denormalised copies of their trace's experiment and
    timestamp, ``assessments.experiment_id`` and ``trace_timestamp_ms``, so that MLflow's index
    ``(experiment_id, trace_timestamp_ms, name)`` reads the window's rows only (what MLflow's
    own ``query_trace_metrics`` does): MLflow writes both columns from the trace with every
    assessment, updates ``trace_timestamp_ms`` when the trace's ``timestamp_ms`` moves
    (``log_spans``) and its migration ``75868b020152`` backfilled and validated them. Without a
    ``filter_string`` the trace is not read at all. The columns are nullable, though: a row
    without ``trace_timestamp_ms`` is read with its trace's ``timestamp_ms`` instead (a second,
    index-driven branch that finds no rows in a database MLflow wrote), so the result is the
    same as joining every row to its trace. With a ``filter_string`` the rows are joined to
    their trace, which must be in scope, and bucketed by its ``timestamp_ms``.
    """
    columns = [
        _fb.name.label("name"),
        _fb.trace_id.label("trace_id"),
        _fb.source_type.label("source_type"),
        _fb.value.label("value"),
        _fb.error.label("error"),
        _fb.aggregate_value.label("aggregate_value"),
        _fb.is_numeric_value.label("is_numeric_value"),
    ]
    rows = [_fb.experiment_id.in_(scope.experiment_ids), *is_feedback(_fb), *where]
    stamp = _fb.trace_timestamp_ms
    joined = SqlTraceInfo.request_id == _fb.trace_id
    if scope.filters:
        stamped = (
            select(*columns, SqlTraceInfo.timestamp_ms.label("ts"))
            .select_from(_fb)
            .join(SqlTraceInfo, joined)
            .where(*rows, stamp.is_not(None), *_window(stamp, scope), *scope.conditions())
        )
    else:
        stamped = select(*columns, stamp.label("ts")).where(
            *rows, stamp.is_not(None), *_window(stamp, scope)
        )
    unstamped = (
        select(*columns, SqlTraceInfo.timestamp_ms.label("ts"))
        .select_from(_fb)
        .join(SqlTraceInfo, joined)
        .where(*rows, stamp.is_(None), *scope.conditions(), scope.window_of(_fb.trace_id))
    )
    return union_all(stamped, unstamped).subquery("feedback_rows")


# -- discovery -------------------------------------------------------------------------------


async def discovery(session: AsyncSession, scope: TraceScope) -> AssessmentsDiscoveryResponse:
    """Every feedback name with valid rows in scope.

    Round trips: 3 (counts per name; distinct sources per name; the type of each name).
    """
    rows_in_scope = _feedback_in_scope(scope)
    r = rows_in_scope.c
    name = NAMES.key(r.name).label("assessment_name")
    grouped = select(
        name,
        func.count().label("assessment_count"),
        _count_if(is_judge_failure(r), "error_count"),
        # Byte-wise: the same traces, and PostgreSQL sorts them without its locale.
        func.count(func.distinct(exact_text(r.trace_id))).label("trace_count"),
    ).group_by(name)
    counts = kept_span_sets.of(grouped, _name_counts_kept(rows_in_scope), name="name_counts")
    rows = (await session.execute(select(counts))).all()
    if not rows:
        return AssessmentsDiscoveryResponse(data=[])

    r = _feedback_in_scope(scope).c
    name = NAMES.key(r.name).label("assessment_name")
    source = exact_text(r.source_type).label("source_type")
    sources: dict[str, set[str]] = {}
    for row in await session.execute(select(name, source).distinct()):
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


def _name_counts_kept(rows_in_scope: Subquery) -> Select[Any]:
    """The store's counts per name: the distinct traces only among the rows of the (trace,
    name) pairs in its ``repeated_feedback``; every other row is its pair's only valid feedback,
    so it is one trace of its own (30 days of a million traces: 130 → 24 ms; the distinct count
    was nearly all of it)."""
    r, pairs = rows_in_scope.c, repeated_feedback.c
    on = and_(pairs.trace_id == r.trace_id, pairs.name == r.name)
    flagged = (
        select(r.name, r.trace_id, r.error, pairs.trace_id.is_not(None).label("repeated"))
        .select_from(rows_in_scope.outerjoin(repeated_feedback, on))
        .subquery("flagged_feedback")
    )
    f = flagged.c
    name = NAMES.key(f.name).label("assessment_name")

    def part(repeated: bool, traces: ColumnElement[Any]) -> Select[Any]:
        return (
            select(
                name,
                func.count().label("assessment_count"),
                _count_if(is_judge_failure(f), "error_count"),
                traces.label("trace_count"),
            )
            .where(f.repeated.is_(repeated))
            .group_by(name)
        )

    parts = union_all(
        part(False, func.count()), part(True, func.count(func.distinct(f.trace_id)))
    ).subquery("name_count_parts")
    p = parts.c
    return select(
        p.assessment_name,
        func.sum(p.assessment_count).label("assessment_count"),
        func.sum(p.error_count).label("error_count"),
        func.sum(p.trace_count).label("trace_count"),
    ).group_by(p.assessment_name)


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
    session: AsyncSession,
    frame: SeriesFrame,
    name: str,
    *,
    with_sum: bool,
    below: float | None = None,
) -> tuple[dict[int, BucketCounts], list[str], int]:
    """Counts (and the exact sum of numeric values) per bucket, the sources seen, and the
    number of numeric values below ``below`` (0 when None)."""
    r = _feedback_in_scope(frame.scope, NAMES.equals(_fb.name, name)).c
    bucket = frame.bucket_key(r.ts).label("bucket")
    source = exact_text(r.source_type).label("source_type")
    sums = sum_columns(r.aggregate_value, "value_sum") if with_sum else []
    extra = []
    if below is not None:
        numeric_value = and_(counts_as_value(r), is_numeric(r))
        extra = [_count_if(and_(numeric_value, r.aggregate_value < below), "below")]
    stmt = select(
        bucket,
        source,
        _count_if(counts_as_value(r), "value_count"),
        _count_if(is_judge_failure(r), "error_count"),
        _count_if(and_(counts_as_value(r), is_false(r)), "failure_count"),
        *sums,
        *extra,
    ).group_by(bucket, source)
    by_bucket: dict[int, BucketCounts] = {}
    sources: set[str] = set()
    below_count = 0
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
        if below is not None:
            below_count += int(row["below"] or 0)
    return by_bucket, sorted(sources), below_count


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
    frame is empty, by type: boolean 1 (counts per bucket and source); numeric 2 (the value
    distribution overall and per bucket, in one statement; then counts per bucket and source
    with the count below p50); string 3 (counts per bucket and source; top values with the
    number of distinct values; top-value counts per bucket).
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
    if assessment_type == "numeric":
        return await _numeric(session, frame, name)
    by_bucket: dict[int, BucketCounts] = {}
    sources: list[str] = []
    if frame.keys:
        by_bucket, sources, _ = await _counts_by_bucket(session, frame, name, with_sum=False)
    if assessment_type == "boolean":
        return _boolean(frame, name, sources, by_bucket)
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


async def _value_distributions(
    session: AsyncSession, frame: SeriesFrame, name: str
) -> tuple[Distribution, dict[int, Distribution]]:
    """The distribution of the name's numeric values overall and per bucket, in one statement:
    the values are listed twice, once with their bucket and once under a NULL bucket (the
    overall group; no bucket key is NULL), from a CTE that reads the rows once."""
    r = _feedback_in_scope(frame.scope, NAMES.equals(_fb.name, name)).c
    values = (
        select(frame.bucket_key(r.ts).label("bucket"), r.aggregate_value.label("v"))
        .where(counts_as_value(r), is_numeric(r))
        .cte("feedback_values")
    )
    overall_and_buckets = union_all(
        select(values.c.bucket, values.c.v),
        select(null().label("bucket"), values.c.v),
    ).subquery("grouped_values")
    grouped = await distributions(
        session, overall_and_buckets, keys=["bucket"], quantiles=VALUE_QUANTILES
    )
    overall = grouped.pop((None,), empty_distribution(VALUE_QUANTILES))
    return overall, {key[0]: dist for key, dist in grouped.items()}


async def _numeric(session: AsyncSession, frame: SeriesFrame, name: str) -> NumericMetrics:
    overall = empty_distribution(VALUE_QUANTILES)
    dists: dict[int, Distribution] = {}
    by_bucket: dict[int, BucketCounts] = {}
    sources: list[str] = []
    below_p50 = 0
    if frame.keys:
        overall, dists = await _value_distributions(session, frame, name)
        by_bucket, sources, below_p50 = await _counts_by_bucket(
            session, frame, name, with_sum=True, below=overall.p("p50")
        )
    total = _total(by_bucket)

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
        r = _feedback_in_scope(frame.scope, NAMES.equals(_fb.name, name)).c
        display = exact_text(json_text_value(r.value)).label("display_value")
        n = func.count()
        stmt = (
            select(display, n.label("n"), func.count().over().label("u"))
            .where(counts_as_value(r))
            .group_by(display)
            .order_by(n.desc(), display)
            .limit(limit)
        )
        rows = (await session.execute(stmt)).all()
        top = [(row.display_value, int(row.n)) for row in rows]
        unique_values = int(rows[0].u) if rows else 0
        r = _feedback_in_scope(frame.scope, NAMES.equals(_fb.name, name)).c
        display = exact_text(json_text_value(r.value)).label("display_value")
        bucket = frame.bucket_key(r.ts).label("bucket")
        per_bucket = (
            select(bucket, display, func.count().label("n"))
            .where(
                counts_as_value(r),
                exact_text(json_text_value(r.value)).in_([value for value, _ in top]),
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
