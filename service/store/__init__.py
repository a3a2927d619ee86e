"""The analytics store: a columnar DuckDB copy of the tracking database's narrow trace columns,
kept in sync incrementally over the service's read-only connection (docs/store.md)."""

from service.store.store import Store
from service.store.sync import SyncSettings, SyncStats

__all__ = ["Store", "SyncSettings", "SyncStats"]
