"""SQL expressions compiled per dialect with ``@compiles``: one name, one meaning everywhere.

Query builders write ``int_div(a, b)`` or ``exact_text(column)`` and never ask which database
runs the statement; each expression's spelling per dialect lives next to it, here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    String,
    and_,
    column,
    exists,
    false,
    func,
    literal,
    null,
    select,
    table,
    true,
    tuple_,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.elements import Label
from sqlalchemy.sql.expression import FunctionElement, Join
from sqlalchemy.sql.selectable import CompoundSelect, Subquery
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator

# --------------------------------------------------------------------------------------------
# Integer arithmetic (time buckets, percentile ranks)
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


class bit_or_agg(FunctionElement[int]):
    """The bitwise OR of a group's BIGINT values, each of them a single bit or 0.

    SQLite has no ``bit_or``: there the sum of the distinct values is the same number, because
    each value is one bit (or 0).
    """

    type = BigInteger()
    inherit_cache = True


@compiles(bit_or_agg)
def _bit_or_agg_default(element: bit_or_agg, compiler: Any, **kw: Any) -> str:
    return f"bit_or({compiler.process(element.clauses, **kw)})"


@compiles(bit_or_agg, "sqlite")
def _bit_or_agg_sqlite(element: bit_or_agg, compiler: Any, **kw: Any) -> str:
    return f"sum(DISTINCT {compiler.process(element.clauses, **kw)})"


class _grouped(FunctionElement[bool]):
    """``(condition)``: parentheses that SQLAlchemy keeps (it flattens nested ``and_``)."""

    type = Boolean()
    inherit_cache = True


@compiles(_grouped)
def _grouped_default(element: _grouped, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)})"


def all_of(conditions: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    """``AND`` of the conditions, parenthesised as a balanced tree: depth log2(n), not n.

    SQLite refuses expressions deeper than 1000 and counts a subquery's depth into the
    expression that holds it; a filter may have hundreds of clauses."""
    if len(conditions) <= 2:
        return and_(true(), *conditions)
    middle = len(conditions) // 2
    return and_(_grouped(all_of(conditions[:middle])), _grouped(all_of(conditions[middle:])))


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


# --------------------------------------------------------------------------------------------
# The trace window on a child table (spans, tags, metadata, assessments)
# --------------------------------------------------------------------------------------------

# The analytics store's child tables carry their trace's timestamp_ms and experiment_id under
# these names (MLflow's do not); ``service.store.layout`` adds the columns, ``duckdb_expressions``
# reads them.
TRACE_TIMESTAMP_COPY = "insights_trace_timestamp_ms"
TRACE_EXPERIMENT_COPY = "insights_trace_experiment_id"
# The store numbers its traces: ``trace_info`` and every child table carry the trace's number
# (the sync gives each trace id one when it first copies a row of it, and never another), so
# the store matches rows to traces by an integer instead of a 32-character id.
TRACE_NUMBER_COPY = "insights_trace_number"


def trace_number(trace_key: Any) -> Any:
    """The store's number of the trace whose id is ``trace_key`` (``trace_info.request_id``, a
    child table's trace key, or theirs on an alias), read from the same table. Only in
    statements that run on the store alone (``kept_span_sets``' ``kept``, the store's spelling
    of a construct)."""
    return _store_copy(TRACE_NUMBER_COPY, trace_key)


def _window_bounds(start: int | None, end: int | None) -> list[ColumnElement[Any]]:
    """``start`` and ``end`` as clauses; an open side is NULL, not left out, so the statement
    cache tells the forms apart."""
    return [null() if b is None else literal(b, type_=BigInteger()) for b in (start, end)]


# A window of trace timestamps, ``(start, end)``: ``start <= timestamp_ms < end``; None is open.
TraceWindow = tuple[int | None, int | None]
OPEN_WINDOW: TraceWindow = (None, None)


class trace_time_within(FunctionElement[bool]):
    """A child row's trace has ``start <= timestamp_ms < end`` (``None``: that side is open).

    Always implied by the join to the traces in scope, so on the tracking databases it is
    ``1 = 1``: their child tables do not carry the trace's timestamp. The store's copy does
    (``TRACE_TIMESTAMP_COPY``), in time order, and there the predicate lets DuckDB skip every
    row group outside the window instead of probing the whole table against the window's
    traces.
    """

    type = Boolean()
    inherit_cache = True

    def __init__(self, trace_key: Any, start: int | None, end: int | None) -> None:
        # The trace key column (``span.trace_id``) names the child table, or its alias.
        super().__init__(trace_key, *_window_bounds(start, end))


@compiles(trace_time_within)
def _trace_time_within_default(element: trace_time_within, compiler: Any, **kw: Any) -> str:
    return "1 = 1"


class child_of_traces(FunctionElement[bool]):
    """A child row (span, tag, feedback) belongs to one of ``traces``: its ``trace_key`` is in
    ``traces`` (a ``SELECT request_id FROM trace_info WHERE ...``), the traces of
    ``experiment_ids`` with ``start <= timestamp_ms < end``, and, if ``narrowed``, further
    conditions (a filter) that only the subquery can check.

    The tracking databases answer ``trace_key IN (traces)``. The store's child tables carry
    their trace's experiment and timestamp: it answers from those columns alone, without
    reading ``trace_info`` at all unless ``narrowed``.
    """

    type = Boolean()
    inherit_cache = True

    def __init__(
        self,
        trace_key: Any,
        traces: Any,
        *,
        experiment_ids: Sequence[int],
        start: int | None,
        end: int | None,
        narrowed: bool,
        joined: ColumnElement[bool] | None = None,
    ) -> None:
        """``joined``: the scope's conditions on ``trace_info``, when the row is already joined
        to its trace (``child_with_trace``); the tracking databases then check them on the
        joined trace instead of ``IN (traces)``. The store answers as without it."""
        key = trace_key.expression
        ids = tuple_(*(literal(i, type_=BigInteger()) for i in experiment_ids))
        bounds = _window_bounds(start, end)
        flag = true() if narrowed else false()
        extra = [] if joined is None else [joined]
        # The store's membership: the same traces, by their numbers.
        (request_id,) = traces.selected_columns
        numbers = traces.with_only_columns(trace_number(request_id))
        numbered = trace_number(key).in_(numbers)
        super().__init__(key, key.in_(traces), numbered, ids, *bounds, flag, *extra)


@compiles(child_of_traces)
def _child_of_traces_default(element: child_of_traces, compiler: Any, **kw: Any) -> str:
    clauses = list(element.clauses)
    # The joined trace's conditions when given (8th), else the membership subquery (2nd).
    return str(compiler.process(clauses[7] if len(clauses) > 7 else clauses[1], **kw))


class child_exists(FunctionElement[bool]):
    """The trace (``trace_key``, ``trace_info.request_id``) has a child row (span, tag,
    metadata, feedback, run link) meeting ``conditions``, which read only the child's columns.

    The tracking databases answer the correlated ``EXISTS (SELECT * FROM child WHERE
    child_key = trace_key AND ...)``, as MLflow does. The store answers ``trace_key IN (SELECT
    child_key FROM child WHERE ...)``: DuckDB runs a correlated EXISTS as a join of every trace
    in scope to the child rows, three times slower than one hash semi-join with the matching
    rows (a tool dimension over 30 days of 1M traces: 300 → 110 ms), and by the traces'
    numbers (``trace_number``), not their ids.

    ``same_experiment``: the child's ``experiment_id`` column, when the child row must also be
    in its trace's experiment (spans: MLflow's index serves both columns); the store compares it
    with its copy of the trace's.
    """

    type = Boolean()
    inherit_cache = True
    # A condition as it stands, like the EXISTS it renders: no ``= 1`` / ``= 0`` around it on
    # SQLite and MySQL (which would keep MariaDB from running it as a semi-join).
    _is_implicitly_boolean = True

    def __init__(
        self,
        child_key: Any,
        trace_key: Any,
        *conditions: ColumnElement[bool],
        same_experiment: Any = None,
    ) -> None:
        correlated = [child_key == trace_key]
        alone = list(conditions)
        if same_experiment is not None:
            trace_experiment = trace_key.table.c.experiment_id
            correlated.append(same_experiment == trace_experiment)
            alone.append(same_experiment == _store_copy(TRACE_EXPERIMENT_COPY, child_key))
        found = exists().where(*correlated, *conditions)
        matching = trace_number(trace_key).in_(
            select(trace_number(child_key)).where(*alone).correlate(None)
        )
        super().__init__(found, matching)


def _store_copy(name: str, key: Any) -> Any:
    """The store's copy ``name`` of a trace column, beside ``key`` on its child table."""
    return column(name, BigInteger(), _selectable=key.table)


