"""The dialects package: each expression's SQL per database, each policy's engine options, and
no dialect name anywhere else in the service.

The SQL tests only compile (no database needed); the numbers those expressions produce are
checked on every database by the endpoint tests and the golden capture.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa
from duckdb_engine import Dialect as DuckDBDialect
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError, UnsupportedCompilationError

from service.db import create_engine
from service.dialects import (
    ConnectionLimits,
    exact_text,
    floor_float,
    int_div,
    json_text_value,
    policy_for,
    starts_with,
    text_equals,
    to_async_url,
)
from service.dialects.case_sensitive import text_eq, text_in, text_like, text_ne
from service.dialects.change_capture import row_hash
from service.dialects.expressions import child_exists, kept_distinct
from service.dialects.percentiles import WindowPercentiles
from service.errors import ErrorCode
from service.settings import Settings

DIALECTS = {
    "sqlite": sqlite.dialect(),
    "postgresql": postgresql.dialect(),
    "mysql": mysql.dialect(),
    # duckdb-engine: the analytics store (PostgreSQL's compiler, DuckDB's semantics).
    "duckdb": DuckDBDialect(),
}

text = sa.column("x", sa.String())
number = sa.column("n", sa.Float())

# expression -> the SQL it compiles to on sqlite, postgresql, mysql, duckdb (in that order);
# None where the expression has no use on that dialect (compiling it must fail).
EXPRESSIONS: dict[str, tuple[sa.ColumnElement[Any], tuple[str, str, str, str | None]]] = {
    "int_div": (
        int_div(sa.column("x"), 7),
        (
            "(x) / (7)",
            "(x) / (7)",
            "(x) DIV (7)",
            # DuckDB's `/` is a float division even between integers.
            "(x) // (7)",
        ),
    ),
    "exact_text": (
        exact_text(text),
        ("x", '((x) COLLATE "C")', "CAST(CONVERT((x) USING utf8mb4) AS BINARY)", "x"),
    ),
    "text_equals": (
        text_equals(text, "Ab"),
        (
            "((x) = ('Ab'))",
            "((x) = ('Ab'))",
            "((x) = ('Ab') AND CAST(CONVERT((x) USING utf8mb4) AS BINARY) = 'Ab')",
            "((x) = ('Ab'))",
        ),
    ),
    "starts_with": (
        starts_with(text, "mlflow."),
        (
            "substr(x, 1, 7) = 'mlflow.'",
            "((substr(x, 1, 7)) COLLATE \"C\") = 'mlflow.'",
            "CAST(CONVERT((substr(x, 1, 7)) USING utf8mb4) AS BINARY) = 'mlflow.'",
            "substr(x, 1, 7) = 'mlflow.'",
        ),
    ),
    "json_text_value": (
        json_text_value(text),
        (
            "(CASE WHEN substr((x), 1, 1) = '\"' THEN json_extract((x), '$') ELSE (x) END)",
            "(CASE WHEN left((x), 1) = '\"' THEN (((x)::json) #>> '{}') ELSE (x) END)",
            "(CASE WHEN LEFT((x), 1) = '\"' THEN JSON_UNQUOTE((x)) ELSE (x) END)",
            "(CASE WHEN substr((x), 1, 1) = '\"' THEN json_extract_string((x), '$') ELSE (x) END)",
        ),
    ),
    # MLflow's case-sensitive filter comparisons: bytes on MySQL, GLOB for LIKE on SQLite.
    "text_eq": (
        text_eq(text, "Ab"),
        ("(x = 'Ab')", "(x = 'Ab')", "(x = 'Ab' AND CAST(x AS BINARY) = 'Ab')", "(x = 'Ab')"),
    ),
    "text_ne": (
        text_ne(text, "Ab"),
        (
            "(x != 'Ab')",
            "(x != 'Ab')",
            "(x != 'Ab' OR CAST(x AS BINARY) != 'Ab')",
            "(x != 'Ab')",
        ),
    ),
    "text_in": (
        text_in(text, ("a", "B")),
        (
            "(x IN ('a', 'B'))",
            "(x IN ('a', 'B'))",
            "(CAST(x AS BINARY) IN ('a', 'B'))",
            "(x IN ('a', 'B'))",
        ),
    ),
    "text_like": (
        text_like(text, "a_%*"),
        (
            "(x GLOB 'a?*[*]')",
            "(x LIKE 'a_%%*')",
            "(x LIKE 'a_%%*' AND CAST(x AS BINARY) LIKE 'a_%%*')",
            # DuckDB's LIKE is case-sensitive.
            "(x LIKE 'a_%%*')",
        ),
    ),
    # The analytics store's partition fingerprints (SQLite's function is registered per connection).
    "row_hash": (
        row_hash(text),
        ("insights_store_crc32(x)", "hashtext(x)", "crc32(x)", None),
    ),
    "floor_float": (
        floor_float(number),
        (
            "(CASE WHEN abs(n) >= 4503599627370496.0 THEN (n) * 1.0 "
            "ELSE CAST(CAST((n) AS INTEGER) - ((n) < CAST((n) AS INTEGER)) AS REAL) END)",
            "FLOOR(n)",
            "FLOOR(n)",
            "floor(n)",
        ),
    ),
}


@pytest.mark.parametrize("dialect_name", list(DIALECTS))
@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_expression_compiles_per_dialect(name: str, dialect_name: str) -> None:
    expression, expected = EXPRESSIONS[name]
    sql = expected[list(DIALECTS).index(dialect_name)]
    if sql is None:
        with pytest.raises(UnsupportedCompilationError):
            expression.compile(dialect=DIALECTS[dialect_name])
        return
    compiled = expression.compile(
        dialect=DIALECTS[dialect_name], compile_kwargs={"literal_binds": True}
    )
    assert str(compiled) == sql


def _one_line(statement: sa.Select[Any], dialect_name: str) -> str:
    """The statement's SQL on that dialect, values inlined, on one line."""
    compiled = statement.compile(
        dialect=DIALECTS[dialect_name], compile_kwargs={"literal_binds": True}
    )
    return " ".join(str(compiled).split())


