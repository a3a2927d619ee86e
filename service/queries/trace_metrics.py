"""MLflow's ``QueryTraceMetrics`` (API.md §8): one metric of one view, aggregated per group.

What may be asked is MLflow's own configuration (``VIEW_TYPE_CONFIGS``: the metrics of each view,
their aggregations and dimensions), so the two cannot drift apart; what each means is MLflow's:

* TRACES rows are traces, SPANS rows are spans (joined to their trace), ASSESSMENTS rows are the
  valid assessments (an overridden one is not counted);
* the window is inclusive at both ends, on the trace's timestamp, except span cost metrics,
  which are windowed by the span's own start (as MLflow's cost rollups are);
* time buckets are ``time_interval_seconds`` long, aligned to the epoch in UTC, on the trace's
  timestamp, the span's start for SPANS (a span counted because its trace is in the window may
  fall in a bucket outside it), and rendered as MLflow renders them
  (``2026-12-05T00:00:00+00:00``);
* rows whose metric value or a dimension is NULL are left out; groups come ordered by time
  bucket, then the dimensions in the order asked, and at most ``max_results`` of them.

Numbers are exact where MLflow's depend on the database: sums and means of doubles (cost,
assessment values) are the correctly rounded true values, means of integers too (MySQL rounds
its AVG to 4 decimals), and percentiles interpolate linearly on every database (MySQL's
PERCENT_RANK emulation in MLflow drifts with ties). Text dimensions group and sort by code
point. docs/decisions/trace-metrics.md lists each difference.

Round trips: 1, plus 1 when a percentile is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Final

from mlflow.entities.trace_metrics import AggregationType, MetricViewType
from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlSpan, SqlTraceInfo
from mlflow.store.tracking.utils.sql_trace_metrics_utils import VIEW_TYPE_CONFIGS
from mlflow.tracing.constant import (
    AssessmentMetricDimensionKey,
    AssessmentMetricKey,
    SpanMetricDimensionKey,
    SpanMetricKey,
    TraceMetricDimensionKey,
    TraceMetricKey,
    TraceMetricSearchKey,
)
from sqlalchemy import distinct, false, func, literal, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import Subquery

from service.dialects import (
    MANY_VALUES,
    Quantile,
    child_of_traces,
    exact_text,
    int_div,
    policy_for,
)
from service.errors import invalid_parameter
from service.filters.metrics_filters import (
    TraceMetricsFilter,
    metric_filter_predicates,
    parse_metric_filters,
)
from service.models.trace_metrics import (
    INT64_MAX,
    INT64_MIN,
    MetricAggregation,
    MetricDataPoint,
    QueryTraceMetricsRequest,
    QueryTraceMetricsResponse,
)
from service.queries.exact_sums import read_sum, sum_columns
from service.scope import MAX_EXPERIMENT_ID

TIME_BUCKET: Final = "time_bucket"
_VALUE: Final = "v"
_NS_PER_MS: Final = 1_000_000
# Percentile ranks are num * (count - 1) // den in SQL: a small den keeps that a BIGINT for any
# count below 9e12 rows.
_MAX_QUANTILE_DENOMINATOR: Final = 1_000_000

# Metric value columns, per view. Latency of a span: whole milliseconds, truncated.
_TRACE_VALUES: Final[dict[str, Any]] = {
    TraceMetricKey.TRACE_COUNT: SqlTraceInfo.request_id,
    TraceMetricKey.SESSION_COUNT: SqlTraceInfo.session_id,
    TraceMetricKey.LATENCY: SqlTraceInfo.execution_time_ms,
    TraceMetricKey.INPUT_TOKENS: SqlTraceInfo.input_tokens,
    TraceMetricKey.OUTPUT_TOKENS: SqlTraceInfo.output_tokens,
    TraceMetricKey.TOTAL_TOKENS: SqlTraceInfo.total_tokens,
    TraceMetricKey.CACHE_READ_INPUT_TOKENS: SqlTraceInfo.cache_read_input_tokens,
    TraceMetricKey.CACHE_CREATION_INPUT_TOKENS: SqlTraceInfo.cache_creation_input_tokens,
}
_SPAN_COSTS: Final[dict[str, Any]] = {
    SpanMetricKey.INPUT_COST: SqlSpan.input_cost,
    SpanMetricKey.OUTPUT_COST: SqlSpan.output_cost,
    SpanMetricKey.TOTAL_COST: SqlSpan.total_cost,
}
_SPAN_VALUES: Final[dict[str, Any]] = {
    SpanMetricKey.SPAN_COUNT: SqlSpan.span_id,
    SpanMetricKey.LATENCY: int_div(SqlSpan.duration_ns, _NS_PER_MS),
    **_SPAN_COSTS,
}
_ASSESSMENT_VALUES: Final[dict[str, Any]] = {
    AssessmentMetricKey.ASSESSMENT_COUNT: SqlAssessments.assessment_id,
    AssessmentMetricKey.ASSESSMENT_VALUE: SqlAssessments.aggregate_value,
}
VALUE_COLUMNS: Final[dict[MetricViewType, dict[str, Any]]] = {
    MetricViewType.TRACES: _TRACE_VALUES,
    MetricViewType.SPANS: _SPAN_VALUES,
    MetricViewType.ASSESSMENTS: _ASSESSMENT_VALUES,
}
# Doubles: summed exactly (service.queries.exact_sums); the other values are integers.
_DOUBLE_METRICS: Final = {(MetricViewType.SPANS, str(key)) for key in _SPAN_COSTS} | {
    (MetricViewType.ASSESSMENTS, str(AssessmentMetricKey.ASSESSMENT_VALUE))
}

DIMENSION_COLUMNS: Final[dict[MetricViewType, dict[str, Any]]] = {
    MetricViewType.TRACES: {
        TraceMetricDimensionKey.TRACE_NAME: SqlTraceInfo.trace_name,
        TraceMetricDimensionKey.TRACE_STATUS: SqlTraceInfo.status,
    },
    MetricViewType.SPANS: {
        SpanMetricDimensionKey.SPAN_NAME: SqlSpan.name,
        SpanMetricDimensionKey.SPAN_TYPE: SqlSpan.type,
        SpanMetricDimensionKey.SPAN_STATUS: SqlSpan.status,
        SpanMetricDimensionKey.SPAN_MODEL_NAME: SqlSpan.model_name,
        SpanMetricDimensionKey.SPAN_MODEL_PROVIDER: SqlSpan.model_provider,
    },
    MetricViewType.ASSESSMENTS: {
        AssessmentMetricDimensionKey.ASSESSMENT_NAME: SqlAssessments.name,
        AssessmentMetricDimensionKey.ASSESSMENT_VALUE: SqlAssessments.value,
    },
}


def validate(request: QueryTraceMetricsRequest) -> None:
    """MLflow's checks, in MLflow's order and words: metric of the view, its aggregations and
    dimensions, then a window for time buckets."""
    view = request.view_type
    metrics = VIEW_TYPE_CONFIGS[view]
    if request.metric_name not in metrics:
        raise invalid_parameter(
            f"metric_name must be one of {list(metrics.keys())}, got '{request.metric_name}'"
        )
    config = metrics[request.metric_name]
    asked = {a.aggregation_type for a in request.aggregations}
    if bad_aggs := asked - config.aggregation_types:
        raise invalid_parameter(
            f"Found invalid aggregation_type(s): {sorted(a.value for a in bad_aggs)}. "
            f"Supported aggregation types: {sorted(a.value for a in config.aggregation_types)}"
        )
    if bad_dims := set(request.dimensions or []) - config.dimensions:
        raise invalid_parameter(
            f"Found invalid dimension(s): {sorted(bad_dims)}. "
            f"Supported dimensions: {sorted(config.dimensions)}"
        )
    if request.time_interval_seconds and (
        request.start_time_ms is None or request.end_time_ms is None
    ):
        raise invalid_parameter(
            "start_time_ms and end_time_ms are required if time_interval_seconds is set"
        )


def experiment_ids_of(ids: Sequence[str]) -> list[int]:
    """MLflow's parsing of experiment ids; ids no INTEGER column can hold match nothing."""
    parsed = []
    for text in ids:
        try:
            parsed.append(int(text))
        except ValueError:
            raise invalid_parameter(
                f"Invalid experiment ID '{text}'. Experiment ID must be a valid integer."
            ) from None
    return [i for i in parsed if -MAX_EXPERIMENT_ID - 1 <= i <= MAX_EXPERIMENT_ID]


