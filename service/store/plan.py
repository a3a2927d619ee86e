"""Which partitions one sync cycle compares with the tracking database.

* **recent slots** (the last three hours): new traces, traces that finish,
  spans that arrive after their trace, tags and feedback on fresh traces. Skipped when the
  change gate says nothing was written since the last cycle.
* **feedback cursor**: partitions of assessments whose ``last_updated_timestamp`` moved (logged,
  overridden, updated), on traces of any age; MLflow indexes that column.
* **reconciliation slice**: a few older slots per cycle, newest first, wrapping around: what has no
  change marker on old traces (tags set or deleted, spans added late, feedback deleted, retention
  deletes, experiments' traces deleted by id). Its size is bounded by a trace budget, so no cycle
  reads more than that from the spans heap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, or_

from service.store.source_sql import PARTITION_MS, Partition, SlotRange, in_partitions, in_slots


@dataclass
class Checks:
    """The partitions a cycle compares: slot ranges plus single partitions."""

    ranges: list[SlotRange] = field(default_factory=list)
    partitions: set[Partition] = field(default_factory=set)
    # Fingerprint each range with its own statement (a full comparison) instead of one.
    separately: bool = False

    def covers(self, p: Partition) -> bool:
        return p in self.partitions or any(
            (r.first is None or p.slot >= r.first) and (r.last is None or p.slot <= r.last)
            for r in self.ranges
        )

    def wheres(self) -> list[ColumnElement[bool]]:
        """The predicates to fingerprint with, one statement each."""
        conditions = [in_slots(r) for r in self.ranges]
        if self.partitions:
            conditions.append(in_partitions(self.partitions))
        if self.separately or not conditions:
            return conditions
        return [or_(*conditions)]


def slot_of(epoch_ms: int) -> int:
    return epoch_ms // PARTITION_MS


def recent_slots(now_ms: int, hot_slots: int) -> SlotRange:
    return SlotRange(slot_of(now_ms) - hot_slots + 1, None)


@dataclass(frozen=True)
class Slice:
    slots: SlotRange | None
    next_slot: int | None
    wrapped: bool


def reconciliation_slice(
    *,
    next_slot: int | None,
    oldest_slot: int | None,
    first_recent_slot: int,
    traces_per_slot: dict[int, int],
    budget_traces: int,
) -> Slice:
    """Older slots from ``next_slot`` down until the budget is spent; then wrap to the newest."""
    newest = first_recent_slot - 1
    if oldest_slot is None or oldest_slot > newest:
        return Slice(None, None, wrapped=True)
    start = newest if next_slot is None or not oldest_slot <= next_slot <= newest else next_slot
    slot, spent = start, 0
    while slot >= oldest_slot:
        spent += traces_per_slot.get(slot, 0)
        if spent >= budget_traces:
            break
        slot -= 1
    first = max(slot, oldest_slot)
    wrapped = first == oldest_slot
    return Slice(SlotRange(first, start), None if wrapped else first - 1, wrapped)


def traces_per_slot(counts: Iterable[tuple[Partition, int]]) -> dict[int, int]:
    per_slot: dict[int, int] = {}
    for p, n in counts:
        per_slot[p.slot] = per_slot.get(p.slot, 0) + n
    return per_slot
