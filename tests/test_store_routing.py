"""Routing between the live database and the analytics store (API.md §7), on real databases:
which path answers, the headers that say so, /ready's store state, /metrics, and the sync loop
surviving a tracking DB outage (a PostgreSQL server of the test's own, as root).

Numbers are checked against the tracking DB's rows (counted with plain SQL) and against the
requests the test sent, never only against status codes.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import DBAPIError

from service.app import create_app
from service.cli import parse_args, settings_from_args
from service.db import Database
from service.demo.generate import build_tracking_db, mlflow_tracking
from service.dialects import policy_for
from service.errors import ErrorCode
from service.settings import Settings
from service.store.reading import store_session
from service.store.routing import asks_for_live
from service.store.runner import SyncRunner
from service.store.store import Store
from service.store.store_file import StoreFile
from tests.conftest import AJAX_API, API, Backend, assert_error, serve
from tests.disposable_servers import DisposablePostgres

VOLUME = "/traffic-cost/volume"
LATENCY = "/traffic-cost/latency"
NO_CACHE = {"Cache-Control": "no-cache"}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def store_settings(database_url: str, store_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "store": "on",
        "store_path": str(store_path),
        "store_sync_interval_seconds": 0.2,
        "store_sync_max_backoff_seconds": 1.0,
        **overrides,
    }
    return Settings(**values)


def runner_of(app: FastAPI) -> SyncRunner:
    runner: SyncRunner | None = app.state.store_runner
    assert runner is not None, "the store should be on"
    return runner


async def wait_for_store(
    http: httpx.AsyncClient, states: set[str], timeout: float = 240.0
) -> dict[str, Any]:
    """Poll /ready until the store reaches one of ``states``; return its store object."""
    deadline = time.monotonic() + timeout
    while True:
        store: dict[str, Any] = (await http.get("/ready")).json()["store"]
        if store["state"] in states:
            return store
        assert time.monotonic() < deadline, f"store never reached {states}: {store}"
        await asyncio.sleep(0.1)


def trace_count(sync_uri: str, experiment_id: str, *, timed_only: bool = False) -> int:
    """Traces of the experiment in the tracking DB (``timed_only``: with an execution time)."""
    engine = sa.create_engine(sync_uri, isolation_level="AUTOCOMMIT")
    timed = " AND execution_time_ms IS NOT NULL" if timed_only else ""
    try:
        with engine.connect() as conn:
            query = sa.text(f"SELECT count(*) FROM trace_info WHERE experiment_id = :e{timed}")
            return int(conn.execute(query, {"e": int(experiment_id)}).scalar_one())
    finally:
        engine.dispose()


def table_counts(sync_uri: str, tables: tuple[str, ...]) -> dict[str, int]:
    engine = sa.create_engine(sync_uri, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            return {
                t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in tables
            }
    finally:
        engine.dispose()


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def volume(http: httpx.AsyncClient, experiment_id: str, **kwargs: Any) -> httpx.Response:
    return await http.post(f"{API}{VOLUME}", json={"experiment_ids": [experiment_id]}, **kwargs)


def answered_by(response: httpx.Response) -> str:
    return response.headers["X-Insights-Answered-By"]


def as_of(response: httpx.Response) -> int:
    return int(response.headers["X-Insights-As-Of"])


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with serve(app) as http:
        yield app, http


# --- settings ---------------------------------------------------------------------------------


def test_store_settings_defaults_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INSIGHTS_STORE", "INSIGHTS_STORE_PATH", "INSIGHTS_STORE_MAX_LAG_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings()
    assert (defaults.store, defaults.store_path) == ("on", ".insights/store.duckdb")
    assert defaults.store_max_lag_seconds == 30.0
    assert 0 < defaults.store_sync_interval_seconds <= 10

    monkeypatch.setenv("INSIGHTS_STORE", "off")
    monkeypatch.setenv("INSIGHTS_STORE_MAX_LAG_SECONDS", "7.5")
    from_env = Settings()
    assert (from_env.store, from_env.store_max_lag_seconds) == ("off", 7.5)

    flags = settings_from_args(parse_args(["--store", "on", "--store-path", "/data/s.duckdb"]))
    assert (flags.store, flags.store_path) == ("on", "/data/s.duckdb")
    with pytest.raises(SystemExit):
        parse_args(["--store", "maybe"])


@pytest.mark.parametrize(
    ("header", "live"),
    [
        (None, False),
        ("no-cache", True),
        ("No-Cache", True),
        ("max-age=0, no-cache", True),
        ('no-cache="set-cookie"', True),
        ("max-age=0", False),
        ("no-store", False),
    ],
)
def test_cache_control_no_cache_asks_for_live(header: str | None, live: bool) -> None:
    assert asks_for_live(header) is live


# --- which path answers -----------------------------------------------------------------------


async def test_synced_store_answers_and_no_cache_is_live(backend: Backend, tmp_path: Path) -> None:
    experiment = backend.experiment_id()
    expected = trace_count(backend.sync_uri, experiment)
    async with started(store_settings(backend.service_url, tmp_path / "s.duckdb")) as (app, http):
        store = await wait_for_store(http, {"ready"})
        assert store["lag_seconds"] <= store["max_lag_seconds"] == 30.0
        status = runner_of(app).status

        from_store = await volume(http, experiment)
        assert from_store.status_code == 200, from_store.text
        assert answered_by(from_store) == "store"
        assert as_of(from_store) == runner_of(app).status.as_of_ms
        assert status.as_of_ms is not None and as_of(from_store) >= status.as_of_ms
        assert from_store.json()["summary"]["count"] == expected

        before = now_ms()
        live = await volume(http, experiment, headers=NO_CACHE)
        after = now_ms()
        assert answered_by(live) == "live"
        assert before <= as_of(live) <= after  # live: as of the request's start
        assert live.content == from_store.content

        # Both prefixes, and answers that are errors, say which path answered.
        ajax = await http.post(f"{AJAX_API}{VOLUME}", json={"experiment_ids": [experiment]})
        assert (answered_by(ajax), ajax.content) == ("store", from_store.content)
        # An experiment the copy does not hold is asked of the tracking DB: here it exists
        # nowhere, so the 404 is the live one.
        missing = await volume(http, "987654321")
        assert_error(missing, 404, "RESOURCE_DOES_NOT_EXIST")
        assert answered_by(missing) == "live"
        # A filter the store refuses is the store's answer, with the live path's message.
        bad_filter = {"experiment_ids": [experiment], "filter_string": "foo = 'x'"}
        refused_by_store = await http.post(f"{API}{VOLUME}", json=bad_filter)
        refused_live = await http.post(f"{API}{VOLUME}", json=bad_filter, headers=NO_CACHE)
        assert_error(refused_by_store, 400, "INVALID_PARAMETER_VALUE")
        assert answered_by(refused_by_store) == "store"
        assert refused_by_store.content == refused_live.content
        # A body refused by its model was decided before any path answered: live, as of now.
        before = now_ms()
        refused = await http.post(f"{API}{VOLUME}", json={"experiment_ids": []})
        assert_error(refused, 400, "INVALID_PARAMETER_VALUE")
        assert answered_by(refused) == "live" and as_of(refused) >= before
        assert "X-Insights-Answered-By" not in (await http.get("/health")).headers


async def test_many_concurrent_requests_are_all_answered_by_the_store(
    backend: Backend, tmp_path: Path
) -> None:
    """More requests at once than reader threads, each of several statements: every one is
    answered by the store, as it is when asked alone. A bounded pool of store connections once
    deadlocked here: sessions held its connections while their next statement waited for a
    reader thread, and every reader thread waited for a connection (503 after 30 s)."""
    experiment = backend.experiment_id()
    bodies = {
        "/correlations": {"experiment_ids": [experiment], "filter_string": "status = 'ERROR'"},
        "/dimensions/discovery": {"experiment_ids": [experiment]},
        "/tools/discovery": {"experiment_ids": [experiment], "time_bucket": "day"},
    }
    async with started(store_settings(backend.service_url, tmp_path / "s.duckdb")) as (_, http):
        await wait_for_store(http, {"ready"})
        alone = {path: await http.post(f"{API}{path}", json=body) for path, body in bodies.items()}
        for response in alone.values():
            assert response.status_code == 200, response.text
        asked = [path for path in bodies for _ in range(16)]
        answers = await asyncio.gather(
            *(http.post(f"{API}{path}", json=bodies[path]) for path in asked)
        )
    for path, response in zip(asked, answers, strict=True):
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        assert answered_by(response) == "store"
        assert response.content == alone[path].content


async def test_before_the_first_sync_answers_are_live(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    sync_once = Store.sync_once

    async def held_sync(self: Store, *, full: bool = False) -> Any:
        await release.wait()
        return await sync_once(self, full=full)

    monkeypatch.setattr(Store, "sync_once", held_sync)
    experiment = backend.experiment_id()
    async with started(store_settings(backend.service_url, tmp_path / "s.duckdb")) as (_, http):
        ready = await http.get("/ready")
        assert ready.status_code == 200  # the database is fine; the store only routes
        assert ready.json()["store"]["state"] == "building"
        assert ready.json()["store"]["lag_seconds"] is None
        samples = metric_samples((await http.get("/metrics")).text)
        assert sample(samples, "insights_store_ready") == 0.0
        assert math.isnan(sample(samples, "insights_store_lag_seconds"))

        first = await volume(http, experiment)
        assert answered_by(first) == "live"
        assert first.json()["summary"]["count"] == trace_count(backend.sync_uri, experiment)

        release.set()
        await wait_for_store(http, {"ready"})
        second = await volume(http, experiment)
        assert answered_by(second) == "store"
        assert second.content == first.content


async def test_a_store_lagging_beyond_the_limit_answers_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    experiment = backend.experiment_id()
    settings = store_settings(backend.service_url, tmp_path / "s.duckdb", store_max_lag_seconds=0)
    async with started(settings) as (app, http):
        store = await wait_for_store(http, {"lagging"})
        assert store["as_of_ms"] is not None and store["lag_seconds"] > 0
        assert runner_of(app).status.ready  # a whole copy, only too old for a limit of 0
        response = await volume(http, experiment)
        assert answered_by(response) == "live"
        assert response.json()["summary"]["count"] == trace_count(backend.sync_uri, experiment)


async def test_store_off_answers_live_and_writes_no_file(backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    experiment = backend.experiment_id()
    settings = store_settings(backend.service_url, path, store="off")
    async with started(settings) as (app, http):
        assert app.state.store_runner is None
        ready = await http.get("/ready")
        assert (ready.status_code, ready.json()["store"]) == (200, {"state": "off"})
        responses = [await volume(http, experiment) for _ in range(2)]
        assert [answered_by(r) for r in responses] == ["live", "live"]
        assert responses[0].json()["summary"]["count"] == trace_count(backend.sync_uri, experiment)
        samples = metric_samples((await http.get("/metrics")).text)
        assert sample(samples, "insights_store_ready") == 0.0
        assert sample(samples, "insights_store_sync_duration_seconds_count", outcome="ok") == 0
    assert not path.exists() and not path.parent.joinpath("s.duckdb.wal").exists()


# --- /metrics -----------------------------------------------------------------------------------


async def test_metrics_count_requests_per_endpoint_and_path(
    backend: Backend, tmp_path: Path
) -> None:
    experiment = backend.experiment_id()
    body = {"experiment_ids": [experiment]}
    async with started(store_settings(backend.service_url, tmp_path / "s.duckdb")) as (_, http):
        await wait_for_store(http, {"ready"})
        sent = {("store", VOLUME): 3, ("live", VOLUME): 2, ("store", LATENCY): 1}
        for _ in range(3):
            assert answered_by(await http.post(f"{API}{VOLUME}", json=body)) == "store"
        for _ in range(2):
            response = await http.post(f"{API}{VOLUME}", json=body, headers=NO_CACHE)
            assert answered_by(response) == "live"
        assert answered_by(await http.post(f"{AJAX_API}{LATENCY}", json=body)) == "store"
        assert (await http.post(f"{API}/no-such-endpoint", json=body)).status_code == 404

        scraped = await http.get("/metrics")
        assert scraped.headers["content-type"].startswith("text/plain")
        samples = metric_samples(scraped.text)

    for (path, endpoint), count in sent.items():
        labels = {"endpoint": endpoint, "answered_by": path, "status": "200"}
        assert sample(samples, "insights_request_duration_seconds_count", **labels) == count
        assert sample(samples, "insights_request_duration_seconds_sum", **labels) > 0
    unknown = {"endpoint": "unknown", "answered_by": "live", "status": "404"}
    assert sample(samples, "insights_request_duration_seconds_count", **unknown) == 1
    requests = sum(
        value
        for (name, _), value in samples.items()
        if name == "insights_request_duration_seconds_count"
    )
    assert requests == sum(sent.values()) + 1  # /ready and /metrics are not insights requests

    # Nothing was written to the tracking DB since the first sync: it copied every row once.
    source = table_counts(backend.sync_uri, ("trace_info", "spans"))
    for table, rows in source.items():
        assert sample(samples, "insights_store_rows_synced_total", table=table) == rows
    assert sample(samples, "insights_store_sync_duration_seconds_count", outcome="ok") >= 1
    for kind in ("tracking_db", "store", "unexpected"):
        assert ("insights_store_sync_errors_total", frozenset({("kind", kind)})) in samples
        assert sample(samples, "insights_store_sync_errors_total", kind=kind) == 0
    assert sample(samples, "insights_store_ready") == 1.0
    assert 0 <= sample(samples, "insights_store_lag_seconds") <= 30


# --- faults ---------------------------------------------------------------------------------------


async def test_a_deleted_store_file_is_rebuilt_while_answers_go_live(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.duckdb"
    experiment = backend.experiment_id()
    expected = trace_count(backend.sync_uri, experiment)
    release = asyncio.Event()
    release.set()
    sync_once = Store.sync_once

    async def held_sync(self: Store, *, full: bool = False) -> Any:
        await release.wait()
        return await sync_once(self, full=full)

    monkeypatch.setattr(Store, "sync_once", held_sync)

    def rows_synced(text: str) -> float:
        return sample(metric_samples(text), "insights_store_rows_synced_total", table="trace_info")

    async with started(store_settings(backend.service_url, path)) as (_, http):
        await wait_for_store(http, {"ready"})
        synced = rows_synced((await http.get("/metrics")).text)
        assert synced == table_counts(backend.sync_uri, ("trace_info",))["trace_info"]

        release.clear()  # hold the rebuild, so that what answers meanwhile can be seen
        path.unlink()
        await wait_for_store(http, {"building"}, timeout=30)
        meanwhile = await volume(http, experiment)
        assert answered_by(meanwhile) == "live"
        assert meanwhile.json()["summary"]["count"] == expected

        release.set()
        deadline = time.monotonic() + 240
        while rows_synced((await http.get("/metrics")).text) < 2 * synced:
            assert time.monotonic() < deadline, "the deleted store was never rebuilt"
            await asyncio.sleep(0.1)
        await wait_for_store(http, {"ready"})
        assert path.exists()
        rebuilt = await volume(http, experiment)
        assert answered_by(rebuilt) == "store"
        assert rebuilt.content == meanwhile.content


async def test_a_store_that_cannot_be_created_leaves_answers_live(
    backend: Backend, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's directory should be")
    experiment = backend.experiment_id()
    async with started(store_settings(backend.service_url, blocker / "s.duckdb")) as (_, http):
        deadline = time.monotonic() + 60
        while (store := (await http.get("/ready")).json()["store"])["failed_cycles"] < 2:
            assert time.monotonic() < deadline, f"no failed cycle reported: {store}"
            await asyncio.sleep(0.1)
        assert (store["state"], store["last_error"]) == ("building", "store: StoreOpenError")
        response = await volume(http, experiment)
        assert answered_by(response) == "live"
        assert response.json()["summary"]["count"] == trace_count(backend.sync_uri, experiment)
        samples = metric_samples((await http.get("/metrics")).text)
        assert sample(samples, "insights_store_sync_errors_total", kind="store") >= 2
        assert sample(samples, "insights_store_sync_errors_total", kind="tracking_db") == 0


def log_traces(tracking_uri: str, experiment_id: str, n: int) -> None:
    with mlflow_tracking(tracking_uri):
        for i in range(n):
            root = mlflow.start_span_no_context(
                f"after-outage-{i}", inputs={"q": i}, experiment_id=experiment_id
            )
            root.end(outputs={"a": i})


async def test_sync_survives_a_tracking_db_outage_and_catches_up(
    disposable_postgres: DisposablePostgres, tmp_path: Path
) -> None:
    server = disposable_postgres
    dataset = build_tracking_db(server.create_database("outage"), n_traces=12, days=1)
    experiment = dataset.experiment_ids["support-agent"]
    # PostgreSQL's change gate puts a quiet store ~10 s behind: a limit of 20 s leaves room.
    settings = store_settings(
        server.url("outage"),
        tmp_path / "s.duckdb",
        store_max_lag_seconds=20,
        store_sync_max_backoff_seconds=2.0,
    )
    async with started(settings) as (app, http):
        await wait_for_store(http, {"ready"})
        before = await volume(http, experiment)
        assert answered_by(before) == "store"
        assert before.json()["summary"]["count"] == trace_count(dataset.tracking_uri, experiment)

        stopper = threading.Thread(target=server.stop)  # as an operator or a crash would
        stopper.start()
        stopper.join()
        # Within the lag limit the store still answers.
        during = await volume(http, experiment)
        assert answered_by(during) == "store"
        # The store answers from its own file: the tracking DB being down changes nothing.
        assert during.status_code == 200, during.text
        assert during.content == before.content

        lagging = await wait_for_store(http, {"lagging"}, timeout=60)
        assert lagging["failed_cycles"] >= 1
        assert lagging["last_error"].startswith("tracking_db: ")
        assert (await http.get("/ready")).status_code == 503
        refused = await volume(http, experiment)
        assert_error(refused, 503, "TEMPORARILY_UNAVAILABLE")
        assert answered_by(refused) == "live"
        samples = metric_samples((await http.get("/metrics")).text)
        failures = runner_of(app).status.failures  # read after: one more cycle may have failed
        errors = sample(samples, "insights_store_sync_errors_total", kind="tracking_db")
        assert 2 <= errors <= failures <= errors + 1
        failed_cycles = sample(
            samples, "insights_store_sync_duration_seconds_count", outcome="failed"
        )
        assert failed_cycles == errors
        # Backoff (0.4, 0.8, 1.6, then 2 s): without it, 0.2 s apart, up to 20 s of outage
        # would be about 100 failed cycles.
        assert failures <= 20

        server.start()
        log_traces(dataset.tracking_uri, experiment, 3)
        written_ms = now_ms()
        # Once as_of_ms passes a write, the copy holds it (docs/store.md, "How fresh").
        deadline = time.monotonic() + 120
        while (runner_of(app).status.as_of_ms or 0) < written_ms:
            assert time.monotonic() < deadline, f"never caught up: {runner_of(app).status}"
            await asyncio.sleep(0.2)
        assert runner_of(app).status.failures == 0
        await wait_for_store(http, {"ready"})
        after = await volume(http, experiment)
        assert answered_by(after) == "store"
        expected = trace_count(dataset.tracking_uri, experiment)
        assert after.json()["summary"]["count"] == expected == before.json()["summary"]["count"] + 3
        # The copy itself holds the new traces (independent of how the store is read).
        store = runner_of(app).store
        assert store is not None
        with store.engine().connect() as conn:
            copied = conn.execute(
                sa.text("SELECT count(*) FROM trace_info WHERE experiment_id = :e"),
                {"e": int(experiment)},
            ).scalar_one()
        assert copied == expected


# --- what the copy does not hold yet ----------------------------------------------------------


async def test_an_experiment_created_after_the_last_cycle_is_answered_live(
    tmp_path: Path,
) -> None:
    """Until a cycle copies it, the store cannot know an experiment: asking the store would
    give a 404 that is true only as of the copy. Such a request is answered live."""
    uri = f"sqlite:///{tmp_path / 'tracking.db'}"
    dataset = build_tracking_db(uri, n_traces=6, days=1)
    old = dataset.experiment_ids["support-agent"]
    # One cycle, then none for an hour: nothing the test writes reaches the copy.
    settings = store_settings(uri, tmp_path / "s.duckdb", store_sync_interval_seconds=3600)
    async with started(settings) as (_, http):
        await wait_for_store(http, {"ready"})
        with mlflow_tracking(uri):
            new = mlflow.create_experiment("created-after-the-sync")
        log_traces(uri, new, 2)

        fresh = await volume(http, new)
        assert fresh.status_code == 200, fresh.text
        assert answered_by(fresh) == "live"
        assert fresh.json()["summary"]["count"] == trace_count(uri, new) == 2
        # A request naming both goes live as a whole: never half an answer from each path.
        both = await http.post(f"{API}{VOLUME}", json={"experiment_ids": [old, new]})
        assert answered_by(both) == "live"
        assert both.json()["summary"]["count"] == trace_count(uri, old) + 2
        held = await volume(http, old)
        assert answered_by(held) == "store"
        assert held.json()["summary"]["count"] == trace_count(uri, old)


async def test_ready_reports_the_first_sync_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the first sync copies, /ready says how many rows of how many (the sync's log says
    it per table); the total is every row the copy will hold, counted here with plain SQL."""
    uri = f"sqlite:///{tmp_path / 'tracking.db'}"
    build_tracking_db(uri, n_traces=8, days=1)
    tables = ("trace_info", "trace_tags", "trace_request_metadata", "spans", "assessments")
    expected_total = sum(table_counts(uri, tables).values())
    engine = sa.create_engine(uri)
    with engine.connect() as conn:  # only links from traces are copied
        expected_total += conn.execute(
            sa.text("SELECT count(*) FROM entity_associations WHERE source_type = 'TRACE'")
        ).scalar_one()
    engine.dispose()

    tags_reached, release = threading.Event(), threading.Event()
    insert = StoreFile.insert

    def held_insert(self: StoreFile, table: Any, rows: Any) -> None:
        if table.name == "trace_tags":  # hold the copy after trace_info, on the worker thread
            tags_reached.set()
            release.wait(timeout=60)
        insert(self, table, rows)

    monkeypatch.setattr(StoreFile, "insert", held_insert)
    async with started(store_settings(uri, tmp_path / "s.duckdb")) as (_, http):
        try:
            deadline = time.monotonic() + 60
            while not tags_reached.is_set():
                assert time.monotonic() < deadline, "the first sync never reached trace_tags"
                await asyncio.sleep(0.05)
            store = (await http.get("/ready")).json()["store"]
            assert store["state"] == "building"
            progress = store["progress"]
            # trace_info is copied first, in one chunk; then trace_tags' insert is held.
            copied = table_counts(uri, ("trace_info",))["trace_info"]
            assert progress["rows_total"] == expected_total
            assert progress["rows_copied"] == copied
            assert progress["percent"] == round(100 * copied / expected_total, 1)
        finally:
            release.set()
            monkeypatch.setattr(StoreFile, "insert", insert)
        store = await wait_for_store(http, {"ready"})
        assert "progress" not in store