def _ms_window(column: Any, start: int | None, end: int | None) -> list[ColumnElement[bool]]:
    window = []
    if start is not None:
        window.append(column >= start)
    if end is not None:
        window.append(column <= end)
    return window


def _ns_window(column: Any, start: int | None, end: int | None) -> list[ColumnElement[bool]]:
    """Every nanosecond of the inclusive millisecond window; bounds past BIGINT become constants
    (no driver binds them)."""
    window: list[ColumnElement[bool]] = []
    if start is not None:
        start_ns = start * _NS_PER_MS
        if start_ns > INT64_MAX:
            window.append(false())
        elif start_ns > INT64_MIN:
            window.append(column >= start_ns)
    if end is not None:
        end_ns = (end + 1) * _NS_PER_MS  # exclusive
        if end_ns <= INT64_MIN:
            window.append(false())
        elif end_ns <= INT64_MAX:
            window.append(column < end_ns)
    return window


def _time_bucket(view: MetricViewType, seconds: int) -> ColumnElement[Any]:
    """Start of the row's bucket, epoch ms (timestamps are not negative)."""
    bucket_ms = seconds * 1000
    if view == MetricViewType.SPANS:
        bucket_ns = bucket_ms * _NS_PER_MS
        if bucket_ns > INT64_MAX:  # every span starts in bucket 0
            return literal(0)
        return int_div(SqlSpan.start_time_unix_nano, bucket_ns) * bucket_ms
    stamp: Any = (
        SqlAssessments.trace_timestamp_ms
        if view == MetricViewType.ASSESSMENTS
        else SqlTraceInfo.timestamp_ms
    )
    return int_div(stamp, bucket_ms) * bucket_ms


