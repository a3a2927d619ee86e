"""Which partitions one sync cycle compares with the tracking database.

* **recent days** (yesterday and later, UTC): new traces, traces that finish, spans that arrive
  after their trace, tags and feedback on fresh traces. Skipped when the change gate says nothing
  was written since the last cycle.
* **feedback cursor**: partitions of assessments whose ``last_updated_timestamp`` moved (logged,
  overridden, updated), on traces of any age; MLflow indexes that column.
* **reconciliation slice**: a few older days per cycle, newest first, wrapping around: what has no
  change marker on old traces (tags set or deleted, spans added late, feedback deleted, retention
  deletes, experiments' traces deleted by id). Its size is bounded by a trace budget, so no cycle
  reads more than that from the spans heap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, or_

from service.store.source_sql import DAY_MS, DayRange, Partition, in_days, in_partitions


@dataclass
class Checks:
    """The partitions a cycle compares: day ranges plus single partitions."""

    ranges: list[DayRange] = field(default_factory=list)
    partitions: set[Partition] = field(default_factory=set)

    def empty(self) -> bool:
        return not self.ranges and not self.partitions

    def covers(self, p: Partition) -> bool:
        return p in self.partitions or any(
            (r.first is None or p.day >= r.first) and (r.last is None or p.day <= r.last)
            for r in self.ranges
        )

    def where(self) -> ColumnElement[bool]:
        conditions = [in_days(r) for r in self.ranges]
        if self.partitions:
            conditions.append(in_partitions(self.partitions))
        return or_(*conditions)


def day_of(epoch_ms: int) -> int:
    return epoch_ms // DAY_MS


def recent_days(now_ms: int, hot_days: int) -> DayRange:
    return DayRange(day_of(now_ms) - hot_days + 1, None)


@dataclass(frozen=True)
class Slice:
    days: DayRange | None
    next_day: int | None
    wrapped: bool


def reconciliation_slice(
    *,
    next_day: int | None,
    oldest_day: int | None,
    first_recent_day: int,
    traces_per_day: dict[int, int],
    budget_traces: int,
) -> Slice:
    """Older days from ``next_day`` down until the budget is spent; then wrap to the newest."""
    newest = first_recent_day - 1
    if oldest_day is None or oldest_day > newest:
        return Slice(None, None, wrapped=True)
    start = newest if next_day is None or not oldest_day <= next_day <= newest else next_day
    day, spent = start, 0
    while day >= oldest_day:
        spent += traces_per_day.get(day, 0)
        if spent >= budget_traces:
            break
        day -= 1
    first = max(day, oldest_day)
    wrapped = first == oldest_day
    return Slice(DayRange(first, start), None if wrapped else first - 1, wrapped)


def traces_per_day(counts: Iterable[tuple[Partition, int]]) -> dict[int, int]:
    per_day: dict[int, int] = {}
    for p, n in counts:
        per_day[p.day] = per_day.get(p.day, 0) + n
    return per_day
