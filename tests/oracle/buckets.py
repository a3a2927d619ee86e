"""Time buckets from calendar arithmetic (``datetime``/``zoneinfo``), never the service's code."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from tests.oracle.rows import Trace

T = TypeVar("T")


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


def expected_starts(traces: Iterable[Trace], body: dict[str, Any], size: str, tz: str) -> list[int]:
    """The buckets a gap-filled series must have: from the window (or the first trace) to the
    window's end (or the last trace)."""
    stamps = [t.timestamp_ms for t in traces]
    first = body.get("start_time", min(stamps, default=None))
    last = body["end_time"] - 1 if "end_time" in body else max(stamps, default=None)
    if first is None or last is None:
        return []
    return bucket_starts(first, last, size, tz)


def group_stamped(items: Iterable[tuple[int, T]], size: str, tz: str) -> dict[int, list[T]]:
    """Items keyed by the start of the bucket holding their timestamp (ms)."""
    groups: dict[int, list[T]] = {}
    for ts, item in items:
        groups.setdefault(bucket_start(ts, size, tz), []).append(item)
    return groups


def group_by_bucket(traces: Iterable[Trace], size: str, tz_name: str) -> dict[int, list[Trace]]:
    return group_stamped(((t.timestamp_ms, t) for t in traces), size, tz_name)


def series(
    starts: list[int],
    items: Iterable[tuple[int, T]],
    size: str,
    tz: str,
    make: Callable[[list[T]], dict[str, Any]],
) -> list[dict[str, Any]]:
    """One point per bucket start: ``make(items of the bucket)`` plus ``time_bucket``."""
    groups = group_stamped(items, size, tz)
    assert set(groups) <= set(starts), "every item must fall in a bucket of the series"
    return [{"time_bucket": s, **make(groups.get(s, []))} for s in starts]