@dataclass(frozen=True)
class MetricQuery:
    request: QueryTraceMetricsRequest
    experiment_ids: list[int]
    group_keys: list[str]  # labels: time_bucket first, then the dimensions asked

    @property
    def view(self) -> MetricViewType:
        return self.request.view_type

    @property
    def metric(self) -> str:
        return self.request.metric_name

    def rows(self) -> Subquery:
        """The rows in scope: their group keys and the metric value ``v`` (never NULL)."""
        request, view = self.request, self.view
        value = VALUE_COLUMNS[view][self.metric]
        columns: list[ColumnElement[Any]] = []
        conditions: list[ColumnElement[bool]] = [value.is_not(None)]
        if request.time_interval_seconds:
            columns.append(_time_bucket(view, request.time_interval_seconds).label(TIME_BUCKET))
        for name in request.dimensions or []:
            column = DIMENSION_COLUMNS[view][name]
            conditions.append(column.is_not(None))
            columns.append(exact_text(column).label(name))
        stmt: Select[Any]
        start, end = request.start_time_ms, request.end_time_ms
        clauses = parse_metric_filters(request.filters or [])
        if view == MetricViewType.ASSESSMENTS:
            stmt = select(*columns, value.label(_VALUE)).select_from(SqlAssessments)
            conditions += [
                SqlAssessments.experiment_id.in_(self.experiment_ids),
                SqlAssessments.valid == true(),
                *_ms_window(SqlAssessments.trace_timestamp_ms, start, end),
                *metric_filter_predicates(clauses, view),
            ]
        elif view == MetricViewType.SPANS:
            stmt = select(*columns, value.label(_VALUE)).select_from(SqlSpan)
            conditions += self._span_conditions(clauses)
        else:
            stmt = select(*columns, value.label(_VALUE)).select_from(SqlTraceInfo)
            conditions += [
                SqlTraceInfo.experiment_id.in_(self.experiment_ids),
                *_ms_window(SqlTraceInfo.timestamp_ms, start, end),
                *metric_filter_predicates(clauses, view),
            ]
        return stmt.where(*conditions).subquery("metric_rows")

    def _span_conditions(self, clauses: Sequence[TraceMetricsFilter]) -> list[ColumnElement[bool]]:
        """Spans of the traces in scope: the traces (experiments, window unless the metric is a
        cost, trace filters) are a subquery the spans must belong to, the span filters apply to
        the spans themselves. Costs are windowed by the span's own start, as MLflow does."""
        start, end = self.request.start_time_ms, self.request.end_time_ms
        on_trace = [c for c in clauses if c.view_type == TraceMetricSearchKey.VIEW_TYPE]
        on_span = [c for c in clauses if c.view_type != TraceMetricSearchKey.VIEW_TYPE]
        view = MetricViewType.SPANS
        traces: Select[Any] = select(SqlTraceInfo.request_id).where(
            SqlTraceInfo.experiment_id.in_(self.experiment_ids),
            *metric_filter_predicates(on_trace, view),
        )
        conditions = metric_filter_predicates(on_span, view)
        if self.metric in _SPAN_COSTS:
            conditions += _ns_window(SqlSpan.start_time_unix_nano, start, end)
            start = end = None
        else:
            traces = traces.where(*_ms_window(SqlTraceInfo.timestamp_ms, start, end))
        # The window's inclusive end, exclusive; past BIGINT it bounds nothing.
        end_exclusive = None if end is None or end >= INT64_MAX else end + 1
        belongs = child_of_traces(
            SqlSpan.trace_id,
            traces,
            experiment_ids=self.experiment_ids,
            start=start,
            end=end_exclusive,
            narrowed=bool(on_trace),
        )
        return [belongs, *conditions]

    def is_double(self) -> bool:
        return (self.view, self.metric) in _DOUBLE_METRICS


