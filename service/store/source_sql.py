"""What the sync asks the tracking database: partition fingerprints and narrow rows.

A partition is (experiment_id, slot), a slot being the 15 minutes of epoch time that hold the
trace's ``timestamp_ms`` (about 350 traces at a million a month). Every row of a trace table
belongs to its trace's partition, so one predicate on ``trace_info`` (read through MLflow's
``(experiment_id, timestamp_ms)`` and ``(timestamp_ms, request_id)`` indexes) selects a
partition's rows in every table. A fingerprint is ``count(*)`` and the sum of a cheap 32-bit hash
of the narrow columns, per partition and table: any insert, update or delete of a copied column
changes it, unless it keeps both the count and the 32-bit sum (about one change in four billion),
which then stays unseen until the partition changes again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlTraceInfo
from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    cast,
    false,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from service.dialects import int_div
from service.dialects.change_capture import row_hash
from service.store.layout import ENTITY_ASSOCIATIONS, TRACE_COPIES, TRACE_INFO, CopiedTable

PARTITION_MS = 900_000  # a slot: 15 minutes of UTC time
_NULL = "\x01"  # stands for NULL in the hashed text (PostgreSQL text cannot hold \x00)
_SEPARATOR = "\x1f"


@dataclass(frozen=True)
class Partition:
    experiment_id: int
    slot: int


@dataclass(frozen=True)
class SlotRange:
    """Slots ``first`` to ``last`` inclusive; ``None`` leaves that side open."""

    first: int | None
    last: int | None


@dataclass(frozen=True)
class Fingerprint:
    row_count: int
    hash_sum: int


EMPTY = Fingerprint(0, 0)

_ti = SqlTraceInfo.__table__
TRACE_SLOT = int_div(_ti.c.timestamp_ms, PARTITION_MS)


def _row_text(table: CopiedTable) -> ColumnElement[str]:
    parts: list[ColumnElement[str]] = []
    for name in table.columns:
        parts.append(func.coalesce(cast(table.source.c[name], String), literal(_NULL)))
    text = parts[0]
    for part in parts[1:]:
        text = text + literal(_SEPARATOR) + part
    return text


def _with_trace(table: CopiedTable, query: Select[Any]) -> Select[Any]:
    """Join the table's rows to their trace (trace_info itself needs no join)."""
    if table is TRACE_INFO:
        return query.select_from(_ti)
    assert table.trace_key is not None
    query = query.select_from(table.source).join(
        _ti, _ti.c.request_id == table.source.c[table.trace_key]
    )
    if table is ENTITY_ASSOCIATIONS:
        query = query.where(table.source.c.source_type == "TRACE")
    return query


def in_slots(slots: SlotRange) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if slots.first is not None:
        conditions.append(_ti.c.timestamp_ms >= slots.first * PARTITION_MS)
    if slots.last is not None:
        conditions.append(_ti.c.timestamp_ms < (slots.last + 1) * PARTITION_MS)
    return and_(*conditions) if conditions else ~false()


def in_partitions(partitions: Iterable[Partition]) -> ColumnElement[bool]:
    """One time range per run of consecutive slots of an experiment: a first sync's batch is a
    few ranges, not thousands of slot conditions to build and plan."""
    runs = [
        and_(
            _ti.c.experiment_id == experiment_id,
            _ti.c.timestamp_ms >= first * PARTITION_MS,
            _ti.c.timestamp_ms < (last + 1) * PARTITION_MS,
        )
        for experiment_id, first, last in _slot_runs(partitions)
    ]
    return or_(*runs) if runs else false()


def _slot_runs(partitions: Iterable[Partition]) -> list[tuple[int, int, int]]:
    """(experiment_id, first slot, last slot) of each run of consecutive slots."""
    runs: list[tuple[int, int, int]] = []
    for p in sorted(partitions, key=lambda p: (p.experiment_id, p.slot)):
        if runs and runs[-1][0] == p.experiment_id and runs[-1][2] == p.slot - 1:
            runs[-1] = (p.experiment_id, runs[-1][1], p.slot)
        else:
            runs.append((p.experiment_id, p.slot, p.slot))
    return runs


def fingerprint_select(table: CopiedTable, where: ColumnElement[bool]) -> Select[Any]:
    query = select(
        _ti.c.experiment_id,
        TRACE_SLOT.label("slot"),
        func.count().label("row_count"),
        func.sum(row_hash(_row_text(table))).label("hash_sum"),
    )
    return _with_trace(table, query).where(where).group_by(_ti.c.experiment_id, TRACE_SLOT)


async def fingerprints(
    session: AsyncSession, table: CopiedTable, where: ColumnElement[bool]
) -> dict[Partition, Fingerprint]:
    rows = await session.execute(fingerprint_select(table, where))
    return {
        Partition(int(e), int(d)): Fingerprint(int(n), int(h or 0)) for e, d, n, h in rows.all()
    }


def _store_columns(table: CopiedTable) -> list[ColumnElement[Any]]:
    """MLflow's narrow columns, then what the store copies from the row's trace (from the join
    that finds the partition): the store's column order."""
    derived = [_ti.c[TRACE_COPIES[name]].label(name) for name in table.derived]
    return [*(table.source.c[name] for name in table.columns), *derived]


def rows_select(table: CopiedTable, partitions: Iterable[Partition]) -> Select[Any]:
    """The narrow rows of ``table`` in ``partitions``, in the store's column order."""
    return _with_trace(table, select(*_store_columns(table))).where(in_partitions(partitions))


def count_select(table: CopiedTable, where: ColumnElement[bool]) -> Select[Any]:
    """How many rows of ``table`` belong to traces where ``where`` holds."""
    return _with_trace(table, select(func.count())).where(where)


# Extra columns of ``fingerprinted_rows_select``: the row's partition and its hash.
FP_EXPERIMENT, FP_SLOT, FP_HASH = "insights_fp_experiment", "insights_fp_slot", "insights_fp_hash"


def fingerprinted_rows_select(table: CopiedTable, where: ColumnElement[bool]) -> Select[Any]:
    """The narrow rows of ``table`` where ``where`` holds, each with its partition and the hash
    ``fingerprint_select`` sums: the fingerprints of the rows read, from the same statement."""
    query = select(
        *_store_columns(table),
        _ti.c.experiment_id.label(FP_EXPERIMENT),
        TRACE_SLOT.label(FP_SLOT),
        row_hash(_row_text(table)).label(FP_HASH),
    )
    return _with_trace(table, query).where(where)


def trace_ids_select(partitions: Iterable[Partition]) -> Select[Any]:
    """(request_id, experiment_id, slot) of the traces in ``partitions``."""
    query = select(_ti.c.request_id, _ti.c.experiment_id, TRACE_SLOT)
    return query.where(in_partitions(partitions))


def oldest_trace_select() -> Select[Any]:
    """The oldest trace timestamp (MLflow's timestamp index answers it)."""
    return select(func.min(_ti.c.timestamp_ms))
