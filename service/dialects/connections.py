"""Per-dialect connection policy: pool, read-only sessions, statement timeout, error meaning.

``policy_for`` is the one place that maps a database (its SQLAlchemy dialect or URL) to the
policy that knows it; the engine factory (``service.db``) and the error handler only ask it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.util import await_only

from service.dialects.duckdb_policy import DuckDBPolicy
from service.dialects.percentiles import NativePercentiles, PercentileStrategy, WindowPercentiles
from service.errors import ErrorCode


@dataclass(frozen=True)
class ConnectionLimits:
    """The settings' limits on one engine: each statement's run time, the pool's size and wait."""

    statement_timeout_seconds: float
    pool_size: int
    max_overflow: int
    pool_timeout_seconds: float


class DialectPolicy(Protocol):
    percentiles: PercentileStrategy

    def pool_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        """``create_async_engine`` pool arguments: how many connections, how long to wait."""
        ...

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        """The other ``create_async_engine`` arguments (driver connect arguments)."""
        ...

    def install(self, engine: Engine, limits: ConnectionLimits) -> None:
        """Register the event hooks that make each new connection read-only and time-limited."""
        ...

    def classify_error(self, exc: DBAPIError) -> ErrorCode | None:
        """TEMPORARILY_UNAVAILABLE / DEADLINE_EXCEEDED when the error says so, else None."""
        ...


def _run(dbapi_connection: Any, *statements: str) -> list[Any]:
    cursor = dbapi_connection.cursor()
    try:
        rows = []
        for statement in statements:
            cursor.execute(statement)
            rows.append(cursor.fetchall() if cursor.description else None)
        return rows
    finally:
        cursor.close()


def _server_pool(limits: ConnectionLimits) -> dict[str, Any]:
    return {
        "pool_size": limits.pool_size,
        "max_overflow": limits.max_overflow,
        "pool_timeout": limits.pool_timeout_seconds,
    }


def _looks_like_lost_connection(exc: DBAPIError) -> bool:
    return bool(exc.connection_invalidated) or isinstance(
        exc.orig, (ConnectionError, OSError, TimeoutError)
    )


# Per sort or hash node and connection: with the default pool (5 + 5) and a few sorts per
# statement, at most ~1 GB more PostgreSQL memory under full load; 16 MB already stops most
# spills at 1M traces.
POSTGRES_WORK_MEM = "32MB"


class PostgresPolicy:
    percentiles: PercentileStrategy = NativePercentiles()

    def pool_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        return _server_pool(limits)

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        timeout_ms = max(1, round(limits.statement_timeout_seconds * 1000))
        return {
            "connect_args": {
                "server_settings": {
                    "default_transaction_read_only": "on",
                    "statement_timeout": str(timeout_ms),
                    "application_name": "mlflow-trace-insights",
                    # Analytics statements are re-planned on every call: JIT compilation costs
                    # more than it saves here (0.3-3 s per large statement at 1M traces), and
                    # 4 MB sorts spill percentiles and GROUP BYs to disk (bench/FINDINGS.md).
                    "jit": "off",
                    "work_mem": POSTGRES_WORK_MEM,
                },
                "timeout": 10,
            }
        }

    def install(self, engine: Engine, limits: ConnectionLimits) -> None:
        return None  # everything is set through server_settings at connect time

    def classify_error(self, exc: DBAPIError) -> ErrorCode | None:
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(
            getattr(exc.orig, "__cause__", None), "sqlstate", None
        )
        if sqlstate == "57014":  # query_canceled: statement_timeout fired
            return ErrorCode.DEADLINE_EXCEEDED
        # 08: connection exceptions; 57P: shutting down; 53: insufficient resources (too many
        # connections, out of memory, disk full). All of them pass: the client should retry.
        if (sqlstate or "").startswith(("08", "57P", "53")) or _looks_like_lost_connection(exc):
            return ErrorCode.TEMPORARILY_UNAVAILABLE
        return None


# MySQL: 3024 = max_execution_time exceeded; MariaDB: 1969 = max_statement_time exceeded.
_MYSQL_TIMEOUT_CODES = {3024, 1969}
# Client-side "can't connect" / "server has gone away" / "lost connection".
_MYSQL_CONNECTION_CODES = {2002, 2003, 2006, 2013, 2055, 1053}


