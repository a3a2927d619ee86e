"""Reading the analytics store's rollups per (experiment, UTC hour) (``service.store.hourly``).

A query offers a rollup's rows as the ``kept`` form of its grouping (``kept_span_sets``): the
tracking databases run the grouping over the rows; the store reads the rollup instead, one row
per (experiment, hour, keys) instead of every trace or span. Only where the rollup gives the
same answer (``usable``): no filter (a rollup knows a row's trace by its experiment and hour
alone), and buckets made of whole UTC hours of the window (``SeriesFrame.whole_hours``), so
that each hour's sums add up to its bucket's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.expression import TableClause

from service.dialects.expressions import TRACE_EXPERIMENT_COPY
from service.scope import SeriesFrame


def usable(frame: SeriesFrame) -> bool:
    return not frame.scope.filters and frame.whole_hours


def bucket(rollup: TableClause, frame: SeriesFrame) -> ColumnElement[Any]:
    """The bucket of a rollup row's hour (the hour's timestamps all fall in it)."""
    return frame.bucket_key(rollup.c.hour_ms).label("bucket")


def in_scope(rollup: TableClause, frame: SeriesFrame) -> ColumnElement[bool]:
    """The rollup's rows of the frame's experiments and window (of whole hours)."""
    scope = frame.scope
    conditions: list[ColumnElement[bool]] = [
        rollup.c[TRACE_EXPERIMENT_COPY].in_(scope.experiment_ids)
    ]
    if scope.start_time is not None:
        conditions.append(rollup.c.hour_ms >= scope.start_time)
    if scope.end_time is not None:
        conditions.append(rollup.c.hour_ms < scope.end_time)
    return and_(*conditions)
