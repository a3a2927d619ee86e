"""A client whose SQL statements are recorded, to count each endpoint's round trips."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa

from service.app import create_app
from service.settings import Settings
from tests.conftest import InsightsClient, serve


@asynccontextmanager
async def counting_client(service_url: str) -> AsyncIterator[tuple[InsightsClient, list[str]]]:
    """A client whose SQL statements are recorded, to check each endpoint's round trips."""
    app = create_app(Settings(database_url=service_url))
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    async with serve(app) as http:
        sa.event.listen(app.state.database.engine.sync_engine, "before_cursor_execute", record)
        yield InsightsClient(http, None), statements  # type: ignore[arg-type]  # never read


async def round_trips(
    client: InsightsClient, statements: list[str], endpoint: str, body: dict[str, Any]
) -> int:
    statements.clear()
    await client.ok(endpoint, body)
    return len(statements)
