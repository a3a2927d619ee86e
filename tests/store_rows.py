"""Rows written into a store file as the sync writes them: ``StoreFile.insert`` with the columns
the sync copies, so the store numbers their traces (``TRACE_NUMBERS``) as it does in service."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from service.store.layout import CopiedTable
from service.store.store_file import StoreFile


def insert_rows(store: StoreFile, table: CopiedTable, rows: Iterable[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (column name -> value; a column left out is NULL) into ``table``."""
    store.insert(table, [[row.get(c) for c in table.store_columns] for row in rows])