@pytest.mark.parametrize("dialect_name", list(DIALECTS))
def test_kept_distinct_is_the_subquery_on_tracking_databases_and_the_summary_on_the_store(
    dialect_name: str,
) -> None:
    rows_table = sa.table("rows_table", sa.column("name", sa.String()), sa.column("kind"))
    rows = sa.select(rows_table.c.name, rows_table.c.kind).where(rows_table.c.kind != "none")
    kept = kept_distinct.of(rows, name="kinds", summary="insights_kinds")
    statement = sa.select(kept.c.name).group_by(kept.c.name)
    sql = _one_line(statement, dialect_name)
    if dialect_name == "duckdb":
        expected_from = "FROM insights_kinds AS kinds"
    else:
        expected_from = (
            "FROM (SELECT rows_table.name AS name, rows_table.kind AS kind FROM rows_table "
            "WHERE rows_table.kind != 'none') AS kinds"
        )
    assert sql == f"SELECT kinds.name {expected_from} GROUP BY kinds.name"


def test_exact_text_reads_mysql_binary_as_utf8() -> None:
    # CAST(... AS BINARY) comes back as bytes from MySQL: the result is still a str.
    processor = exact_text(text).type.result_processor(mysql.dialect(), None)
    assert processor is not None
    assert processor("Café".encode()) == "Café"
    assert processor(None) is None


# --------------------------------------------------------------------------------------------
# Connection policies
# --------------------------------------------------------------------------------------------

LIMITS = ConnectionLimits(
    statement_timeout_seconds=2.5, pool_size=3, max_overflow=2, pool_timeout_seconds=7.0
)
URLS = {
    "sqlite": "sqlite:///mlflow.db",
    "postgresql": "postgresql://u@db/mlflow",
    "mysql": "mysql+pymysql://root@db/mlflow",
}


@pytest.mark.parametrize("dialect_name", list(URLS))
def test_policy_is_the_same_from_url_and_from_dialect(dialect_name: str) -> None:
    from_url = policy_for(to_async_url(URLS[dialect_name]))
    assert from_url is policy_for(DIALECTS[dialect_name])
    assert from_url is policy_for(dialect_name)