class MySQLPolicy:
    percentiles: PercentileStrategy = WindowPercentiles()

    def pool_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        return _server_pool(limits)

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        return {"connect_args": {"connect_timeout": 10}}

    def install(self, engine: Engine, limits: ConnectionLimits) -> None:
        @event.listens_for(engine, "connect")
        def _read_only_with_timeout(dbapi_connection: Any, _record: Any) -> None:
            [[(version,)]] = _run(dbapi_connection, "SELECT VERSION()")
            seconds = limits.statement_timeout_seconds
            if "mariadb" in str(version).lower():
                timeout = f"SET SESSION max_statement_time = {seconds:.3f}"
            else:
                timeout = f"SET SESSION max_execution_time = {max(1, round(seconds * 1000))}"
            _run(dbapi_connection, "SET SESSION TRANSACTION READ ONLY", timeout)

    def classify_error(self, exc: DBAPIError) -> ErrorCode | None:
        args = getattr(exc.orig, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        if code in _MYSQL_TIMEOUT_CODES:
            return ErrorCode.DEADLINE_EXCEEDED
        if code in _MYSQL_CONNECTION_CODES or _looks_like_lost_connection(exc):
            return ErrorCode.TEMPORARILY_UNAVAILABLE
        return None


_SQLITE_DEADLINE = "insights_statement_deadline"


class SQLitePolicy:
    percentiles: PercentileStrategy = WindowPercentiles()

    def pool_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        # The pool settings share out a database server's connections; a SQLite file keeps
        # SQLAlchemy's default pool, as it always has.
        return {}

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        return {}

    def install(self, engine: Engine, limits: ConnectionLimits) -> None:
        # SQLite has no statement timeout: a progress handler, called every few thousand VM
        # instructions, interrupts the statement once its deadline (set per statement) passed.
        @event.listens_for(engine, "connect")
        def _read_only_with_timeout(dbapi_connection: Any, record: Any) -> None:
            # The file is opened with mode=ro; query_only also refuses writes to temp tables.
            _run(dbapi_connection, "PRAGMA query_only = ON")
            deadline: list[float | None] = [None]
            record.info[_SQLITE_DEADLINE] = deadline

            def past_deadline() -> int:
                return int(deadline[0] is not None and time.monotonic() > deadline[0])

            aiosqlite_connection = dbapi_connection.driver_connection
            await_only(aiosqlite_connection.set_progress_handler(past_deadline, 1000))

        @event.listens_for(engine, "before_cursor_execute")
        def _start_clock(conn: Connection, *_args: Any) -> None:
            deadline = conn.info.get(_SQLITE_DEADLINE)
            if deadline is not None:
                deadline[0] = time.monotonic() + limits.statement_timeout_seconds

        @event.listens_for(engine, "after_cursor_execute")
        def _stop_clock(conn: Connection, *_args: Any) -> None:
            deadline = conn.info.get(_SQLITE_DEADLINE)
            if deadline is not None:
                deadline[0] = None

    def classify_error(self, exc: DBAPIError) -> ErrorCode | None:
        message = str(exc.orig).lower()
        if "interrupted" in message:
            return ErrorCode.DEADLINE_EXCEEDED
        if "unable to open database" in message or "database is locked" in message:
            return ErrorCode.TEMPORARILY_UNAVAILABLE
        return None


# The analytics store's dialect name (its policy: ``DuckDBPolicy``).
STORE_DIALECT = "duckdb"
_POLICIES: dict[str, DialectPolicy] = {
    "postgresql": PostgresPolicy(),
    "mysql": MySQLPolicy(),
    "mariadb": MySQLPolicy(),
    "sqlite": SQLitePolicy(),
    STORE_DIALECT: DuckDBPolicy(),
}


def policy_for(database: Dialect | URL | str) -> DialectPolicy:
    """The policy of a connected database (its ``Dialect``), of a URL, or of a dialect name."""
    if isinstance(database, URL):
        name = database.get_backend_name()
    else:
        name = database if isinstance(database, str) else database.name
    try:
        return _POLICIES[name]
    except KeyError:
        raise ValueError(f"Unsupported database dialect {name!r}") from None