@dataclass(frozen=True)
class _MlflowQuantile(Quantile):
    """A percentile as MLflow gives it: its rows are ranked with the small exact fraction
    ``num/den`` (``33.3`` -> 333/1000: ``num * (count - 1)`` stays a BIGINT), and interpolated
    with MLflow's double ``value / 100``, as MLflow's percentile_cont and SQLite aggregate do."""

    mlflow_fraction: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "fraction", self.mlflow_fraction)


def _quantiles(aggregations: Sequence[MetricAggregation]) -> dict[str, Quantile]:
    """One quantile per distinct percentile asked for, by its value key (``P50.0``)."""
    result: dict[str, Quantile] = {}
    for agg in aggregations:
        if agg.aggregation_type == AggregationType.PERCENTILE and agg.key not in result:
            value = float(agg.percentile_value or 0.0)
            exact = (Fraction(repr(value)) / 100).limit_denominator(_MAX_QUANTILE_DENOMINATOR)
            result[agg.key] = _MlflowQuantile(
                f"q{len(result)}", exact.numerator, exact.denominator, value / 100
            )
    return result


def _group_key(row: Mapping[Any, Any], keys: Sequence[str]) -> tuple[Any, ...]:
    return tuple(int(row[k]) if k == TIME_BUCKET else row[k] for k in keys)


