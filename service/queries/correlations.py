"""Correlations (API.md §4.6): which values go with a slice of the traces in scope.

The slice (the request's filter_string) is compared with every value of the requested kinds
(each status, span type, tool used, tool with a failing call, tag value and value of a boolean or
string feedback name) by NPMI, over the traces in scope (experiments and window). Each kind is
one grouped query that counts, per value, the traces in scope with it and how many of those are
in the slice, so the number of round trips never grows with the number of values:

    SELECT value, COUNT(*), SUM(in_slice) FROM <traces in scope, flagged> JOIN <rows> GROUP BY value

The statuses' query gives the totals too (its sums). Span types and tools share two queries
over the spans in scope (the largest table, read in full at long windows): their names, then one
row per trace with a bit per name (``_spans``).

Values the slice pins are left out: a value is pinned when the slice has an equality clause
(``=``, or ``IN`` with a single value) on the same thing, so every slice trace has the value by
construction. ``status = 'ERROR'`` pins the status ERROR, ``span.type = 'LLM'`` the span type
LLM, ``span.type = 'TOOL' AND span.name = 'x'`` the tool x (and with ``span.status = 'ERROR'``
also "x failed"), ``tags.k = 'v'`` the tag value k=v, ``feedback.n = 'v'`` the value v of n
(for a boolean name, the value of the same truth). ``!=``, ``LIKE``, ranges and lists pin nothing.

Numeric feedback names have no values to list here (their dimensions take a threshold): use
dimensions/calculate-npmi with ``assessment.<name>`` and a threshold for them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlSpan, SqlTraceInfo, SqlTraceTag
from sqlalchemy import (
    BigInteger,
    and_,
    case,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, join
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import Subquery

from service import dimension_catalog as catalog
from service.dialects import bit_or_agg, exact_text, json_text_value, text_equals
from service.dialects.expressions import (
    kept_span_sets,
    list_bits,
    list_values,
    per_tag_pair,
    repeated_feedback,
    span_combinations,
    trace_number,
    trace_span_sets,
)
from service.errors import InsightsError
from service.feedback_types import (
    FEEDBACK,
    FeedbackTyping,
    NameMatch,
    feedback_typing,
    has_value,
    is_false,
    is_feedback,
    is_true,
)
from service.filters import Clause, predicates
from service.filters.keys import STATUS, TRACE_NAME, Assessment, SpanColumn, TraceTag
from service.models.correlations import CorrelationRow, CorrelationsResponse, RowDimension
from service.npmi import npmi, npmi_score
from service.queries.stats import rate
from service.scope import TraceScope
from service.traces import (
    SPAN_ERROR,
    TOOL_SPAN_TYPE,
    TRACE_NAME_TAG,
    is_session_assessment,
    not_system_tag,
    same_session,
)

TRUE, FALSE = "true", "false"


@dataclass(frozen=True)
class Candidate:
    dimension: RowDimension
    value: str
    count: int  # traces in scope with the value
    joint: int  # those of them in the slice
    # The row as a dimension of dimensions/calculate-npmi: its subject (tool name, tag key,
    # feedback name; "" for status and span type) and value parameter.
    subject: str = ""
    parameter: str = ""

    def dimension_ref(self) -> catalog.DimensionRef:
        return catalog.DimensionRef(_DIMENSION_KINDS[self.dimension], self.subject)


@dataclass(frozen=True)
class Flagged:
    """The traces in scope as a subquery, each flagged ``in_slice`` 1 or 0, and what the kind
    queries need to know besides."""

    traces: Subquery
    include_system_tags: bool
    typings: Mapping[str, FeedbackTyping]
    scope: TraceScope
    slice_predicates: tuple[ColumnElement[bool], ...]
    # Values seen in fewer slice traces are never scored: a kind query may leave them out.
    min_count: int = 0

    @property
    def in_slice(self) -> ColumnElement[int]:
        return self.traces.c.in_slice

    def slice_traces(self) -> Subquery:
        """``request_id`` of the traces in scope and in the slice: the smaller side to join
        rows to (left outer) where membership in scope is decided without the traces."""
        return (
            self.scope.traces(SqlTraceInfo.request_id.label("request_id"))
            .where(*self.slice_predicates)
            .subquery("in_slice")
        )

    def slice_numbers(self) -> Select[Any]:
        """The store's numbers of the traces in scope and in the slice (``trace_number``): what
        the store's statements match rows to the slice by (an integer semi-join, where the ids'
        took twice as long: 3M tags over 30 days of 1M traces)."""
        number = trace_number(SqlTraceInfo.request_id)
        return self.scope.traces(number).where(*self.slice_predicates)


def flag_traces(scope: TraceScope, slice_predicates: Sequence[ColumnElement[bool]]) -> Subquery:
    """request_id, experiment_id, session_id, status (exact) and in_slice of the traces in
    scope. The slice's EXISTS clauses stay inside this subquery, away from joined rows."""
    in_slice = case((and_(true(), *slice_predicates), 1), else_=0)
    return scope.traces(
        SqlTraceInfo.request_id.label("request_id"),
        SqlTraceInfo.experiment_id.label("experiment_id"),
        SqlTraceInfo.session_id.label("session_id"),
        exact_text(SqlTraceInfo.status).label("status"),
        in_slice.label("in_slice"),
    ).subquery("flagged")


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