@compiles(child_exists)
def _child_exists_default(element: child_exists, compiler: Any, **kw: Any) -> str:
    found, _ = list(element.clauses)
    return str(compiler.process(found, **kw))


class trace_column_of(FunctionElement[Any]):
    """A column of a child row's trace (``timestamp_ms`` or ``experiment_id`` of
    ``trace_info``), in a statement over ``child_with_trace``: the joined trace's column on the
    tracking databases, the child row's own copy of it on the store."""

    inherit_cache = True

    def __init__(self, trace_key: Any, trace_column: Any) -> None:
        super().__init__(trace_key, trace_column)
        self.type = trace_column.type


@compiles(trace_column_of)
def _trace_column_of_default(element: trace_column_of, compiler: Any, **kw: Any) -> str:
    column = list(element.clauses)[1]
    return str(compiler.process(column, **kw))


class child_with_trace(Join):
    """``child JOIN trace_info ON child.key = trace_info.request_id``, for a statement that reads
    of the trace nothing but ``trace_column_of`` and ``child_of_traces(..., joined=...)``.

    The store's child tables carry the columns those read, so there the FROM is the child table
    alone: the join of millions of spans to their traces is the largest part of such a query.
    """

    inherit_cache = True


# --------------------------------------------------------------------------------------------
# Rows the analytics store keeps summarized
# --------------------------------------------------------------------------------------------

