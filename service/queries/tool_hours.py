"""Tools' counts and latencies from the analytics store's rollup per (experiment, UTC hour,
tool) (``tool_hours``), where a request allows it (``hourly.usable``).

These are the ``kept`` forms of the tools' groupings (``kept_span_sets``): the tracking
databases run the groupings over the calls; the store reads a row per (tool, hour) instead of
every call. Over 30 days of 1M traces that is 7,200 rows instead of 1.5M calls, and the
per-(tool, hour) sorted durations are read, not sorted per request.

Usable without a filter (the rollup knows a call's trace by its experiment and hour alone), with
buckets made of whole UTC hours (``SeriesFrame.whole_hours``): for each tool, one tool, or all
tools together (their own rows: a trace calling two tools is one calling trace). The counts
then add up over a bucket's hours; the hourly latencies need hour buckets, each one hour of one
experiment.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, and_, cast, func, select
from sqlalchemy.sql import ColumnElement, Select

from service.dialects.expressions import tool_hours
from service.dialects.percentiles import Quantile, sorted_list_picks
from service.queries import hourly
from service.scope import SeriesFrame

_h = tool_hours.c
# The counts per (tool, bucket), as ``_ToolCalls`` names them.
_COUNTS = ("trace_count", "invocation_count", "error_count", "n")


def latency_per_row(frame: SeriesFrame) -> bool:
    """Hour buckets of one experiment: each (tool, bucket) is one row of the rollup."""
    buckets = frame.buckets
    return buckets is not None and buckets.size == "hour" and len(frame.scope.experiment_ids) == 1


def _in_scope(frame: SeriesFrame, per_tool: bool, tool_name: str | None) -> ColumnElement[bool]:
    """Each tool's rows, one tool's, or those of all tools together (no tool)."""
    which: ColumnElement[bool]
    if per_tool:
        which = _h.tool.is_not(None)
    elif tool_name is not None:
        which = _h.tool == tool_name
    else:
        which = _h.tool.is_(None)
    return and_(hourly.in_scope(tool_hours, frame), which)


def _tool(per_tool: bool) -> list[ColumnElement[Any]]:
    return [_h.tool.label("tool")] if per_tool else []


def counts(frame: SeriesFrame, *, per_tool: bool, tool_name: str | None) -> Select[Any]:
    """Calls, failed calls, calling traces and finished calls per (tool, bucket): the rows of
    ``_ToolCalls._counts_with_calling_traces``."""
    bucket = hourly.bucket(tool_hours, frame)
    keys = [*_tool(per_tool), bucket]
    return (
        select(
            *keys,
            # BIGINT, not the HUGEINT of DuckDB's sum: a Python int from a HUGEINT costs more
            # (14,400 rows over 30 days of hours: 36 -> 22 ms to fetch).
            *(cast(func.sum(_h[name]), BigInteger).label(name) for name in _COUNTS),
        )
        .where(_in_scope(frame, per_tool, tool_name))
        .group_by(*keys)
    )


def counts_and_latency(
    frame: SeriesFrame, *, per_tool: bool, tool_name: str | None, quantiles: list[Quantile]
) -> Select[Any]:
    """Hour buckets of one experiment (``latency_per_row``): each (tool, hour) row of the rollup
    as it is, its counts (those of ``counts``) and its latency statistics and picks (those of
    ``latency_by_bucket``; NULL picks where ``n`` is 0) in one row: half the rows of the two
    apart (7,200 over 30 days of ten tools), fetched in 11 instead of 22 ms."""
    return select(
        *_tool(per_tool),
        hourly.bucket(tool_hours, frame),
        *(_h[name] for name in _COUNTS),
        _h.total,
        _h.minimum,
        _h.maximum,
        *sorted_list_picks(_h.sorted_values, _h.n, quantiles),
    ).where(_in_scope(frame, per_tool, tool_name))


def latency_by_bucket(
    frame: SeriesFrame, *, per_tool: bool, tool_name: str | None, quantiles: list[Quantile]
) -> Select[Any]:
    """Each (tool, bucket)'s latency statistics and picks, as ``ListPercentiles.summarize`` of
    the finished calls gives them (no row for a bucket without finished calls), where buckets
    are not single rows of the rollup (``latency_per_row``: those ``counts_and_latency`` reads).

    The bucket's hours' sorted lists are concatenated and sorted: the same values as the
    calls', without grouping every call by (tool, bucket) (30 days per day, 300 groups: 110 ->
    84 ms for the statement at 1M traces).
    """
    bucket = hourly.bucket(tool_hours, frame)
    in_scope = and_(_in_scope(frame, per_tool, tool_name), _h.n > 0)
    keys = [*_tool(per_tool), bucket]
    merged = (
        select(
            *keys,
            # BIGINT, as count() is, for the list index.
            cast(func.sum(_h.n), BigInteger).label("n"),
            func.sum(_h.total).label("total"),
            func.min(_h.minimum).label("minimum"),
            func.max(_h.maximum).label("maximum"),
            func.list_sort(func.flatten(func.list(_h.sorted_values))).label("sorted_values"),
        )
        .where(in_scope)
        .group_by(*keys)
        .subquery("merged_hours")
    )
    m = merged.c
    return select(
        *[m[k.name] for k in keys],
        m.n,
        m.total,
        m.minimum,
        m.maximum,
        *sorted_list_picks(m.sorted_values, m.n, quantiles),
    )


def durations(frame: SeriesFrame, *, per_tool: bool, tool_name: str | None) -> Select[Any]:
    """Every finished call's duration with its tool and bucket, unnested from the hours'
    sorted lists: the rows of ``_ToolCalls.timed`` without reading the spans (30 days of 10M
    traces, 15M calls: 164 -> 92 ms to read them)."""
    return select(
        *_tool(per_tool),
        hourly.bucket(tool_hours, frame),
        func.unnest(_h.sorted_values).label("v"),
    ).where(_in_scope(frame, per_tool, tool_name), _h.n > 0)
