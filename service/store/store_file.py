"""The DuckDB file: opened (or rebuilt when it is stale or broken) and written one cycle at a time.

Everything a cycle changes (rows, fingerprints, cursors, ``as_of_ms``) is written inside one
DuckDB transaction, so a cycle that fails half-way, or a process killed mid-sync, leaves the
previous cycle's consistent copy behind and the next cycle starts from its cursors.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import BigInteger, Boolean, Float, Integer, create_engine, delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateTable
from sqlalchemy.types import TypeEngine

from service.dialects.duckdb_policy import STORE_DRIVER
from service.dialects.expressions import (
    SPAN_SET_LISTS,
    TAG_PAIR_COPY,
    TRACE_EXPERIMENT_COPY,
    TRACE_NUMBER_COPY,
    TRACE_TIMESTAMP_COPY,
)
from service.feedback_types import kind_rows
from service.store import hourly
from service.store.layout import (
    ALL_TABLES,
    ASSESSMENTS,
    EXPERIMENTS,
    FEEDBACK_KINDS,
    LAYOUT_VERSION,
    REPEATED_FEEDBACK_TABLE,
    SPAN_COMBINATIONS_TABLE,
    SPANS,
    STORE_META,
    STORE_METADATA,
    STORE_PARTITIONS,
    TAG_PAIRS_TABLE,
    TRACE_INFO,
    TRACE_NUMBERS,
    TRACE_SPAN_SETS_TABLE,
    CopiedTable,
)
from service.store.rollups import ROLLUPS
from service.store.source_sql import PARTITION_MS, Fingerprint, Partition, SlotRange
from service.traces import SPAN_ERROR, SYSTEM_TAG_PREFIX, TOOL_SPAN_TYPE

logger = logging.getLogger(__name__)

Row = Sequence[Any]
P = ParamSpec("P")
T = TypeVar("T")


def _arrow_type(sql_type: TypeEngine[Any]) -> pa.DataType:
    # Order matters: BigInteger is an Integer.
    if isinstance(sql_type, BigInteger):
        return pa.int64()
    if isinstance(sql_type, Integer):
        return pa.int32()
    if isinstance(sql_type, Float):
        return pa.float64()
    if isinstance(sql_type, Boolean):
        return pa.bool_()
    return pa.string()


def _arrow_table(columns: dict[str, pa.DataType], rows: Sequence[Row]) -> pa.Table:
    by_column = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    return pa.table(
        {
            name: pa.array(values, type=kind)
            for (name, kind), values in zip(columns.items(), by_column, strict=True)
        }
    )


def arrow_schema(table: CopiedTable) -> pa.Schema:
    """The Arrow schema of a copied table's rows as the sync copies them, in the store's column
    order (without the trace's number, which ``StoreFile.insert`` adds)."""
    return pa.schema(
        [(name, _arrow_type(table.store.c[name].type)) for name in table.store_columns]
    )


@dataclass(frozen=True)
class StoreResources:
    """What DuckDB may use: memory (a DuckDB size, e.g. ``512MB``) and threads (0: per core)."""

    memory_limit: str = "512MB"
    threads: int = 0


class BrokenStoreError(RuntimeError):
    """A store file that DuckDB opens but that lacks some of the store's tables."""


class StoreInUseError(RuntimeError):
    """Another process holds the store file open (DuckDB locks it): the file is that process's
    working copy, not a broken one, and is left alone."""


# DuckDB's message when another process holds the file's lock.
_LOCK_HELD = "Could not set lock on file"


def _held_elsewhere(exc: BaseException) -> bool:
    return _LOCK_HELD in str(getattr(exc, "orig", None) or exc)


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


class StoreFile:
    """One open store file. Not thread-safe: one sync at a time writes it."""

    def __init__(self, path: Path, resources: StoreResources | None = None) -> None:
        self.path = path
        # No pool: a DuckDB connection is a cursor on the instance this process already holds
        # open, cheap to make. A pool's limit deadlocked under load: its connections were held
        # by sessions whose next statement queued for a worker thread, and the worker threads
        # waited for a connection (bench.load, 32 clients: every request 90 s, 18 of 32 failed).
        self.engine: Engine = create_engine(f"{STORE_DRIVER}:///{path}", poolclass=NullPool)
        try:
            self._pooled = self.engine.raw_connection()
        except BaseException:
            self.engine.dispose()
            raise
        # duckdb-engine's wrapper passes every call through to the DuckDB connection.
        self.db: duckdb.DuckDBPyConnection = self._pooled.driver_connection  # type: ignore[assignment]
        self._limit(resources or StoreResources())
        self._inode = os.stat(path).st_ino
        # The sync's connection is used from one thread at a time, in order: a rollback after
        # a cancelled cycle queues behind the insert still running, never beside it.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insights-store")

    def _limit(self, resources: StoreResources) -> None:
        """Settings of the file's DuckDB instance, shared by every connection on it: without a
        limit DuckDB takes up to 80% of the machine's memory (a first sync's uncommitted rows
        alone reached 4-5 GB at a million traces)."""
        spill = self.path.with_name(self.path.name + ".tmp")
        self.db.execute(f"SET memory_limit = '{resources.memory_limit}'")
        self.db.execute(f"SET temp_directory = '{spill}'")
        if resources.threads:
            self.db.execute(f"SET threads = {int(resources.threads)}")

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` (one of this file's methods) on the file's own worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, lambda: fn(*args, **kwargs))

    @classmethod
    def open(cls, path: Path, resources: StoreResources | None = None) -> StoreFile:
        """Open ``path``; a file of another layout, or one DuckDB cannot read, is rebuilt. A file
        another process holds open raises ``StoreInUseError`` and is left as it is."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _remove(path)  # a write-ahead log left by a deleted file must not replay into a new one
        try:
            store, version = cls._open_existing(path, resources)
        except (duckdb.Error, DBAPIError, BrokenStoreError) as exc:
            if _held_elsewhere(exc):
                # Deleting it would destroy the other process's store (a second service
                # started on the same --store-path): refuse, and let the caller retry.
                raise StoreInUseError(
                    f"{path} is in use by another process (DuckDB: {exc}); give this service "
                    "its own --store-path (INSIGHTS_STORE_PATH), or stop the other one"
                ) from exc
            logger.warning("analytics store %s is unreadable (%s): rebuilding it", path, exc)
            _remove(path)
            store, version = cls(path, resources), None
        if version is not None and version != str(LAYOUT_VERSION):
            logger.warning(
                "analytics store %s has layout %s, this service writes %s: rebuilding it",
                path,
                version,
                LAYOUT_VERSION,
            )
            store.close()
            _remove(path)
            store, version = cls(path, resources), None
        if version is None:
            store.create_tables()
        return store

    @classmethod
    def _open_existing(
        cls, path: Path, resources: StoreResources | None
    ) -> tuple[StoreFile, str | None]:
        store = cls(path, resources)
        try:
            return store, store.layout_version()
        except BaseException:
            store.close()  # DuckDB keeps one instance per path: release it before a rebuild
            raise

    def layout_version(self) -> str | None:
        """The file's layout version; ``None`` for a file without the store's tables."""
        present = {
            name
            for (name,) in self.db.execute(
                "SELECT table_name FROM information_schema.tables"
            ).fetchall()
        }
        if STORE_META.name not in present:
            return None
        missing = set(STORE_METADATA.tables) - present
        if missing:
            raise BrokenStoreError(f"tables {sorted(missing)} are missing")
        return self.meta().get("layout_version")

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self._pooled.close()
        self.engine.dispose()

    def still_on_disk(self) -> bool:
        """False once the file was deleted or replaced under the open connection."""
        try:
            return os.stat(self.path).st_ino == self._inode
        except FileNotFoundError:
            return False

    # --- layout ------------------------------------------------------------------------------

    def create_tables(self) -> None:
        self.db.execute("BEGIN TRANSACTION")
        for table in STORE_METADATA.sorted_tables:
            self.db.execute(f'DROP TABLE IF EXISTS "{table.name}"')
            self.db.execute(str(CreateTable(table).compile(self.engine)))
        self.db.execute(
            f'INSERT INTO "{STORE_META.name}" VALUES (?, ?)',
            ["layout_version", str(LAYOUT_VERSION)],
        )
        self.db.execute("COMMIT")

    def meta(self) -> dict[str, str]:
        rows = self.db.execute(f'SELECT key, value FROM "{STORE_META.name}"').fetchall()
        return {key: value for key, value in rows}

    # --- reads -------------------------------------------------------------------------------

    def fingerprints(
        self, table_name: str | None = None
    ) -> dict[tuple[Partition, str], Fingerprint]:
        """The recorded fingerprints, of every table or of ``table_name``."""
        where, params = ("", []) if table_name is None else ("WHERE table_name = ?", [table_name])
        return self._fingerprints_where(where, params)

    def fingerprints_covered(
        self, ranges: Sequence[SlotRange], partitions: Iterable[Partition]
    ) -> dict[tuple[Partition, str], Fingerprint]:
        """The recorded fingerprints of the partitions a cycle compares (``Checks.covers``):
        those of the slots of ``ranges`` and the single ``partitions``. A cycle reads these,
        not all of them (six per 15-minute slot and experiment, for as long as traces go back).
        """
        conditions, params = [], []
        for r in ranges:
            bounds = ["TRUE"]
            for op, bound in ((">=", r.first), ("<=", r.last)):
                if bound is not None:
                    bounds.append(f"slot {op} ?")
                    params.append(bound)
            conditions.append(f"({' AND '.join(bounds)})")
        wanted = _arrow_table(
            {"experiment_id": pa.int32(), "slot": pa.int64()},
            [(p.experiment_id, p.slot) for p in partitions],
        )
        if wanted.num_rows:
            conditions.append(
                "EXISTS (SELECT 1 FROM covered_partitions w "
                "WHERE w.experiment_id = f.experiment_id AND w.slot = f.slot)"
            )
        if not conditions:
            return {}
        self.db.register("covered_partitions", wanted)
        try:
            return self._fingerprints_where(f"WHERE {' OR '.join(conditions)}", params)
        finally:
            self.db.unregister("covered_partitions")

    def _fingerprints_where(
        self, where: str, params: list[Any]
    ) -> dict[tuple[Partition, str], Fingerprint]:
        rows = self.db.execute(
            "SELECT experiment_id, slot, table_name, row_count, hash_sum "
            f'FROM "{STORE_PARTITIONS.name}" AS f {where}',
            params,
        ).fetchall()
        return {(Partition(e, d), t): Fingerprint(n, h) for e, d, t, n, h in rows}

    def trace_ids_by_partition(self, partitions: Iterable[Partition]) -> dict[Partition, set[str]]:
        wanted = _arrow_table(
            {"experiment_id": pa.int32(), "slot": pa.int64()},
            [(p.experiment_id, p.slot) for p in partitions],
        )
        self.db.register("wanted_partitions", wanted)
        try:
            rows = self.db.execute(
                f"SELECT t.request_id, w.experiment_id, w.slot FROM {TRACE_INFO.name} t "
                "JOIN wanted_partitions w ON t.experiment_id = w.experiment_id "
                f"AND t.timestamp_ms // {PARTITION_MS} = w.slot"
            ).fetchall()
        finally:
            self.db.unregister("wanted_partitions")
        found: dict[Partition, set[str]] = {}
        for trace_id, experiment_id, slot in rows:
            found.setdefault(Partition(experiment_id, slot), set()).add(trace_id)
        return found

    def experiment_ids(self) -> frozenset[str]:
        """The experiments the copy knows (as strings, the API's form of an id)."""
        rows = self.db.execute(f"SELECT experiment_id FROM {EXPERIMENTS.name}").fetchall()
        return frozenset(str(e) for (e,) in rows)

    def rows(self, table: CopiedTable) -> list[tuple[Any, ...]]:
        names = ", ".join(f'"{c}"' for c in table.columns)
        return [tuple(r) for r in self.db.execute(f"SELECT {names} FROM {table.name}").fetchall()]

    # --- one cycle's writes ------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """``transaction`` for a cycle that awaits the tracking DB between its writes: begin,
        commit and rollback run on the file's worker thread."""
        await self.call(self.begin)
        try:
            yield
        except BaseException:
            await self.call(self.rollback)
            raise
        await self.call(self.commit)

    def begin(self) -> None:
        self.db.execute("BEGIN TRANSACTION")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        self.db.execute("ROLLBACK")

    def commit_and_continue(self) -> None:
        """Commit what a long first sync copied so far and go on in a new transaction: DuckDB
        keeps a transaction's appends partly outside its memory limit (a million-trace copy in
        one transaction held 4 GB). The copy is not used before the sync's last commit marks it
        complete, and a first sync that does not finish starts over (``clear_rows``)."""
        self.db.execute("COMMIT")
        self.db.execute("BEGIN TRANSACTION")

    def delete_traces(self, table: CopiedTable, trace_ids: Iterable[str]) -> None:
        assert table.trace_key is not None
        ids = _arrow_table({"id": pa.string()}, [(i,) for i in trace_ids])
        self.db.register("gone_traces", ids)
        try:
            self.db.execute(
                f'DELETE FROM {table.name} WHERE "{table.trace_key}" '
                "IN (SELECT id FROM gone_traces)"
            )
        finally:
            self.db.unregister("gone_traces")

    def insert(self, table: CopiedTable, rows: Sequence[Row] | pa.Table) -> None:
        """Insert rows: tuples of ``table.store_columns``, or an Arrow table with the columns
        of ``arrow_schema(table)`` (what the sync reads). A numbered table's rows get their
        trace's number, trace ids seen for the first time a new one (``TRACE_NUMBERS``)."""
        if not isinstance(rows, pa.Table):
            if not rows:
                return
            schema = arrow_schema(table)
            rows = _arrow_table(dict(zip(schema.names, schema.types, strict=True)), rows)
        if not rows.num_rows:
            return
        self.db.register("incoming_rows", rows)
        try:
            names = ", ".join(f'"{c}"' for c in rows.column_names)
            if not table.numbered:
                self.db.execute(
                    f"INSERT INTO {table.name} ({names}) SELECT {names} FROM incoming_rows"
                )
                return
            self._number_incoming_traces(table, rows)
            key = f'i."{table.trace_key}"'
            numbers, joins = (
                [f'"{TRACE_NUMBER_COPY}"'],
                [f"JOIN incoming_numbers AS k ON k.id = {key}"],
            )
            values = ["k.n"]
            if TAG_PAIR_COPY in table.numbers:
                self._number_incoming_tag_pairs()
                numbers.append(f'"{TAG_PAIR_COPY}"')
                values.append(f"p.{TAG_PAIR_COPY}")
                joins.append(
                    f"LEFT JOIN {TAG_PAIRS_TABLE.name} AS p ON p.key = i.key AND p.value = i.value "
                    f"AND {_USER_TAG.format(row='i')}"
                )
            self.db.execute(
                f"INSERT INTO {table.name} ({names}, {', '.join(numbers)}) "
                f"SELECT {', '.join(f'i.{n}' for n in names.split(', '))}, {', '.join(values)} "
                f"FROM incoming_rows AS i {' '.join(joins)}"
            )
            self.db.execute("DROP TABLE incoming_numbers")
        finally:
            self.db.unregister("incoming_rows")

    def _number_incoming_traces(self, table: CopiedTable, rows: pa.Table) -> None:
        """``incoming_numbers`` (``id``, ``n``): the number of each trace id of
        ``incoming_rows``, ids the store has not seen numbered now (``TRACE_NUMBERS``).

        A child row's trace is nearly always in the store's ``trace_info`` already (copied
        first, and in the same time range as the row's copy of its timestamp): it is looked up
        there, over that range only. Only the ids not found there read ``TRACE_NUMBERS`` whole
        (a scan of every id the store has numbered: a first sync of 1M traces took 5 times as
        long to copy its tags when every chunk read it).
        """
        ids = f'SELECT DISTINCT "{table.trace_key}" AS id FROM incoming_rows'
        numbered = f"SELECT id, NULL::BIGINT AS n FROM ({ids}) AS i"  # trace_info's own rows
        if TRACE_TIMESTAMP_COPY in rows.column_names:
            lo, hi = pc.min_max(rows[TRACE_TIMESTAMP_COPY]).values()
            if lo.is_valid and hi.is_valid:
                known = (
                    f"SELECT request_id AS id, {TRACE_NUMBER_COPY} AS n FROM {TRACE_INFO.name} "
                    f"WHERE timestamp_ms BETWEEN {int(lo.as_py())} AND {int(hi.as_py())}"
                )
                numbered = (
                    f"SELECT i.id, k.n FROM ({ids}) AS i LEFT JOIN ({known}) AS k ON k.id = i.id"
                )
        self.db.execute(f"CREATE OR REPLACE TEMP TABLE incoming_numbers AS {numbered}")
        if not self._unnumbered():
            return
        numbers, number = TRACE_NUMBERS.name, TRACE_NUMBER_COPY
        self.db.execute(
            f"UPDATE incoming_numbers SET n = m.{number} FROM {numbers} AS m "
            "WHERE m.trace_id = incoming_numbers.id AND incoming_numbers.n IS NULL"
        )
        if not self._unnumbered():
            return
        # Ids never seen: the next numbers, in the order of the ids.
        self.db.execute(
            "CREATE OR REPLACE TEMP TABLE fresh_numbers AS "
            f"SELECT id, (SELECT coalesce(max({number}), 0) FROM {numbers}) "
            "+ row_number() OVER (ORDER BY id) AS n FROM incoming_numbers WHERE n IS NULL"
        )
        self.db.execute(
            f"INSERT INTO {numbers} (trace_id, {number}) SELECT id, n FROM fresh_numbers"
        )
        self.db.execute(
            "UPDATE incoming_numbers SET n = f.n FROM fresh_numbers AS f "
            "WHERE f.id = incoming_numbers.id"
        )
        # Dropped on success only, as incoming_numbers: after a failed statement the
        # transaction refuses any other, and a DROP would hide the failure.
        self.db.execute("DROP TABLE fresh_numbers")

    def _number_incoming_tag_pairs(self) -> None:
        """Number the user tags' (key, value) pairs of ``incoming_rows`` not numbered yet
        (``TAG_PAIRS_TABLE``): the next numbers, in the order of the pairs."""
        pairs = TAG_PAIRS_TABLE.name
        self.db.execute(
            f"INSERT INTO {pairs} ({TAG_PAIR_COPY}, key, value) "
            f"SELECT (SELECT coalesce(max({TAG_PAIR_COPY}), 0) FROM {pairs}) "
            "+ row_number() OVER (ORDER BY fresh.key, fresh.value), fresh.key, fresh.value "
            "FROM (SELECT DISTINCT i.key, i.value FROM incoming_rows AS i "
            f"WHERE {_USER_TAG.format(row='i')}) AS fresh "
            f"WHERE NOT EXISTS (SELECT 1 FROM {pairs} AS p "
            "WHERE p.key = fresh.key AND p.value = fresh.value)"
        )

    def _unnumbered(self) -> bool:
        found = self.db.execute("SELECT count(*) FROM incoming_numbers WHERE n IS NULL").fetchone()
        return bool(found and found[0])

    def replace_all(self, table: CopiedTable, rows: Sequence[Row]) -> None:
        self.db.execute(f"DELETE FROM {table.name}")
        self.insert(table, rows)

    def record_fingerprints(self, checked: dict[tuple[Partition, str], Fingerprint]) -> None:
        """Remember the source's fingerprints of the partitions checked; empty ones are dropped."""
        keys = _arrow_table(
            {"experiment_id": pa.int32(), "slot": pa.int64(), "table_name": pa.string()},
            [(p.experiment_id, p.slot, t) for p, t in checked],
        )
        kept = [
            (p.experiment_id, p.slot, t, f.row_count, f.hash_sum)
            for (p, t), f in checked.items()
            if f.row_count
        ]
        self.db.register("checked_keys", keys)
        try:
            self.db.execute(
                f'DELETE FROM "{STORE_PARTITIONS.name}" s USING checked_keys c '
                "WHERE s.experiment_id = c.experiment_id AND s.slot = c.slot "
                "AND s.table_name = c.table_name"
            )
        finally:
            self.db.unregister("checked_keys")
        self.insert_fingerprints(kept)

    def insert_fingerprints(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        columns = {c.name: _arrow_type(c.type) for c in STORE_PARTITIONS.columns}
        self.db.register("new_fingerprints", _arrow_table(columns, rows))
        try:
            self.db.execute(f'INSERT INTO "{STORE_PARTITIONS.name}" SELECT * FROM new_fingerprints')
        finally:
            self.db.unregister("new_fingerprints")

    def set_meta(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self.db.execute(f'DELETE FROM "{STORE_META.name}" WHERE key = ?', [key])
            self.db.execute(f'INSERT INTO "{STORE_META.name}" VALUES (?, ?)', [key, value])

    def clear(self) -> None:
        """Empty every table but the layout version (another source: start over)."""
        self.clear_rows()
        self.db.execute(f"DELETE FROM \"{STORE_META.name}\" WHERE key <> 'layout_version'")

    def refresh_feedback_kinds(self, experiment_ids: Iterable[int] | None) -> None:
        """Recompute ``FEEDBACK_KINDS`` of the traces of these experiments (``None``: all) from
        the copied assessments, the same ``kind_rows`` the tracking databases answer with."""
        ids = None if experiment_ids is None else sorted(set(experiment_ids))
        if ids == []:
            return  # most cycles: no feedback copied
        copied = ASSESSMENTS.store.c
        rows = kind_rows(copied).add_columns(copied[TRACE_EXPERIMENT_COPY]).subquery("kinds")
        distinct = select(*(rows.c[c.name] for c in FEEDBACK_KINDS.columns)).distinct()
        doomed = delete(FEEDBACK_KINDS)
        if ids is not None:
            distinct = distinct.where(rows.c[TRACE_EXPERIMENT_COPY].in_(ids))
            doomed = doomed.where(FEEDBACK_KINDS.c[TRACE_EXPERIMENT_COPY].in_(ids))
        literal = {"literal_binds": True}
        self.db.execute(str(doomed.compile(self.engine, compile_kwargs=literal)))
        fill = insert(FEEDBACK_KINDS).from_select(
            [c.name for c in FEEDBACK_KINDS.columns], distinct
        )
        self.db.execute(str(fill.compile(self.engine, compile_kwargs=literal)))

    def refresh_span_sets(self, trace_ids: Iterable[str] | None) -> None:
        """Recompute ``TRACE_SPAN_SETS_TABLE``'s rows of these traces (``None``: all) from the
        copied spans: what the tracking databases compute by grouping spans by trace. A
        combination of lists no trace had before gets the next number."""
        self._refresh_per_trace(
            TRACE_SPAN_SETS_TABLE.name,
            trace_ids,
            lambda these: self._insert_span_sets(f"WHERE {these}"),
        )

    def refresh_rollups(self, partitions: dict[str, set[Partition]] | None) -> None:
        """Recompute every rollup's rows of the hours holding the partitions its source table
        changed in (``partitions`` by table name; ``None``: all rows of all rollups), from the
        copied rows (``service.store.hourly``)."""
        for rollup in ROLLUPS:
            changed = None if partitions is None else partitions.get(rollup.source.name, set())
            hourly.refresh(self.db, rollup, changed)

    def refresh_repeated_feedback(self, trace_ids: Iterable[str] | None) -> None:
        """Recompute ``REPEATED_FEEDBACK_TABLE``'s pairs of these traces (``None``: all) from the
        copied assessments: each (trace, name) with two or more valid feedback rows."""
        table = REPEATED_FEEDBACK_TABLE.name
        self._refresh_per_trace(
            table,
            trace_ids,
            lambda these: self.db.execute(
                f"INSERT INTO {table} (trace_id, name, {TRACE_NUMBER_COPY}) "
                f"SELECT trace_id, name, any_value({TRACE_NUMBER_COPY}) FROM {ASSESSMENTS.name} "
                f"WHERE assessment_type = 'feedback' AND valid AND {these} "
                "GROUP BY trace_id, name HAVING count(*) > 1"
            ),
        )

    def _refresh_per_trace(
        self, table: str, trace_ids: Iterable[str] | None, fill: Callable[[str], object]
    ) -> None:
        """Delete ``table``'s rows of these traces (``None``: all) and ``fill`` them again from
        the copied rows: ``fill`` gets the predicate on ``trace_id`` that picks those traces."""
        if trace_ids is None:
            self.db.execute(f"DELETE FROM {table}")
            fill("TRUE")
            return
        ids = _arrow_table({"id": pa.string()}, [(i,) for i in set(trace_ids)])
        if not ids.num_rows:
            return  # most cycles: none of those rows copied
        self.db.register("refreshed_traces", ids)
        try:
            these = "trace_id IN (SELECT id FROM refreshed_traces)"
            self.db.execute(f"DELETE FROM {table} WHERE {these}")
            fill(these)
        finally:
            self.db.unregister("refreshed_traces")

    def _insert_span_sets(self, where: str) -> None:
        self.db.execute(f"CREATE TEMP TABLE new_span_sets AS {_span_sets_select(where)}")
        try:
            self.db.execute(_new_combinations_insert())
            self.db.execute(_span_sets_insert())
        finally:
            self.db.execute("DROP TABLE new_span_sets")

    def clear_rows(self) -> None:
        """Empty the copied tables and their fingerprints (what an unfinished first sync left)."""
        for table in ALL_TABLES:
            self.db.execute(f"DELETE FROM {table.name}")
        self.db.execute(f"DELETE FROM {FEEDBACK_KINDS.name}")
        self.db.execute(f"DELETE FROM {TRACE_SPAN_SETS_TABLE.name}")
        self.db.execute(f"DELETE FROM {SPAN_COMBINATIONS_TABLE.name}")
        self.db.execute(f"DELETE FROM {REPEATED_FEEDBACK_TABLE.name}")
        self.db.execute(f"DELETE FROM {TRACE_NUMBERS.name}")
        self.db.execute(f"DELETE FROM {TAG_PAIRS_TABLE.name}")
        for rollup in ROLLUPS:
            self.db.execute(f"DELETE FROM {rollup.name}")
        self.db.execute(f'DELETE FROM "{STORE_PARTITIONS.name}"')


# A tag row the store numbers the pair of (``TAG_PAIR_COPY``): a user tag with a value, as
# ``service.traces.not_system_tag`` tells them (keys compared by code points).
_USER_TAG = f"{{row}}.value IS NOT NULL AND NOT starts_with({{row}}.key, '{SYSTEM_TAG_PREFIX}')"


def _span_sets_select(where: str) -> str:
    """Each trace's span sets from the copied spans (``where`` picks the spans), sorted lists.

    The same values the queries' grouping of spans gives: types that are not NULL, names of
    spans whose type is exactly 'TOOL', and of those whose status is exactly 'ERROR'
    (``list_distinct`` drops NULLs). The copies of the trace's columns are equal on all its
    spans.
    """
    tool = f"CASE WHEN type = '{TOOL_SPAN_TYPE}' THEN name END"
    failed = f"CASE WHEN status = '{SPAN_ERROR}' THEN {tool} END"
    lists = ", ".join(
        f"list_sort(list_distinct(list({value}))) AS {name}"
        for value, name in zip(("type", tool, failed), SPAN_SET_LISTS, strict=True)
    )
    return (
        f"SELECT trace_id, any_value({TRACE_EXPERIMENT_COPY}) AS {TRACE_EXPERIMENT_COPY}, "
        f"any_value({TRACE_TIMESTAMP_COPY}) AS {TRACE_TIMESTAMP_COPY}, "
        f"any_value({TRACE_NUMBER_COPY}) AS {TRACE_NUMBER_COPY}, {lists} "
        f"FROM {SPANS.name} {where} GROUP BY trace_id"
    )


def _same_lists(left: str, right: str) -> str:
    return " AND ".join(
        f"{left}.{name} IS NOT DISTINCT FROM {right}.{name}" for name in SPAN_SET_LISTS
    )


def _new_combinations_insert() -> str:
    """Number the combinations of ``new_span_sets`` that ``SPAN_COMBINATIONS_TABLE`` lacks."""
    lists = ", ".join(SPAN_SET_LISTS)
    table = SPAN_COMBINATIONS_TABLE.name
    return (
        f"INSERT INTO {table} (combination_id, {lists}) "
        f"SELECT (SELECT coalesce(max(combination_id), 0) FROM {table}) "
        f"+ row_number() OVER (ORDER BY {lists}), {lists} "
        f"FROM (SELECT DISTINCT {lists} FROM new_span_sets) AS fresh "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS known WHERE {_same_lists('known', 'fresh')})"
    )


def _span_sets_insert() -> str:
    """``INSERT`` of ``new_span_sets`` with the number of each row's combination."""
    columns = ", ".join(f'"{c.name}"' for c in TRACE_SPAN_SETS_TABLE.columns)
    values = ", ".join(
        f"s.{c.name}" for c in TRACE_SPAN_SETS_TABLE.columns if c.name != "combination_id"
    )
    return (
        f"INSERT INTO {TRACE_SPAN_SETS_TABLE.name} ({columns}) "
        f"SELECT {values}, c.combination_id FROM new_span_sets AS s "
        f"JOIN {SPAN_COMBINATIONS_TABLE.name} AS c ON {_same_lists('c', 's')} "
        # In time order, as the copied tables: a window's row groups are then few.
        f"ORDER BY s.{TRACE_TIMESTAMP_COPY}"
    )
