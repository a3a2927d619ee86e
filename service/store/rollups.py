"""The store's rollups per (experiment, UTC hour) (``service.store.hourly``): each one's rows.

- ``TOOL_HOURS``: TOOL spans per tool and of all tools together (a span whose type is exactly
  'TOOL', with a name; a failed call one whose status is exactly 'ERROR', as
  ``service.queries.tools`` counts them): calls, failed calls, calling traces, finished calls
  and their sorted durations.
- ``TRACE_COST_HOURS``: traces that report cost, and the limbs of their costs' exact sums.
- ``MODEL_COST_HOURS``: spans that carry cost, per model and provider, likewise.

The cost rows are the queries' own expressions (``service.queries.cost``) compiled for DuckDB,
so each limb is the one a request would compute from the row.
"""

from __future__ import annotations

from typing import Any

import duckdb_engine
from sqlalchemy import func, select, text
from sqlalchemy.sql import ColumnElement, Select

from service.dialects import int_div
from service.dialects.expressions import TRACE_EXPERIMENT_COPY, TRACE_TIMESTAMP_COPY
from service.queries.cost import carries_cost, cost_columns
from service.store.hourly import HourlyRollup, hour_of
from service.store.layout import (
    MODEL_COST_HOURS_TABLE,
    SPANS,
    TOOL_HOURS_TABLE,
    TRACE_COST_HOURS_TABLE,
    TRACE_INFO,
)
from service.timebuckets import HOUR_MS
from service.traces import SPAN_ERROR, TOOL_SPAN_TYPE

_DIALECT = duckdb_engine.Dialect()


def _compiled(stmt: Select[Any]) -> str:
    return str(stmt.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))


def _tool_rows(where: str) -> str:
    """A row per tool, and one of all tools together (``tool`` NULL: a call has a name)."""
    hour = hour_of(TRACE_TIMESTAMP_COPY)

    def per(tool: str) -> str:
        keys = f"{TRACE_EXPERIMENT_COPY}, {hour}" + (", name" if tool == "name" else "")
        return (
            f"SELECT {TRACE_EXPERIMENT_COPY}, {hour}, {tool}, count(*), "
            f"count(*) FILTER (WHERE status = '{SPAN_ERROR}'), count(DISTINCT trace_id), "
            "count(duration_ns), sum(duration_ns), min(duration_ns), max(duration_ns), "
            "list_sort(list(duration_ns) FILTER (WHERE duration_ns IS NOT NULL)) "
            f"FROM {SPANS.name} "
            f"WHERE type = '{TOOL_SPAN_TYPE}' AND name IS NOT NULL AND ({where}) "
            f"GROUP BY {keys}"
        )

    return f"{per('name')} UNION ALL {per('NULL')}"


def _hour(timestamp: ColumnElement[Any]) -> ColumnElement[Any]:
    """``hour_of`` as an expression, for the rows compiled from the queries' own."""
    return int_div(timestamp, HOUR_MS) * HOUR_MS


def _trace_cost_rows(where: str) -> str:
    t = TRACE_INFO.store.c
    hour = _hour(t.timestamp_ms)
    stmt = (
        select(t.experiment_id, hour, func.count(), *cost_columns(t))
        .where(carries_cost(t), text(where))
        .group_by(t.experiment_id, hour)
    )
    return _compiled(stmt)


def _model_cost_rows(where: str) -> str:
    s = SPANS.store.c
    hour = _hour(s[TRACE_TIMESTAMP_COPY])
    keys = [s[TRACE_EXPERIMENT_COPY], hour, s.model_name, s.model_provider]
    stmt = (
        select(*keys, func.count(), *cost_columns(s))
        .where(carries_cost(s), text(where))
        .group_by(*keys)
    )
    return _compiled(stmt)


TOOL_HOURS = HourlyRollup(
    TOOL_HOURS_TABLE, SPANS, TRACE_EXPERIMENT_COPY, TRACE_TIMESTAMP_COPY, _tool_rows
)
TRACE_COST_HOURS = HourlyRollup(
    TRACE_COST_HOURS_TABLE, TRACE_INFO, "experiment_id", "timestamp_ms", _trace_cost_rows
)
MODEL_COST_HOURS = HourlyRollup(
    MODEL_COST_HOURS_TABLE, SPANS, TRACE_EXPERIMENT_COPY, TRACE_TIMESTAMP_COPY, _model_cost_rows
)
ROLLUPS = (TOOL_HOURS, TRACE_COST_HOURS, MODEL_COST_HOURS)
