"""The analytics store's policy: DuckDB, an embedded file this process owns.

No pool to size (duckdb-engine's pool hands out cursors on one in-process database), nothing to
make read-only per connection (the store's readers never commit: ``service.store.reading``), and
errors that say the file is gone or a statement was interrupted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import duckdb
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

import service.dialects.duckdb_expressions  # noqa: F401  (registers DuckDB's @compiles)
from service.dialects.percentiles import PercentileStrategy, WindowPercentiles
from service.errors import ErrorCode

if TYPE_CHECKING:
    from service.dialects.connections import ConnectionLimits

# A store that could not be read (deleted, replaced or out of memory mid-statement) is rebuilt
# while requests go live: the client may retry.
_UNAVAILABLE = (duckdb.IOException, duckdb.ConnectionException, duckdb.OutOfMemoryException)


class DuckDBPolicy:
    # DuckDB's quantile_cont interpolates in its own arithmetic: on random doubles it differed
    # from PostgreSQL's float8 lerp in the last digits for 124 of 1,200 percentiles (duckdb
    # 2.0.1). Ranking with window functions and interpolating in Python gives the same digits.
    percentiles: PercentileStrategy = WindowPercentiles()

    def pool_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        return {}

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        return {}

    def install(self, engine: Engine, limits: ConnectionLimits) -> None:
        # The store file's engine is made by the store itself, which also writes through it;
        # its readers stay read-only by never committing.
        return None

    def classify_error(self, exc: DBAPIError) -> ErrorCode | None:
        if isinstance(exc.orig, duckdb.InterruptException):
            return ErrorCode.DEADLINE_EXCEEDED
        if isinstance(exc.orig, _UNAVAILABLE):
            return ErrorCode.TEMPORARILY_UNAVAILABLE
        return None
