"""After every kind of write MLflow makes, the analytics store answers every endpoint exactly as
the live path does, byte for byte.

Each backend gets a small tracking DB of its own. MLflow's own client writes to it in a seeded
random order (new traces, traces finished later, late spans, tags set, overwritten and deleted on
old traces, feedback logged, overridden, updated and deleted, traces deleted by id and by
retention, experiments deleted and restored: ``tests/store_writes.Writer``). The store syncs
until it claims those writes; then the golden request set (every endpoint over several windows,
buckets, time zones and filter strings) is sent to two apps, one answering live and one from the
store, and every response body must be identical.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.db import Database
from service.demo.generate import mlflow_tracking
from service.settings import Settings
from service.store import Store, SyncSettings
from service.timebuckets import HOUR_MS
from tests.conftest import API, TEST_DB_NAME, app_reading, enabled_backends, serve
from tests.golden.requests import collect, key_of
from tests.store_writes import (
    DAY_MS,
    SEED,
    Source,
    Writer,
    assert_exact_copy,
    build_source,
    now_ms,
    sync_until_reconciled,
)

WHOLE_PASSES = SyncSettings(reconcile_budget_traces=10_000)
ROUNDS = 2
WRITES_PER_ROUND = 18
# Filters on what the writes change: trace status, a tag the writer sets, spans, feedback.
FILTERS = (
    None,
    "status = 'ERROR'",
    "tags.team = 'a' AND span.type = 'TOOL'",
    "feedback.quality_score > 0.5",
)


@pytest.fixture(scope="module", params=enabled_backends())
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Source:
    directory = tmp_path_factory.mktemp("store-writes")
    return build_source(request.param, f"{TEST_DB_NAME}_writes", directory, seed=SEED + 1)


async def answers(
    http: httpx.AsyncClient, experiment_id: str, now: int
) -> dict[str, tuple[int, bytes]]:
    """Every golden request about one experiment: ``{key: (status, body bytes)}``."""
    raw: dict[str, tuple[int, bytes]] = {}

    async def post(endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = await http.post(f"{API}/{endpoint}", json=body)
        raw[key_of(endpoint, body)] = (response.status_code, response.content)
        return response.status_code, response.json()

    # Windows of the golden set: all of it, three days around now, and an open window.
    await collect(post, [experiment_id], now - 6 * DAY_MS, now + DAY_MS, filters=FILTERS)
    # Tools per hour over a window of whole hours: the store reads its rollup per (tool, hour)
    # (service/queries/tool_hours.py), which the golden set's windows of any ms never use.
    hour = now // HOUR_MS * HOUR_MS
    whole_hours = {"start_time": hour - 6 * DAY_MS, "end_time": hour + DAY_MS}
    for timezone in ("UTC", "America/New_York"):
        series = {"experiment_ids": [experiment_id], "time_bucket": "hour", "timezone": timezone}
        _, tools = await post("tools/discovery", {**series, **whole_hours})
        for name in [info["tool_name"] for info in tools.get("data", [])][:2]:
            await post("tools/metrics", {**series, **whole_hours, "tool_name": name})
    return raw


async def test_after_every_kind_of_write_the_store_answers_as_live(
    source: Source, tmp_path: Path
) -> None:
    database = Database(Settings(database_url=source.service_url))
    # Slicing is tested in tests/test_store_sync.py; here a pass over the old slots is one cycle.
    store = Store.open(tmp_path / "insights-store.duckdb", database, WHOLE_PASSES)
    live_app = create_app(Settings(database_url=source.service_url))
    store_app = app_reading(store, source.service_url)
    try:
        await store.sync_once()
        async with serve(live_app) as live, serve(store_app) as stored:
            with mlflow_tracking(source.tracking_uri):
                writer = Writer(source, random.Random(SEED + 1))
                for round_number in range(ROUNDS):
                    done = writer.random_round(WRITES_PER_ROUND)
                    await sync_until_reconciled(store, writer.last_write_ms)
                    assert_exact_copy(store, source)
                    # Each round asks about one experiment (writes go to both), to keep it short.
                    experiment = source.experiment_ids[round_number % 2]
                    now = now_ms()
                    expected = await answers(live, experiment, now)
                    actual = await answers(stored, experiment, now)
                    assert actual.keys() == expected.keys()
                    ok = sum(status == 200 for status, _ in expected.values())
                    assert ok > 0.8 * len(expected), "most requests should be answered"
                    differ = [k for k in expected if actual[k] != expected[k]]
                    assert not differ, (
                        f"round {round_number} ({done}): {len(differ)} of {len(expected)} "
                        f"answers differ, e.g. {differ[0]}:\n"
                        f"live:  {expected[differ[0]]!r:.600}\nstore: {actual[differ[0]]!r:.600}"
                    )
                writer.restore_all()
    finally:
        store.close()
        await database.dispose()
