"""The analytics store's public face: open it, sync it, read it.

    store = Store.open(path, database)
    stats = await store.sync_once()      # one cycle; the first one copies everything
    store.as_of_ms                        # the tracking DB's state the copy covers
    with store.engine().connect() as conn: conn.execute(select(SqlTraceInfo.request_id))

The store is disposable: a deleted or unreadable file, a file of another layout, or one copied
from another tracking database is rebuilt from scratch.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from service.db import Database, connection_limits
from service.dialects import policy_for
from service.dialects.change_capture import gate_for
from service.store.layout import TRACE_TABLES
from service.store.store_file import StoreFile, StoreResources
from service.store.sync import CopyProgress, SyncCycle, SyncSettings, SyncStats

logger = logging.getLogger(__name__)


def _resources(database: Database) -> StoreResources:
    settings = database.settings
    return StoreResources(settings.store_memory_limit, settings.store_threads)


@dataclass(frozen=True)
class StoreSnapshot:
    """What the file held after the last cycle, read once then (no DuckDB call on a request)."""

    meta: dict[str, str]
    experiment_ids: frozenset[str]


class Store:
    def __init__(self, file: StoreFile, database: Database, settings: SyncSettings) -> None:
        self._file = file
        self._database = database
        self._settings = settings
        self._gate = gate_for(database.engine, [t.name for t in TRACE_TABLES])
        self._lock = asyncio.Lock()
        # The file's source identity is checked by the first cycle of this process.
        self._bound = False
        self._snapshot = StoreSnapshot(file.meta(), file.experiment_ids())
        self._limit_reads()
        # Rows copied so far by the running cycle, out of how many (/ready while building).
        self.progress = CopyProgress()

    @classmethod
    def open(
        cls, path: str | Path, database: Database, settings: SyncSettings | None = None
    ) -> Store:
        file = StoreFile.open(Path(path), _resources(database))
        return cls(file, database, settings or SyncSettings())

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def ready(self) -> bool:
        """True once a cycle of this process confirmed the file holds a whole copy of this
        database (a file copied from another one is never reported ready)."""
        return self._bound and self._snapshot.meta.get("first_sync_complete") == "1"

    @property
    def as_of_ms(self) -> int | None:
        """Epoch ms of the tracking DB's committed state the copy covers (``None``: no copy)."""
        value = self._snapshot.meta.get("as_of_ms")
        return int(value) if value and self.ready else None

    @property
    def experiment_ids(self) -> frozenset[str]:
        """The experiments the copy holds; a request for another one is answered live."""
        return self._snapshot.experiment_ids

    def engine(self) -> Engine:
        """A SQLAlchemy engine on the store file (duckdb-engine), for reading."""
        return self._file.engine

    async def sync_once(self, *, full: bool = False) -> SyncStats:
        """Run one cycle; ``full`` compares every partition instead of a slice of old slots.

        A cycle that fails changes nothing in the store (it is one DuckDB transaction).
        """
        async with self._lock:
            if not self._file.still_on_disk():
                logger.warning("analytics store %s was deleted: rebuilding it", self.path)
                await asyncio.to_thread(self._reopen)
            self.progress = CopyProgress()
            cycle = SyncCycle(
                self._file,
                self._database,
                self._gate,
                self._settings,
                full=full,
                progress=self.progress,
            )
            # A failed cycle rolled back: the snapshot of the last good one stays true.
            stats = await cycle.run()
            self._snapshot = await self._file.call(self._read_snapshot)
            self._bound = True
        logger.debug("analytics store sync: %s", stats)
        return stats

    def _read_snapshot(self) -> StoreSnapshot:
        return StoreSnapshot(self._file.meta(), self._file.experiment_ids())

    def _reopen(self) -> None:
        self._file.close()  # first: closing may still write the old file's log
        self._bound = False
        self._file = StoreFile.open(self.path, _resources(self._database))
        self._snapshot = self._read_snapshot()
        self._limit_reads()

    def _limit_reads(self) -> None:
        """The service's statement timeout applies to answers from the store too."""
        engine = self._file.engine
        policy_for(engine.dialect).install(engine, connection_limits(self._database.settings))

    def close(self) -> None:
        self._file.close()
