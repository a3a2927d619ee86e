"""One suite, run on every database the machine has.

Each backend's tracking DB is created by MLflow's own migrations and filled through MLflow's
public tracing API (``service.demo.generate``), once per test session. Tests talk to the service
through ``httpx.AsyncClient`` + ``ASGITransport`` and compute expected numbers independently
from the raw rows (read with a plain sync SQLAlchemy engine).

Backends: ``sqlite`` always; ``postgresql`` and ``mysql`` (MariaDB) on 127.0.0.1. Restrict with
``INSIGHTS_TEST_BACKENDS=sqlite,postgresql``. A server that is down fails the tests instead of
skipping them, so CI cannot pass without really running them.

Answering paths: every test that asks the service through ``client``, ``clients`` or
``edge_clients`` runs twice, once answered live from the tracking DB and once from the analytics
store (a copy synced from that DB before the first request), and each answer must say it came
from the path under test. Restrict with ``INSIGHTS_TEST_PATHS=live``.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pickle
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from migrations_readonly import render_readonly_role_sql
from service.api.deps import get_session
from service.app import create_app
from service.db import Database
from service.demo import generate as demo_generate
from service.demo.generate import (
    GeneratedDataset,
    build_tracking_db,
    refresh_planner_statistics,
)
from service.settings import Settings
from service.store import Store
from service.store.reading import store_session
from service.timebuckets import DAY_MS
from tests.disposable_servers import DisposablePostgres
from tests.oracle.edge_data import EdgeDB, build_edge_db
from tests.oracle.rows import Raw, load_raw

# In CI (CI=true): every skip is listed, and one not in tests/skips_allowed.toml fails the run.
pytest_plugins = ["tests.skip_policy"]

# Apps made here read the tracking DB live; tests/test_store_routing.py turns the store on.
os.environ.setdefault("INSIGHTS_STORE", "off")
# The suite's stores hold a few hundred rows, one DuckDB row group: nothing for a second thread
# to do in parallel, only coordination per statement, while two xdist workers already share the
# two cores (the SQLite-store golden run alone: 148 -> 127 s). The bench runs the default.
os.environ.setdefault("INSIGHTS_STORE_THREADS", "1")
ALL_BACKENDS = ("sqlite", "postgresql", "mysql")
ALL_PATHS = ("live", "store")
# Under pytest-xdist (``make test`` runs two workers) the databases a test writes are each
# worker's own, named after it (gw0, gw1); those tests only read are shared (``built_once``).
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
T = TypeVar("T")


def worker_database_name(name: str) -> str:
    """``name`` for this test process: suffixed with the xdist worker's id under xdist."""
    return f"{name}_{XDIST_WORKER}" if XDIST_WORKER else name


