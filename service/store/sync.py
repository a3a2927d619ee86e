"""One sync cycle: compare partition fingerprints, copy the partitions that differ.

Reads go through the service's read-only ``Database``; writes go to the store file inside one
DuckDB transaction per cycle (rows, fingerprints, cursors and ``as_of_ms`` together).

A partition's fingerprint is read *before* its rows. If a write lands between the two reads,
the store holds the newer rows under the older fingerprint; the next comparison of that
partition sees a difference and copies it again. Reading in the other order could record a
fingerprint that matches the source while the copy is stale, for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from mlflow.store.tracking.dbmodels.models import SqlAssessments
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import Database
from service.dialects.batch_reads import batch_reader_for
from service.dialects.change_capture import ChangeGate, prepare_sync_session
from service.store.layout import (
    ASSESSMENTS,
    EXPERIMENTS,
    SPANS,
    TRACE_INFO,
    TRACE_TABLES,
    CopiedTable,
)
from service.store.plan import (
    Checks,
    recent_slots,
    reconciliation_slice,
    slot_of,
    traces_per_slot,
)
from service.store.source_identity import source_identity
from service.store.source_sql import (
    EMPTY,
    FP_EXPERIMENT,
    FP_HASH,
    FP_SLOT,
    TRACE_SLOT,
    Fingerprint,
    Partition,
    SlotRange,
    count_select,
    fingerprinted_rows_select,
    fingerprints,
    in_partitions,
    oldest_trace_select,
    rows_select,
    trace_ids_select,
)
from service.store.store_file import StoreFile, arrow_schema

logger = logging.getLogger(__name__)

Key = tuple[Partition, str]


@dataclass(frozen=True)
class SyncSettings:
    # Slots (15 minutes, counting the current one) compared whenever the gate reports a write.
    recent_slots: int = 12
    # Traces per cycle the reconciliation slice compares (their spans, tags, ... with them).
    reconcile_budget_traces: int = 250
    # Rows per read from the tracking database, and per batch of partitions copied.
    chunk_rows: int = 10_000
    batch_rows: int = 50_000
    # Rows a first sync copies per DuckDB transaction (bounds the memory an open one holds).
    first_sync_commit_rows: int = 1_000_000
    # Slots per fingerprint statement of a full comparison (two days).
    full_scan_slots: int = 192
    # Feedback timestamps come from clients' clocks and commits land out of order.
    feedback_overlap_ms: int = 60_000


@dataclass
class SyncStats:
    full: bool
    rows: dict[str, int] = field(default_factory=dict)  # rows copied per table
    partitions_checked: int = 0
    partitions_copied: int = 0
    recent_checked: bool = False
    reconciled: SlotRange | None = None
    reconciliation_wrapped: bool = False
    as_of_ms: int = 0
    duration_ms: float = 0.0


@dataclass
class CopyProgress:
    """Rows copied so far by a cycle, out of the rows its changed partitions hold."""

    done: int = 0
    total: int = 0

    @property
    def percent(self) -> float | None:
        return round(100.0 * self.done / self.total, 1) if self.total else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SyncCycle:
    """State of one cycle; ``run`` does it."""

    def __init__(
        self,
        file: StoreFile,
        database: Database,
        gate: ChangeGate,
        settings: SyncSettings,
        *,
        full: bool,
        progress: CopyProgress | None = None,
    ) -> None:
        self.file = file
        self.database = database
        self.gate = gate
        self.settings = settings
        self.started_ms = _now_ms()
        self.meta: dict[str, str] = {}
        self.stored: dict[Key, Fingerprint] = {}
        self.stats = SyncStats(full=full)
        self.progress = progress or CopyProgress()
        self.new_meta: dict[str, str] = {}
        # Traces whose spans the cycle deleted or copied: their span sets are recomputed.
        self.span_traces: set[str] = set()
        # Traces whose assessments it deleted or copied: their repeated feedback is recomputed.
        self.feedback_traces: set[str] = set()

    async def run(self) -> SyncStats:
        """One cycle. Every DuckDB call runs in a worker thread: the event loop that serves
        requests never waits on the store file."""
        clock = time.perf_counter()
        self.meta = await self.file.call(self.file.meta)
        # The traces' partitions plan the cycle; the others are read when compared.
        self.stored = await self.file.call(self.file.fingerprints, TRACE_INFO.name)
        async with self.database.session() as session:
            await prepare_sync_session(session)
            await self._bind_source(session)
            checks = await self._plan(session)
            experiments = await self._read_experiments(session)
            empty = self.meta.get("first_sync_complete") != "1"
            if not empty:
                source, stored = await self._fingerprints(session, checks)
                changed = {key: fp for key, fp in source.items() if stored.get(key, EMPTY) != fp}
                self.progress.total = sum(fp.row_count for fp in changed.values())
            async with self.file.writing():
                if empty:  # rows an interrupted first sync committed are not counted twice
                    await self.file.call(self.file.clear_rows)
                await self.file.call(self._copy_experiments, experiments)
                if empty:  # one pass: rows and their fingerprints read together
                    source = changed = await self._copy_everything(session, checks)
                else:
                    await self._copy_partitions(session, changed)
                await self.file.call(
                    self.file.refresh_feedback_kinds, _feedback_changed(changed, empty)
                )
                await self.file.call(
                    self.file.refresh_span_sets, None if empty else self.span_traces
                )
                await self.file.call(
                    self.file.refresh_repeated_feedback, None if empty else self.feedback_traces
                )
                await self.file.call(
                    self.file.refresh_rollups, None if empty else _partitions_changed(changed)
                )
                await self.file.call(self.file.record_fingerprints, source)
                await self.file.call(self.file.set_meta, self.new_meta)
            if empty:
                self.stats.partitions_checked = len({p for p, _ in changed})
        self.stats.partitions_copied = len({p for p, _ in changed})
        self.stats.duration_ms = (time.perf_counter() - clock) * 1000
        return self.stats

    # --- what to compare ---------------------------------------------------------------------

    async def _bind_source(self, session: AsyncSession) -> None:
        identity = await source_identity(session, self.database.engine.url)
        known = self.meta.get("source_identity")
        if known is not None and known != identity:
            logger.warning(
                "analytics store %s was copied from another tracking database: starting over",
                self.file.path,
            )
            await self.file.call(self._clear)
        if self.meta.get("first_sync_complete") != "1":
            self.stats.full = True
        self.new_meta |= {"source_identity": identity, "first_sync_complete": "1"}

    def _clear(self) -> None:
        with self.file.transaction():
            self.file.clear()
        self.meta, self.stored = self.file.meta(), {}

    async def _plan(self, session: AsyncSession) -> Checks:
        token = await self.gate.token(session)
        self.new_meta["gate_token"] = token or ""
        if self.stats.full:
            await self._advance_feedback_cursor(session)  # before the copy: overlap, not a gap
            self.stats.recent_checked = True
            self.stats.as_of_ms = self.started_ms
            self.new_meta["as_of_ms"] = str(self.started_ms)
            return Checks(ranges=await self._everything(session), separately=True)
        checks = Checks()
        previous_as_of = int(self.meta.get("as_of_ms", "0"))
        if token is None or token != self.meta.get("gate_token"):
            checks.ranges.append(recent_slots(self.started_ms, self.settings.recent_slots))
            checks.partitions |= await self._advance_feedback_cursor(session)
            self.stats.recent_checked = True
            as_of = self.started_ms
        else:
            as_of = max(previous_as_of, self.started_ms - self.gate.delay_ms)
        self.stats.as_of_ms = as_of
        self.new_meta["as_of_ms"] = str(as_of)
        await self._add_reconciliation_slice(session, checks)
        return checks

    async def _everything(self, session: AsyncSession) -> list[SlotRange]:
        """Every slot, in ranges of ``full_scan_slots``: no single fingerprint statement scans
        a whole table (the service's statement timeout applies to the sync too)."""
        oldest_ms = (await session.execute(oldest_trace_select())).scalar()
        known = [p.slot for p, _ in self.stored]
        if oldest_ms is not None:
            known.append(slot_of(oldest_ms))
        if not known:
            return [SlotRange(None, None)]
        first, now, step = min(known), slot_of(self.started_ms), self.settings.full_scan_slots
        ranges = [SlotRange(s, s + step - 1) for s in range(first, now + 1, step)]
        ranges[-1] = SlotRange(ranges[-1].first, None)  # and whatever is stamped in the future
        return [SlotRange(None, first - 1), *ranges]

    async def _advance_feedback_cursor(self, session: AsyncSession) -> set[Partition]:
        """Partitions whose feedback changed since the cursor (minus an overlap)."""
        a = SqlAssessments.__table__.c
        cursor = int(self.meta.get("feedback_cursor_ms", "0"))
        since = cursor - self.settings.feedback_overlap_ms
        newest = (await session.execute(select(func.max(a.last_updated_timestamp)))).scalar()
        self.new_meta["feedback_cursor_ms"] = str(max(cursor, int(newest or 0)))
        if self.stats.full or newest is None or newest < since:
            return set()
        ti = TRACE_INFO.source.c
        rows = await session.execute(
            select(ti.experiment_id, TRACE_SLOT)
            .select_from(SqlAssessments.__table__)
            .join(TRACE_INFO.source, ti.request_id == a.trace_id)
            .where(a.last_updated_timestamp >= since)
            .distinct()
        )
        return {Partition(int(e), int(d)) for e, d in rows.all()}

    async def _add_reconciliation_slice(self, session: AsyncSession, checks: Checks) -> None:
        oldest_ms = (await session.execute(oldest_trace_select())).scalar()
        stored = self.stored
        stored_slots = [p.slot for p, t in stored if t == TRACE_INFO.name]
        if oldest_ms is not None:
            stored_slots.append(slot_of(oldest_ms))
        first_recent = recent_slots(self.started_ms, self.settings.recent_slots).first
        assert first_recent is not None
        next_slot = self.meta.get("reconcile_next_slot")
        chosen = reconciliation_slice(
            next_slot=int(next_slot) if next_slot else None,
            oldest_slot=min(stored_slots) if stored_slots else None,
            first_recent_slot=first_recent,
            traces_per_slot=traces_per_slot(
                (p, fp.row_count) for (p, t), fp in stored.items() if t == TRACE_INFO.name
            ),
            budget_traces=self.settings.reconcile_budget_traces,
        )
        if chosen.slots is not None:
            checks.ranges.append(chosen.slots)
        self.stats.reconciled = chosen.slots
        self.stats.reconciliation_wrapped = chosen.wrapped
        self.new_meta["reconcile_next_slot"] = (
            "" if chosen.next_slot is None else str(chosen.next_slot)
        )

    async def _fingerprints(
        self, session: AsyncSession, checks: Checks
    ) -> tuple[dict[Key, Fingerprint], dict[Key, Fingerprint]]:
        """The source's fingerprints of every checked partition (empty ones included, so the
        store drops what the source deleted) and the store's recorded ones."""
        stored = await self.file.call(
            self.file.fingerprints_covered, checks.ranges, checks.partitions
        )
        source: dict[Key, Fingerprint] = {}
        for where in checks.wheres():
            for table in TRACE_TABLES:
                for p, fp in (await fingerprints(session, table, where)).items():
                    source[(p, table.name)] = fp
        partitions = {p for p, _ in source} | {p for p, _ in stored}
        for p in partitions:
            for table in TRACE_TABLES:
                source.setdefault((p, table.name), EMPTY)
        self.stats.partitions_checked = len(partitions)
        return source, stored

    # --- copying -----------------------------------------------------------------------------

    async def _read_experiments(self, session: AsyncSession) -> list[tuple[Any, ...]]:
        columns = [EXPERIMENTS.source.c[name] for name in EXPERIMENTS.columns]
        return [tuple(r) for r in (await session.execute(select(*columns))).all()]

    def _copy_experiments(self, rows: list[tuple[Any, ...]]) -> None:
        if sorted(rows, key=repr) != sorted(self.file.rows(EXPERIMENTS), key=repr):
            self.file.replace_all(EXPERIMENTS, rows)
            self.stats.rows[EXPERIMENTS.name] = len(rows)

    async def _copy_partitions(
        self, session: AsyncSession, changed: dict[Key, Fingerprint]
    ) -> None:
        """Delete every row of a changed (partition, table) by trace id, then insert the source's.

        Deleting by the trace ids of both sides also removes a trace's old rows when its
        timestamp moved it to another partition; all deletes run before any insert.
        """
        per_table: dict[str, list[Partition]] = {}
        for p, name in sorted(changed, key=lambda k: (-k[0].slot, k[0].experiment_id, k[1])):
            per_table.setdefault(name, []).append(p)
        if self.meta.get("first_sync_complete") == "1":  # an empty store has nothing to delete
            await self._delete_changed(session, per_table)
        for table in TRACE_TABLES:
            # A partition the source emptied needed its delete only.
            partitions = [
                p for p in per_table.get(table.name, []) if changed[(p, table.name)].row_count
            ]
            if partitions:
                total = sum(changed[(p, table.name)].row_count for p in partitions)
                await self._copy_rows(session, table, partitions, changed, total)

    async def _delete_changed(
        self, session: AsyncSession, per_table: dict[str, list[Partition]]
    ) -> None:
        """Delete by the trace ids of both sides; ids are read before any row is deleted, since
        deleting trace_info rows changes which traces the store's partitions hold."""
        touched = {p for partitions in per_table.values() for p in partitions}
        ids = await self.file.call(self.file.trace_ids_by_partition, touched)
        rows = await session.execute(trace_ids_select(touched))
        for trace_id, experiment_id, slot in rows.all():
            ids.setdefault(Partition(int(experiment_id), int(slot)), set()).add(trace_id)
        for table in TRACE_TABLES:
            partitions = per_table.get(table.name, [])
            doomed = set().union(*(ids.get(p, set()) for p in partitions))
            if table is SPANS:
                self.span_traces |= doomed
            elif table is ASSESSMENTS:
                self.feedback_traces |= doomed
            if doomed:
                await self.file.call(self.file.delete_traces, table, doomed)

    async def _copy_rows(
        self,
        session: AsyncSession,
        table: CopiedTable,
        partitions: Sequence[Partition],
        changed: dict[Key, Fingerprint],
        total: int,
    ) -> None:
        done = 0
        progress = _Progress(table.name, total, loud=self.stats.full)
        connection = await session.connection()
        reader = batch_reader_for(connection)
        schema = arrow_schema(table)
        for batch in _batches(partitions, changed, table.name, self.settings.batch_rows):
            query = rows_select(table, batch)
            # Closed even when an insert fails: no cursor is left half-read.
            async with aclosing(
                reader.batches(connection, query, schema, self.settings.chunk_rows)
            ) as chunks:
                async for chunk in chunks:
                    await self.file.call(self.file.insert, table, chunk)
                    if table is SPANS:
                        self.span_traces.update(chunk.column(table.trace_key).to_pylist())
                    elif table is ASSESSMENTS:
                        self.feedback_traces.update(chunk.column(table.trace_key).to_pylist())
                    done += chunk.num_rows
                    self.progress.done += chunk.num_rows
                    progress.report(done)
        self.stats.rows[table.name] = self.stats.rows.get(table.name, 0) + done

    async def _copy_everything(
        self, session: AsyncSession, checks: Checks
    ) -> dict[Key, Fingerprint]:
        """Copy every row into an empty store, each table in one pass: every row comes with its
        partition and hash, so the fingerprints are summed from the rows read (same statement,
        same snapshot: they match the copy exactly) instead of a second pass over the source.

        trace_info is read by the plan's slot ranges; its per-partition trace counts then size
        the batches of the other tables.
        """
        connection = await session.connection()
        reader = batch_reader_for(connection)
        source: dict[Key, Fingerprint] = {}
        uncommitted = 0
        # /ready reports rows of rows: counting is one cheap pass (no hashing, no row text).
        for where in checks.wheres():
            for table in TRACE_TABLES:
                count = (await session.execute(count_select(table, where))).scalar()
                self.progress.total += int(count or 0)
        for table in TRACE_TABLES:
            if table is TRACE_INFO:
                wheres = [(where, 1) for where in checks.wheres()]
            else:
                counts = {k: fp for k, fp in source.items() if k[1] == TRACE_INFO.name}
                budget = max(1, self.settings.batch_rows // _ROWS_PER_TRACE)
                batches = _batches([p for p, _ in counts], counts, TRACE_INFO.name, budget)
                wheres = [
                    (in_partitions(b), sum(counts[(p, TRACE_INFO.name)].row_count for p in b))
                    for b in batches
                ]
            schema = arrow_schema(table).append(pa.field(FP_EXPERIMENT, pa.int32()))
            schema = schema.append(pa.field(FP_SLOT, pa.int64()))
            schema = schema.append(pa.field(FP_HASH, pa.int64()))
            progress = _Progress(table.name, None, loud=True)
            done_rows, done_units, units = 0, 0, sum(n for _, n in wheres)
            for where, unit_count in wheres:
                query = fingerprinted_rows_select(table, where)
                async with aclosing(
                    reader.batches(connection, query, schema, self.settings.chunk_rows)
                ) as chunks:
                    async for chunk in chunks:
                        rows = chunk.select(table.store_columns)
                        await self.file.call(self.file.insert, table, rows)
                        _add_fingerprints(source, table.name, chunk)
                        done_rows += chunk.num_rows
                        self.progress.done += chunk.num_rows
                        uncommitted += chunk.num_rows
                        if uncommitted >= self.settings.first_sync_commit_rows:
                            await self.file.call(self.file.commit_and_continue)
                            uncommitted = 0
                        progress.report(done_rows, done_units / units if units else 1.0)
                done_units += unit_count
            progress.report(done_rows, 1.0, final=True)
            self.stats.rows[table.name] = done_rows
        return source


def _feedback_changed(changed: dict[Key, Fingerprint], everything: bool) -> set[int] | None:
    """The experiments whose summary of feedback kinds a cycle's copy may have changed (None:
    all of them, after a first sync)."""
    if everything:
        return None
    return {p.experiment_id for p, name in changed if name == ASSESSMENTS.name}


def _partitions_changed(changed: dict[Key, Fingerprint]) -> dict[str, set[Partition]]:
    """The partitions a cycle deleted or copied rows of, by table: the rollups' rows of their
    hours are recomputed."""
    partitions: dict[str, set[Partition]] = {}
    for p, name in changed:
        partitions.setdefault(name, set()).add(p)
    return partitions


# Sizes the first sync's batches of child tables from trace counts (about 11 metadata rows, 5
# spans and 5 tags per trace in the bench dataset): ~batch_rows spans or tags per read.
_ROWS_PER_TRACE = 5


def _add_fingerprints(source: dict[Key, Fingerprint], table_name: str, chunk: pa.Table) -> None:
    sums = chunk.group_by([FP_EXPERIMENT, FP_SLOT]).aggregate(
        [(FP_HASH, "sum"), (FP_HASH, "count")]
    )
    columns = (FP_EXPERIMENT, FP_SLOT, f"{FP_HASH}_sum", f"{FP_HASH}_count")
    for experiment_id, slot, hash_sum, count in zip(
        *(sums.column(c).to_pylist() for c in columns), strict=True
    ):
        key = (Partition(int(experiment_id), int(slot)), table_name)
        known = source.get(key, EMPTY)
        source[key] = Fingerprint(known.row_count + int(count), known.hash_sum + int(hash_sum))


def _batches(
    partitions: Sequence[Partition],
    changed: dict[Key, Fingerprint],
    table_name: str,
    batch_rows: int,
) -> list[list[Partition]]:
    """Partitions grouped so that one read returns about ``batch_rows`` rows."""
    batches: list[list[Partition]] = [[]]
    size = 0
    for p in partitions:
        rows = changed[(p, table_name)].row_count
        if batches[-1] and size + rows > batch_rows:
            batches.append([])
            size = 0
        batches[-1].append(p)
        size += rows
    return [b for b in batches if b]


class _Progress:
    """Logs rows and percent per table, every few seconds on a long copy. Without a known
    total, the caller says which fraction of the table's work is done."""

    _EVERY_SECONDS = 5.0

    def __init__(self, table: str, total: int | None, *, loud: bool) -> None:
        self.table, self.total = table, total
        self.level = logging.INFO if loud else logging.DEBUG
        self.last = time.monotonic()
        if total is None:
            logger.log(self.level, "analytics store sync: %s: copying", table)
        else:
            logger.log(self.level, "analytics store sync: %s: copying %d rows", table, total)

    def report(self, done: int, fraction: float | None = None, *, final: bool = False) -> None:
        now = time.monotonic()
        finished = final or (self.total is not None and done >= self.total)
        if not finished and now - self.last < self._EVERY_SECONDS:
            return
        self.last = now
        if self.total is None:
            percent = 100.0 * (fraction if fraction is not None else 1.0)
            logger.log(
                self.level, "analytics store sync: %s: %d rows (%.0f%%)", self.table, done, percent
            )
            return
        percent = 100.0 * done / self.total if self.total else 100.0
        logger.log(
            self.level,
            "analytics store sync: %s: %d of %d rows (%.0f%%)",
            self.table,
            done,
            self.total,
            percent,
        )
