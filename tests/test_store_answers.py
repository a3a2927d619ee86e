"""The analytics store answers every golden request exactly as the live path does.

On each backend a store is built from the test tracking DB and synced; the app then answers
through ``store_session`` (``get_session`` overridden), so the same query builders run on
DuckDB. Every answer must equal the golden capture, which the live path matches on every
database (tests/test_golden.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.store.tracking.dbmodels.models import SqlTraceInfo
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.deps import get_session
from service.app import create_app
from service.db import Database
from service.dialects import WindowPercentiles, policy_for
from service.settings import Settings
from service.store import Store
from service.store.reading import store_session
from tests.conftest import Backend, serve
from tests.golden.__main__ import assert_equals_golden
from tests.golden.requests import collect

API = "/api/3.0/mlflow/traces/insights"


@pytest.fixture(scope="module")
async def synced_store(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Store]:
    database = Database(Settings(database_url=backend.service_url))
    store = Store.open(tmp_path_factory.mktemp("store") / "insights-store.duckdb", database)
    try:
        await store.sync_once()
        assert store.ready, "the first sync did not complete"
        yield store
    finally:
        store.close()
        await database.dispose()


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


async def test_store_answers_equal_the_golden_capture(
    backend: Backend, synced_store: Store
) -> None:
    sessions_opened = 0

    async def from_store() -> AsyncIterator[AsyncSession]:
        nonlocal sessions_opened
        sessions_opened += 1
        async with store_session(synced_store) as session:
            yield session

    app = create_app(Settings(database_url=backend.service_url))
    app.dependency_overrides[get_session] = from_store
    async with serve(app) as http:

        async def post(endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
            response = await http.post(f"{API}/{endpoint}", json=body)
            return response.status_code, response.json()

        ds = backend.dataset
        ids = sorted(ds.experiment_ids.values(), key=int)
        actual = await collect(post, ids, ds.start_time_ms, ds.end_time_ms)

    golden = assert_equals_golden(actual)
    # The store answered: one session per request that reached the query code.
    assert sessions_opened >= sum(1 for status, _ in golden.values() if status == 200)
