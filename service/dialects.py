"""Everything that differs between SQLite, PostgreSQL and MySQL/MariaDB, and nothing else.

Query builders never look at a dialect name. They use:

* SQL expressions compiled per dialect with ``@compiles`` (``int_div``);
* a per-dialect ``DialectPolicy`` (looked up with ``policy_for``) that knows how to make a
  connection read-only with a statement timeout, how to compute exact percentiles, and how to
  recognise the dialect's timeout and connection-loss errors.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    Float,
    String,
    case,
    event,
    func,
    literal,
    literal_column,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY
from sqlalchemy.dialects.postgresql import array as pg_array
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, Select, select
from sqlalchemy.sql.elements import Grouping
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.sql.selectable import Subquery
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util import await_only

from service.errors import ErrorCode

# --------------------------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------------------------


class int_div(FunctionElement[int]):
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


P50, P90, P95, P99 = (
    Quantile("p50", 50),
    Quantile("p90", 90),
    Quantile("p95", 95),
    Quantile("p99", 99),
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

    def summarize_levels(
        self,
        source: Subquery,
        *,
        value: str,
        levels: Sequence[Sequence[str]],
        quantiles: Sequence[Quantile],
    ) -> list[LeveledSelect]:
        """``summarize`` at several grouping levels (e.g. per bucket, and overall): statements
        whose rows each carry the level they belong to (``LeveledSelect.level_of``)."""
        ...


def _constant_level(level: int, _row: Mapping[str, Any]) -> int:
    return level


@dataclass(frozen=True)
class LeveledSelect:
    """A statement of ``summarize_levels`` and how to tell which level one of its rows is of."""

    statement: Select[Any]
    level_of: Callable[[Mapping[str, Any]], int]


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
        percentiles: list[ColumnElement[Any]] = []
        if quantiles:
            # One ordered-set aggregate for all fractions: one sort, read once per fraction.
            # PostgreSQL computes identical aggregates of a query once, so each [i] reuses it;
            # separate percentile_cont calls re-read the sort per fraction (once it spills to
            # disk, several times the I/O). Same interpolation, same numbers.
            fractions: ColumnElement[Any] = pg_array(
                [literal(q.fraction, Double()) for q in quantiles]
            )
            combined: ColumnElement[Any] = type_coerce(
                Grouping(func.percentile_cont(fractions).within_group(v)), PG_ARRAY(Double())
            )
            percentiles = [
                combined[literal_column(str(i))].label(q.name)
                for i, q in enumerate(quantiles, start=1)
            ]
        return select(*key_cols, *_stat_columns(v), *percentiles).group_by(*key_cols)

    def read(self, row: Mapping[str, Any], quantile: Quantile) -> float | None:
        value = row[quantile.name]
        return None if value is None else float(value)

    def summarize_levels(
        self,
        source: Subquery,
        *,
        value: str,
        levels: Sequence[Sequence[str]],
        quantiles: Sequence[Quantile],
    ) -> list[LeveledSelect]:
        # One statement, one read of the rows: GROUP BY GROUPING SETS, each row tagged with
        # GROUPING(all keys), a bit mask of the keys its level does not group by.
        all_keys = list(dict.fromkeys(k for level in levels for k in level))
        if not all_keys:
            return [
                LeveledSelect(
                    self.summarize(source, value=value, keys=(), quantiles=quantiles),
                    lambda _row: 0,
                )
            ]
        plain = self.summarize(source, value=value, keys=all_keys, quantiles=quantiles)
        columns = [source.c[k] for k in all_keys]
        sets = [tuple_(*[source.c[k] for k in level]) for level in levels]
        statement = (
            plain.add_columns(func.grouping(*columns).label("grouping_level"))
            .group_by(None)
            .group_by(func.grouping_sets(*sets))
        )

        def mask(level: Sequence[str]) -> int:
            width = len(all_keys)
            return sum(1 << (width - 1 - i) for i, k in enumerate(all_keys) if k not in level)

        index = {mask(level): i for i, level in enumerate(levels)}
        return [LeveledSelect(statement, lambda row: index[int(row["grouping_level"])])]


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
            picks.append(
                func.max(case((ranked.c.rn == low_rank, ranked.c.v))).label(f"{q.name}_lo")
            )
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

    def summarize_levels(
        self,
        source: Subquery,
        *,
        value: str,
        levels: Sequence[Sequence[str]],
        quantiles: Sequence[Quantile],
    ) -> list[LeveledSelect]:
        # No GROUPING SETS on SQLite (MySQL's WITH ROLLUP cannot carry the window ranks):
        # one statement per level.
        return [
            LeveledSelect(
                self.summarize(source, value=value, keys=level, quantiles=quantiles),
                functools.partial(_constant_level, i),
            )
            for i, level in enumerate(levels)
        ]


# --------------------------------------------------------------------------------------------
# Per-dialect policy: read-only connections, statement timeout, error classification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionLimits:
    statement_timeout_seconds: float


class DialectPolicy(Protocol):
    percentiles: PercentileStrategy

    def engine_options(self, limits: ConnectionLimits) -> dict[str, Any]: ...

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


# --------------------------------------------------------------------------------------------
# Exact text, JSON scalars and exact floors (assessments, tools, tags, tokens and cost)
#
# MySQL/MariaDB compare strings under the column's collation, usually case- and
# trailing-space-insensitive, and PostgreSQL orders them by locale: ``exact_text`` makes
# equality, grouping and ordering bytewise (code-point order for UTF-8) on every database, so
# 'Friendly' and 'friendly' stay two values everywhere and ties sort the same way.
# --------------------------------------------------------------------------------------------


class _Utf8Text(TypeDecorator[str]):
    """Text that MySQL may return as bytes (the result of ``CAST(... AS BINARY)``)."""

    impl = String
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).decode("utf-8")
        return None if value is None else str(value)


class exact_text(FunctionElement[str]):
    """A text expression compared, grouped and ordered by its bytes (code points)."""

    type = _Utf8Text()
    inherit_cache = True


@compiles(exact_text)
def _exact_text_default(element: exact_text, compiler: Any, **kw: Any) -> str:
    # SQLite's default collation is BINARY already.
    (value,) = list(element.clauses)
    return str(compiler.process(value, **kw))


@compiles(exact_text, "postgresql")
def _exact_text_postgresql(element: exact_text, compiler: Any, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f'(({compiler.process(value, **kw)}) COLLATE "C")'


@compiles(exact_text, "mysql")
def _exact_text_mysql(element: exact_text, compiler: Any, **kw: Any) -> str:
    # CONVERT first: the bytes are UTF-8 whatever the column's character set is.
    (value,) = list(element.clauses)
    return f"CAST(CONVERT(({compiler.process(value, **kw)}) USING utf8mb4) AS BINARY)"


class text_equals(FunctionElement[bool]):
    """``column = value``, exactly (code point for code point).

    PostgreSQL's deterministic collations and SQLite's BINARY already compare that way, so
    there it is the plain ``=``: one predicate, which the planner estimates right. MySQL's
    default collations are case- and accent-insensitive: the plain comparison keeps indexes
    usable, the bytewise one drops what the collation would let through.
    """

    type = Boolean()
    inherit_cache = True

    def __init__(self, column: ColumnElement[Any], value: str) -> None:
        super().__init__(column, literal(value, type_=String()))


@compiles(text_equals)
def _text_equals_default(element: text_equals, compiler: Any, **kw: Any) -> str:
    column, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"(({column}) = ({value}))"


@compiles(text_equals, "mysql")
def _text_equals_mysql(element: text_equals, compiler: Any, **kw: Any) -> str:
    column, value = list(element.clauses)
    plain = f"({compiler.process(column, **kw)}) = ({compiler.process(value, **kw)})"
    exact = compiler.process(exact_text(column) == value, **kw)
    return f"({plain} AND {exact})"


def starts_with(column: ColumnElement[Any], prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, exactly (no LIKE: keys may hold ``%`` and ``_``)."""
    return exact_text(func.substr(column, 1, len(prefix))) == prefix