# --------------------------------------------------------------------------------------------
# One grouped query per kind
# --------------------------------------------------------------------------------------------


async def _statuses(session: AsyncSession, flagged: Flagged) -> list[Candidate]:
    """Each status in scope. One round trip, which also gives the totals (their sums)."""
    t = flagged.traces
    stmt = select(t.c.status, func.count(), _sum(t.c.in_slice)).group_by(t.c.status)
    return [
        Candidate("status", str(value), int(count), int(joint), parameter=str(value))
        for value, count, joint in await session.execute(stmt)
    ]


# Values per mask column: each value is one bit of a BIGINT, below the sign bit.
MASK_BITS: Final = 62


def _chunks(vocabulary: Sequence[str]) -> list[dict[str, int]]:
    """``vocabulary`` in chunks of ``MASK_BITS`` values, each value with its bit."""
    return [
        {v: 1 << bit for bit, v in enumerate(vocabulary[i : i + MASK_BITS])}
        for i in range(0, len(vocabulary), MASK_BITS)
    ]


def _masks(value: ColumnElement[Any], vocabulary: Sequence[str]) -> list[ColumnElement[int]]:
    """One BIGINT per ``MASK_BITS`` values of ``vocabulary``: the bit of ``value``, or 0."""
    zero = literal(0, type_=BigInteger())
    return [
        case(
            {v: literal(bit, type_=BigInteger()) for v, bit in chunk.items()},
            value=value,
            else_=zero,
        )
        for chunk in _chunks(vocabulary)
    ]


def _set_bits(masks: Sequence[int], vocabulary: Sequence[str]) -> list[str]:
    """The values of ``vocabulary`` whose bits ``masks`` (from ``_masks``) have set."""
    values = []
    for chunk, mask in enumerate(masks):
        bits = int(mask or 0)
        while bits:
            lowest = bits & -bits  # one set bit at a time: rows set few of their chunk's bits
            values.append(vocabulary[chunk * MASK_BITS + lowest.bit_length() - 1])
            bits ^= lowest
    return values


def _tool_of(span: Any) -> ColumnElement[Any]:
    """The tool a span calls: its name when its type is exactly 'TOOL', else NULL."""
    return case((text_equals(span.type, TOOL_SPAN_TYPE), exact_text(span.name)), else_=None)


def span_vocabulary(
    scope: TraceScope, span: Any, in_scope: Sequence[ColumnElement[bool]]
) -> kept_span_sets:
    """The span types (``v``) and tool names (``tool``, with ``v`` 'TOOL') of the spans
    ``in_scope``, as rows whose ``v`` and non-NULL ``tool`` values are the two vocabularies.

    The tracking databases group the spans; the store unnests the lists of the span-set
    combinations its traces in scope have (a few thousand, not millions of spans), which may
    list types ``in_scope`` would leave out (the caller then asks for none).
    """
    tool = _tool_of(span)
    span_type = exact_text(span.type)
    grouped = select(span_type.label("v"), tool.label("tool")).where(*in_scope)
    sets, combos = trace_span_sets.c, span_combinations.c
    present = combos.combination_id.in_(
        select(sets.combination_id).where(scope.owns(sets.trace_id))
    )
    listed = union_all(
        select(list_values(combos.span_types).label("v"), null().label("tool")).where(present),
        select(
            literal(TOOL_SPAN_TYPE).label("v"), list_values(combos.tool_names).label("tool")
        ).where(present),
    ).subquery("listed")
    kept = select(listed.c.v, listed.c.tool).distinct()
    return kept_span_sets.of(grouped.group_by(span_type, tool), kept, name="vocabulary")


