"""Dependencies injected into route handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import Database
from service.http.answering_path import answer_of
from service.settings import Settings
from service.store.reading import store_session
from service.store.routing import store_answers
from service.store.runner import SyncRunner, now_ms
from service.store.store import Store


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def get_settings_from_app(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store_runner(request: Request) -> SyncRunner | None:
    """The analytics store's sync loop; ``None`` while the store is off."""
    runner: SyncRunner | None = getattr(request.app.state, "store_runner", None)
    return runner


async def requested_experiment_ids(request: Request) -> list[str]:
    """The body's ``experiment_ids`` as given (invalid bodies are refused later, by the
    request's model); FastAPI has already read and parsed the body, this reads its cache."""
    try:
        body = await request.json()
    except ValueError:
        return []
    ids = body.get("experiment_ids") if isinstance(body, dict) else None
    return [str(e) for e in ids] if isinstance(ids, list) else []


async def _answering_store(request: Request, settings: Settings) -> Store | None:
    """The store when it may answer this request (API.md §7), restamping the answer."""
    runner = get_store_runner(request)
    if runner is None:
        return None
    status, store = runner.status, runner.store
    fresh = store_answers(
        status,
        max_lag_ms=round(settings.store_max_lag_seconds * 1000),
        at_ms=now_ms(),
        cache_control=request.headers.get("cache-control"),
        experiment_ids=await requested_experiment_ids(request),
    )
    if not fresh or store is None or status.as_of_ms is None:
        return None
    answer = answer_of(request.scope)
    if answer is not None:
        answer.answered_by, answer.as_of_ms = "store", status.as_of_ms
    return store


async def get_session(
    request: Request,
    database: Annotated[Database, Depends(get_database)],
    settings: Annotated[Settings, Depends(get_settings_from_app)],
) -> AsyncIterator[AsyncSession]:
    """A session on whichever path answers; query code cannot tell them apart."""
    store = await _answering_store(request, settings)
    if store is not None:
        async with store_session(store) as session:
            yield session
        return
    await database.ensure_ready()
    async with database.session() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]
AppSettings = Annotated[Settings, Depends(get_settings_from_app)]
