"""Tools (API.md §4.3): a tool call is a span with ``type = 'TOOL'``, the tool its name.

Calls count when their trace is in scope and are bucketed by the trace's ``timestamp_ms``.
Spans without a name are not tool calls of any tool. A call's latency is its duration
(``duration_ns``) in milliseconds, unrounded; calls still running have none and are left out
of latency statistics. Tool names are compared by their code points on every database.

Every ToolInfo of a request (all tools at once for discovery) comes from the same three
queries, whatever the number of tools: counts per (tool, bucket), latency distributions per
(tool, bucket), and latency distributions per tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlSpan, SqlTraceInfo
from sqlalchemy import case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Select

from service.dialects import P50, P90, P99, exact_text, text_equals
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
from service.queries.stats import Distribution, distributions, empty_distribution, rate
from service.scope import SeriesFrame

TOOL = "TOOL"
ERROR = "ERROR"
LATENCY_QUANTILES = (P50, P90, P99)
NS_PER_MS = 1_000_000

# An alias, so that filter_string subqueries over ``spans`` never correlate with it.
_span = aliased(SqlSpan, name="tool_span")


def _is_tool_call() -> ColumnElement[bool]:
    return text_equals(_span.type, TOOL)


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


class _ToolCalls:
    """The TOOL spans in scope, per tool (``per_tool``) or all together, optionally one tool."""

    def __init__(self, frame: SeriesFrame, *, per_tool: bool, tool_name: str | None) -> None:
        self.frame = frame
        self.tool_name = tool_name
        self.tool = exact_text(_span.name).label("tool")
        self.keys: list[ColumnElement[Any]] = [self.tool] if per_tool else []
        self.bucket = frame.bucket_key(SqlTraceInfo.timestamp_ms).label("bucket")

    def select(self, *columns: Any) -> Select[Any]:
        stmt = (
            self.frame.scope.traces(*self.keys, *columns)
            .join(_span, _span.trace_id == SqlTraceInfo.request_id)
            .where(
                _span.experiment_id.in_(self.frame.scope.experiment_ids),
                _is_tool_call(),
                _span.name.is_not(None),
            )
        )
        if self.tool_name is not None:
            stmt = stmt.where(text_equals(_span.name, self.tool_name))
        return stmt

    def key_of(self, row: Any) -> str | None:
        return row["tool"] if self.keys else None

    async def counts(self, session: AsyncSession) -> dict[str | None, dict[int, CallCounts]]:
        stmt = self.select(
            self.bucket,
            func.count(func.distinct(_span.trace_id)).label("trace_count"),
            func.count().label("invocation_count"),
            func.sum(case((text_equals(_span.status, ERROR), 1), else_=0)).label("error_count"),
        ).group_by(*self.keys, self.bucket)
        result: dict[str | None, dict[int, CallCounts]] = {}
        for row in (await session.execute(stmt)).mappings():
            result.setdefault(self.key_of(row), {})[row["bucket"]] = CallCounts(
                int(row["trace_count"]), int(row["invocation_count"]), int(row["error_count"])
            )
        return result

    async def latencies(
        self, session: AsyncSession, *, by_bucket: bool
    ) -> dict[tuple[Any, ...], Distribution]:
        duration: ColumnElement[Any] = _span.duration_ns
        columns = [self.bucket] if by_bucket else []
        source = self.select(*columns, duration.label("v")).where(duration.is_not(None))
        keys = [*(["tool"] if self.keys else []), *(["bucket"] if by_bucket else [])]
        return await distributions(
            session, source.subquery(), keys=keys, quantiles=LATENCY_QUANTILES
        )


def _latency_fields(dist: Distribution) -> dict[str, float | None]:
    avg = None if not dist.count or dist.total is None else dist.total / dist.count / NS_PER_MS
    return {
        "avg_latency": avg,
        "p50_latency": _ms(dist.p("p50")),
        "p90_latency": _ms(dist.p("p90")),
        "p99_latency": _ms(dist.p("p99")),
    }


def _tool_info(
    frame: SeriesFrame,
    name: str | None,
    counts: dict[int, CallCounts],
    overall: Distribution,
    by_bucket: dict[int, Distribution],
) -> ToolInfo:
    # Each call falls in the one bucket of its trace, and so does each calling trace:
    # bucket sums are exact, distinct traces included.
    total = sum(counts.values(), CallCounts())
    empty = empty_distribution(LATENCY_QUANTILES)

    def volume(start: int, c: CallCounts | None) -> ToolVolumePoint:
        c = c or CallCounts()
        return ToolVolumePoint(
            time_bucket=start, trace_count=c.trace_count, invocation_count=c.invocation_count
        )

    def latency(start: int, d: Distribution | None) -> ToolLatencyPoint:
        return ToolLatencyPoint(time_bucket=start, **_latency_fields(d or empty))

    def errors(start: int, c: CallCounts | None) -> ToolErrorsPoint:
        c = c or CallCounts()
        return ToolErrorsPoint(
            time_bucket=start,
            error_count=c.error_count,
            error_rate=rate(c.error_count, c.invocation_count),
        )

    return ToolInfo(
        tool_name=name,
        trace_count=total.trace_count,
        invocation_count=total.invocation_count,
        error_count=total.error_count,
        error_rate=rate(total.error_count, total.invocation_count),
        **_latency_fields(overall),
        time_series=ToolSeries(
            volume=frame.fill(counts, volume),
            latency=frame.fill(by_bucket, latency),
            errors=frame.fill(counts, errors),
        ),
    )


async def _infos(
    session: AsyncSession, frame: SeriesFrame, *, per_tool: bool, tool_name: str | None
) -> dict[str | None, ToolInfo]:
    if not frame.keys:
        return {}
    calls = _ToolCalls(frame, per_tool=per_tool, tool_name=tool_name)
    counts = await calls.counts(session)
    if not counts:
        return {}
    overall = await calls.latencies(session, by_bucket=False)
    grouped = await calls.latencies(session, by_bucket=True)
    empty = empty_distribution(LATENCY_QUANTILES)
    infos: dict[str | None, ToolInfo] = {}
    for name, tool_counts in counts.items():
        prefix: tuple[Any, ...] = (name,) if per_tool else ()
        by_bucket = {key[-1]: dist for key, dist in grouped.items() if key[: len(prefix)] == prefix}
        label = name if per_tool else tool_name
        infos[name] = _tool_info(frame, label, tool_counts, overall.get(prefix, empty), by_bucket)
    return infos


async def discovery(session: AsyncSession, frame: SeriesFrame) -> ToolsDiscoveryResponse:
    """Every tool called in scope, with all its statistics and series.

    Round trips: 3 (counts per tool and bucket; latency distributions per tool; per tool and
    bucket), whatever the number of tools; 1 when no tool was called; none when the frame is
    empty.
    """
    infos = await _infos(session, frame, per_tool=True, tool_name=None)
    data = list(infos.values())
    data.sort(key=lambda info: (-info.invocation_count, info.tool_name or ""))
    return ToolsDiscoveryResponse(data=data)


async def metrics(
    session: AsyncSession, frame: SeriesFrame, tool_name: str | None
) -> ToolMetricsResponse:
    """One tool's ToolInfo, or all tools together when ``tool_name`` is None.

    Round trips: 3 (counts per bucket; latency distribution overall; per bucket); when
    nothing was called in scope, 1, plus 1 for a named tool to tell an unknown tool (404)
    from a quiet one; none before that when the frame is empty.
    """
    infos = await _infos(session, frame, per_tool=False, tool_name=tool_name)
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
    return ToolMetricsResponse(data=_tool_info(frame, tool_name, {}, empty, {}))


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