def span_mask_counts(
    scope: TraceScope,
    span: Any,
    in_scope: Sequence[ColumnElement[bool]],
    type_list: Sequence[str],
    tool_list: Sequence[str],
    slice_traces: Subquery,
    slice_numbers: Select[Any],
) -> kept_span_sets:
    """Traces with spans ``in_scope`` counted (``traces``) per combination of their masks and
    ``in_slice`` (1 when ``slice_traces.request_id`` holds the trace; on the store, when
    ``slice_numbers`` holds its number). Per ``MASK_BITS`` values
    the masks are ``type_<i>`` of a trace's span types, ``tool_<i>`` of its tools and
    ``failed_<i>`` of its tools with a failing call (bits of ``type_list`` and ``tool_list``,
    from ``_chunks``).

    The tracking databases fold the spans into one row per trace (``bit_or``); the store counts
    its traces per span-set combination (an integer grouping of a million rows) and computes
    the masks from the lists of each combination. The store may add rows whose masks are all 0.
    """
    sets, combos = trace_span_sets.c, span_combinations.c
    tool = _tool_of(span)
    failed = case((text_equals(span.status, SPAN_ERROR), tool), else_=None)
    # Per part: the span value it masks, the store's list of the same values, the vocabulary.
    parts = {
        "type": (exact_text(span.type), combos.span_types, type_list),
        "tool": (tool, combos.tool_names, tool_list),
        "failed": (failed, combos.failed_tool_names, tool_list),
    }
    grouped_columns, kept_columns = [], []
    for part, (value, values, names) in parts.items():
        for i, (mask, bits) in enumerate(zip(_masks(value, names), _chunks(names), strict=True)):
            grouped_columns.append(bit_or_agg(mask).label(f"{part}_{i}"))
            kept_columns.append(list_bits(values, bits).label(f"{part}_{i}"))

    per_trace = (
        select(span.trace_id.label("trace_id"), *grouped_columns)
        .where(*in_scope)
        .group_by(span.trace_id)
        .subquery("per_trace")
    )
    flag = case((slice_traces.c.request_id.is_not(None), 1), else_=0)
    masks = [c for c in per_trace.c if c.name != "trace_id"]
    grouped = (
        select(*masks, flag.label("in_slice"), func.count().label("traces"))
        .select_from(per_trace)
        .outerjoin(slice_traces, slice_traces.c.request_id == per_trace.c.trace_id)
        .group_by(*masks, flag)
    )

    # Flagged in a subquery of its own, grouped by name: a grouping by the expression made
    # DuckDB run the semi-join twice.
    sliced = case((trace_number(sets.trace_id).in_(slice_numbers), 1), else_=0)
    flagged = (
        select(sets.combination_id, sliced.label("in_slice"))
        .where(scope.owns(sets.trace_id))
        .subquery("flagged_sets")
    )
    f = flagged.c
    per_combination = (
        select(f.combination_id, f.in_slice, func.count().label("traces"))
        .group_by(f.combination_id, f.in_slice)
        .subquery("per_combination")
    )
    c = per_combination.c
    on = span_combinations.c.combination_id == c.combination_id
    with_masks = (
        select(*kept_columns, c.in_slice, c.traces)
        .select_from(per_combination.join(span_combinations, on))
        .subquery("combination_masks")
    )
    w = with_masks.c
    kept_masks = [w[label.name] for label in kept_columns]
    kept = select(*kept_masks, w.in_slice, func.sum(w.traces).label("traces")).group_by(
        *kept_masks, w.in_slice
    )
    return kept_span_sets.of(grouped, kept, name="mask_counts")