# The store's table of distinct (experiment, trace's experiment, name, kind) of feedback rows;
# ``service.store.layout`` defines it, the sync refreshes it, ``duckdb_expressions`` reads it.
FEEDBACK_KINDS_SUMMARY = "insights_feedback_kinds"


class kept_distinct(Subquery):
    """``(SELECT columns FROM ...) AS name``, of which a statement reads only distinct rows
    (it groups by, or selects distinct, every column it reads).

    The tracking databases run the subquery. The analytics store keeps the distinct rows of the
    same select, with the copy of their trace's experiment (``TRACE_EXPERIMENT_COPY``) beside
    them, in its table ``summary`` and reads that instead: a few rows per experiment where
    the subquery reads every row of a large table on each request.
    """

    inherit_cache = True
    # The summary's name is part of the cache key: the store's compiled form reads it.
    _cache_key_traversal = [
        *Subquery._traverse_internals,
        ("summary", InternalTraversal.dp_string),
    ]
    summary: str

    @classmethod
    def of(cls, rows: Select[Any], *, name: str, summary: str) -> kept_distinct:
        kept = cls._construct(rows, name=name)
        kept.summary = summary
        return kept


# The store's table of each trace's span types, tools and failing tools, as lists (one row per
# trace with spans): ``service.store.layout`` defines it, the sync refreshes a trace's row
# whenever it copies the trace's spans, ``kept_span_sets`` reads it.
TRACE_SPAN_SETS = "insights_trace_span_sets"
SPAN_SET_LISTS = ("span_types", "tool_names", "failed_tool_names")
trace_span_sets = table(
    TRACE_SPAN_SETS,
    column("trace_id"),
    column(TRACE_EXPERIMENT_COPY),
    column(TRACE_TIMESTAMP_COPY),
    column(TRACE_NUMBER_COPY),
    *(column(name) for name in SPAN_SET_LISTS),
    column("combination_id"),
)
# The store's table of the (trace, feedback name) pairs with two or more valid feedback rows
# (names compared exactly): ``service.store.layout`` defines it, the sync refreshes a trace's
# pairs whenever it copies or deletes the trace's assessments. Every other pair has one row at
# most, so a per-trace count over its rows needs no de-duplication: the store counts those rows
# and groups only the repeated pairs' (``kept_span_sets`` with a ``kept`` that reads it).
REPEATED_FEEDBACK = "insights_repeated_feedback"
repeated_feedback = table(
    REPEATED_FEEDBACK, column("trace_id"), column("name"), column(TRACE_NUMBER_COPY)
)
# The distinct combinations of the three lists, numbered (``trace_span_sets.combination_id``).
SPAN_COMBINATIONS = "insights_span_combinations"
span_combinations = table(
    SPAN_COMBINATIONS,
    column("combination_id"),
    *(column(name) for name in SPAN_SET_LISTS),
)