def render_time_bucket(bucket_ms: int) -> str:
    """As MLflow renders a bucket: ISO 8601 in UTC, with the offset."""
    try:
        return datetime.fromtimestamp(bucket_ms / 1000.0, tz=UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        raise invalid_parameter(
            f"A time bucket starts at {bucket_ms} ms, which no date can show; "
            "narrow start_time_ms/end_time_ms"
        ) from None


async def query_trace_metrics(
    session: AsyncSession, request: QueryTraceMetricsRequest
) -> QueryTraceMetricsResponse:
    validate(request)
    query = MetricQuery(
        request,
        experiment_ids_of(request.experiment_ids),
        ([TIME_BUCKET] if request.time_interval_seconds else []) + list(request.dimensions or []),
    )
    rows = query.rows()
    keys = query.group_keys
    key_columns = [rows.c[k] for k in keys]
    v = rows.c[_VALUE]
    count = (
        func.count(distinct(v)) if query.metric == TraceMetricKey.SESSION_COUNT else func.count(v)
    )
    asked = {a.aggregation_type for a in request.aggregations}
    aggregates: list[ColumnElement[Any]] = [count.label("n")]
    if asked & {AggregationType.SUM, AggregationType.AVG}:
        sums = sum_columns(v, "total") if query.is_double() else [func.sum(v).label("total")]
        aggregates += sums
    if AggregationType.MIN in asked:
        aggregates.append(func.min(v).label("minimum"))
    if AggregationType.MAX in asked:
        aggregates.append(func.max(v).label("maximum"))
    stmt = (
        select(*key_columns, *aggregates)
        .group_by(*key_columns)
        .order_by(*key_columns)
        .limit(request.limit)
    )
    groups = list((await session.execute(stmt)).mappings())
    quantiles = _quantiles(request.aggregations)
    percentiles: dict[tuple[Any, ...], dict[str, float | None]] = {}
    if quantiles and groups:
        strategy = policy_for(session.get_bind().dialect).percentiles
        # The groups' counts are known: values too many to hold group by group are ranked in a
        # way that can spill (the UI's latency per hour over 30 days of 10M traces).
        many = sum(int(g["n"] or 0) for g in groups) >= MANY_VALUES
        summary = strategy.summarize(
            rows,
            value=_VALUE,
            keys=keys,
            quantiles=list(quantiles.values()),
            large_groups=many,
        )
        for row in (await session.execute(summary)).mappings():
            percentiles[_group_key(row, keys)] = {
                name: strategy.read(row, q) for name, q in quantiles.items()
            }
    points = []
    for row in groups:
        group = _group_key(row, keys)
        values = _values(query, row, percentiles.get(group, {}))
        if not values:  # no rows at all (a group-less aggregate of nothing)
            continue
        dimensions = {
            k: render_time_bucket(g) if k == TIME_BUCKET else str(g)
            for k, g in zip(keys, group, strict=True)
        }
        points.append(
            MetricDataPoint(metric_name=query.metric, dimensions=dimensions or None, values=values)
        )
    return QueryTraceMetricsResponse(data_points=points or None)


def _values(
    query: MetricQuery, row: Mapping[Any, Any], percentiles: Mapping[str, float | None]
) -> dict[str, float]:
    n = int(row["n"] or 0)
    total: float | None = None
    mean: float | None = None
    if "total" in row or "total__0" in row:
        if query.is_double():
            exact = read_sum(row, "total")
            total, mean = (exact.value if n else None), exact.mean(n)
        elif row["total"] is not None:
            integer_sum = int(row["total"])
            total, mean = float(integer_sum), (integer_sum / n if n else None)
    values: dict[str, float | None] = {}
    for agg in query.request.aggregations:
        match agg.aggregation_type:
            case AggregationType.COUNT:
                values[agg.key] = float(n)
            case AggregationType.SUM:
                values[agg.key] = total
            case AggregationType.AVG:
                values[agg.key] = mean
            case AggregationType.MIN:
                values[agg.key] = _number(row["minimum"])
            case AggregationType.MAX:
                values[agg.key] = _number(row["maximum"])
            case AggregationType.PERCENTILE:
                values[agg.key] = percentiles.get(agg.key)
    return {k: v for k, v in values.items() if v is not None}


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