async def _spans(
    session: AsyncSession, flagged: Flagged, *, types: bool, tools: bool
) -> list[Candidate]:
    """Each span type, each tool used and each tool with a failing call, counted once per
    trace. Two round trips, whatever the number of values.

    The first lists the span types and tool names in scope (``span_vocabulary``). The second
    gives each of them a bit and counts the traces per combination of the masks of their span
    types, tools and tools with a failing call, and of slice membership
    (``span_mask_counts``); Python adds the counts up per bit. One grouping by trace, where a
    grouping per (trace, type) and per (trace, tool) over the same spans cost 3-4 times as much
    (3.3M and 1.4M groups for 1M traces at 30 days).
    """
    span = aliased(SqlSpan)
    scope = flagged.scope
    is_tool = text_equals(span.type, TOOL_SPAN_TYPE)
    # Spans only count through their trace's membership: the store answers it from its copies.
    in_scope = [scope.owns(span.trace_id), span.type.is_not(None) if types else is_tool]
    vocabulary = span_vocabulary(scope, span, in_scope)
    type_names: set[str] = set()
    tool_names: set[str] = set()
    for value, name in await session.execute(select(vocabulary.c.v, vocabulary.c.tool)):
        type_names.add(str(value))
        if name is not None:
            tool_names.add(str(name))
    type_list = sorted(type_names) if types else []
    tool_list = sorted(tool_names) if tools else []
    if not type_list and not tool_list:
        return []

    counted = span_mask_counts(
        scope,
        span,
        in_scope,
        type_list,
        tool_list,
        flagged.slice_traces(),
        flagged.slice_numbers(),
    )
    # Per dimension: its mask columns (one per chunk of its vocabulary) and its vocabulary.
    parts: list[tuple[RowDimension, str, list[str]]] = [
        ("span_type", "type", type_list),
        ("tool", "tool", tool_list),
        ("tool_error", "failed", tool_list),
    ]
    dimensions = [
        (dimension, [f"{part}_{i}" for i in range(len(_chunks(names)))], names)
        for dimension, part, names in parts
    ]
    # Traces (all, in the slice) per dimension and mask first: thousands of rows share a few
    # hundred masks per dimension, whose bits are then read once each.
    # Thousands of rows (4.5K over 30 days of 1M traces), read column by column: each
    # dimension's masks zipped into keys, not indexed row by row.
    per_mask: dict[tuple[RowDimension, tuple[int, ...]], list[int]] = {}
    result = await session.execute(select(counted))
    position = {name: i for i, name in enumerate(result.keys())}
    columns = list(zip(*result.all(), strict=True)) or [() for _ in position]
    per_row = [int(t) for t in columns[position["traces"]]]
    joint_per_row = [
        t * int(s) for t, s in zip(per_row, columns[position["in_slice"]], strict=True)
    ]
    for dimension, names, _ in dimensions:
        if not names:
            continue  # a dimension not asked for, or with no values: no masks
        keys = zip(*(columns[position[c]] for c in names), strict=True)
        for key, n, in_slice in zip(keys, per_row, joint_per_row, strict=True):
            total = per_mask.setdefault((dimension, key), [0, 0])
            total[0] += n
            total[1] += in_slice
    vocabularies = {dimension: names for dimension, _, names in dimensions}
    counts: dict[tuple[RowDimension, str], list[int]] = {}
    for (dimension, masks), (traces, joint) in per_mask.items():
        for name in _set_bits(masks, vocabularies[dimension]):
            total = counts.setdefault((dimension, name), [0, 0])
            total[0] += traces
            total[1] += joint
    return [
        Candidate(dim, name, c, j, *_SPAN_DIMENSION_PARAMETERS[dim](name))
        for (dim, name), (c, j) in sorted(counts.items())
    ]