def test_the_store_has_a_duckdb_policy_without_pool_or_engine_options() -> None:
    # The store's engine is duckdb-engine's (sync, no async driver): found by its dialect.
    policy = policy_for(DIALECTS["duckdb"])
    assert policy is policy_for(sa.make_url("duckdb:///store.duckdb"))
    assert isinstance(policy.percentiles, WindowPercentiles)
    assert policy.pool_options(LIMITS) == {}
    assert policy.engine_options(LIMITS) == {}


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (duckdb.InterruptException("INTERRUPT Error: Interrupted!"), ErrorCode.DEADLINE_EXCEEDED),
        (duckdb.IOException("IO Error: Cannot open file"), ErrorCode.TEMPORARILY_UNAVAILABLE),
        (duckdb.BinderException("Binder Error: column not found"), None),
    ],
)
def test_duckdb_errors_are_classified(error: Exception, expected: ErrorCode | None) -> None:
    wrapped = DBAPIError("SELECT 1", None, error)
    assert policy_for(DIALECTS["duckdb"]).classify_error(wrapped) == expected


def test_unknown_dialect_has_no_policy() -> None:
    with pytest.raises(ValueError, match="Unsupported database dialect 'mssql'"):
        policy_for(sa.make_url("mssql://u@db/x"))


@pytest.mark.parametrize(
    ("dialect_name", "expected"),
    [
        ("sqlite", {}),
        ("postgresql", {"pool_size": 3, "max_overflow": 2, "pool_timeout": 7.0}),
        ("mysql", {"pool_size": 3, "max_overflow": 2, "pool_timeout": 7.0}),
    ],
)
def test_pool_options_per_dialect(dialect_name: str, expected: dict[str, object]) -> None:
    assert policy_for(DIALECTS[dialect_name]).pool_options(LIMITS) == expected


def test_postgres_sessions_are_read_only_with_a_timeout() -> None:
    settings = policy_for(DIALECTS["postgresql"]).engine_options(LIMITS)["connect_args"]
    assert settings["server_settings"]["default_transaction_read_only"] == "on"
    assert settings["server_settings"]["statement_timeout"] == "2500"


@pytest.mark.parametrize(
    ("dialect_name", "pool_size"),
    # SQLite keeps SQLAlchemy's default pool of 5 whatever the settings say.
    [("sqlite", 5), ("postgresql", 3), ("mysql", 3)],
)
async def test_engine_factory_takes_pool_options_from_the_policy(
    dialect_name: str, pool_size: int
) -> None:
    settings = Settings(
        database_url=URLS[dialect_name], pool_size=3, max_overflow=2, pool_timeout_seconds=7.0
    )
    engine, policy = create_engine(settings)  # creates no connection
    try:
        assert policy is policy_for(DIALECTS[dialect_name])
        assert engine.pool.size() == pool_size  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------------------------
# No dialect name outside service/dialects/
# --------------------------------------------------------------------------------------------

SERVICE = Path(__file__).resolve().parent.parent / "service"
# service/demo/ creates databases through MLflow's own engines and names them to do so.
OUTSIDE_THE_RULE = ("dialects", "demo")
# A string that names a database or one of its drivers ("mysql", "postgresql+asyncpg").
DIALECT_NAME = re.compile(r"(sqlite|postgres|postgresql|mysql|mariadb|duckdb)(\+\w+)?", re.I)
# Attributes through which code reads which database it talks to.
DIALECT_ATTRIBUTES = {"dialect", "is_mariadb", "get_backend_name", "get_driver_name", "drivername"}

# Files allowed to name dialects, each with why and until when. Remove an entry when its code
# moves into service/dialects/; an entry whose file no longer names a dialect fails the test.
ALLOWED: dict[str, str] = {}


def _is_policy_lookup(call: ast.Call) -> bool:
    func = call.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return name == "policy_for"


