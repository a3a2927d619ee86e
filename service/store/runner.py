"""The background sync loop: keeps the analytics store in step with the tracking database.

Started in the app's lifespan and stopped on shutdown; requests never wait for it. It syncs once
at start (the first sync copies everything), then once per interval. A failing cycle (tracking
DB down, unsupported schema) is retried with exponential backoff while the store keeps the copy
it had; a store file DuckDB cannot work with is closed and rebuilt by the next ``Store.open``.

Requests and ``/ready`` read ``SyncRunner.status``, a snapshot taken between cycles, never the
store file itself: its DuckDB connection belongs to the sync, which writes inside an open
transaction from worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Protocol

import duckdb
from sqlalchemy.exc import DBAPIError

from service.db import Database
from service.errors import InsightsError
from service.settings import Settings
from service.store.store import Store
from service.store.store_file import StoreInUseError
from service.store.sync import SyncSettings, SyncStats

logger = logging.getLogger(__name__)

FailureKind = Literal["tracking_db", "store", "unexpected"]
FAILURE_KINDS: tuple[FailureKind, ...] = ("tracking_db", "store", "unexpected")

# On shutdown a running cycle may finish (it is one DuckDB transaction) before it is cancelled.
_STOP_GRACE_SECONDS = 5.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class StoreStatus:
    """What is known about the store between two cycles."""

    ready: bool = False  # a whole copy of this tracking DB, made by this process
    as_of_ms: int | None = None  # the tracking DB's committed state the copy covers
    failures: int = 0  # consecutive failed cycles
    last_error: str | None = None  # kind and type of the last failure, while failures > 0
    experiment_ids: frozenset[str] = frozenset()  # the experiments the copy holds

    def lag_ms(self, at_ms: int) -> int | None:
        """How far the copy is behind at ``at_ms``; ``None`` while there is no copy."""
        if not self.ready or self.as_of_ms is None:
            return None
        return max(0, at_ms - self.as_of_ms)


class SyncObserver(Protocol):
    """Told about every cycle (the metrics are one)."""

    def cycle_done(self, stats: SyncStats, seconds: float) -> None: ...

    def cycle_failed(self, kind: FailureKind, seconds: float) -> None: ...


class StoreOpenError(RuntimeError):
    """The store file could not be opened or created (e.g. its directory is not writable)."""


def failure_kind(exc: BaseException) -> FailureKind:
    # Checked first: opening fails with OSError too, which would look like the tracking DB.
    if isinstance(exc, duckdb.Error | StoreOpenError):
        return "store"
    if isinstance(exc, DBAPIError | OSError | TimeoutError | InsightsError):
        return "tracking_db"
    return "unexpected"


class SyncRunner:
    def __init__(
        self,
        path: Path,
        database: Database,
        *,
        interval_seconds: float,
        max_backoff_seconds: float,
        observer: SyncObserver | None = None,
        sync_settings: SyncSettings | None = None,
    ) -> None:
        self.path = path
        self._database = database
        self._interval = interval_seconds
        self._max_backoff = max(max_backoff_seconds, interval_seconds)
        self._observer = observer
        self._sync_settings = sync_settings
        self._store: Store | None = None
        self._inode: int | None = None
        self._status = StoreStatus()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, database: Database, observer: SyncObserver | None = None
    ) -> SyncRunner:
        return cls(
            Path(settings.store_path),
            database,
            interval_seconds=settings.store_sync_interval_seconds,
            max_backoff_seconds=settings.store_sync_max_backoff_seconds,
            observer=observer,
        )

    @property
    def status(self) -> StoreStatus:
        return self._status

    @property
    def store(self) -> Store | None:
        """The open store; answer from it only while ``status`` says it is ready and fresh."""
        return self._store

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="analytics-store-sync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            done, _ = await asyncio.wait({task}, timeout=_STOP_GRACE_SECONDS)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._close_store()

    # --- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self._cycle()
            failures = self._status.failures
            # interval, then 2x, 4x, ... the interval while cycles fail, up to the cap
            delay = min(self._interval * 2**failures, self._max_backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)

    async def _cycle(self) -> None:
        started = time.perf_counter()
        try:
            await self._database.ensure_ready()  # no sync from a schema we cannot read
            store = await self._open_store()
            self._forget_copy_if_file_replaced()
            stats = await store.sync_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc, time.perf_counter() - started)
            return
        self._succeeded(store, stats, time.perf_counter() - started)

    async def _open_store(self) -> Store:
        if self._store is None:
            # Opening may rebuild a broken file: keep DuckDB's file work off the event loop.
            try:
                self._store = await asyncio.to_thread(
                    Store.open, self.path, self._database, self._sync_settings
                )
            except (OSError, duckdb.Error, StoreInUseError) as exc:
                raise StoreOpenError(f"cannot open {self.path}: {exc}") from exc
            self._inode = self._current_inode()
        return self._store

    def _forget_copy_if_file_replaced(self) -> None:
        """A deleted or replaced file is rebuilt by this cycle: answer live until it is done."""
        if self._inode != self._current_inode() and self._status.ready:
            logger.warning("analytics store %s is gone: answering live until rebuilt", self.path)
            self._status = replace(self._status, ready=False, as_of_ms=None)

    def _current_inode(self) -> int | None:
        try:
            return os.stat(self.path).st_ino
        except FileNotFoundError:
            return None

    def _succeeded(self, store: Store, stats: SyncStats, seconds: float) -> None:
        was = self._status
        self._status = StoreStatus(
            ready=store.ready, as_of_ms=store.as_of_ms, experiment_ids=store.experiment_ids
        )
        self._inode = self._current_inode()
        if stats.full:
            logger.info("analytics store %s: full sync done in %.1f s", self.path, seconds)
        if was.failures:
            logger.info("analytics store sync recovered after %d failed cycles", was.failures)
        if self._observer is not None:
            self._observer.cycle_done(stats, seconds)

    def _failed(self, exc: Exception, seconds: float) -> None:
        kind = failure_kind(exc)
        failures = self._status.failures + 1
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        # /ready shows the kind only: messages can carry SQL, which stays in the log.
        shown = f"{kind}: {type(exc).__name__}"
        self._status = replace(self._status, failures=failures, last_error=shown)
        retry = min(self._interval * 2**failures, self._max_backoff)
        if kind == "unexpected":
            logger.exception("analytics store sync failed; retrying in %.1f s", retry)
        else:
            logger.warning(
                "analytics store sync failed (%s, %s); retrying in %.1f s", kind, reason, retry
            )
        if kind == "store":
            # The next Store.open rebuilds a file DuckDB cannot read; answer live meanwhile.
            self._status = replace(self._status, ready=False, as_of_ms=None)
            self._close_store()
        if self._observer is not None:
            self._observer.cycle_failed(kind, seconds)

    def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except duckdb.Error as exc:  # a broken file may fail to close; it is rebuilt anyway
                logger.warning("analytics store %s did not close cleanly: %s", self.path, exc)
