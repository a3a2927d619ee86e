"""The store's rollups per (experiment, UTC hour of the trace): what they are and how the sync
keeps them.

A rollup is a table of rows per (trace's experiment, UTC hour of the trace's timestamp, keys)
computed from one copied table: counts, sums, sorted values. It follows that table's partitions:
whenever a cycle copied or deleted rows of a partition, the rollup's rows of the hour holding the
partition's slot are recomputed from the copied rows, in the cycle's transaction (``refresh``);
a first sync, or ``bench.grow``, recomputes every hour. The queries read them where a request's
buckets are made of whole UTC hours of its window and no filter narrows the traces
(``service/queries/hourly.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from sqlalchemy import Table

from service.dialects.expressions import TRACE_EXPERIMENT_COPY
from service.store.layout import CopiedTable
from service.store.source_sql import PARTITION_MS, Partition
from service.timebuckets import HOUR_MS


def hour_of(timestamp: str) -> str:
    """The UTC hour of a timestamp column, as the hour buckets compute it where the time
    zone's offset is whole hours (DuckDB's ``//`` truncates, as every path's integer division)."""
    return f"{timestamp} // {HOUR_MS} * {HOUR_MS}"


@dataclass(frozen=True)
class HourlyRollup:
    """``table``'s rows come from ``source``'s copied rows: ``rows(where)`` is the SQL selecting
    them in ``table``'s column order from the rows ``where`` picks, ``experiment`` and
    ``timestamp`` are ``source``'s columns of the trace's experiment and timestamp. The table's
    first two columns are ``TRACE_EXPERIMENT_COPY`` and ``hour_ms``."""

    table: Table
    source: CopiedTable
    experiment: str
    timestamp: str
    rows: Callable[[str], str]

    @property
    def name(self) -> str:
        return self.table.name

    def insert(self, where: str) -> str:
        columns = ", ".join(f'"{c.name}"' for c in self.table.columns)
        return f"INSERT INTO {self.name} ({columns}) {self.rows(where)}"


def _truncated_hour(ms: int) -> int:
    """``hour_of`` in Python: integer division truncating toward zero, as SQL's."""
    return ms // HOUR_MS * HOUR_MS if ms >= 0 else -(-ms // HOUR_MS) * HOUR_MS


def hours_of_slot(slot: int) -> set[int]:
    """The rollup hours (``hour_of``) of a partition's 15-minute slot: one, except where
    truncation toward zero splits a slot before 1970."""
    first = slot * PARTITION_MS
    return {_truncated_hour(first), _truncated_hour(first + PARTITION_MS - 1)}


def refresh(
    db: duckdb.DuckDBPyConnection, rollup: HourlyRollup, partitions: Iterable[Partition] | None
) -> None:
    """Recompute ``rollup``'s rows of the hours holding these partitions (``None``: all)."""
    if partitions is None:
        db.execute(f"DELETE FROM {rollup.name}")
        db.execute(rollup.insert("TRUE"))
        return
    hours = sorted({(p.experiment_id, h) for p in partitions for h in hours_of_slot(p.slot)})
    if not hours:
        return  # most cycles: none of its rows copied
    first, last = min(h for _e, h in hours), max(h for _e, h in hours)
    table = pa.table(
        {"experiment_id": [e for e, _h in hours], "hour_ms": [h for _e, h in hours]},
        schema=pa.schema([("experiment_id", pa.int64()), ("hour_ms", pa.int64())]),
    )
    db.register("refreshed_hours", table)
    try:
        db.execute(
            f"DELETE FROM {rollup.name} WHERE ({TRACE_EXPERIMENT_COPY}, hour_ms) IN "
            "(SELECT (experiment_id, hour_ms) FROM refreshed_hours)"
        )
        # The window first, so that DuckDB skips the row groups of other times.
        ts = rollup.timestamp
        db.execute(
            rollup.insert(
                f"{ts} >= {first} AND {ts} < {last + HOUR_MS} "
                f"AND ({rollup.experiment}, {hour_of(ts)}) IN "
                "(SELECT (experiment_id, hour_ms) FROM refreshed_hours)"
            )
        )
    finally:
        db.unregister("refreshed_hours")
