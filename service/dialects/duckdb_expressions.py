"""DuckDB's spelling of the portable expressions, for the analytics store.

duckdb-engine's dialect is named ``duckdb`` but compiles with PostgreSQL's compiler; DuckDB's
own semantics differ from PostgreSQL's in the places below, so each expression says exactly what
it means there. Imported for its ``@compiles`` registrations by the DuckDB policy.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnClause, False_, Null

from service.dialects.case_sensitive import _PerDatabase
from service.dialects.expressions import (
    TRACE_EXPERIMENT_COPY,
    TRACE_TIMESTAMP_COPY,
    _json_text_value,
    child_exists,
    child_of_traces,
    child_with_trace,
    exact_text,
    floor_float,
    int_div,
    json_text_value,
    kept_distinct,
    kept_span_sets,
    list_bits,
    list_holds,
    list_size,
    list_values,
    text_equals,
    trace_column_of,
    trace_time_within,
)

DUCKDB = "duckdb"


@compiles(int_div, DUCKDB)
def _int_div_duckdb(element: int_div, compiler: Any, **kw: Any) -> str:
    # DuckDB's `/` divides as doubles even between integers; `//` is integer division,
    # truncating like the others' integer `/` and DIV.
    left, right = list(element.clauses)
    return f"({compiler.process(left, **kw)}) // ({compiler.process(right, **kw)})"


@compiles(exact_text, DUCKDB)
def _exact_text_duckdb(element: exact_text, compiler: Any, **kw: Any) -> str:
    # DuckDB compares and sorts strings by their UTF-8 bytes unless told otherwise: code-point
    # order, as the other databases are made to.
    (value,) = list(element.clauses)
    return str(compiler.process(value, **kw))


@compiles(text_equals, DUCKDB)
def _text_equals_duckdb(element: text_equals, compiler: Any, **kw: Any) -> str:
    column, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"(({column}) = ({value}))"


@compiles(json_text_value, DUCKDB)
def _json_text_value_duckdb(element: json_text_value, compiler: Any, **kw: Any) -> str:
    # json_extract (SQLite's spelling) returns JSON here; json_extract_string decodes a string.
    return _json_text_value(
        element, compiler, "substr(({v}), 1, 1)", "json_extract_string(({v}), '$')", **kw
    )


@compiles(floor_float, DUCKDB)
def _floor_float_duckdb(element: floor_float, compiler: Any, **kw: Any) -> str:
    (value,) = list(element.clauses)
    return f"floor({compiler.process(value, **kw)})"


@compiles(_PerDatabase, DUCKDB)
def _case_sensitive_duckdb(element: _PerDatabase, compiler: Any, **kw: Any) -> str:
    # DuckDB's =, IN and LIKE compare case-sensitively already: the portable spelling.
    return f"({compiler.process(element.portable, **kw)})"


def _copied(name: str, key: Any) -> ColumnClause[Any]:
    """The store's copy ``name`` of a trace column, on the same table (or alias) as ``key``."""
    return ColumnClause(name, BigInteger(), _selectable=key.table)


def _within(stamp: ColumnClause[Any], start: Any, end: Any, compiler: Any, **kw: Any) -> list[str]:
    """``start <= stamp < end`` as conditions; a NULL bound is an open side."""
    conditions = []
    if not isinstance(start, Null):
        conditions.append(compiler.process(stamp >= start, **kw))
    if not isinstance(end, Null):
        conditions.append(compiler.process(stamp < end, **kw))
    return conditions


@compiles(trace_time_within, DUCKDB)
def _trace_time_within_duckdb(element: trace_time_within, compiler: Any, **kw: Any) -> str:
    key, start, end = list(element.clauses)
    conditions = _within(_copied(TRACE_TIMESTAMP_COPY, key), start, end, compiler, **kw)
    return f"({' AND '.join(conditions)})" if conditions else "1 = 1"