async def _tags(session: AsyncSession, flagged: Flagged) -> list[Candidate]:
    """Each tag key=value (a trace has one value per key). One round trip.

    The tags in scope by membership, each joined (left outer) to the slice's traces only: the
    store reads no ``trace_info`` for the scope, and the join's other side is the slice, not
    every trace in scope.
    """
    tag, in_slice = aliased(SqlTraceTag), flagged.slice_traces()
    key, value = exact_text(tag.key).label("k"), exact_text(tag.value).label("v")
    tags = [tag.value.is_not(None), flagged.scope.owns(tag.request_id)]
    if not flagged.include_system_tags:
        tags.append(not_system_tag(tag))
    joint = case((in_slice.c.request_id.is_not(None), 1), else_=0)
    grouped = (
        select(key, value, func.count().label("traces"), _sum(joint).label("joint"))
        .select_from(tag)
        .outerjoin(in_slice, in_slice.c.request_id == tag.request_id)
        .where(*tags)
        .group_by(key, value)
    )
    # The store flags each tag by ``IN (the slice's traces)``, a semi-join (30 days of 1M
    # traces, 3M tags: 143 → 103 ms), by the traces' numbers; MariaDB may run such an IN once
    # per row.
    flag = case((trace_number(tag.request_id).in_(flagged.slice_numbers()), 1), else_=0)
    if flagged.include_system_tags:
        kept = (
            select(key, value, func.count().label("traces"), _sum(flag).label("joint"))
            .where(*tags)
            .group_by(key, value)
        )
    else:
        # User tags by the store's number of their pair (30 days of 1M traces, 3M tags:
        # 109 -> 53 ms), the pairs read after.
        where = [flagged.scope.owns(tag.request_id)]
        traces, joint = func.count().label("traces"), _sum(flag).label("joint")
        kept = per_tag_pair(tag, where, traces, joint, key="k", value="v")
    counted = kept_span_sets.of(grouped, kept, name="tag_counts")
    stmt = select(counted.c.k, counted.c.v, counted.c.traces, counted.c.joint)
    if flagged.min_count > 0:
        # Most tag values have no slice trace over short windows (24 hours of 1M traces: 683
        # of 3,163); rows never scored are not fetched. Filtered outside the grouping, not by
        # HAVING: a HAVING repeats the store's IN (the slice's traces), which DuckDB then
        # runs twice (30 days of 1M traces: 149 -> 109 ms).
        least = literal(flagged.min_count, BigInteger())  # PostgreSQL would infer int4
        stmt = stmt.where(counted.c.joint >= least)
    return [
        Candidate("tag", f"{k}={v}", int(count), int(joint), subject=k, parameter=v)
        for k, v, count, joint in await session.execute(stmt)
    ]


async def _assessments(session: AsyncSession, flagged: Flagged) -> list[Candidate]:
    """Each value of each boolean or string feedback name in scope, counted once per trace
    (session feedback included). One round trip, none without such names."""
    typings = flagged.typings
    boolean = [n for n, t in typings.items() if t.in_scope and t.type == "boolean"]
    strings = [n for n, t in typings.items() if t.in_scope and t.type == "string"]
    if not boolean and not strings:
        return []
    t = flagged.traces

    def label(a: Any) -> ColumnElement[Any]:
        """The value of a row (``a.name``, ``a.value``: a table's or a subquery's columns)."""
        # A boolean name's values have one truth each; any other stored value (possible only
        # on a judge failure, which does not type the name) is no value of the name.
        truth = case((is_true(a), TRUE), (is_false(a), FALSE), else_=None)
        boolean_name = NameMatch.COLLATION.one_of(a.name, boolean)
        return exact_text(case((boolean_name, truth), else_=json_text_value(a.value)))

    def pairs(a: Any, trace: Any, in_slice: Any, rows: Any, *where: Any, raw: bool = False) -> Any:
        """Rows of (request_id, name, v, in_slice); ``raw``: the stored ``value`` instead of v."""
        value = a.value.label("value") if raw else label(a).label("v")
        stmt = select(
            trace.label("request_id"),
            a.name.label("name"),
            value,
            in_slice.label("in_slice"),
        ).select_from(rows)
        named = NameMatch.COLLATION.one_of(a.name, boolean + strings)
        return stmt.where(*is_feedback(a), has_value(a), named, *where)

    # A trace's own feedback: by membership, flagged by ``IN (the slice's traces)``. (Joined
    # left outer to them, DuckDB built its hash table on the 826K feedback rows of 30 days
    # instead of the slice's traces: 410 → 280 ms.)
    direct, in_slice = aliased(SqlAssessments), flagged.slice_traces()
    shared, sibling = aliased(SqlAssessments), aliased(SqlTraceInfo)
    own = pairs(
        direct,
        direct.trace_id,
        case((direct.trace_id.in_(select(in_slice.c.request_id)), 1), else_=0),
        direct,
        flagged.scope.owns(direct.trace_id),
    )
    # The store's: flagged by the traces' numbers, labelled after grouping (below).
    own_kept = pairs(
        direct,
        direct.trace_id,
        case((trace_number(direct.trace_id).in_(flagged.slice_numbers()), 1), else_=0),
        direct,
        flagged.scope.owns(direct.trace_id),
        raw=True,
    )
    # A feedback logged for a whole session counts for each trace of the session.
    sessions = pairs(
        shared,
        t.c.request_id,
        t.c.in_slice,
        join(t, sibling, same_session(sibling, t.c.session_id, t.c.experiment_id)).join(
            shared, shared.trace_id == sibling.request_id
        ),
        t.c.session_id.is_not(None),
        *is_session_assessment(shared),
    )
    counted = kept_span_sets.of(
        _values_per_trace(own, sessions),
        _values_per_trace_kept(
            own_kept.subquery("own_rows"), sessions.subquery("session_rows"), label
        ),
        name="counted",
    )
    stmt = select(counted.c.name, counted.c.v, counted.c.traces, counted.c.joint)
    candidates = []
    for name, value, count, joint in await session.execute(stmt):
        typing = typings.get(str(name))
        label = _boolean_label(typing, str(value)) if str(name) in boolean else str(value)
        candidates.append(
            Candidate("assessment", f"{name}={label}", int(count), int(joint), str(name), label)
        )
    return candidates


