"""Everything that differs between SQLite, PostgreSQL, MySQL/MariaDB and DuckDB (the analytics
store), and nothing else.

The only package that knows dialect names. Query builders and the engine factory use:

* ``expressions``: SQL expressions compiled per dialect with ``@compiles`` (``int_div``,
  ``exact_text``, ``text_equals``, ``json_text_value``, ``floor_float``, and
  ``trace_time_within``, which only the store's child tables can answer);
* ``case_sensitive``: MLflow's case-sensitive =, !=, IN, NOT IN and LIKE of filter strings;
* ``percentiles``: exact percentile strategies, native or with window functions;
* ``connections``: a per-dialect ``DialectPolicy`` (looked up with ``policy_for``) that sizes the
  pool, makes each connection read-only with a statement timeout, picks the percentile strategy
  and recognises the dialect's timeout and connection-loss errors;
* ``urls``: MLflow backend-store URLs mapped to the async drivers;
* ``duckdb_expressions``, ``duckdb_policy``: the same expressions and a policy for the store's
  DuckDB file, so the query builders run on it unchanged (``service.store.reading``).

The names below are what the rest of the service imports: ``from service.dialects import X``.
"""

from service.dialects.connections import STORE_DIALECT, ConnectionLimits, DialectPolicy, policy_for
from service.dialects.expressions import (
    OPEN_WINDOW,
    TraceWindow,
    bit_or_agg,
    child_exists,
    child_of_traces,
    exact_text,
    floor_float,
    int_div,
    json_text_value,
    starts_with,
    text_equals,
    trace_time_within,
)
from service.dialects.percentiles import (
    MANY_VALUES,
    P50,
    P90,
    P95,
    P99,
    STAT_COLUMNS,
    LeveledSelect,
    NativePercentiles,
    PercentileStrategy,
    Quantile,
    WindowPercentiles,
)
from service.dialects.urls import to_async_url

__all__ = [
    "MANY_VALUES",
    "OPEN_WINDOW",
    "P50",
    "P90",
    "P95",
    "P99",
    "STAT_COLUMNS",
    "STORE_DIALECT",
    "ConnectionLimits",
    "DialectPolicy",
    "LeveledSelect",
    "NativePercentiles",
    "PercentileStrategy",
    "Quantile",
    "TraceWindow",
    "WindowPercentiles",
    "bit_or_agg",
    "child_exists",
    "child_of_traces",
    "exact_text",
    "floor_float",
    "int_div",
    "json_text_value",
    "policy_for",
    "starts_with",
    "text_equals",
    "to_async_url",
    "trace_time_within",
]
