"""The analytics store's policy: DuckDB, an embedded file this process owns.

No pool to size (duckdb-engine's pool hands out cursors on one in-process database), nothing to
make read-only per connection (the store's readers never commit: ``service.store.reading``), and
errors that say the file is gone or a statement was interrupted.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
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


class _Watchdog:
    """One thread that interrupts the statements running past their deadline.

    A ``threading.Timer`` per statement started a thread for each one (the store answers a
    request in several statements, each waiting for its timer thread to start). Here a
    statement only files its deadline; the thread is woken only for a deadline earlier than
    the one it sleeps until, which with one timeout per engine is never while statements run
    one after another.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._running: dict[int, tuple[float, Any]] = {}  # token -> (deadline, cursor)
        self._tokens = itertools.count()
        self._wakes_at = math.inf
        self._thread: threading.Thread | None = None

    def watch(self, cursor: Any, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        with self._lock:
            token = next(self._tokens)
            self._running[token] = (deadline, cursor)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="insights-store-deadlines", daemon=True
                )
                self._thread.start()
            elif deadline < self._wakes_at:
                self._lock.notify()
        return token

    def release(self, token: int) -> None:
        with self._lock:
            self._running.pop(token, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                late = [t for t, (deadline, _) in self._running.items() if deadline <= now]
                # Under the lock: a statement released meanwhile is never interrupted, nor the
                # next one on its connection.
                for token in late:
                    _interrupt(self._running.pop(token)[1])
                self._wakes_at = min((d for d, _ in self._running.values()), default=math.inf)
                self._lock.wait(None if self._wakes_at == math.inf else self._wakes_at - now)


_WATCHDOG = _Watchdog()


def _release(conn: Connection) -> None:
    token = conn.info.pop(_TIMER, None)
    if token is not None:
        _WATCHDOG.release(token)


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
        """The statement timeout. DuckDB has none of its own: a watchdog interrupts the
        connection's running statement (it raises ``InterruptException``). The store's readers
        stay read-only by never committing; its sync writes on a raw connection, untimed."""
        seconds = limits.statement_timeout_seconds

        @event.listens_for(engine, "before_cursor_execute")
        def _start_timer(conn: Connection, cursor: Any, *_args: Any) -> None:
            conn.info[_TIMER] = _WATCHDOG.watch(cursor, seconds)

        @event.listens_for(engine, "after_cursor_execute")
        def _stop_timer(conn: Connection, *_args: Any) -> None:
            _release(conn)

        @event.listens_for(engine, "handle_error")
        def _stop_timer_on_error(context: Any) -> None:
            if context.connection is not None:
                _release(context.connection)

    def classify_error(self, exc: DBAPIError) -> ErrorCode | None:
        if isinstance(exc.orig, duckdb.InterruptException):
            return ErrorCode.DEADLINE_EXCEEDED
        if isinstance(exc.orig, _UNAVAILABLE):
            return ErrorCode.TEMPORARILY_UNAVAILABLE
        return None
