"""The traces in scope: experiments + window + filter_string, shared by every query (API.md §1).

Spans, tags and assessments count when their trace is in scope and are bucketed by their
trace's ``timestamp_ms``; every query module builds on ``TraceScope`` so the numbers on
different screens agree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlTraceInfo
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement, Select

from service.dialects.expressions import (
    TraceWindow,
    all_of,
    child_of_traces,
    child_with_trace,
    trace_column_of,
    trace_time_within,
)
from service.errors import does_not_exist, invalid_parameter
from service.filters import Clause, parse, predicates
from service.models.common import InsightsRequest, SeriesRequest
from service.timebuckets import DAY_MS, HOUR_MS, TimeBuckets, load_timezone

T = TypeVar("T")

# MLflow's experiment_id columns are 32-bit INTEGERs on PostgreSQL and MySQL.
MAX_EXPERIMENT_ID = 2**31 - 1
NOMINAL_BUCKET_MS = {"hour": HOUR_MS, "day": DAY_MS, "week": 7 * DAY_MS}


@dataclass(frozen=True)
class TraceScope:
    """Experiments, window and filter; ``clauses`` is the filter as parsed (read it rather than
    parsing the text again), ``filters`` the predicates built from it."""

    experiment_ids: tuple[int, ...]
    start_time: int | None
    end_time: int | None
    filters: tuple[ColumnElement[bool], ...] = ()
    clauses: tuple[Clause, ...] = ()

    def conditions(self) -> list[ColumnElement[bool]]:
        """Predicates on ``SqlTraceInfo`` selecting the traces in scope."""
        conditions: list[ColumnElement[bool]] = [
            SqlTraceInfo.experiment_id.in_(self.experiment_ids)
        ]
        if self.start_time is not None:
            conditions.append(SqlTraceInfo.timestamp_ms >= self.start_time)
        if self.end_time is not None:
            conditions.append(SqlTraceInfo.timestamp_ms < self.end_time)
        conditions.extend(self.filters)
        return conditions

    def traces(self, *columns: Any) -> Select[Any]:
        """``SELECT columns FROM trace_info WHERE <in scope>``."""
        return select(*columns).select_from(SqlTraceInfo).where(*self.conditions())

    @property
    def window(self) -> TraceWindow:
        """``(start_time, end_time)``, for predicates applied only to traces in scope."""
        return (self.start_time, self.end_time)

    def window_of(self, trace_key: Any) -> ColumnElement[bool]:
        """Child rows (spans, tags, feedback) of traces in the window, by their ``trace_key``.

        Implied by the join to the traces in scope, so it never changes an answer; the analytics
        store answers it from its own copy of the trace's timestamp, skipping what lies outside.
        """
        return trace_time_within(trace_key, self.start_time, self.end_time)

    def owns(self, trace_key: Any) -> ColumnElement[bool]:
        """Child rows (spans, tags, feedback) whose trace is in scope, by their ``trace_key``.

        For queries that need only membership, no column of the trace: ``trace_key IN (traces
        in scope)`` on the tracking databases; the analytics store decides from its copies of
        the trace's experiment and timestamp, reading ``trace_info`` only for a filter.
        """
        return self._membership(trace_key, joined=False)

    def children(self, trace_key: Any, *columns: Any) -> Select[Any]:
        """``SELECT columns`` over the child rows (spans, tags, feedback) of traces in scope, with
        their trace joined for ``columns`` that read it through ``trace_column``.

        The tracking databases join the child table to ``trace_info``; the analytics store
        reads the copies of the trace's columns on the child rows and joins nothing.
        """
        joined = child_with_trace(
            trace_key.expression.table, SqlTraceInfo, SqlTraceInfo.request_id == trace_key
        )
        in_scope = self._membership(trace_key, joined=True)
        return select(*columns).select_from(joined).where(in_scope)

    def _membership(self, trace_key: Any, *, joined: bool) -> ColumnElement[bool]:
        # The conditions as a balanced tree: SQLite counts a subquery's expression depth into
        # the enclosing expression's (at most 1000), and a filter may have hundreds of clauses.
        # Never correlated: the statement around may read trace_info itself.
        conditions = all_of(self.conditions())
        traces: Select[Any] = select(SqlTraceInfo.request_id).where(conditions).correlate(None)
        return child_of_traces(
            trace_key,
            traces,
            experiment_ids=self.experiment_ids,
            start=self.start_time,
            end=self.end_time,
            narrowed=bool(self.filters),
            joined=conditions if joined else None,
        )

    @staticmethod
    def trace_column(trace_key: Any, column: Any) -> ColumnElement[Any]:
        """Column ``column`` of ``trace_info`` of a child row's trace, in ``children(...)``."""
        return trace_column_of(trace_key, column)

    def whole_experiments(self) -> TraceScope:
        """Every trace of the same experiments, whatever the window and filter."""
        return TraceScope(self.experiment_ids, None, None)

    def unfiltered(self) -> TraceScope:
        """The same experiments and window, every trace in them."""
        return replace(self, filters=(), clauses=())


