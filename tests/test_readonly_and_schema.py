"""The service only reads: its connections refuse writes, and it refuses unknown schemas."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from migrations_readonly import supported_revisions
from service.app import create_app
from service.db import Database, UnsupportedSchemaError
from service.settings import Settings
from tests import oracle
from tests.conftest import API, Backend, serve

WRITES = [
    "INSERT INTO experiments (name, lifecycle_stage) VALUES ('intruder', 'active')",
    "UPDATE trace_info SET status = 'OK'",
    "DELETE FROM trace_tags",
    "CREATE TABLE insights_intruder (id INTEGER)",
    "DROP TABLE trace_tags",
    "ALTER TABLE trace_info ADD COLUMN intruder INTEGER",
]


def is_read_only_refusal(message: str) -> bool:
    message = message.lower()
    return "readonly" in message or ("read" in message and "only" in message)


async def assert_writes_refused(database_url: str, accept: Callable[[str], bool]) -> None:
    database = Database(Settings(database_url=database_url))
    try:
        for statement in WRITES:
            async with database.engine.connect() as conn:
                with pytest.raises(DBAPIError) as refused:
                    await conn.execute(sa.text(statement))
                    await conn.commit()
                message = str(refused.value.orig)
                assert accept(message), (statement, message)
    finally:
        await database.dispose()


async def test_every_write_is_refused_by_the_database(backend: Backend) -> None:
    """Through the service's own engine factory, every write fails at the database: with the
    read-only role (no write privilege) and even with an all-powerful login, because the
    service's sessions themselves are read-only."""
    sync_engine = backend.sync_engine()
    with sync_engine.connect() as conn:
        before = oracle.table_checksums(conn)
    await assert_writes_refused(
        backend.service_url,
        lambda m: is_read_only_refusal(m) or "denied" in m.lower() or "permission" in m.lower(),
    )
    admin_url = sa.make_url(backend.sync_uri).set(drivername=backend.name)
    await assert_writes_refused(
        admin_url.render_as_string(hide_password=False), is_read_only_refusal
    )
    with sync_engine.connect() as conn:
        assert oracle.table_checksums(conn) == before
    sync_engine.dispose()


def copy_with_revision(source: str, target: Path, revision: str | None) -> str:
    shutil.copy(source.removeprefix("sqlite:///"), target)
    with sqlite3.connect(target) as conn:
        if revision is None:
            conn.execute("DROP TABLE alembic_version")
        else:
            conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    return f"sqlite:///{target}"


@pytest.mark.parametrize("revision", ["0123456789ab", None])
async def test_unsupported_schema_is_refused_at_start(
    tmp_path: Path, all_backends: list[Backend], revision: str | None
) -> None:
    sqlite_backend = next(b for b in all_backends if b.name == "sqlite")
    url = copy_with_revision(sqlite_backend.sync_uri, tmp_path / "other.db", revision)
    app = create_app(Settings(database_url=url))
    with pytest.raises(UnsupportedSchemaError) as refused:
        async with app.router.lifespan_context(app):
            pass
    message = str(refused.value)
    assert (revision or "alembic_version") in message
    for supported in supported_revisions():
        assert supported in message


def test_supported_revisions_include_mlflow_3_17_and_3_18() -> None:
    assert {"dc11669786a5", "f4a9b2c7d1e6"} <= set(supported_revisions())


async def test_unreachable_database_answers_503_and_not_ready() -> None:
    app = create_app(Settings(database_url="postgresql://postgres@127.0.0.1:1/nothing"))
    async with serve(app) as http:
        ready = await http.get("/ready")
        assert ready.status_code == 503
        assert "reach" in ready.json()["reason"]
        response = await http.post(f"{API}/traffic-cost/volume", json={"experiment_ids": ["1"]})
        assert response.status_code == 503, response.text
        assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert (await http.get("/health")).status_code == 200