TEST_DB_NAME = worker_database_name(os.environ.get("INSIGHTS_TEST_DB_NAME", "insights_test"))
# The test DBs every worker only reads (the dataset, the edge cases) are built once and shared.
SHARED_DB_NAME = os.environ.get("INSIGHTS_TEST_DB_NAME", "insights_test")
PG_ADMIN_URL = os.environ.get(
    "INSIGHTS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432"
)
MYSQL_ADMIN_URL = os.environ.get("INSIGHTS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
N_TRACES = int(os.environ.get("INSIGHTS_TEST_TRACES", "240"))
SEED = 7

API = "/api/3.0/mlflow/traces/insights"
AJAX_API = "/ajax-api/3.0/mlflow/traces/insights"


def enabled_paths() -> list[str]:
    wanted = os.environ.get("INSIGHTS_TEST_PATHS")
    names = [p.strip() for p in (wanted or ",".join(ALL_PATHS)).split(",") if p.strip()]
    unknown = set(names) - set(ALL_PATHS)
    if unknown:
        raise ValueError(f"INSIGHTS_TEST_PATHS: unknown paths {sorted(unknown)}")
    return names


def enabled_backends() -> list[str]:
    wanted = os.environ.get("INSIGHTS_TEST_BACKENDS")
    if not wanted:
        return list(ALL_BACKENDS)
    names = [b.strip() for b in wanted.split(",") if b.strip()]
    unknown = set(names) - set(ALL_BACKENDS)
    if unknown:
        raise ValueError(f"INSIGHTS_TEST_BACKENDS: unknown backends {sorted(unknown)}")
    return names


def recreate_server_database(backend: str, name: str) -> str:
    """Drop and create an empty database on the PostgreSQL/MariaDB server; return its sync URI."""
    admin_url = PG_ADMIN_URL if backend == "postgresql" else MYSQL_ADMIN_URL
    server_db = f"{admin_url}/postgres" if backend == "postgresql" else admin_url
    demo_generate.recreate_server_database(server_db, name)
    return f"{admin_url}/{name}"


def empty_tracking_uri(
    backend: str, data_dir: Path, suffix: str = "", *, database: str = TEST_DB_NAME
) -> str:
    """The sync URI of a new, empty tracking DB: a file under ``data_dir`` on SQLite, the
    database ``<database><suffix>`` (dropped and re-created) on a server."""
    if backend == "sqlite":
        return f"sqlite:///{data_dir / f'mlflow{suffix}.db'}"
    return recreate_server_database(backend, f"{database}{suffix}")


def shared_dir(data_dir: Path) -> Path:
    """A directory every test process of this run sees: under xdist, beside the workers' own
    base directories (``data_dir`` is one worker's, under its base directory)."""
    base = data_dir.parent
    return (base.parent if XDIST_WORKER else base) / "shared"


def built_once(data_dir: Path, name: str, build: Callable[[Path], T]) -> T:
    """``build(directory)``'s result for this run: the first test process to ask builds it (in a
    directory every process sees) while the others wait, then they read what it kept. For the
    test DBs that tests only read: each xdist worker built its own before (35-60 s each)."""
    directory = shared_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    kept = directory / f"{name}.pickle"
    with open(directory / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if kept.exists():
            value: T = pickle.loads(kept.read_bytes())
            return value
        value = build(directory)
        kept.write_bytes(pickle.dumps(value))
        return value


def create_reader(backend: str, sync_uri: str) -> str:
    """Create the read-only role of ``migrations_readonly/`` on a server database and return an
    MLflow-style URL that logs in with it (the service's tests run as that role)."""
    url = sa.make_url(sync_uri)
    assert url.database is not None, "the test database's URL names its database"
    role, password = f"{url.database}_reader", "reader-pw"
    dialect = "postgres" if backend == "postgresql" else "mysql"
    script = render_readonly_role_sql(dialect, role=role, password=password, database=url.database)
    engine = sa.create_engine(sync_uri, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if backend == "postgresql":
            conn.exec_driver_sql(script)
        else:
            conn.exec_driver_sql(f"DROP USER IF EXISTS '{role}'@'%%'")
            for chunk in script.split(";\n"):
                lines = [line for line in chunk.splitlines() if not line.startswith("--")]
                if "".join(lines).strip():
                    # The driver formats with %: the host wildcard '%' must be doubled.
                    conn.exec_driver_sql("\n".join(lines).replace("%", "%%"))
    engine.dispose()
    service_url = url.set(drivername=backend, username=role, password=password)
    return service_url.render_as_string(hide_password=False)


@dataclass
class Backend:
    """A tracking DB of one kind, filled with the test dataset."""

    name: str
    sync_uri: str
    dataset: GeneratedDataset
    # MLflow-style URL the service is started with: the read-only role on server databases.
    service_url: str

    def sync_engine(self) -> sa.Engine:
        # Autocommit: an oracle's reads must never sit in an open transaction holding locks.
        return sa.create_engine(self.sync_uri, isolation_level="AUTOCOMMIT")

    def experiment_id(self, name: str = "support-agent") -> str:
        return self.dataset.experiment_ids[name]

    def window(self, *, widen_days: int = 0) -> dict[str, int]:
        """``start_time``/``end_time`` of the dataset's days, widened on both sides by
        ``widen_days`` (narrowed when negative)."""
        pad = widen_days * DAY_MS
        return {
            "start_time": self.dataset.start_time_ms - pad,
            "end_time": self.dataset.end_time_ms + pad,
        }


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tracking")


_built: dict[str, Backend] = {}


def build_backend(name: str, data_dir: Path) -> Backend:
    if name not in _built:

        def build(directory: Path) -> Backend:
            uri = empty_tracking_uri(name, directory, database=SHARED_DB_NAME)
            dataset = build_tracking_db(uri, n_traces=N_TRACES, days=14, seed=SEED)
            service_url = uri if name == "sqlite" else create_reader(name, dataset.tracking_uri)
            return Backend(name, dataset.tracking_uri, dataset, service_url)

        _built[name] = built_once(data_dir, f"backend-{name}", build)
    return _built[name]


@pytest.fixture(scope="session", params=enabled_backends())
def backend(request: pytest.FixtureRequest, data_dir: Path) -> Backend:
    return build_backend(request.param, data_dir)


@pytest.fixture(scope="session")
def all_backends(data_dir: Path) -> list[Backend]:
    """Every enabled backend at once, for cross-database comparisons."""
    return [build_backend(name, data_dir) for name in enabled_backends()]


@pytest.fixture(scope="session")
def raw(backend: Backend) -> Iterator[sa.Connection]:
    """A plain sync connection to the backend, for computing expected numbers independently."""
    engine = backend.sync_engine()
    with engine.connect() as conn:
        yield conn
    engine.dispose()


class InsightsClient:
    """Calls the service in-process, as a client would over HTTP. Every answer must come from
    ``path`` (live or the analytics store), as its ``X-Insights-Answered-By`` header says."""

    def __init__(self, http: httpx.AsyncClient, backend: Backend, path: str = "live") -> None:
        self.http = http
        self.backend = backend
        self.path = path

    async def post(
        self, endpoint: str, body: dict[str, Any], *, prefix: str = API
    ) -> httpx.Response:
        response = await self.http.post(f"{prefix}/{endpoint}", json=body)
        if response.status_code == 200:
            answered_by = response.headers.get("X-Insights-Answered-By")
            assert answered_by == self.path, f"{endpoint} was answered {answered_by}"
        return response

    async def ok(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.post(endpoint, body)
        assert response.status_code == 200, response.text
        payload: dict[str, Any] = response.json()
        return payload

    async def error(self, endpoint: str, body: Any, status: int, code: str) -> str:
        return assert_error(await self.http.post(f"{API}/{endpoint}", json=body), status, code)


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """The response is MLflow's error JSON with this status and code; returns its message."""
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error_code"] == code, payload
    assert isinstance(payload["message"], str) and payload["message"]
    message: str = payload["message"]
    return message


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app started (lifespan) and an HTTP client calling it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://insights") as http:
            yield http


async def open_client(app: FastAPI, backend: Backend) -> AsyncIterator[InsightsClient]:
    async with serve(app) as http:
        yield InsightsClient(http, backend)


@pytest.fixture(scope="session", params=enabled_paths())
def answering_path(request: pytest.FixtureRequest) -> str:
    """``live`` or ``store``: which path answers the requests of ``client`` and its kin."""
    path: str = request.param
    return path


# Synced once before the first request; no cycle after it, and no lag limit to fall back on:
# the test DBs do not change while the suite reads them.
_STORE_SYNC_INTERVAL_SECONDS = 24 * 3600.0
_STORE_READY_TIMEOUT_SECONDS = 300.0


def app_reading(store: Store, service_url: str) -> FastAPI:
    """An app whose every request is answered from ``store``, as it stands: the test drives
    its sync (``store.sync_once``), and no freshness rule sends a request live."""

    async def from_store() -> AsyncIterator[AsyncSession]:
        async with store_session(store) as session:
            yield session

    app = create_app(Settings(database_url=service_url))
    app.dependency_overrides[get_session] = from_store
    return app


def app_answering(service_url: str, path: str, store_dir: Path) -> FastAPI:
    if path == "live":
        return create_app(Settings(database_url=service_url))
    store_dir.mkdir(parents=True, exist_ok=True)
    return create_app(
        Settings(
            database_url=service_url,
            store="on",
            store_path=str(store_dir / "insights-store.duckdb"),
            store_sync_interval_seconds=_STORE_SYNC_INTERVAL_SECONDS,
            store_max_lag_seconds=_STORE_SYNC_INTERVAL_SECONDS * 7,
        )
    )


@asynccontextmanager
async def serve_answering(
    service_url: str, path: str, store_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """An app answering from ``path``: with ``store``, once its first sync is done."""
    app = app_answering(service_url, path, store_dir)
    async with serve(app) as http:
        runner = getattr(app.state, "store_runner", None)
        deadline = time.monotonic() + _STORE_READY_TIMEOUT_SECONDS
        while runner is not None and not runner.status.ready:
            assert runner.status.failures == 0, f"store sync failed: {runner.status.last_error}"
            assert time.monotonic() < deadline, "the store's first sync did not finish"
            await asyncio.sleep(0.05)
        yield http


@pytest.fixture(scope="session")
async def client(
    backend: Backend, answering_path: str, data_dir: Path
) -> AsyncIterator[InsightsClient]:
    store_dir = data_dir / f"store-{backend.name}"
    async with serve_answering(backend.service_url, answering_path, store_dir) as http:
        yield InsightsClient(http, backend, answering_path)


@pytest.fixture(scope="session")
async def clients(
    all_backends: list[Backend], answering_path: str, data_dir: Path
) -> AsyncIterator[dict[str, InsightsClient]]:
    """A client per enabled backend, to assert identical JSON across databases."""
    async with AsyncExitStack() as stack:
        result: dict[str, InsightsClient] = {}
        for b in all_backends:
            http = await stack.enter_async_context(
                serve_answering(b.service_url, answering_path, data_dir / f"stores-{b.name}")
            )
            result[b.name] = InsightsClient(http, b, answering_path)
        yield result


# --------------------------------------------------------------------------- edge-case DBs

_edge_built: dict[str, EdgeDB] = {}


def edge_db(name: str, data_dir: Path) -> EdgeDB:
    """The edge-case tracking DB of ``tests/oracle/edge_data.py`` on one backend, built once."""
    if name not in _edge_built:

        def build(directory: Path) -> EdgeDB:
            uri = empty_tracking_uri(name, directory, "_edge", database=SHARED_DB_NAME)
            experiment_id = build_edge_db(uri)
            refresh_planner_statistics(uri)
            return EdgeDB(name, uri, experiment_id)

        _edge_built[name] = built_once(data_dir, f"edge-{name}", build)
    return _edge_built[name]


@pytest.fixture(scope="session")
def edge_dbs(data_dir: Path) -> list[EdgeDB]:
    return [edge_db(name, data_dir) for name in enabled_backends()]


@pytest.fixture(scope="session")
async def edge_clients(
    edge_dbs: list[EdgeDB], answering_path: str, data_dir: Path
) -> AsyncIterator[dict[str, InsightsClient]]:
    """A client per backend over its edge-case DB."""
    async with AsyncExitStack() as stack:
        result: dict[str, InsightsClient] = {}
        for db in edge_dbs:
            http = await stack.enter_async_context(
                serve_answering(db.service_url, answering_path, data_dir / f"store-edge-{db.name}")
            )
            # The backend is never read from an edge client.
            result[db.name] = InsightsClient(http, db, answering_path)  # type: ignore[arg-type]
        yield result


@pytest.fixture(scope="session")
def edge_raw(edge_dbs: list[EdgeDB]) -> dict[str, Raw]:
    result = {}
    for db in edge_dbs:
        engine = sa.create_engine(db.sync_uri)
        with engine.connect() as conn:
            result[db.name] = load_raw(conn)
        engine.dispose()
    return result


@pytest.fixture
def disposable_postgres() -> Iterator[DisposablePostgres]:
    """A PostgreSQL server of the test's own, to stop and start (tests/disposable_servers.py)."""
    server = DisposablePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
async def synced_store(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Store]:
    """A store of the backend's tracking DB after its first sync, one per test module."""
    database = Database(Settings(database_url=backend.service_url))
    store = Store.open(tmp_path_factory.mktemp("store") / "insights-store.duckdb", database)
    try:
        await store.sync_once()
        assert store.ready, "the first sync did not complete"
        yield store
    finally:
        store.close()
        await database.dispose()