# The store's rollup of TOOL spans per (trace's experiment, UTC hour of the trace, tool): calls,
# failed calls, calling traces, and the finished calls' durations as one sorted list.
# ``service.store.layout`` defines it; the sync recomputes an (experiment, hour)'s rows whenever
# it copies or deletes spans of that hour's traces. Read through ``kept_span_sets`` where a
# request's buckets are made of whole UTC hours of its window (``SeriesFrame.whole_hours``).
TOOL_HOURS = "insights_tool_hours"
tool_hours = table(
    TOOL_HOURS,
    *(
        column(name)
        for name in (
            TRACE_EXPERIMENT_COPY,
            "hour_ms",
            "tool",
            "invocation_count",
            "error_count",
            "trace_count",
            "n",
            "total",
            "minimum",
            "maximum",
            "sorted_values",
        )
    ),
)

# The store numbers the distinct (key, value) pairs of the user tags it copies (a value, and a
# key not starting with ``mlflow.``): ``trace_tags`` carries the pair's number (NULL on every
# other row), ``TAG_PAIRS`` holds each number's pair. ``service.store.layout`` defines them; the
# sync numbers new pairs as it inserts tag rows, and a pair keeps its number (pairs are only
# added; one no row has any more is never counted, since counts start from the tag rows).
# Tags' queries on the store group by the number and read the pairs of the groups after: a
# million traces' three million user tags group 4 times as fast by one integer as by two strings.
TAG_PAIR_COPY = "insights_tag_pair"
TAG_PAIRS = "insights_tag_pairs"
tag_pairs = table(TAG_PAIRS, column(TAG_PAIR_COPY), column("key"), column("value"))


def tag_pair(tag: Any) -> Any:
    """The store's number of the (key, value) pair of the tag row ``tag`` (``SqlTraceTag`` or an
    alias); NULL for a system tag or a tag without a value. Only in statements that run on the
    store alone (``kept_span_sets``' ``kept``)."""
    return _store_copy(TAG_PAIR_COPY, tag.key)