async def test_a_store_statement_past_the_timeout_is_interrupted(
    backend: Backend, tmp_path: Path
) -> None:
    """The service's statement timeout applies to the store's DuckDB reads too: DuckDB has none
    of its own, so the store interrupts the statement, and the error maps to MLflow's
    DEADLINE_EXCEEDED like the tracking DB's timeouts."""
    settings = Settings(database_url=backend.service_url, statement_timeout_seconds=1.0)
    database = Database(settings)
    store = Store.open(tmp_path / "s.duckdb", database)
    try:
        await store.sync_once()
        endless = sa.text("SELECT count(*) FROM range(1000000000000) a")
        started_at = time.monotonic()
        async with store_session(store) as session:
            with pytest.raises(DBAPIError) as raised:
                await session.execute(endless)
            seconds = time.monotonic() - started_at
        assert 1.0 <= seconds < 10.0
        policy = policy_for(store.engine().dialect)
        assert policy.classify_error(raised.value) == ErrorCode.DEADLINE_EXCEEDED
        # The next session reads normally: the interrupt ended one statement, not the store.
        async with store_session(store) as session:
            assert (await session.execute(sa.text("SELECT 42"))).scalar_one() == 42
    finally:
        store.close()
        await database.dispose()


async def test_a_store_out_of_memory_is_a_503_that_says_so_and_live_still_answers(
    backend: Backend, tmp_path: Path
) -> None:
    """DuckDB running out of memory is the store's failure, not the tracking database's: the
    503 says so and names the way around it, and the same request with no-cache is answered."""
    experiment = backend.experiment_id()
    async with started(store_settings(backend.service_url, tmp_path / "s.duckdb")) as (app, http):
        await wait_for_store(http, {"ready"})
        # Far below what percentiles over the dataset need (DuckDB refuses past its limit).
        store = runner_of(app).store
        assert store is not None
        with store.engine().connect() as conn:
            conn.exec_driver_sql("SET memory_limit = '1MB'")
        body = {"experiment_ids": [experiment], "time_bucket": "day"}
        failed = await http.post(f"{API}/traffic-cost/latency", json=body)
        assert_error(failed, 503, "TEMPORARILY_UNAVAILABLE")
        assert answered_by(failed) == "store"
        message = failed.json()["message"]
        assert "analytics store" in message and "tracking database cannot" not in message
        assert "Cache-Control: no-cache" in message and "INSIGHTS_STORE_MEMORY_LIMIT" in message
        live = await http.post(f"{API}/traffic-cost/latency", json=body, headers=NO_CACHE)
        assert live.status_code == 200 and answered_by(live) == "live"
        timed = trace_count(backend.sync_uri, experiment, timed_only=True)
        assert live.json()["summary"]["count"] == timed > 0
