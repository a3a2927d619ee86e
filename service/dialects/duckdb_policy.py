"""The analytics store's policy: DuckDB, an embedded file this process owns.

No pool to size (duckdb-engine's pool hands out cursors on one in-process database), nothing to
make read-only per connection (the store's readers never commit: ``service.store.reading``), and
errors that say the file is gone or a statement was interrupted.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

import duckdb
from duckdb_engine import Dialect as DuckDBEngineDialect
from sqlalchemy import event
from sqlalchemy.dialects import registry
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

import service.dialects.duckdb_expressions  # noqa: F401  (registers DuckDB's @compiles)
from service.dialects.percentiles import ListPercentiles, PercentileStrategy
from service.errors import ErrorCode

if TYPE_CHECKING:
    from service.dialects.connections import ConnectionLimits

# A store that could not be read (deleted, replaced or out of memory mid-statement) is rebuilt
# while requests go live: the client may retry.
_UNAVAILABLE = (duckdb.IOException, duckdb.ConnectionException, duckdb.OutOfMemoryException)


_TIMER = "insights_statement_timer"


class CachingDuckDBDialect(DuckDBEngineDialect):
    """duckdb-engine's dialect with SQLAlchemy's cache of compiled statements on.

    duckdb-engine leaves the cache off (``supports_statement_cache = False``), so every
    statement of every request to the store was compiled anew: 3 ms a statement, a quarter of
    a small request's time. Its compiler is PostgreSQL's with other identifier quoting, which
    is cacheable; so is every construct of this package, whose DuckDB forms read only their
    cache key (a construct that cannot, such as ``kept_span_sets``, sets ``inherit_cache =
    False`` and is compiled each time).
    """

    supports_statement_cache = True


# ``duckdb+insights://`` (``STORE_DRIVER``): the store's engines use this dialect.
registry.register("duckdb.insights", __name__, "CachingDuckDBDialect")
STORE_DRIVER = "duckdb+insights"


def _interrupt(cursor: Any) -> None:
    # duckdb-engine's wrapper passes it to the DuckDB connection; the statement may have ended
    # and the connection closed meanwhile.
    with contextlib.suppress(duckdb.Error):
        cursor.interrupt()


def _cancel(conn: Connection) -> None:
    timer = conn.info.pop(_TIMER, None)
    if timer is not None:
        timer.cancel()


class DuckDBPolicy:
    # DuckDB's quantile_cont interpolates in its own arithmetic: on random doubles it differed
    # from PostgreSQL's float8 lerp in the last digits for 124 of 1,200 percentiles (duckdb
    # 2.0.1). Picking the ranks from sorted lists and interpolating in Python gives the same
    # digits.
    percentiles: PercentileStrategy = ListPercentiles()

    def pool_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        return {}

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        return {}

    def install(self, engine: Engine, limits: ConnectionLimits) -> None:
        """The statement timeout. DuckDB has none of its own: a timer interrupts the
        connection's running statement (it raises ``InterruptException``). The store's readers
        stay read-only by never committing; its sync writes on a raw connection, untimed."""
        seconds = limits.statement_timeout_seconds

        @event.listens_for(engine, "before_cursor_execute")
        def _start_timer(conn: Connection, cursor: Any, *_args: Any) -> None:
            timer = threading.Timer(seconds, _interrupt, args=(cursor,))
            timer.daemon = True
            conn.info[_TIMER] = timer
            timer.start()

        @event.listens_for(engine, "after_cursor_execute")
        def _stop_timer(conn: Connection, *_args: Any) -> None:
            _cancel(conn)

        @event.listens_for(engine, "handle_error")
        def _stop_timer_on_error(context: Any) -> None:
            if context.connection is not None:
                _cancel(context.connection)

    def classify_error(self, exc: DBAPIError) -> ErrorCode | None:
        if isinstance(exc.orig, duckdb.InterruptException):
            return ErrorCode.DEADLINE_EXCEEDED
        if isinstance(exc.orig, _UNAVAILABLE):
            return ErrorCode.TEMPORARILY_UNAVAILABLE
        return None