@compiles(child_of_traces, DUCKDB)
def _child_of_traces_duckdb(element: child_of_traces, compiler: Any, **kw: Any) -> str:
    # The row's own copies of its trace's experiment and timestamp decide; the subquery (by
    # the traces' numbers) only when it checks more than those. (A joined row's conditions,
    # 8th, are not read.)
    key, _, membership, ids, start, end, narrowed = list(element.clauses)[:7]
    experiment = _copied(TRACE_EXPERIMENT_COPY, key)
    conditions = [compiler.process(experiment.in_(list(ids.clauses)), **kw)]
    conditions += _within(_copied(TRACE_TIMESTAMP_COPY, key), start, end, compiler, **kw)
    if not isinstance(narrowed, False_):
        conditions.append(compiler.process(membership, **kw))
    return f"({' AND '.join(conditions)})"


# The copy of each trace column a child table of the store carries.
_COPIES = {"timestamp_ms": TRACE_TIMESTAMP_COPY, "experiment_id": TRACE_EXPERIMENT_COPY}


@compiles(trace_column_of, DUCKDB)
def _trace_column_of_duckdb(element: trace_column_of, compiler: Any, **kw: Any) -> str:
    key, column = list(element.clauses)
    return str(compiler.process(_copied(_COPIES[column.name], key), **kw))


@compiles(child_with_trace, DUCKDB)
def _child_with_trace_duckdb(element: child_with_trace, compiler: Any, **kw: Any) -> str:
    # The child table alone: what the statement reads of the trace, it reads from the copies.
    kw.pop("asfrom", None)
    return str(compiler.process(element.left, asfrom=True, **kw))


@compiles(kept_distinct, DUCKDB)
def _kept_distinct_duckdb(element: kept_distinct, compiler: Any, **kw: Any) -> str:
    # The store's table of the subquery's distinct rows, under the subquery's name.
    return f"{element.summary} AS {compiler.preparer.format_alias(element, element.name)}"


@compiles(kept_span_sets, DUCKDB)
def _kept_span_sets_duckdb(element: kept_span_sets, compiler: Any, **kw: Any) -> str:
    # The same rows from the store's one row per trace, under the subquery's name.
    kw.pop("asfrom", None)
    kept = compiler.process(element.kept, asfrom=True, **kw)
    return f"({kept}) AS {compiler.preparer.format_alias(element, element.name)}"


@compiles(list_bits, DUCKDB)
def _list_bits_duckdb(element: list_bits, compiler: Any, **kw: Any) -> str:
    (values,) = list(element.clauses)
    if not element.bits:
        return "CAST(0 AS BIGINT)"
    cases = " ".join(
        f"WHEN {compiler.process(literal(v), **kw)} THEN {int(bit)}" for v, bit in element.bits
    )
    # Each value once (the lists hold distinct values), so the sum is the OR of their bits.
    each = f"lambda x: CASE x {cases} ELSE 0 END"
    summed = f"list_sum(list_transform({compiler.process(values, **kw)}, {each}))"
    return f"CAST(coalesce({summed}, 0) AS BIGINT)"


@compiles(list_values, DUCKDB)
def _list_values_duckdb(element: list_values, compiler: Any, **kw: Any) -> str:
    (values,) = list(element.clauses)
    return f"unnest({compiler.process(values, **kw)})"


@compiles(list_holds, DUCKDB)
def _list_holds_duckdb(element: list_holds, compiler: Any, **kw: Any) -> str:
    values, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"coalesce(list_contains({values}, {value}), false)"


@compiles(list_size, DUCKDB)
def _list_size_duckdb(element: list_size, compiler: Any, **kw: Any) -> str:
    (values,) = list(element.clauses)
    return f"coalesce(len({compiler.process(values, **kw)}), 0)"


@compiles(child_exists, DUCKDB)
def _child_exists_duckdb(element: child_exists, compiler: Any, **kw: Any) -> str:
    # One semi-join with the matching child rows instead of a correlated EXISTS.
    _, matching = list(element.clauses)
    return f"({compiler.process(matching, **kw)})"