class json_text_value(FunctionElement[str]):
    """The text of a JSON document stored as text: a JSON string's content, decoded; any other
    JSON (``true``, ``3.5``, ``[1, 2]``) as written."""

    type = String()
    inherit_cache = True


def _json_text_value(
    element: json_text_value, compiler: Any, first: str, decode: str, **kw: Any
) -> str:
    (value,) = list(element.clauses)
    v = compiler.process(value, **kw)
    decoded = decode.format(v=v)
    return f"(CASE WHEN {first.format(v=v)} = '\"' THEN {decoded} ELSE ({v}) END)"


@compiles(json_text_value)
def _json_text_value_sqlite(element: json_text_value, compiler: Any, **kw: Any) -> str:
    return _json_text_value(
        element, compiler, "substr(({v}), 1, 1)", "json_extract(({v}), '$')", **kw
    )


@compiles(json_text_value, "postgresql")
def _json_text_value_postgresql(element: json_text_value, compiler: Any, **kw: Any) -> str:
    # Only strings are cast to json: stored NaN/Infinity are not valid PostgreSQL json.
    return _json_text_value(element, compiler, "left(({v}), 1)", "((({v})::json) #>> '{{}}')", **kw)


@compiles(json_text_value, "mysql")
def _json_text_value_mysql(element: json_text_value, compiler: Any, **kw: Any) -> str:
    return _json_text_value(element, compiler, "LEFT(({v}), 1)", "JSON_UNQUOTE(({v}))", **kw)


class floor_float(FunctionElement[float]):
    """``floor`` of a double, as a double; exact for every magnitude.

    SQLite has ``floor`` only when built with its math functions; there it is computed from
    ``CAST(... AS INTEGER)`` (which truncates) below 2^52, where doubles still have a fraction.
    """

    type = Float(precision=53)
    inherit_cache = True


@compiles(floor_float)
def _floor_float_default(element: floor_float, compiler: Any, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"FLOOR({compiler.process(value, **kw)})"


@compiles(floor_float, "sqlite")
def _floor_float_sqlite(element: floor_float, compiler: Any, **kw: Any) -> str:
    (value,) = list(element.clauses)
    v = compiler.process(value, **kw)
    return (
        f"(CASE WHEN abs({v}) >= 4503599627370496.0 THEN ({v}) * 1.0 "
        f"ELSE CAST(CAST(({v}) AS INTEGER) - (({v}) < CAST(({v}) AS INTEGER)) AS REAL) END)"
    )