def _counted(rows: Subquery) -> Select[Any]:
    """Traces (``traces``) and slice traces (``joint``) per (name, value) of rows that hold
    each trace's value once."""
    r = rows.c
    return select(
        r.name, r.v, func.count().label("traces"), _sum(r.in_slice).label("joint")
    ).group_by(r.name, r.v)


def _once_per_trace(rows: Subquery) -> Subquery:
    """Rows of (request_id, name, v, in_slice), each (trace, name, value) once: a grouping,
    which the planner may hash, rather than a UNION's duplicate removal over every column (a
    sort on PostgreSQL)."""
    r = rows.c
    return (
        select(r.name, r.v, func.max(r.in_slice).label("in_slice"))
        .where(r.v.is_not(None))
        .group_by(r.request_id, r.name, r.v)
        .subquery("per_trace")
    )


def _values_per_trace(own: Select[Any], sessions: Select[Any]) -> Select[Any]:
    """The tracking databases: every row grouped by (trace, name, value), then counted."""
    both = union_all(own, sessions).subquery("per_row")
    return _counted(_once_per_trace(both))


def _values_per_trace_kept(
    own: Subquery, sessions: Subquery, label: Callable[[Any], ColumnElement[Any]]
) -> Select[Any]:
    """The store: the same counts, grouping by trace only the rows that can repeat a trace's
    value. ``own`` holds the stored ``value`` of each row, ``label`` maps (name, value) to the
    row's value.

    A trace's own row is alone in its (trace, name) unless the pair is in the store's
    ``repeated_feedback`` or a session feedback gives the trace the same name. One grouping by
    (name, stored value, the trace where the pair may repeat, else NULL) counts the others
    together and those once per trace; the few groups are then labelled and grouped again by
    their value (a boolean name's ``true`` and ``"yes"`` are one value), with the session rows.
    (Labelling every row before grouping: 58 → 35 ms over the 826K rows of 30 days. Two
    groupings, of the rows alone and of the rows that may repeat, made DuckDB hold every row in
    memory for both: 30 days of 10M traces wrote 1.1 GB to disk.)
    """
    o, s, pairs = own.c, sessions.c, repeated_feedback.c
    repeats = or_(
        exists().where(pairs.trace_id == o.request_id, pairs.name == o.name),
        exists().where(s.request_id == o.request_id, s.name == o.name),
    )
    repeat_trace = case((repeats, o.request_id), else_=null()).label("repeat_trace")
    own_flagged = select(o.name, o.value, o.in_slice, repeat_trace).subquery("own_flagged")
    f = own_flagged.c
    own_grouped = (
        select(
            f.name,
            f.value,
            f.repeat_trace,
            func.count().label("n"),
            func.sum(f.in_slice).label("in_slice_sum"),
            func.max(f.in_slice).label("in_slice_any"),
        )
        .group_by(f.name, f.value, f.repeat_trace)
        .subquery("own_grouped")
    )
    g = own_grouped.c
    rows = union_all(
        select(g.name, label(g).label("v"), g.repeat_trace, g.n, g.in_slice_sum, g.in_slice_any),
        select(
            s.name,
            s.v,
            s.request_id.label("repeat_trace"),
            literal(1, BigInteger()).label("n"),
            s.in_slice.label("in_slice_sum"),
            s.in_slice.label("in_slice_any"),
        ),
    ).subquery("feedback_rows")
    c = rows.c
    grouped = (
        select(
            c.name,
            c.v,
            c.repeat_trace,
            func.sum(c.n).label("n"),
            func.sum(c.in_slice_sum).label("in_slice_sum"),
            func.max(c.in_slice_any).label("in_slice_any"),
        )
        .where(c.v.is_not(None))
        .group_by(c.name, c.v, c.repeat_trace)
        .subquery("grouped_rows")
    )
    g = grouped.c
    alone = g.repeat_trace.is_(None)
    return select(
        g.name,
        g.v,
        _sum(case((alone, g.n), else_=1)).label("traces"),
        _sum(case((alone, g.in_slice_sum), else_=g.in_slice_any)).label("joint"),
    ).group_by(g.name, g.v)


