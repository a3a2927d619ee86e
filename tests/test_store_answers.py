"""Reading the analytics store through ``store_session``: the query code's statements run on the
DuckDB file with the DuckDB policy, and their rows outlive the session.

That every answer from the store equals the golden capture is tested by tests/test_golden.py,
which runs on both answering paths like every test that asks through ``client`` (conftest).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.store.tracking.dbmodels.models import SqlTraceInfo
from sqlalchemy.engine.default import CACHE_HIT

from service.dialects import WindowPercentiles, policy_for
from service.dialects.expressions import kept_distinct
from service.store import Store
from service.store.reading import store_session
from service.store.store_file import StoreFile
from tests.conftest import Backend

API = "/api/3.0/mlflow/traces/insights"


async def test_store_session_reads_the_store_with_the_duckdb_policy(
    backend: Backend, synced_store: Store
) -> None:
    count = sa.select(sa.func.count()).select_from(SqlTraceInfo)
    engine = backend.sync_engine()
    with engine.connect() as source:
        expected = source.execute(count).scalar_one()
    engine.dispose()
    async with store_session(synced_store) as session:
        result = await session.execute(count)
        policy = policy_for(session.get_bind().dialect)
    # Rows were fetched in the worker thread: the result is readable after the session closed.
    assert result.scalar_one() == expected > 0
    assert policy is policy_for(sa.make_url("duckdb:///any.duckdb"))
    assert isinstance(policy.percentiles, WindowPercentiles)


def test_the_store_reuses_compiled_statements_and_keeps_constructs_apart(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The store's engine caches compiled statements (duckdb-engine's own dialect does not), and
    a construct whose DuckDB form reads more than its clauses keeps that in its cache key."""
    store = StoreFile.open(tmp_path_factory.mktemp("cache") / "store.duckdb")
    try:
        store.db.execute("CREATE TABLE summary_a AS SELECT 1 AS x")
        store.db.execute("CREATE TABLE summary_b AS SELECT 2 AS x")
        rows: sa.Select[Any] = sa.select(sa.literal_column("x").label("x"))

        def read(summary: str) -> tuple[int, object]:
            kept = kept_distinct.of(rows, name="kept", summary=summary)
            with store.engine.connect() as conn:
                result = conn.execute(sa.select(kept.c.x))
                return result.scalar_one(), result.context.cache_hit

        first, second, other = read("summary_a"), read("summary_a"), read("summary_b")
    finally:
        store.close()
    assert first[0] == second[0] == 1
    assert second[1] == CACHE_HIT  # compiled once, reused
    assert other[0] == 2  # not the first summary's cached SQL
