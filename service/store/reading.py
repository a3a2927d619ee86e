"""STAND-IN for the store's reading side (the DuckDB dialect branch replaces this module).

Only the signature is the contract: routing (``service.api.deps``) asks for a session on the
store and runs the same query builders on it. Until the DuckDB dialect lands, this stand-in
reads the tracking database the store copies, so routing, headers and metrics can be wired and
tested with identical answers.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncSession

from service.store.store import Store


def store_session(store: Store) -> AbstractAsyncContextManager[AsyncSession]:
    return store._database.session()  # stand-in only: the real module reads store's file
