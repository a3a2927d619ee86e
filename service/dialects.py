"""Everything that differs between SQLite, PostgreSQL and MySQL/MariaDB, and nothing else.

Query builders never look at a dialect name. They use:

* SQL expressions compiled per dialect with ``@compiles`` (``int_div``);
* a per-dialect ``DialectPolicy`` (looked up with ``policy_for``) that knows how to make a
  connection read-only with a statement timeout, how to compute exact percentiles, and how to
  recognise the dialect's timeout and connection-loss errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import BigInteger, case, func
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, Select, select
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.sql.selectable import Subquery

from service.errors import ErrorCode

# --------------------------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------------------------


class int_div(FunctionElement[int]):  # noqa: N801 - reads like the SQL function it renders
    """Integer division of two non-negative integers, truncating (``a DIV b`` on MySQL).

    SQLAlchemy's ``//`` renders ``FLOOR(a / b)`` on MySQL, where ``/`` is a DECIMAL division
    rounded to a few digits: exact in practice, but not by construction.
    """

    type = BigInteger()
    inherit_cache = True


@compiles(int_div)
def _int_div_default(element: int_div, compiler: Any, **kw: Any) -> str:
    left, right = list(element.clauses)
    return f"({compiler.process(left, **kw)}) / ({compiler.process(right, **kw)})"


@compiles(int_div, "mysql")
def _int_div_mysql(element: int_div, compiler: Any, **kw: Any) -> str:
    left, right = list(element.clauses)
    return f"({compiler.process(left, **kw)}) DIV ({compiler.process(right, **kw)})"


# --------------------------------------------------------------------------------------------
# Exact percentiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantile:
    """A percentile as an exact fraction ``num/den``, so row ranks are computed exactly."""

    name: str
    num: int
    den: int = 100

    @property
    def fraction(self) -> float:
        return self.num / self.den


P50, P90, P95, P99 = Quantile("p50", 50), Quantile("p90", 90), Quantile("p95", 95), Quantile(
    "p99", 99
)

# Columns every percentile summary select carries besides the grouping keys and percentiles.
STAT_COLUMNS = ("n", "total", "minimum", "maximum")


class PercentileStrategy(Protocol):
    def summarize(
        self, source: Subquery, *, value: str, keys: Sequence[str], quantiles: Sequence[Quantile]
    ) -> Select[Any]:
        """Group ``source`` by ``keys``; select the keys, ``STAT_COLUMNS`` over the non-null
        ``value``s and whatever ``read`` needs for each quantile."""
        ...

    def read(self, row: Mapping[str, Any], quantile: Quantile) -> float | None:
        """The quantile's value from one result row of ``summarize`` (None without values)."""
        ...


def _stat_columns(value: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    return [
        func.count(value).label("n"),
        func.sum(value).label("total"),
        func.min(value).label("minimum"),
        func.max(value).label("maximum"),
    ]


class NativePercentiles:
    """PostgreSQL: ``percentile_cont``, linear interpolation between closest ranks."""

    def summarize(
        self, source: Subquery, *, value: str, keys: Sequence[str], quantiles: Sequence[Quantile]
    ) -> Select[Any]:
        v = source.c[value]
        key_cols = [source.c[k] for k in keys]
        percentiles = [
            func.percentile_cont(q.fraction).within_group(v).label(q.name) for q in quantiles
        ]
        return select(*key_cols, *_stat_columns(v), *percentiles).group_by(*key_cols)

    def read(self, row: Mapping[str, Any], quantile: Quantile) -> float | None:
        value = row[quantile.name]
        return None if value is None else float(value)


class WindowPercentiles:
    """SQLite and MySQL/MariaDB: rank rows with window functions, pick the two closest ranks.

    SQL returns the values at ranks ``floor(q*(n-1))+1`` and the next one (computed with exact
    integer arithmetic); Python interpolates exactly as PostgreSQL's ``percentile_cont`` does, so
    every database gives the same number.
    """

    def summarize(
        self, source: Subquery, *, value: str, keys: Sequence[str], quantiles: Sequence[Quantile]
    ) -> Select[Any]:
        v = source.c[value]
        partition = [source.c[k] for k in keys] or None
        ranked = (
            select(
                *[source.c[k] for k in keys],
                v.label("v"),
                func.row_number().over(partition_by=partition, order_by=v).label("rn"),
                func.count().over(partition_by=partition).label("cnt"),
            )
            .where(v.is_not(None))
            .subquery("ranked")
        )
        key_cols = [ranked.c[k] for k in keys]
        picks: list[ColumnElement[Any]] = []
        for q in quantiles:
            low_rank = int_div(q.num * (ranked.c.cnt - 1), q.den) + 1
            picks.append(func.max(case((ranked.c.rn == low_rank, ranked.c.v))).label(f"{q.name}_lo"))
            picks.append(
                func.max(case((ranked.c.rn == low_rank + 1, ranked.c.v))).label(f"{q.name}_hi")
            )
        return select(*key_cols, *_stat_columns(ranked.c.v), *picks).group_by(*key_cols)

    def read(self, row: Mapping[str, Any], quantile: Quantile) -> float | None:
        low = row[f"{quantile.name}_lo"]
        if low is None:
            return None
        high = row[f"{quantile.name}_hi"]
        position = quantile.fraction * (row["n"] - 1)
        proportion = position - math.floor(position)
        low_f = float(low)
        high_f = low_f if high is None else float(high)
        # Same expression as PostgreSQL's float8 lerp, for bit-identical results.
        return low_f + (high_f - low_f) * proportion


# --------------------------------------------------------------------------------------------
# Per-dialect policy: read-only connections, statement timeout, error classification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionLimits:
    statement_timeout_seconds: float


class DialectPolicy(Protocol):
    percentiles: PercentileStrategy

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]: ...

    def on_connect(self, dbapi_connection: Any, limits: ConnectionLimits) -> None: ...

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


