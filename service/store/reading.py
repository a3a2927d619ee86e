"""Reading the analytics store with the query code written for the tracking database.

Query builders take an ``AsyncSession`` and only ``execute`` statements on it and ask
``get_bind()`` for the dialect (``policy_for``). ``store_session`` gives them an object that does
the same on the store's DuckDB file: each statement runs in a worker thread (DuckDB's driver
blocks), and its rows are fetched there too, so the event loop never waits on DuckDB.

All statements of one session read one snapshot (one DuckDB transaction, rolled back at the
end): an answer never mixes the states before and after a sync cycle.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast

from sqlalchemy.engine import Engine, Result
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

from service.store.store import Store

# Threads that run the store's statements, for every session: DuckDB runs each on its own
# threads (one per core), so more at once mostly hold more intermediate results in memory
# (bench.load, 32 clients on 2 cores: the event loop's default 6 threads peaked at 625-637 MB,
# 3 readers at 594-612 MB, 35 instead of 37 requests/s; 2 readers 608 MB, 34.6 requests/s).
READERS = 3
_readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="insights-store-read")


class _StoreSession:
    """The part of ``AsyncSession`` the query code uses, over a sync session on the store."""

    def __init__(self, session: Session) -> None:
        self._session = session
        # A request cancelled mid-statement leaves its worker thread running: closing waits
        # for it instead of using the session from two threads at once.
        self._lock = threading.Lock()

    async def execute(
        self,
        statement: Executable,
        params: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> Result[Any]:
        loop = asyncio.get_running_loop()
        run = functools.partial(self._buffered, statement, params, kw)
        return await loop.run_in_executor(_readers, run)

    async def scalar(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any:
        return (await self.execute(statement, params)).scalar()

    def get_bind(self, *args: Any, **kw: Any) -> Engine:
        bind = self._session.get_bind(*args, **kw)
        assert isinstance(bind, Engine)
        return bind

    def _buffered(
        self, statement: Executable, params: Mapping[str, Any] | None, kw: dict[str, Any]
    ) -> Result[Any]:
        # Fetch every row in the worker thread: a result read later on the event loop would
        # touch the DuckDB connection from another thread while the next statement runs.
        with self._lock:
            return self._session.execute(statement, params, **kw).freeze()()

    def close(self) -> None:
        with self._lock:
            self._session.close()  # rolls the read transaction back: nothing is ever written


def store_session(store: Store) -> AbstractAsyncContextManager[AsyncSession]:
    """A read-only session on the store's file, for the query code in place of a live one."""
    return _open(store.engine())


@asynccontextmanager
async def _open(engine: Engine) -> AsyncIterator[AsyncSession]:
    reader = _StoreSession(Session(bind=engine))
    try:
        # Typed as the AsyncSession it stands in for: the callers use execute and get_bind.
        yield cast(AsyncSession, reader)
    finally:
        await asyncio.to_thread(reader.close)
