"""Independent computations of what the service should answer.

Nothing here imports the service's bucketing or statistics code: buckets come from
``datetime``/``zoneinfo`` calendar arithmetic, percentiles from numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import sqlalchemy as sa


@dataclass(frozen=True)
class TraceRow:
    request_id: str
    timestamp_ms: int
    execution_time_ms: int | None
    status: str


def load_traces(
    conn: sa.Connection,
    experiment_ids: Sequence[str],
    start_time: int | None = None,
    end_time: int | None = None,
) -> list[TraceRow]:
    query = (
        "SELECT request_id, timestamp_ms, execution_time_ms, status, experiment_id FROM trace_info"
    )
    ids = {int(i) for i in experiment_ids}
    return [
        TraceRow(r[0], int(r[1]), None if r[2] is None else int(r[2]), r[3])
        for r in conn.execute(sa.text(query)).all()
        if int(r[4]) in ids
        and (start_time is None or r[1] >= start_time)
        and (end_time is None or r[1] < end_time)
    ]


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def bucket_start(ts_ms: int, size: str, tz_name: str) -> int:
    """Start (UTC ms) of the local hour/day/week (Monday) holding ``ts_ms``."""
    tz = ZoneInfo(tz_name)
    local = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(tz)
    if size == "hour":
        # Keep the UTC offset of ``local`` so a repeated hour (DST fall-back) stays distinct.
        return _ms(local.replace(minute=0, second=0, microsecond=0))
    day = local.date()
    if size == "week":
        day -= timedelta(days=day.weekday())
    midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
    return _ms(midnight)


def bucket_starts(first_ms: int, last_ms: int, size: str, tz_name: str) -> list[int]:
    """Every bucket start from the bucket of ``first_ms`` to the bucket of ``last_ms``."""
    starts = [bucket_start(first_ms, size, tz_name)]
    last = bucket_start(last_ms, size, tz_name)
    step = {"hour": 3_600_000, "day": 86_400_000 // 2, "week": 86_400_000}[size]
    probe = starts[0]
    while starts[-1] < last:
        probe += step
        start = bucket_start(probe, size, tz_name)
        if start != starts[-1]:
            starts.append(start)
    return starts


def group_by_bucket(
    traces: Iterable[TraceRow], size: str, tz_name: str
) -> dict[int, list[TraceRow]]:
    groups: dict[int, list[TraceRow]] = {}
    for t in traces:
        groups.setdefault(bucket_start(t.timestamp_ms, size, tz_name), []).append(t)
    return groups


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q, method="linear"))


def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(np.asarray(values, dtype=float))) if values else None


def close(actual: float | None, expected: float | None, rel: float = 1e-9) -> bool:
    if actual is None or expected is None:
        return actual is expected
    return bool(np.isclose(actual, expected, rtol=rel, atol=1e-12))
