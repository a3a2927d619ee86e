"""The analytics store keeps an exact copy of the tracking database's narrow columns.

Each backend gets a small tracking DB of its own (MLflow's schema, filled by MLflow's tracing
API); the store reads it through the service's read-only role. Every kind of write MLflow makes
is driven through MLflow's own client in a seeded random order, then every store table is compared
row for row with the source's narrow columns, read here with a plain sync engine.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from mlflow import MlflowClient

from service.db import Database
from service.demo.generate import mlflow_tracking
from service.settings import Settings
from service.store import Store, SyncSettings
from service.store import store_file as store_file_module
from service.store.layout import CopiedTable
from service.store.plan import Checks
from service.store.source_sql import Fingerprint, Partition, SlotRange
from service.store.store_file import StoreFile, StoreInUseError
from tests.conftest import TEST_DB_NAME, enabled_backends
from tests.store_writes import (
    SEED,
    SLICED,
    Source,
    Writer,
    assert_exact_copy,
    build_source,
    now_ms,
    store_counts,
    sync_until_reconciled,
)


@pytest.fixture(scope="module", params=enabled_backends())
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Source:
    directory = tmp_path_factory.mktemp("store-source")
    return build_source(request.param, f"{TEST_DB_NAME}_store", directory, seed=SEED)


@pytest.fixture
async def database(source: Source) -> AsyncIterator[Database]:
    db = Database(Settings(database_url=source.service_url))
    yield db
    await db.dispose()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "insights-store.duckdb"


@pytest.fixture
def writer(source: Source) -> Iterator[Writer]:
    with mlflow_tracking(source.tracking_uri):
        w = Writer(source, random.Random(SEED))
        yield w
        w.restore_all()


# --- tests ------------------------------------------------------------------------------------


async def test_first_sync_copies_every_table(
    source: Source, database: Database, store_path: Path
) -> None:
    store = Store.open(store_path, database, SLICED)
    assert not store.ready and store.as_of_ms is None
    before = now_ms()
    stats = await store.sync_once()
    assert stats.full and store.ready
    assert store.as_of_ms is not None and store.as_of_ms >= before
    assert_exact_copy(store, source)
    counts = store_counts(store)
    assert counts["trace_info"] > 0 and counts["spans"] > 0 and counts["assessments"] > 0
    assert stats.rows["spans"] == counts["spans"]
    # Nothing was written: the next cycle copies nothing.
    again = await store.sync_once()
    assert not again.full and again.rows == {} and again.partitions_copied == 0
    # The first sync summed its fingerprints from the rows it read: they equal the source's
    # own fingerprint statements, so a full comparison finds nothing to copy.
    full = await store.sync_once(full=True)
    assert full.partitions_checked > 0 and full.partitions_copied == 0 and full.rows == {}
    store.close()


async def test_quiet_database_skips_recent_days(
    source: Source, database: Database, store_path: Path
) -> None:
    """With no writes, PostgreSQL's and MariaDB's change gate lets a cycle skip the recent days
    (the cheap steady state); SQLite has no gate and always compares them."""
    store = Store.open(store_path, database, SLICED)
    await store.sync_once()
    skipped = []
    for _ in range(20):  # MariaDB's table stamps settle two seconds after the last write
        stats = await store.sync_once()
        skipped.append(not stats.recent_checked)
        if skipped[-1]:
            break
        await asyncio.sleep(0.5)
    assert any(skipped) == (source.backend != "sqlite"), skipped
    assert stats.as_of_ms <= now_ms() and store.as_of_ms == stats.as_of_ms
    store.close()


async def test_every_kind_of_write_is_followed(
    source: Source, database: Database, store_path: Path, writer: Writer
) -> None:
    store = Store.open(store_path, database, SLICED)
    await store.sync_once()
    for round_number in range(3):
        done = writer.random_round(18)
        cycles = await sync_until_reconciled(store, writer.last_write_ms)
        assert any(c.rows for c in cycles), f"round {round_number} copied nothing: {done}"
        assert_exact_copy(store, source)
    # The incremental path left nothing for a full comparison to find.
    full = await store.sync_once(full=True)
    assert full.partitions_copied == 0 and full.rows == {}
    store.close()


async def test_as_of_covers_recent_writes_and_feedback_on_old_traces(
    source: Source, database: Database, store_path: Path, writer: Writer
) -> None:
    store = Store.open(store_path, database, SyncSettings(reconcile_budget_traces=1))
    await store.sync_once()
    done = [writer.new_trace(), writer.finish_in_progress(), writer.finish_in_progress()]
    done += [writer.log_feedback(), writer.override_feedback(), writer.update_feedback()]
    written = now_ms()
    for _ in range(100):  # PostgreSQL publishes its table counters up to seconds late
        stats = await store.sync_once()
        if (store.as_of_ms or 0) >= written:
            break
        await asyncio.sleep(0.2)
    assert stats.recent_checked, done
    assert_exact_copy(store, source)
    store.close()


async def test_a_failed_cycle_changes_nothing_and_the_next_resumes(
    source: Source,
    database: Database,
    store_path: Path,
    writer: Writer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_insert = StoreFile.insert
    calls = 0

    def insert_then_die(self: StoreFile, table: CopiedTable, rows: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("killed between chunks")
        real_insert(self, table, rows)

    # First sync killed between chunks: nothing is kept, the store is not ready.
    monkeypatch.setattr(StoreFile, "insert", insert_then_die)
    store = Store.open(store_path, database, SLICED)
    with pytest.raises(RuntimeError, match="killed between chunks"):
        await store.sync_once()
    assert not store.ready and sum(store_counts(store).values()) == 0
    store.close()

    # A new process opens the same file and copies everything exactly once.
    monkeypatch.setattr(StoreFile, "insert", real_insert)
    store = Store.open(store_path, database, SLICED)
    await store.sync_once()
    assert_exact_copy(store, source)
    before, as_of = store_counts(store), store.as_of_ms

    # An incremental cycle killed mid-copy leaves the previous copy and cursors untouched.
    writer.random_round(16)
    calls = 0
    monkeypatch.setattr(StoreFile, "insert", insert_then_die)
    with pytest.raises(RuntimeError, match="killed between chunks"):
        await store.sync_once(full=True)
    assert store_counts(store) == before and store.as_of_ms == as_of
    store.close()

    monkeypatch.setattr(StoreFile, "insert", real_insert)
    store = Store.open(store_path, database, SLICED)
    stats = await store.sync_once(full=True)
    assert stats.rows, "the resumed cycle found the writes again"
    assert_exact_copy(store, source)
    store.close()


async def test_deleted_or_corrupt_file_is_rebuilt(
    source: Source, database: Database, store_path: Path
) -> None:
    store = Store.open(store_path, database, SLICED)
    await store.sync_once()
    store_path.unlink()  # deleted while the service runs
    stats = await store.sync_once()
    assert stats.full and store_path.exists()
    assert_exact_copy(store, source)
    store.close()

    store_path.write_bytes(b"this is not a DuckDB file" * 1000)
    store = Store.open(store_path, database, SLICED)
    assert not store.ready
    assert (await store.sync_once()).full
    assert_exact_copy(store, source)
    store.close()

    # A DuckDB file that lost one of the store's tables.
    damaged = duckdb.connect(str(store_path))
    damaged.execute("DROP TABLE spans")
    damaged.close()
    store = Store.open(store_path, database, SLICED)
    assert (await store.sync_once()).full
    assert_exact_copy(store, source)
    store.close()


def test_a_store_another_process_holds_is_left_alone(tmp_path: Path) -> None:
    """A second service on the same --store-path must not take the first one's file for a
    broken one: it was deleted and rebuilt from scratch under the first service."""
    path = tmp_path / "insights-store.duckdb"
    StoreFile.open(path).close()  # a store, with its tables and layout
    size = path.stat().st_size
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_FILE, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreInUseError, match="in use by another process"):
            StoreFile.open(path)
        assert path.exists() and path.stat().st_size == size
    finally:
        holder.kill()
        holder.wait()
    store = StoreFile.open(path)  # free again: the same store, not a new one
    assert store.layout_version() == str(store_file_module.LAYOUT_VERSION)
    assert store.meta().get("layout_version") == str(store_file_module.LAYOUT_VERSION)
    store.close()


# Opens the file in another process (DuckDB locks it there) and waits to be killed.
_HOLD_FILE = """
import sys, time, duckdb
connection = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(600)
"""


async def test_a_store_of_another_layout_is_rebuilt(
    source: Source, database: Database, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.open(store_path, database, SLICED)
    await store.sync_once()
    store.close()
    monkeypatch.setattr(store_file_module, "LAYOUT_VERSION", store_file_module.LAYOUT_VERSION + 1)
    store = Store.open(store_path, database, SLICED)
    assert not store.ready and sum(store_counts(store).values()) == 0
    assert (await store.sync_once()).full
    assert_exact_copy(store, source)
    store.close()


async def test_a_store_copied_from_another_database_is_never_used(
    source: Source,
    database: Database,
    store_path: Path,
    tmp_path: Path,
) -> None:
    other = build_source(source.backend, f"{TEST_DB_NAME}_store_other", tmp_path, seed=SEED + 1)
    other_db = Database(Settings(database_url=other.service_url))
    try:
        store = Store.open(store_path, other_db, SLICED)
        await store.sync_once()
        store.close()

        store = Store.open(store_path, database, SLICED)
        assert not store.ready and store.as_of_ms is None  # not until it is checked
        assert (await store.sync_once()).full
        assert_exact_copy(store, source)
        store.close()
    finally:
        await other_db.dispose()


async def test_a_new_or_renamed_experiment_keeps_the_store(
    source: Source, database: Database, store_path: Path
) -> None:
    """The source's identity hashes nothing users change: a new experiment (the bench's writer
    made one) or a renamed one must not empty a store and copy everything again."""
    store = Store.open(store_path, database, SLICED)
    await store.sync_once()
    client = MlflowClient(source.tracking_uri)
    renamed = source.experiment_ids[0]
    old_name = client.get_experiment(renamed).name
    created = client.create_experiment(f"identity-{uuid.uuid4().hex[:8]}")
    try:
        client.rename_experiment(renamed, f"renamed-{uuid.uuid4().hex[:8]}")
        stats = await store.sync_once()
        assert not stats.full and store.ready
        assert_exact_copy(store, source)
    finally:
        client.rename_experiment(renamed, old_name)
        client.delete_experiment(created)
    store.close()


@pytest.mark.parametrize("seed", range(8))
def test_a_cycle_reads_the_recorded_fingerprints_of_exactly_what_it_compares(
    tmp_path: Path, seed: int
) -> None:
    """``fingerprints_covered`` (SQL) picks what ``Checks.covers`` (the plan's definition) does,
    over random slot ranges (open sides included) and single partitions."""
    rng = random.Random(seed)
    store = StoreFile.open(tmp_path / "store.duckdb")
    try:
        recorded = {
            (Partition(rng.choice((1, 2, 3)), rng.randrange(100)), table): Fingerprint(n, n * 7)
            for n, table in enumerate(["trace_info", "spans", "trace_tags"] * 40, start=1)
        }
        store.record_fingerprints(recorded)

        slots = sorted({p.slot for p, _ in recorded})

        def bound() -> int | None:  # open, or a recorded slot: the edges are what can go wrong
            return rng.choice((None, rng.choice(slots)))

        checks = Checks(
            ranges=[SlotRange(bound(), bound()) for _ in range(rng.randrange(4))],
            partitions={Partition(rng.choice((1, 2)), rng.randrange(100)) for _ in range(5)},
        )
        covered = store.fingerprints_covered(checks.ranges, checks.partitions)
        everything = store.fingerprints()
    finally:
        store.close()
    assert everything == recorded
    assert covered == {k: fp for k, fp in recorded.items() if checks.covers(k[0])}
    assert covered or not any(checks.covers(p) for p, _ in recorded)