def per_tag_pair(
    tag: Any,
    where: Sequence[ColumnElement[bool]],
    *aggregates: Label[Any],
    key: str | None = "key",
    value: str = "value",
) -> Select[Any]:
    """The store's form of a grouping of user tag rows by (key, value): the ``aggregates`` of
    the rows of ``tag`` that pass ``where``, grouped by their pair's number (``tag_pair``, an
    integer grouping), and each group's key and value read from ``tag_pairs`` after, labelled
    ``key`` (None: left out) and ``value``. Only in statements that run on the store alone
    (``kept_span_sets``' ``kept``)."""
    number = tag_pair(tag)
    numbered = (
        select(number.label("pair"), *aggregates)
        .where(number.is_not(None), *where)
        .group_by(number)
        .subquery("numbered")
    )
    pair = tag_pairs.c
    names = [pair.key.label(key)] if key is not None else []
    return select(
        *names, pair.value.label(value), *(numbered.c[a.name] for a in aggregates)
    ).join_from(numbered, tag_pairs, pair[TAG_PAIR_COPY] == numbered.c.pair)


# The store's rollups of cost per (trace's experiment, UTC hour): of traces, and of spans per
# model and provider. ``service.store.layout`` defines them; ``service.queries.cost`` reads them.
TRACE_COST_HOURS = "insights_trace_cost_hours"
MODEL_COST_HOURS = "insights_model_cost_hours"


class kept_span_sets(Subquery):
    """``(SELECT ... GROUP BY ...) AS name``, a grouping that counts each trace once, given with
    ``kept``: the same rows computed with the tables the analytics store keeps for it
    (``trace_span_sets``, ``repeated_feedback``).

    The tracking databases run the grouping; the analytics store runs ``kept``. Grouping the
    spans of a million traces by trace is most of such a statement's work (240 of 300 ms for
    correlations over 30 days); the store's lists make it a scan. ``kept`` may add rows the
    statement around must ignore: a trace none of whose values it asked for (masks of 0).

    ``kept`` is part of the cache key: the store's compiled form is ``kept``'s, and its
    parameters (the window, the values) must be those of the statement being run.
    """

    inherit_cache = True
    _cache_key_traversal = [
        *Subquery._traverse_internals,
        ("kept", InternalTraversal.dp_clauseelement),
    ]
    kept: Select[Any]

    @classmethod
    def of(
        cls, grouped: Select[Any] | CompoundSelect[Any], kept: Select[Any], *, name: str
    ) -> kept_span_sets:
        subquery = cls._construct(grouped, name=name)
        subquery.kept = kept
        return subquery


class list_bits(FunctionElement[int]):
    """The sum of ``bits[v]`` over the distinct values ``v`` of a list column of
    ``trace_span_sets``: the ``bit_or`` of those bits, since each value has its own. DuckDB
    only (the store's lists); a BIGINT, 0 for an empty or NULL list.

    The bits are part of the cache key: the compiled form spells them out."""

    inherit_cache = True
    _cache_key_traversal = [
        *FunctionElement._traverse_internals,
        ("bits", InternalTraversal.dp_plain_obj),
    ]
    type = BigInteger()

    def __init__(self, values: Any, bits: dict[str, int]) -> None:
        super().__init__(values)
        # (value, bit) pairs: hashable, so they serve as the cache key as they are.
        self.bits = tuple(bits.items())


class list_values(FunctionElement[Any]):
    """One row per value of a list column of ``trace_span_sets`` (``unnest``). DuckDB only."""

    inherit_cache = True

    def __init__(self, values: Any) -> None:
        super().__init__(values)
        self.type = String()


class list_holds(FunctionElement[bool]):
    """Whether a list column of ``trace_span_sets`` holds ``value`` (``NULL``-safe: false for a
    NULL or empty list). DuckDB only."""

    inherit_cache = True
    type = Boolean()


class list_size(FunctionElement[int]):
    """How many values a list column of ``trace_span_sets`` holds (0 for NULL). DuckDB only."""

    inherit_cache = True
    type = BigInteger()


@compiles(list_values)
@compiles(list_holds)
@compiles(list_size)
@compiles(list_bits)
def _list_bits_default(element: list_bits, compiler: Any, **kw: Any) -> str:
    raise NotImplementedError(
        f"{type(element).__name__} reads the analytics store's lists: DuckDB only"
    )