def _boolean_label(typing: FeedbackTyping | None, truth: str) -> str:
    yes, no = catalog.boolean_values(typing) if typing else (TRUE, FALSE)
    return yes if truth == TRUE else no


KindQuery = Callable[[AsyncSession, Flagged], Coroutine[Any, Any, list[Candidate]]]
KIND_QUERIES: Final[dict[str, KindQuery]] = {
    "tags": _tags,
    "assessments": _assessments,
}
SPAN_KINDS: Final = ("span_types", "tools")


# The kind of dimension (dimensions/calculate-npmi) each row is.
_DIMENSION_KINDS: Final[dict[str, catalog.Kind]] = {
    "status": catalog.Kind.STATUS,
    "span_type": catalog.Kind.SPAN_TYPE,
    "tool": catalog.Kind.TOOL,
    "tool_error": catalog.Kind.TOOL,
    "tag": catalog.Kind.TAG,
    "assessment": catalog.Kind.ASSESSMENT,
}
# (subject, value parameter) of a span row's dimension, from its value.
_SPAN_DIMENSION_PARAMETERS: Final[dict[str, Callable[[str], tuple[str, str]]]] = {
    "span_type": lambda name: ("", name),
    "tool": lambda name: (name, "used"),
    "tool_error": lambda name: (name, "error"),
}


def filter_string_of(c: Candidate, typings: Mapping[str, FeedbackTyping]) -> str | None:
    """MLflow's filter string for the traces that have the row's value: the same string
    dimensions/calculate-npmi gives for that dimension; None where MLflow's syntax cannot say
    it (a tag key or feedback name it cannot quote, a status it does not know)."""
    typing = typings.get(c.subject) if c.dimension == "assessment" else None
    if c.dimension == "assessment" and typing is None:
        return None
    try:
        return catalog.bind(c.dimension_ref(), {"value": c.parameter}, typing).filter_string
    except InsightsError:
        return None


# --------------------------------------------------------------------------------------------
# Values the slice pins
# --------------------------------------------------------------------------------------------


def pinned_values(
    clauses: Sequence[Clause], typings: Mapping[str, FeedbackTyping]
) -> set[tuple[str, str]]:
    """(dimension, value) pairs every slice trace has by construction (see the docstring)."""
    pins: set[tuple[str, str]] = set()
    span: dict[str, str] = {}
    for clause in clauses:
        target, value = clause.key.target, clause.pinned_value()
        if value is None:
            continue
        if target == STATUS:
            pins.add(("status", value))
        elif target == TRACE_NAME:
            # `name`, `tags.mlflow.traceName`, ...: MLflow reads them as this tag.
            pins.add(("tag", f"{TRACE_NAME_TAG}={value}"))
        elif isinstance(target, TraceTag):
            pins.add(("tag", f"{target.key}={value}"))
        elif isinstance(target, SpanColumn):
            span[target.column] = value
        elif isinstance(target, Assessment) and target.assessment_type == FEEDBACK:
            pins |= _feedback_pin(target.name, value, typings.get(target.name))
    if "type" in span:
        pins.add(("span_type", span["type"]))
        if span["type"] == TOOL_SPAN_TYPE and "name" in span:
            pins.add(("tool", span["name"]))
            if span.get("status") == SPAN_ERROR:
                pins.add(("tool_error", span["name"]))
    return pins


