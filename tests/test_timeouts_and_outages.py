"""Statement timeouts are enforced by the database and answered 504; a database outage
(PostgreSQL or MariaDB) is answered 503 and the service recovers without a restart — all tested
for real, the outages on servers of the test's own (tests/disposable_servers.py, as root)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import sqlalchemy as sa

from service.app import create_app
from service.demo.generate import build_tracking_db
from service.settings import Settings
from tests.conftest import API, Backend, enabled_backends
from tests.disposable_servers import DisposableMariaDB, DisposablePostgres, DisposableServer

VOLUME = f"{API}/traffic-cost/volume"
SERVER_BACKENDS = [name for name in enabled_backends() if name != "sqlite"]


@contextlib.asynccontextmanager
async def service_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://insights") as http:
            yield http


@contextlib.contextmanager
def table_locked(backend: Backend) -> Iterator[None]:
    """Hold an exclusive lock on trace_info from another connection, so reads of it wait."""
    engine = sa.create_engine(backend.sync_uri)
    conn = engine.connect()
    try:
        # Never wait long for the lock ourselves: a stuck test must fail, not hang.
        if backend.name == "postgresql":
            conn.exec_driver_sql("SET lock_timeout = '30s'")
            conn.exec_driver_sql("LOCK TABLE trace_info IN ACCESS EXCLUSIVE MODE")
        else:
            conn.exec_driver_sql("SET SESSION lock_wait_timeout = 30")
            conn.exec_driver_sql("LOCK TABLES trace_info WRITE")
        yield
    finally:
        if backend.name == "mysql":
            conn.exec_driver_sql("UNLOCK TABLES")
        conn.rollback()
        conn.close()
        engine.dispose()


async def test_statement_timeout_is_enforced_by_the_database(backend: Backend) -> None:
    """A query running past the limit is cancelled by the database and answered 504; the
    service keeps serving afterwards."""
    body = {"experiment_ids": [backend.experiment_id()]}
    if backend.name == "sqlite":
        # SQLite never waits for a lock here: a limit far below any query's run time makes
        # the progress handler interrupt the statement instead.
        slow = Settings(database_url=backend.service_url, statement_timeout_seconds=1e-6)
        async with service_client(slow) as http:
            response = await http.post(VOLUME, json=body)
            assert response.status_code == 504, response.text
            assert response.json()["error_code"] == "DEADLINE_EXCEEDED"
            assert (await http.get("/health")).status_code == 200
        return
    settings = Settings(database_url=backend.service_url, statement_timeout_seconds=0.5)
    async with service_client(settings) as http:
        with table_locked(backend):
            response = await http.post(VOLUME, json=body)
            assert response.status_code == 504, response.text
            payload = response.json()
            assert payload["error_code"] == "DEADLINE_EXCEEDED"
            assert "timeout" in payload["message"] and "SELECT" not in payload["message"]
        # Same app, same pool: it answers again once the lock is gone.
        response = await http.post(VOLUME, json=body)
        assert response.status_code == 200, response.text
        assert response.json()["summary"]["count"] > 0
        assert (await http.get("/ready")).status_code == 200


# SQLite opens a connection per request: there is no pool to exhaust, so no SQLite case.
@pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True, scope="session")
async def test_busy_connection_pool_is_503_with_retry_after(backend: Backend) -> None:
    """When every pooled connection stays busy past the pool timeout, the waiting request is
    told to come back (503 + Retry-After), never a 500; the service serves again afterwards."""
    body = {"experiment_ids": [backend.experiment_id()]}
    settings = Settings(
        database_url=backend.service_url,
        pool_size=1,
        max_overflow=0,
        pool_timeout_seconds=0.5,
        statement_timeout_seconds=20,
    )
    async with service_client(settings) as http:
        assert (await http.post(VOLUME, json=body)).status_code == 200
        with table_locked(backend):
            # The first request takes the only connection and waits for the lock.
            first = asyncio.create_task(http.post(VOLUME, json=body))
            # Wait until it holds the connection, however slow the machine is.
            transport = http._transport
            assert isinstance(transport, httpx.ASGITransport)
            pool = transport.app.state.database.engine.sync_engine.pool  # type: ignore[attr-defined]
            for _ in range(1000):
                if pool.checkedout() == 1:
                    break
                await asyncio.sleep(0.01)
            assert pool.checkedout() == 1
            second = await http.post(VOLUME, json=body)
            assert second.status_code == 503, second.text
            assert second.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert "INSIGHTS_POOL_SIZE" in second.json()["message"]
            assert int(second.headers["Retry-After"]) > 0
        assert (await first).status_code == 200
        again = await http.post(VOLUME, json=body)
        assert again.status_code == 200, again.text
        assert again.json() == (await first).json()


# --------------------------------------------------------------------------------------------
# Outages of a server of the test's own (tests/disposable_servers.py): nothing else is stopped.
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=["postgresql", "mysql"])
def disposable_server(request: pytest.FixtureRequest) -> Iterator[DisposableServer]:
    server: DisposableServer = (
        DisposablePostgres() if request.param == "postgresql" else DisposableMariaDB()
    )
    try:
        server.start()
        yield server
    finally:
        server.remove()


async def test_database_outage_is_503_and_the_service_recovers_without_restart(
    disposable_server: DisposableServer,
) -> None:
    server = disposable_server
    dataset = build_tracking_db(server.create_database("outage"), n_traces=12, days=1)
    body = {"experiment_ids": [dataset.experiment_ids["support-agent"]]}

    async with service_client(Settings(database_url=server.url("outage"))) as http:
        before = await http.post(VOLUME, json=body)
        assert before.status_code == 200, before.text
        assert before.json()["summary"]["count"] > 0
        assert (await http.get("/ready")).status_code == 200

        # Stop the server in another thread, as an operator or a crash would.
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        stopper.join()
        during = await http.post(VOLUME, json=body)
        assert during.status_code == 503, during.text
        assert during.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        ready = await http.get("/ready")
        assert ready.status_code == 503
        assert (await http.get("/health")).status_code == 200

        server.start()
        after = await http.post(VOLUME, json=body)
        assert after.status_code == 200, after.text
        assert after.json() == before.json()
        assert (await http.get("/ready")).status_code == 200


async def test_too_many_connections_is_503_and_clears_when_connections_free_up(
    disposable_postgres: DisposablePostgres,
) -> None:
    """SQLSTATE class 53 (too many connections, out of memory, disk full) is an overload: 503,
    never a 500 and never mistaken for a missing schema."""
    server = disposable_postgres
    admin = sa.create_engine(
        server.url("postgres", "postgresql+psycopg2"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql("CREATE ROLE crowd LOGIN CONNECTION LIMIT 0")
    dataset = build_tracking_db(server.create_database("crowded"), n_traces=6, days=1)
    body = {"experiment_ids": [dataset.experiment_ids["support-agent"]]}
    crowd_url = f"postgresql://crowd@127.0.0.1:{server.port}/crowded"
    try:
        async with service_client(Settings(database_url=crowd_url)) as http:
            refused = await http.post(VOLUME, json=body)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert "schema" not in refused.json()["message"].lower()
            assert (await http.get("/ready")).status_code == 503

            with admin.connect() as conn:
                conn.exec_driver_sql("ALTER ROLE crowd CONNECTION LIMIT -1")
            crowded = sa.create_engine(server.url("crowded", "postgresql+psycopg2"))
            with crowded.begin() as conn:
                conn.exec_driver_sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO crowd")
                traces = conn.execute(
                    sa.text("SELECT count(*) FROM trace_info WHERE experiment_id = :e"),
                    {"e": body["experiment_ids"][0]},
                ).scalar()
            crowded.dispose()
            served = await http.post(VOLUME, json=body)
            assert served.status_code == 200, served.text
            assert served.json()["summary"]["count"] == traces
    finally:
        admin.dispose()