def _looks_like_lost_connection(exc: DBAPIError) -> bool:
    return bool(exc.connection_invalidated) or isinstance(
        exc.orig, (ConnectionError, OSError, TimeoutError)
    )


class PostgresPolicy:
    percentiles: PercentileStrategy = NativePercentiles()

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        timeout_ms = max(1, round(limits.statement_timeout_seconds * 1000))
        return {
            "connect_args": {
                "server_settings": {
                    "default_transaction_read_only": "on",
                    "statement_timeout": str(timeout_ms),
                    "application_name": "mlflow-trace-insights",
                },
                "timeout": 10,
            }
        }

    def on_connect(self, dbapi_connection: Any, limits: ConnectionLimits) -> None:
        return None  # everything is set through server_settings at connect time

    def classify_error(self, exc: DBAPIError) -> ErrorCode | None:
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(
            getattr(exc.orig, "__cause__", None), "sqlstate", None
        )
        if sqlstate == "57014":  # query_canceled: statement_timeout fired
            return ErrorCode.DEADLINE_EXCEEDED
        if (sqlstate or "").startswith(("08", "57P")) or _looks_like_lost_connection(exc):
            return ErrorCode.TEMPORARILY_UNAVAILABLE
        return None


# MySQL: 3024 = max_execution_time exceeded; MariaDB: 1969 = max_statement_time exceeded.
_MYSQL_TIMEOUT_CODES = {3024, 1969}
# Client-side "can't connect" / "server has gone away" / "lost connection".
_MYSQL_CONNECTION_CODES = {2002, 2003, 2006, 2013, 2055, 1053}


class MySQLPolicy:
    percentiles: PercentileStrategy = WindowPercentiles()

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        return {"connect_args": {"connect_timeout": 10}}

    def on_connect(self, dbapi_connection: Any, limits: ConnectionLimits) -> None:
        [[(version,)]] = _run(dbapi_connection, "SELECT VERSION()")
        if "mariadb" in str(version).lower():
            timeout = f"SET SESSION max_statement_time = {limits.statement_timeout_seconds:.3f}"
        else:
            timeout_ms = max(1, round(limits.statement_timeout_seconds * 1000))
            timeout = f"SET SESSION max_execution_time = {timeout_ms}"
        _run(dbapi_connection, "SET SESSION TRANSACTION READ ONLY", timeout)

    def classify_error(self, exc: DBAPIError) -> ErrorCode | None:
        args = getattr(exc.orig, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        if code in _MYSQL_TIMEOUT_CODES:
            return ErrorCode.DEADLINE_EXCEEDED
        if code in _MYSQL_CONNECTION_CODES or _looks_like_lost_connection(exc):
            return ErrorCode.TEMPORARILY_UNAVAILABLE
        return None


class SQLitePolicy:
    percentiles: PercentileStrategy = WindowPercentiles()

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]:
        return {}

    def on_connect(self, dbapi_connection: Any, limits: ConnectionLimits) -> None:
        # The file is opened with mode=ro; query_only also refuses writes to attached/temp DBs.
        _run(dbapi_connection, "PRAGMA query_only = ON")

    def classify_error(self, exc: DBAPIError) -> ErrorCode | None:
        message = str(exc.orig).lower()
        if "interrupted" in message:
            return ErrorCode.DEADLINE_EXCEEDED
        if "unable to open database" in message or "database is locked" in message:
            return ErrorCode.TEMPORARILY_UNAVAILABLE
        return None


_POLICIES: dict[str, DialectPolicy] = {
    "postgresql": PostgresPolicy(),
    "mysql": MySQLPolicy(),
    "mariadb": MySQLPolicy(),
    "sqlite": SQLitePolicy(),
}


def policy_for(dialect: Dialect | str) -> DialectPolicy:
    name = dialect if isinstance(dialect, str) else dialect.name
    try:
        return _POLICIES[name]
    except KeyError:
        raise ValueError(f"Unsupported database dialect {name!r}") from None