def _feedback_pin(name: str, value: str, typing: FeedbackTyping | None) -> set[tuple[str, str]]:
    """A boolean name's value pins the value of the same truth; any other name's, itself."""
    if typing is None or typing.type != "boolean":
        return {("assessment", f"{name}={value}")}
    truth = catalog.BOOLEAN_VALUES.get(value.lower())
    if truth is None:
        return set()
    return {("assessment", f"{name}={_boolean_label(typing, TRUE if truth else FALSE)}")}


# --------------------------------------------------------------------------------------------
# The endpoint
# --------------------------------------------------------------------------------------------


async def correlations(
    session: AsyncSession,
    scope: TraceScope,
    *,
    kinds: Sequence[str],
    limit: int,
    min_count: int,
    include_system_tags: bool,
) -> CorrelationsResponse:
    """The values most correlated with the slice: ``scope``'s filter is the slice, its
    experiments and window the traces compared. Round trips: one for the statuses (whose
    sums are the totals), two for the spans (span types and tools), one per other kind asked
    for, and one to type the feedback names when assessments are asked for; at most six,
    whatever the number of values."""
    slice_clauses, scope = scope.clauses, scope.unfiltered()
    # Session feedback counts within one experiment in the slice, as this endpoint always did.
    slice_predicates = predicates(slice_clauses, window=scope.window)
    asked = set(kinds)
    typings = (
        await feedback_typing(session, scope, match=NameMatch.COLLATION)
        if "assessments" in asked
        else {}
    )
    flagged = Flagged(
        flag_traces(scope, slice_predicates),
        include_system_tags,
        typings,
        scope,
        tuple(slice_predicates),
        # As a bound parameter: no count reaches 2**62, and larger ints overflow BIGINT.
        min(min_count, 2**62),
    )
    statuses = await _statuses(session, flagged)
    total = sum(c.count for c in statuses)
    slice_count = sum(c.joint for c in statuses)
    candidates: list[Candidate] = statuses if "status" in asked else []
    if asked & set(SPAN_KINDS):
        candidates += await _spans(
            session, flagged, types="span_types" in asked, tools="tools" in asked
        )
    for kind, query in KIND_QUERIES.items():
        if kind in asked:
            candidates += await query(session, flagged)
    pins = pinned_values(slice_clauses, typings)
    # Ranked by their NPMI alone, as plain tuples; the smoothed score and the models are
    # computed for the rows shown only (thousands of tool and tag values at 30 days, a few shown).
    ranked = [
        (_order(npmi_score(c.joint, slice_count, c.count, total), c), c)
        for c in candidates
        if (c.dimension, c.value) not in pins and c.joint >= min_count
    ]
    shown = [
        _row(c, slice_count, total, typings) for _, c in heapq.nsmallest(limit, ranked, key=_first)
    ]
    return CorrelationsResponse(slice_count=slice_count, total_count=total, data=shown)


def _row(
    c: Candidate, slice_count: int, total: int, typings: Mapping[str, FeedbackTyping]
) -> CorrelationRow:
    scores = npmi(c.joint, slice_count, c.count, total)
    return CorrelationRow(
        dimension=c.dimension,
        value=c.value,
        npmi_score=scores.npmi_score,
        npmi_smoothed=scores.npmi_smoothed,
        trace_count=c.joint,
        percentage_of_slice=rate(c.joint, slice_count),
        percentage_of_total=rate(c.count, total),
        strength=scores.strength,
        filter_string=filter_string_of(c, typings),
    )


def _first(item: tuple[tuple[Any, ...], Candidate]) -> tuple[Any, ...]:
    return item[0]


def _order(score: float | None, c: Candidate) -> tuple[Any, ...]:
    """Highest score first (undefined last), then more slice traces, then by name."""
    return (score is None, -(score or 0.0), -c.joint, c.dimension, c.value)
