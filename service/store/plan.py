"""Which partitions one sync cycle compares with the tracking database.

* **recent hours** (the current one and the two before, UTC): new traces, traces that finish,
  spans that arrive after their trace, tags and feedback on fresh traces. Skipped when the
  change gate says nothing was written since the last cycle.
* **feedback cursor**: partitions of assessments whose ``last_updated_timestamp`` moved (logged,
  overridden, updated), on traces of any age; MLflow indexes that column.
* **reconciliation slice**: a few older hours per cycle, newest first, wrapping around: what has no
  change marker on old traces (tags set or deleted, spans added late, feedback deleted, retention
  deletes, experiments' traces deleted by id). Its size is bounded by a trace budget, so no cycle
  reads more than that from the spans heap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, or_

from service.store.source_sql import PARTITION_MS, HourRange, Partition, in_hours, in_partitions


@dataclass
class Checks:
    """The partitions a cycle compares: hour ranges plus single partitions."""

    ranges: list[HourRange] = field(default_factory=list)
    partitions: set[Partition] = field(default_factory=set)

    def empty(self) -> bool:
        return not self.ranges and not self.partitions

    def covers(self, p: Partition) -> bool:
        return p in self.partitions or any(
            (r.first is None or p.hour >= r.first) and (r.last is None or p.hour <= r.last)
            for r in self.ranges
        )

    def where(self) -> ColumnElement[bool]:
        conditions = [in_hours(r) for r in self.ranges]
        if self.partitions:
            conditions.append(in_partitions(self.partitions))
        return or_(*conditions)


def hour_of(epoch_ms: int) -> int:
    return epoch_ms // PARTITION_MS


def recent_hours(now_ms: int, hot_hours: int) -> HourRange:
    return HourRange(hour_of(now_ms) - hot_hours + 1, None)


@dataclass(frozen=True)
class Slice:
    hours: HourRange | None
    next_hour: int | None
    wrapped: bool


def reconciliation_slice(
    *,
    next_hour: int | None,
    oldest_hour: int | None,
    first_recent_hour: int,
    traces_per_hour: dict[int, int],
    budget_traces: int,
) -> Slice:
    """Older hours from ``next_hour`` down until the budget is spent; then wrap to the newest."""
    newest = first_recent_hour - 1
    if oldest_hour is None or oldest_hour > newest:
        return Slice(None, None, wrapped=True)
    start = newest if next_hour is None or not oldest_hour <= next_hour <= newest else next_hour
    hour, spent = start, 0
    while hour >= oldest_hour:
        spent += traces_per_hour.get(hour, 0)
        if spent >= budget_traces:
            break
        hour -= 1
    first = max(hour, oldest_hour)
    wrapped = first == oldest_hour
    return Slice(HourRange(first, start), None if wrapped else first - 1, wrapped)


def traces_per_hour(counts: Iterable[tuple[Partition, int]]) -> dict[int, int]:
    per_hour: dict[int, int] = {}
    for p, n in counts:
        per_hour[p.hour] = per_hour.get(p.hour, 0) + n
    return per_hour
