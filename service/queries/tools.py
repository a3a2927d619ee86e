"""Tools (API.md §4.3): a tool call is a span with ``type = 'TOOL'``, the tool its name.

Calls count when their trace is in scope and are bucketed by the trace's ``timestamp_ms``.
Spans without a name are not tool calls of any tool. A call's latency is its duration
(``duration_ns``) in milliseconds, unrounded; calls still running have none and are left out
of latency statistics. Tool names are compared by their code points on every database.

Every ToolInfo of a request (all tools at once for discovery) comes from one statement,
whatever the number of tools: it reads the calls in scope once (a CTE) and returns call counts
per (tool, bucket), calling traces per (tool, bucket), latency distributions per (tool, bucket)
and latency distributions per tool. The analytics store counts the calling traces from each
trace's span sets (``_calling_traces``) instead of the distinct trace ids of the calls, and picks
the overall percentiles (per tool, or of all calls together) in a second statement once the
per-bucket counts give their counts; for all calls together in day or week buckets, the
per-bucket percentiles too, from the counts' own count of durations (``summarize_counted_groups``).
With ``include_latency_series: false`` no distribution per bucket is computed: the statement
returns the counts (and, off the store, the per-tool distributions) alone. Where a request has
no filter and its buckets are whole UTC hours, the store reads the counts and the per-bucket
latencies from its rollup per (experiment, hour, tool) instead (``service.queries.tool_hours``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from mlflow.store.tracking.dbmodels.models import SqlSpan, SqlTraceInfo
from sqlalchemy import and_, case, exists, func, literal, null, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import Subquery
from typing_extensions import TypedDict

from service.dialects import (
    P50,
    P90,
    P99,
    PercentileStrategy,
    exact_text,
    policy_for,
    text_equals,
)
from service.dialects.expressions import (
    TRACE_TIMESTAMP_COPY,
    kept_span_sets,
    list_holds,
    list_size,
    list_values,
    trace_span_sets,
)
from service.errors import does_not_exist
from service.models.tools import (
    ToolErrorsPoint,
    ToolInfo,
    ToolLatencyPoint,
    ToolMetricsResponse,
    ToolsDiscoveryResponse,
    ToolSeries,
    ToolVolumePoint,
)
from service.queries import hourly, tool_hours
from service.queries.stats import (
    Distribution,
    counted_distributions,
    distribution_of_row,
    empty_distribution,
    rate,
)
from service.scope import SeriesFrame
from service.traces import SPAN_ERROR, TOOL_SPAN_TYPE

LATENCY_QUANTILES = (P50, P90, P99)
NS_PER_MS = 1_000_000

# An alias, so that filter_string subqueries over ``spans`` never correlate with it.
_span = aliased(SqlSpan, name="tool_span")


def _is_tool_call() -> ColumnElement[bool]:
    return text_equals(_span.type, TOOL_SPAN_TYPE)


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / NS_PER_MS


@dataclass(frozen=True)
class CallCounts:
    trace_count: int = 0
    invocation_count: int = 0
    error_count: int = 0

    def __add__(self, other: CallCounts) -> CallCounts:
        return CallCounts(
            self.trace_count + other.trace_count,
            self.invocation_count + other.invocation_count,
            self.error_count + other.error_count,
        )


# The one result set of a request: counts per (tool, bucket), latency distributions per
# (tool, bucket) and per tool, told apart by ``part``; on the store's rollup per hour, counts
# and latency of a (tool, hour) in one row (``tool_hours.counts_and_latency``).
_COUNTS, _BY_BUCKET, _OVERALL, _COUNTS_AND_LATENCY = 0, 1, 2, 3
_COUNT_COLUMNS = ("trace_count", "invocation_count", "error_count")


@dataclass
class _Summary:
    counts: dict[str | None, dict[int, CallCounts]]
    overall: dict[str | None, Distribution]
    # The latency points' fields per bucket, read straight from the rows: thousands of them
    # (30 days of hours, per tool), where a ``Distribution`` each cost a third of the request's
    # Python.
    by_bucket: dict[str | None, dict[int, _LatencyFields]]


class _ToolCalls:
    """The TOOL spans in scope, per tool (``per_tool``) or all together, optionally one tool."""

    def __init__(
        self,
        frame: SeriesFrame,
        *,
        per_tool: bool,
        tool_name: str | None,
        latency_series: bool = True,
    ) -> None:
        self.frame = frame
        self.per_tool = per_tool
        self.tool_name = tool_name
        # Without it no latency distribution per bucket is computed (only the counts' series).
        self.latency_series = latency_series

    def calls(self) -> Select[Any]:
        """One row per call: its tool, its trace's bucket, trace, error flag and duration.

        No ``spans.experiment_id`` predicate: a span's experiment is its trace's (MLflow writes
        it from the trace), so the join to the traces in scope already implies it; without it
        an index on ``spans (trace_id)`` alone can serve the join (with the optional index of
        migrations_readonly/optional_indexes.sql, a nested loop from the window's traces).
        """
        scope = self.frame.scope
        tool = [exact_text(_span.name).label("tool")] if self.per_tool else []
        stamp = scope.trace_column(_span.trace_id, SqlTraceInfo.timestamp_ms)
        stmt = scope.children(
            _span.trace_id,
            *tool,
            self.frame.bucket_key(stamp).label("bucket"),
            _span.trace_id.label("trace_id"),
            case((text_equals(_span.status, SPAN_ERROR), 1), else_=0).label("is_error"),
            _span.duration_ns.label("v"),
        ).where(_is_tool_call(), _span.name.is_not(None))
        if self.tool_name is not None:
            stmt = stmt.where(text_equals(_span.name, self.tool_name))
        return stmt

    def timed(self, calls: Any) -> Subquery:
        """Durations only: calls still running have none (the strategies skip NULL values too)."""
        keys = [calls.c.tool] if self.per_tool else []
        return (
            select(*keys, calls.c.bucket, calls.c.v).where(calls.c.v.is_not(None)).subquery("timed")
        )

    def large_groups(self) -> bool:
        """All tools together in day or week buckets: tens of thousands of calls per bucket."""
        buckets = self.frame.buckets
        return not self.per_tool and buckets is not None and buckets.size != "hour"

    def buckets_counted_first(self, strategy: PercentileStrategy) -> bool:
        """Whether the per-bucket distributions of all tools together are asked for after the
        statement, once its counts give each bucket's count (few large groups)."""
        return self.latency_series and strategy.counts_first and self.large_groups()

    def statement(self, strategy: PercentileStrategy) -> Select[Any]:
        """Counts and both kinds of distributions in one statement over the calls, read once
        (where the strategy counts first, the overall distributions after it: ``summary``).

        The calls are a CTE referenced three times: PostgreSQL materialises it (one pass over
        the spans), and every database computes each part exactly as a separate query would.
        Each part is padded with NULLs to the same columns.
        """
        calls = self.calls().cte("tool_calls")
        keys = ["tool"] if self.per_tool else []
        key_cols = [calls.c[k] for k in keys]
        rollup = hourly.usable(self.frame)
        # Hour buckets of one experiment: the store reads each (tool, hour) row of its rollup
        # once for the whole statement (below), so the parts need no forms of their own there.
        whole_rows = rollup and self.latency_series and tool_hours.latency_per_row(self.frame)
        grouped = select(
            *key_cols,
            calls.c.bucket,
            func.count(func.distinct(calls.c.trace_id)).label("trace_count"),
            func.count().label("invocation_count"),
            func.sum(calls.c.is_error).label("error_count"),
            func.count(calls.c.v).label("n"),
        ).group_by(*key_cols, calls.c.bucket)
        counts: Select[Any] | kept_span_sets = grouped
        if not whole_rows:
            # The tracking databases count distinct trace ids; the store reads its rollup per
            # (tool, hour), or joins the calls per (tool, bucket) to its counts of calling
            # traces (``calling_traces``).
            kept_counts = (
                tool_hours.counts(self.frame, per_tool=self.per_tool, tool_name=self.tool_name)
                if rollup
                else self._counts_with_calling_traces(calls, keys)
            )
            counts = kept_span_sets.of(grouped, kept_counts, name="call_counts")
        timed = self.timed(calls)
        by_bucket = strategy.summarize(
            timed,
            value="v",
            keys=[*keys, "bucket"],
            quantiles=LATENCY_QUANTILES,
            large_groups=self.large_groups(),
        )
        stat_names = [c.name for c in by_bucket.selected_columns if c.name not in keys]
        stat_names.remove("bucket")
        columns = ["tool", "bucket", *_COUNT_COLUMNS, *stat_names]
        latency_rows: Select[Any] | kept_span_sets = by_bucket
        if rollup and not whole_rows and not self.buckets_counted_first(strategy):
            # The store reads its hours' sorted durations instead of sorting every call.
            kept_latency = tool_hours.latency_by_bucket(
                self.frame,
                per_tool=self.per_tool,
                tool_name=self.tool_name,
                quantiles=list(LATENCY_QUANTILES),
            )
            latency_rows = kept_span_sets.of(by_bucket, kept_latency, name="latency_by_bucket")

        def padded(part: int, stmt: Select[Any] | kept_span_sets) -> Select[Any]:
            sub = stmt if isinstance(stmt, kept_span_sets) else stmt.subquery()
            return select(
                literal(part).label("part"),
                *(sub.c[name] if name in sub.c else null().label(name) for name in columns),
            )

        parts = [padded(_COUNTS, counts)]
        if self.latency_series and not self.buckets_counted_first(strategy):
            parts.append(padded(_BY_BUCKET, latency_rows))
        if not strategy.counts_first:
            overall = strategy.summarize(timed, value="v", keys=keys, quantiles=LATENCY_QUANTILES)
            parts.append(padded(_OVERALL, overall))
        summary = union_all(*parts)
        if whole_rows:
            # The store (which counts first: no overall part) reads each (tool, hour) once.
            kept = tool_hours.counts_and_latency(
                self.frame,
                per_tool=self.per_tool,
                tool_name=self.tool_name,
                quantiles=list(LATENCY_QUANTILES),
            )
            both = padded(_COUNTS_AND_LATENCY, kept)
            return select(*kept_span_sets.of(summary, both, name="tool_summary").c)
        return select(summary.subquery("tool_summary"))

    def _counts_with_calling_traces(self, calls: Any, keys: list[str]) -> Select[Any]:
        """The store's counts per (tool, bucket): the calls grouped, joined to the calling traces
        counted from each trace's span sets instead of the distinct trace ids of the calls
        (1.5M over 30 days of 1M traces: 240-335 ms)."""
        key_cols = [calls.c[k] for k in keys]
        per_bucket = (
            select(
                *key_cols,
                calls.c.bucket,
                func.count().label("invocation_count"),
                func.sum(calls.c.is_error).label("error_count"),
                func.count(calls.c.v).label("n"),
            )
            .group_by(*key_cols, calls.c.bucket)
            .subquery("calls_per_bucket")
        )
        traces = self._calling_traces().subquery("traces_per_bucket")
        c, t = per_bucket.c, traces.c
        on = and_(c.bucket == t.bucket, *(c[k] == t[k] for k in keys))
        return select(
            *(c[k] for k in keys),
            c.bucket,
            func.coalesce(t.trace_count, 0).label("trace_count"),
            c.invocation_count,
            c.error_count,
            c.n,
        ).select_from(per_bucket.outerjoin(traces, on))

    def _calling_traces(self) -> Select[Any]:
        """Traces with calls per (tool, bucket) (per bucket without ``per_tool``), from the
        store's span sets: each trace's tool names, each once."""
        scope, sets = self.frame.scope, trace_span_sets.c
        bucket = self.frame.bucket_key(sets[TRACE_TIMESTAMP_COPY]).label("bucket")
        in_scope = scope.owns(sets.trace_id)
        if self.per_tool:
            each = select(list_values(sets.tool_names).label("tool"), bucket).where(in_scope)
            named = each.subquery("calling_traces")
            return select(named.c.tool, named.c.bucket, func.count().label("trace_count")).group_by(
                named.c.tool, named.c.bucket
            )
        called = (
            list_size(sets.tool_names) > 0
            if self.tool_name is None
            else list_holds(sets.tool_names, self.tool_name)
        )
        return (
            select(bucket, func.count().label("trace_count"))
            .where(in_scope, called)
            .group_by(bucket)
        )

    async def summary(self, session: AsyncSession) -> _Summary:
        strategy = policy_for(session.get_bind().dialect).percentiles
        stmt = self.statement(strategy)
        result = _Summary({}, {}, {})
        # Durations (finished calls) per bucket of all tools together, for
        # buckets_counted_first; and per tool, for the overall distributions.
        timed_per_bucket: dict[tuple[Any, ...], int] = {}
        timed: dict[str | None, int] = {}
        rows = await session.execute(stmt)
        # Read by position, resolved once: 14,400 rows over 30 days of hours for ten tools.
        at = {name: i for i, name in enumerate(rows.keys())}
        part_at, tool_at, bucket_at, n_at = at["part"], at["tool"], at["bucket"], at["n"]
        traces_at, calls_at, errors_at = (at[name] for name in _COUNT_COLUMNS)
        latency = _LatencyReader(strategy, at)
        for row in rows:
            tool = row[tool_at] if self.per_tool else None
            part = row[part_at]
            if part in (_COUNTS, _COUNTS_AND_LATENCY):
                counts = CallCounts(int(row[traces_at]), int(row[calls_at]), int(row[errors_at]))
                result.counts.setdefault(tool, {})[row[bucket_at]] = counts
                durations = int(row[n_at])
                timed[tool] = timed.get(tool, 0) + durations
                if not self.per_tool:
                    timed_per_bucket[(row[bucket_at],)] = durations
                if part == _COUNTS_AND_LATENCY and durations:
                    result.by_bucket.setdefault(tool, {})[row[bucket_at]] = latency.fields(row)
            elif part == _OVERALL:
                dist = distribution_of_row(strategy, row._mapping, LATENCY_QUANTILES)
                result.overall[tool] = dist
            else:
                result.by_bucket.setdefault(tool, {})[row[bucket_at]] = latency.fields(row)
        if not result.counts or not strategy.counts_first:
            return result
        timed_calls = self.timed(self.calls().cte("tool_calls"))
        if hourly.usable(self.frame) and not self.per_tool:
            # The store unnests its hours' sorted durations instead of reading the spans again
            # (30 days of 1M traces, all tools by day: 134 -> 77 ms). Not per tool: grouped by
            # the tool's name, the unnested rows were slower to rank than the spans (10M
            # traces: 1.9 -> 3.5 s for tools/discovery by day).
            kept = tool_hours.durations(
                self.frame, per_tool=self.per_tool, tool_name=self.tool_name
            )
            timed_calls = kept_span_sets.of(
                cast(Select[Any], timed_calls.element), kept, name="timed"
            )
        if self.buckets_counted_first(strategy):
            # A selection per day or week instead of one sort of every call (30 days: 156 ->
            # 109 ms), the calls read again.
            per_bucket = await counted_distributions(
                session,
                strategy,
                timed_calls,
                value="v",
                keys=["bucket"],
                counts=timed_per_bucket,
                quantiles=LATENCY_QUANTILES,
                large_groups=True,
            )
            result.by_bucket[None] = {
                key[0]: _latency_fields(dist) for key, dist in per_bucket.items()
            }

        # The overall distributions: selections instead of sorts, the calls read again (30 days
        # of 1M traces, 1.5M calls: all together 75 -> 49 ms, per tool 125 -> 62 ms).
        def key_of(tool: str | None) -> tuple[Any, ...]:
            return (tool,) if self.per_tool else ()

        overall = await counted_distributions(
            session,
            strategy,
            timed_calls,
            value="v",
            keys=["tool"] if self.per_tool else [],
            counts={key_of(tool): n for tool, n in timed.items() if n},
            quantiles=LATENCY_QUANTILES,
        )
        result.overall = {key[0] if key else None: dist for key, dist in overall.items()}
        return result


class _LatencyFields(TypedDict):
    avg_latency: float | None
    p50_latency: float | None
    p90_latency: float | None
    p99_latency: float | None


def _latency_fields_from(
    count: int, total: float | None, p50: float | None, p90: float | None, p99: float | None
) -> _LatencyFields:
    """A latency point's fields (milliseconds) from a group's count, total and percentiles
    (nanoseconds)."""
    return {
        "avg_latency": None if not count or total is None else total / count / NS_PER_MS,
        "p50_latency": _ms(p50),
        "p90_latency": _ms(p90),
        "p99_latency": _ms(p99),
    }


def _latency_fields(dist: Distribution) -> _LatencyFields:
    return _latency_fields_from(dist.count, dist.total, dist.p("p50"), dist.p("p90"), dist.p("p99"))


class _LatencyReader:
    """``_latency_fields`` of the ``Distribution`` in a row (``distribution_of_row``), without
    making one, the row read by position: thousands of rows per request."""

    def __init__(self, strategy: PercentileStrategy, positions: Mapping[str, int]) -> None:
        self._n, self._total = positions["n"], positions["total"]
        self._p50, self._p90, self._p99 = (strategy.reader(positions, q) for q in LATENCY_QUANTILES)

    def fields(self, row: Sequence[Any]) -> _LatencyFields:
        total = row[self._total]
        return _latency_fields_from(
            int(row[self._n] or 0),
            None if total is None else float(total),
            self._p50(row),
            self._p90(row),
            self._p99(row),
        )


_NO_CALLS = CallCounts()
_NO_LATENCY = _latency_fields(empty_distribution(LATENCY_QUANTILES))


def _tool_info(
    frame: SeriesFrame,
    name: str | None,
    counts: dict[int, CallCounts],
    overall: Distribution,
    by_bucket: dict[int, _LatencyFields] | None,
) -> ToolInfo:
    """``by_bucket`` None: no latency series (``include_latency_series: false``)."""
    # Each call falls in the one bucket of its trace, and so does each calling trace:
    # bucket sums are exact, distinct traces included.
    total = CallCounts(
        sum(c.trace_count for c in counts.values()),
        sum(c.invocation_count for c in counts.values()),
        sum(c.error_count for c in counts.values()),
    )

    def volume(start: int, c: CallCounts | None) -> ToolVolumePoint:
        c = c or _NO_CALLS
        return {
            "time_bucket": start,
            "trace_count": c.trace_count,
            "invocation_count": c.invocation_count,
        }

    def latency(start: int, fields: _LatencyFields | None) -> ToolLatencyPoint:
        return {"time_bucket": start, **(fields or _NO_LATENCY)}

    def errors(start: int, c: CallCounts | None) -> ToolErrorsPoint:
        c = c or _NO_CALLS
        return {
            "time_bucket": start,
            "error_count": c.error_count,
            "error_rate": rate(c.error_count, c.invocation_count),
        }

    return ToolInfo(
        tool_name=name,
        trace_count=total.trace_count,
        invocation_count=total.invocation_count,
        error_count=total.error_count,
        error_rate=rate(total.error_count, total.invocation_count),
        **_latency_fields(overall),
        time_series=ToolSeries(
            volume=frame.fill(counts, volume),
            latency=[] if by_bucket is None else frame.fill(by_bucket, latency),
            errors=frame.fill(counts, errors),
        ),
    )


async def _infos(
    session: AsyncSession,
    frame: SeriesFrame,
    *,
    per_tool: bool,
    tool_name: str | None,
    latency_series: bool,
) -> dict[str | None, ToolInfo]:
    if not frame.keys:
        return {}
    calls = _ToolCalls(frame, per_tool=per_tool, tool_name=tool_name, latency_series=latency_series)
    summary = await calls.summary(session)
    empty = empty_distribution(LATENCY_QUANTILES)
    infos: dict[str | None, ToolInfo] = {}
    for name, tool_counts in summary.counts.items():
        label = name if per_tool else tool_name
        overall = summary.overall.get(name, empty)
        by_bucket = summary.by_bucket.get(name, {}) if latency_series else None
        infos[name] = _tool_info(frame, label, tool_counts, overall, by_bucket)
    return infos


async def discovery(
    session: AsyncSession, frame: SeriesFrame, *, latency_series: bool = True
) -> ToolsDiscoveryResponse:
    """Every tool called in scope, with all its statistics and series.

    Round trips: 1 (counts and latency distributions per tool and bucket, and per tool; on the
    store 2, the per-tool distributions picked once counted), whatever the number of tools, also
    when no tool was called; none when the frame is empty.
    """
    infos = await _infos(
        session, frame, per_tool=True, tool_name=None, latency_series=latency_series
    )
    data = list(infos.values())
    data.sort(key=lambda info: (-info.invocation_count, info.tool_name or ""))
    return ToolsDiscoveryResponse(data=data)


async def metrics(
    session: AsyncSession,
    frame: SeriesFrame,
    tool_name: str | None,
    *,
    latency_series: bool = True,
) -> ToolMetricsResponse:
    """One tool's ToolInfo, or all tools together when ``tool_name`` is None.

    Round trips: 1 (counts and latency distributions per bucket and overall; on the store 2,
    the overall distribution picked once its count is known, and 3 with day or week buckets,
    whose distributions are picked once counted too), plus 1 for a named tool never called in
    scope, to tell an unknown tool (404) from a quiet one; none before that when the frame is
    empty.
    """
    infos = await _infos(
        session, frame, per_tool=False, tool_name=tool_name, latency_series=latency_series
    )
    if None in infos:
        return ToolMetricsResponse(data=infos[None])
    if tool_name is not None and not await _tool_exists(session, frame, tool_name):
        ids = ", ".join(str(i) for i in frame.scope.experiment_ids)
        raise does_not_exist(
            f"No tool named {tool_name!r} was called in experiment(s) {ids}; tools/discovery "
            "lists the tools (the names of TOOL spans)",
            tool_name=tool_name,
        )
    empty = empty_distribution(LATENCY_QUANTILES)
    quiet = _tool_info(frame, tool_name, {}, empty, {} if latency_series else None)
    return ToolMetricsResponse(data=quiet)


async def _tool_exists(session: AsyncSession, frame: SeriesFrame, tool_name: str) -> bool:
    """Whether any TOOL span of that name exists in the listed experiments, any window."""
    stmt = select(
        exists().where(
            _span.experiment_id.in_(frame.scope.experiment_ids),
            _is_tool_call(),
            text_equals(_span.name, tool_name),
        )
    )
    return bool((await session.execute(stmt)).scalar())