def dialect_names_in(source: str) -> list[tuple[int, str]]:
    """(line, what) for each place the code names a dialect or reads which one it is on.

    Docstrings and comments do not count; handing a ``.dialect`` to ``policy_for`` does not
    either (that is asking the dialects package, not deciding).
    """
    tree = ast.parse(source)
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    asked = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _is_policy_lookup(node)
        for arg in node.args
    }
    hits: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings and DIALECT_NAME.fullmatch(node.value):
                hits.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.Attribute) and node.attr in DIALECT_ATTRIBUTES:
            if id(node) not in asked:
                hits.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.Attribute) and node.attr == "name":
            # ``dialect.name`` on a variable (``x.dialect.name`` is caught as ``.dialect``).
            if isinstance(node.value, ast.Name) and node.value.id.endswith("dialect"):
                hits.append((node.lineno, f"{node.value.id}.name"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "sqlalchemy.dialects"
        ):
            hits.append((node.lineno, f"from {node.module} import"))
    return sorted(hits)


def service_modules() -> list[Path]:
    return [
        path
        for path in sorted(SERVICE.rglob("*.py"))
        if path.relative_to(SERVICE).parts[0] not in OUTSIDE_THE_RULE
    ]


def test_no_dialect_names_outside_the_dialects_package() -> None:
    found: dict[str, list[str]] = {}
    for path in service_modules():
        hits = dialect_names_in(path.read_text())
        if hits:
            rel = path.relative_to(SERVICE.parent).as_posix()
            found[rel] = [f"{rel}:{line}: {what}" for line, what in hits]
    unexpected = [hit for rel, hits in found.items() if rel not in ALLOWED for hit in hits]
    assert not unexpected, "dialect names belong in service/dialects/:\n" + "\n".join(unexpected)
    stale = [rel for rel in ALLOWED if (SERVICE.parent / rel).exists() and rel not in found]
    assert not stale, f"allow-listed but naming no dialect any more, remove: {stale}"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            'if engine.dialect.name == "postgresql":\n    pass\n',
            [(1, "'postgresql'"), (1, ".dialect")],
        ),
        ("backend = url.get_backend_name()\n", [(1, ".get_backend_name")]),
        ("def f(dialect):\n    return dialect.name\n", [(2, "dialect.name")]),
        ('DRIVER = "mysql+aiomysql"\n', [(1, "'mysql+aiomysql'")]),
        ("from sqlalchemy.dialects import sqlite\n", [(1, "from sqlalchemy.dialects import")]),
        ('"""sqlite"""\nURL = "sqlite:///mlflow.db"  # "sqlite"\n', []),
        ("strategy = policy_for(session.get_bind().dialect)\n", []),
    ],
)
def test_scan_finds_dialect_names_in_code_only(code: str, expected: list[tuple[int, str]]) -> None:
    assert dialect_names_in(code) == expected


@pytest.mark.parametrize("dialect_name", list(DIALECTS))
def test_child_exists_is_a_correlated_exists_on_tracking_databases_and_a_semi_join_on_the_store(
    dialect_name: str,
) -> None:
    traces = sa.table("trace_info", sa.column("request_id"), sa.column("experiment_id"))
    spans = sa.table("spans", sa.column("trace_id"), sa.column("experiment_id"), sa.column("name"))
    has = child_exists(
        spans.c.trace_id,
        traces.c.request_id,
        spans.c.name == "x",
        same_experiment=spans.c.experiment_id,
    )
    statement = sa.select(traces.c.request_id).where(sa.not_(has))
    sql = _one_line(statement, dialect_name)
    if dialect_name == "duckdb":
        # Uncorrelated, by the traces' numbers: the span's own copy of its trace's experiment
        # stands in for the join.
        expected = (
            "NOT (trace_info.insights_trace_number IN (SELECT spans.insights_trace_number "
            "FROM spans WHERE spans.name = 'x' "
            "AND spans.experiment_id = spans.insights_trace_experiment_id))"
        )
    else:
        # As a plain EXISTS: no "= 0" on SQLite and MySQL, which would hide the anti-join.
        expected = (
            "NOT EXISTS (SELECT * FROM spans WHERE spans.trace_id = trace_info.request_id "
            "AND spans.experiment_id = trace_info.experiment_id AND spans.name = 'x')"
        )
    assert sql == f"SELECT trace_info.request_id FROM trace_info WHERE {expected}"
