"""The store's rollup of tool calls per (experiment, UTC hour, tool), recomputed from its spans.

``TOOL_HOURS_TABLE`` (service/store/layout.py) holds, per trace's experiment, UTC hour of the
trace's timestamp and tool name, what the tools' requests compute from every call: counts,
calling traces, and the finished calls' durations sorted. The sync recomputes the hours of the
partitions whose spans it copied or deleted (``refresh``), in the cycle's transaction; a first
sync, or ``bench.grow``, recomputes every hour.

The rows are the tools' own: a TOOL span is one whose type is exactly 'TOOL' with a name, a
failed call one whose status is exactly 'ERROR' (``service.queries.tools``).
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb
import pyarrow as pa

from service.dialects.expressions import TOOL_HOURS, TRACE_EXPERIMENT_COPY, TRACE_TIMESTAMP_COPY
from service.store.layout import SPANS, TOOL_HOURS_TABLE
from service.store.source_sql import PARTITION_MS, Partition
from service.timebuckets import HOUR_MS
from service.traces import SPAN_ERROR, TOOL_SPAN_TYPE

# The hour of a span's trace, as the tools' hour buckets compute it where the time zone's offset
# is whole hours (DuckDB's ``//`` truncates, as every path's integer division does).
_HOUR = f"{TRACE_TIMESTAMP_COPY} // {HOUR_MS} * {HOUR_MS}"


def rows_select(where: str) -> str:
    """Each (experiment, hour, tool)'s row from the copied spans ``where`` picks, in the
    table's column order."""
    return (
        f"SELECT {TRACE_EXPERIMENT_COPY}, {_HOUR}, name, count(*), "
        f"count(*) FILTER (WHERE status = '{SPAN_ERROR}'), count(DISTINCT trace_id), "
        "count(duration_ns), sum(duration_ns), min(duration_ns), max(duration_ns), "
        "list_sort(list(duration_ns) FILTER (WHERE duration_ns IS NOT NULL)) "
        f"FROM {SPANS.name} "
        f"WHERE type = '{TOOL_SPAN_TYPE}' AND name IS NOT NULL AND ({where}) "
        f"GROUP BY {TRACE_EXPERIMENT_COPY}, {_HOUR}, name"
    )


def _insert(where: str) -> str:
    columns = ", ".join(f'"{c.name}"' for c in TOOL_HOURS_TABLE.columns)
    return f"INSERT INTO {TOOL_HOURS} ({columns}) {rows_select(where)}"


def hour_of_slot(slot: int) -> int:
    """The UTC hour (epoch ms) a partition's 15-minute slot lies in."""
    return slot * PARTITION_MS // HOUR_MS * HOUR_MS


def refresh(db: duckdb.DuckDBPyConnection, partitions: Iterable[Partition] | None) -> None:
    """Recompute the rows of the hours holding these partitions (``None``: every hour)."""
    if partitions is None:
        db.execute(f"DELETE FROM {TOOL_HOURS}")
        db.execute(_insert("TRUE"))
        return
    hours = sorted({(p.experiment_id, hour_of_slot(p.slot)) for p in partitions})
    if not hours:
        return  # most cycles: no spans copied
    first, last = min(h for _e, h in hours), max(h for _e, h in hours)
    table = pa.table(
        {"experiment_id": [e for e, _h in hours], "hour_ms": [h for _e, h in hours]},
        schema=pa.schema([("experiment_id", pa.int64()), ("hour_ms", pa.int64())]),
    )
    db.register("refreshed_hours", table)
    try:
        db.execute(
            f"DELETE FROM {TOOL_HOURS} WHERE ({TRACE_EXPERIMENT_COPY}, hour_ms) IN "
            "(SELECT (experiment_id, hour_ms) FROM refreshed_hours)"
        )
        # The window first, so that DuckDB skips the row groups of other times.
        db.execute(
            _insert(
                f"{TRACE_TIMESTAMP_COPY} >= {first} AND {TRACE_TIMESTAMP_COPY} < {last + HOUR_MS} "
                f"AND ({TRACE_EXPERIMENT_COPY}, {_HOUR}) IN "
                "(SELECT (experiment_id, hour_ms) FROM refreshed_hours)"
            )
        )
    finally:
        db.unregister("refreshed_hours")