async def resolve_scope(session: AsyncSession, request: InsightsRequest) -> TraceScope:
    """Validate the request's experiments and filter, before any analytics SQL runs."""
    ids = tuple(int(i) for i in request.experiment_ids)
    clauses = parse(request.filter_string)
    # The ids let session-scoped feedback count across the listed experiments, as in MLflow.
    # Applied only with the window (``conditions``): the filter's EXISTS clauses repeat it.
    window = (request.start_time, request.end_time)
    filters = tuple(predicates(clauses, experiment_ids=ids, window=window))
    # Ids beyond the column's range cannot exist, and PostgreSQL's driver refuses to bind them.
    storable = [i for i in ids if i <= MAX_EXPERIMENT_ID]
    found: set[int] = set()
    if storable:
        found.update(
            (
                await session.execute(
                    select(SqlExperiment.experiment_id).where(
                        SqlExperiment.experiment_id.in_(storable)
                    )
                )
            ).scalars()
        )
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise does_not_exist(
            f"No experiment with id {', '.join(repr(m) for m in missing)} exists in the "
            "tracking database",
            experiment_ids=missing,
        )
    return TraceScope(ids, request.start_time, request.end_time, filters, clauses)


@dataclass(frozen=True)
class SeriesFrame:
    """Where a time series starts and ends, and how timestamps map to its buckets.

    ``buckets`` is None when the range is empty (an open window with no traces in scope):
    the series is then ``[]``. ``summary_only``: the caller reads the answer's summary alone
    (the previous window's, API.md §9), so work for the series alone may be skipped.
    """

    scope: TraceScope
    buckets: TimeBuckets | None
    keys: tuple[int, ...]
    summary_only: bool = False

    def bucket_key(self, ts: ColumnElement[Any]) -> ColumnElement[Any]:
        if self.buckets is None:
            raise RuntimeError("no buckets in an empty range")  # callers check ``keys`` first
        return self.buckets.key_expr(ts)

    def fill(self, rows: Mapping[int, T], make: Callable[[int, T | None], Any]) -> list[Any]:
        """One point per bucket, ascending; ``make(bucket_start_ms, row_or_None)``."""
        if self.buckets is None:
            return []
        return [
            make(start, rows.get(key)) for key, start in zip(self.keys, self.starts, strict=True)
        ]

    @functools.cached_property
    def whole_hours(self) -> bool:
        """Whether each bucket is made of whole UTC hours of the window, each hour in one
        bucket: the window's ends (where given) fall on UTC hours after the epoch, and the
        time zone's offset is whole hours and changes only on a UTC hour. Rows kept per UTC
        hour then add up to the buckets' (the analytics store's rollups,
        ``service.queries.hourly``)."""
        buckets = self.buckets
        if buckets is None:
            return False
        ends = [t for t in (self.scope.start_time, self.scope.end_time) if t is not None]
        changes = [p.start_ms for p in buckets.periods[1:]]
        return (
            all(t > 0 and t % HOUR_MS == 0 for t in ends)
            and all(p.offset_ms % HOUR_MS == 0 for p in buckets.periods)
            and all(t % HOUR_MS == 0 for t in changes)
        )

    @functools.cached_property
    def starts(self) -> list[int]:
        """Each bucket's start (epoch ms), in the order of ``keys``: computed once per request,
        not once per series (the tools' 30 series of 720 hours each)."""
        buckets = self.buckets
        return [] if buckets is None else [buckets.start_of(key) for key in self.keys]


async def resolve_series(
    session: AsyncSession, request: SeriesRequest, *, max_buckets: int
) -> SeriesFrame:
    scope = await resolve_scope(session, request)
    first, last = request.start_time, None if request.end_time is None else request.end_time - 1
    if first is None or last is None:
        # An open side of the window ends at the earliest / latest trace in scope.
        lowest, highest = (
            await session.execute(
                scope.traces(
                    func.min(SqlTraceInfo.timestamp_ms), func.max(SqlTraceInfo.timestamp_ms)
                )
            )
        ).one()
        first = lowest if first is None else first
        last = highest if last is None else last
    if first is None or last is None or first > last:
        return SeriesFrame(scope, None, ())
    # Finding the UTC offsets of a range takes time proportional to its length (years 1970 to
    # 9999 took half a minute): refuse a range that surely holds too many buckets first. No
    # bucket is twice its nominal length, so the count is well above the limit.
    if last - first > 2 * max_buckets * NOMINAL_BUCKET_MS[request.time_bucket]:
        raise invalid_parameter(
            f"The time range spans more than {max_buckets} {request.time_bucket} buckets; "
            "narrow start_time/end_time or use a larger time_bucket"
        )
    buckets = TimeBuckets.covering(
        request.time_bucket, load_timezone(request.timezone), first, last
    )
    try:
        keys = buckets.keys_between(first, last, limit=max_buckets)
    except ValueError as exc:
        raise invalid_parameter(str(exc)) from None
    return SeriesFrame(scope, buckets, tuple(keys))
