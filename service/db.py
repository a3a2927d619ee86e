"""Engine factory, read-only sessions and the schema-revision check.

One ``Database`` per app, made in the lifespan and disposed on shutdown. Connections are
read-only at the database level (see ``service.dialects``); sessions never commit.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlExperiment
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from migrations_readonly import supported_revisions
from service.dialects import ConnectionLimits, DialectPolicy, policy_for
from service.errors import ErrorCode, InsightsError
from service.settings import Settings

logger = logging.getLogger(__name__)


class UnsupportedSchemaError(RuntimeError):
    """The tracking DB was migrated to an MLflow schema revision this service does not know."""


@dataclass
class SchemaStatus:
    ok: bool
    reason: str


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The limits every engine of the service works under (the analytics store's too)."""
    return ConnectionLimits(
        statement_timeout_seconds=settings.statement_timeout_seconds,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout_seconds=settings.pool_timeout_seconds,
    )


def create_engine(settings: Settings) -> tuple[AsyncEngine, DialectPolicy]:
    url = settings.async_database_url
    policy = policy_for(url)
    limits = connection_limits(settings)
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        **policy.pool_options(limits),
        **policy.engine_options(limits),
    }
    engine = create_async_engine(url, **options)
    policy.install(engine.sync_engine, limits)
    return engine, policy


class Database:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine, self.policy = create_engine(settings)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self.schema = SchemaStatus(ok=False, reason="schema not checked yet")

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            try:
                yield session
            finally:
                await session.rollback()  # read-only: nothing to keep, ever

    async def check_schema(self) -> SchemaStatus:
        """Read ``alembic_version`` and compare it with the supported revisions."""
        supported = supported_revisions()
        async with self.session() as session:
            try:
                found = (
                    await session.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
            except DBAPIError as exc:
                if self.policy.classify_error(exc) is not None:
                    raise
                found = None
        if found in supported:
            self.schema = SchemaStatus(ok=True, reason=f"schema {found} ({supported[found]})")
        else:
            known = ", ".join(f"{rev} ({rel})" for rev, rel in supported.items())
            what = f"revision {found!r}" if found else "no MLflow schema (alembic_version missing)"
            self.schema = SchemaStatus(
                ok=False,
                reason=f"The tracking database has {what}; this service supports {known}. "
                "Upgrade the service, or add the revision to migrations_readonly/ if MLflow's "
                "trace tables are unchanged.",
            )
        return self.schema

    async def ensure_ready(self) -> None:
        """Raise 503 unless the schema has been found supported (checking again if needed)."""
        if not self.schema.ok:
            await self.check_schema()
        if not self.schema.ok:
            raise InsightsError(ErrorCode.TEMPORARILY_UNAVAILABLE, self.schema.reason)

    async def ping(self) -> None:
        async with self.session() as session:
            await session.execute(select(SqlExperiment.experiment_id).limit(1))
