"""Correlations (API.md §4.6): which values go with a slice of the traces in scope.

The slice (the request's filter_string) is compared with every value of the requested kinds
(each status, span type, tool used, tool with a failing call, tag value and value of a boolean or
string feedback name) by NPMI, over the traces in scope (experiments and window). Each kind is
one grouped query that counts, per value, the traces in scope with it and how many of those are
in the slice, so the number of round trips never grows with the number of values:

    SELECT value, COUNT(*), SUM(in_slice) FROM <traces in scope, flagged> JOIN <rows> GROUP BY value

The statuses' query gives the totals too (its sums), and span types and tools share one pass
over the spans in scope (the spans are the largest table, read in full at long windows).

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

from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlSpan, SqlTraceInfo, SqlTraceTag
from sqlalchemy import and_, case, func, literal, null, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.selectable import Subquery

from service import dimension_catalog as catalog
from service.dialects import exact_text, json_text_value, text_equals
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
from service.npmi import npmi
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


@dataclass(frozen=True)
class Flagged:
    """The traces in scope as a subquery, each flagged ``in_slice`` 1 or 0, and what the kind
    queries need to know besides."""

    traces: Subquery
    include_system_tags: bool
    typings: Mapping[str, FeedbackTyping]
    scope: TraceScope

    @property
    def in_slice(self) -> ColumnElement[int]:
        return self.traces.c.in_slice


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
        Candidate("status", str(value), int(count), int(joint))
        for value, count, joint in await session.execute(stmt)
    ]


async def _spans(
    session: AsyncSession, flagged: Flagged, *, types: bool, tools: bool
) -> list[Candidate]:
    """Each span type, each tool used and each tool with a failing call, counted once per
    trace: one pass over the spans in scope whatever of them is asked for. One round trip.

    The spans in scope are read once (a CTE). Per trace, one row per span type (``first`` 1:
    the type's traces are counted on these rows) and, for TOOL spans, one row per tool name
    with whether a call of it failed. Two groupings of the same rows, where one grouping and a
    window function marking each (trace, type)'s first row cost twice as much on the store.
    """
    t, span = flagged.traces, aliased(SqlSpan)
    is_tool = text_equals(span.type, TOOL_SPAN_TYPE)
    # A span's experiment is its trace's (MLflow writes it from the trace): joining by trace
    # alone selects the same spans, and leaves the planner free to choose its access path.
    in_scope = (
        select(
            t.c.request_id.label("request_id"),
            t.c.in_slice.label("in_slice"),
            exact_text(span.type).label("v"),
            case((is_tool, exact_text(span.name)), else_=None).label("tool"),
            case((text_equals(span.status, SPAN_ERROR), 1), else_=0).label("failed"),
        )
        .select_from(t)
        .join(span, span.trace_id == t.c.request_id)
        .where(flagged.scope.window_of(span.trace_id))
    )
    in_scope = in_scope.where(span.type.is_not(None) if types else is_tool)
    rows = in_scope.cte("span_rows").c
    # Tools first: a UNION's column types are its first part's (MySQL's exact text is bytes
    # until decoded by that type).
    parts = []
    if tools:
        parts.append(
            select(
                rows.v,
                rows.tool,
                func.max(rows.in_slice).label("in_slice"),
                func.max(rows.failed).label("failed"),
                literal(0).label("first"),
            )
            .where(rows.tool.is_not(None))
            .group_by(rows.request_id, rows.v, rows.tool)
        )
    if types:
        parts.append(
            select(
                rows.v,
                null().label("tool"),
                func.max(rows.in_slice).label("in_slice"),
                literal(0).label("failed"),
                literal(1).label("first"),
            ).group_by(rows.request_id, rows.v)
        )
    per_trace = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("per_trace")
    p = per_trace.c

    def joint(flag: Any) -> Any:
        return _sum(case((and_(flag == 1, p.in_slice == 1), 1), else_=0))

    stmt = select(
        p.v,
        p.tool,
        func.count(),
        _sum(p.in_slice),
        _sum(p.failed),
        joint(p.failed),
        _sum(p.first),
        joint(p.first),
    ).group_by(p.v, p.tool)
    candidates = []
    span_types: dict[str, tuple[int, int]] = {}
    for row in await session.execute(stmt):
        value, name, count, in_slice, failed_count, failed_joint, firsts, first_joint = row
        if types:
            before = span_types.get(str(value), (0, 0))
            span_types[str(value)] = (before[0] + int(firsts), before[1] + int(first_joint))
        if tools and name is not None:
            candidates.append(Candidate("tool", str(name), int(count), int(in_slice)))
            if failed_count:
                candidates.append(
                    Candidate("tool_error", str(name), int(failed_count), int(failed_joint))
                )
    candidates += [Candidate("span_type", k, c, j) for k, (c, j) in span_types.items()]
    return candidates


async def _tags(session: AsyncSession, flagged: Flagged) -> list[Candidate]:
    """Each tag key=value (a trace has one value per key). One round trip."""
    t, tag = flagged.traces, aliased(SqlTraceTag)
    key, value = exact_text(tag.key).label("k"), exact_text(tag.value).label("v")
    stmt = (
        select(key, value, func.count(), _sum(t.c.in_slice))
        .select_from(t)
        .join(tag, tag.request_id == t.c.request_id)
        .where(tag.value.is_not(None), flagged.scope.window_of(tag.request_id))
        .group_by(key, value)
    )
    if not flagged.include_system_tags:
        stmt = stmt.where(not_system_tag(tag))
    return [
        Candidate("tag", f"{k}={v}", int(count), int(joint))
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

    def pairs(a: Any, *joins: tuple[Any, ColumnElement[bool]], where: Sequence[Any]) -> Any:
        # A boolean name's values have one truth each; any other stored value (possible only
        # on a judge failure, which does not type the name) is no value of the name.
        truth = case((is_true(a), TRUE), (is_false(a), FALSE), else_=None)
        boolean_name = NameMatch.COLLATION.one_of(a.name, boolean)
        value = exact_text(case((boolean_name, truth), else_=json_text_value(a.value)))
        stmt = select(
            t.c.request_id.label("request_id"),
            a.name.label("name"),
            value.label("v"),
            t.c.in_slice.label("in_slice"),
        ).select_from(t)
        for target, on in joins:
            stmt = stmt.join(target, on)
        named = NameMatch.COLLATION.one_of(a.name, boolean + strings)
        return stmt.where(*is_feedback(a), has_value(a), named, *where)

    direct = aliased(SqlAssessments)
    shared, sibling = aliased(SqlAssessments), aliased(SqlTraceInfo)
    both = union_all(
        pairs(
            direct,
            (direct, direct.trace_id == t.c.request_id),
            where=(flagged.scope.window_of(direct.trace_id),),
        ),
        # A feedback logged for a whole session counts for each trace of the session.
        pairs(
            shared,
            (sibling, same_session(sibling, t.c.session_id, t.c.experiment_id)),
            (shared, shared.trace_id == sibling.request_id),
            where=(t.c.session_id.is_not(None), *is_session_assessment(shared)),
        ),
    ).subquery("per_row")
    # Once per trace: a grouping by (trace, name, value), which the planner may hash, rather
    # than the UNION's duplicate removal over every column (a sort on PostgreSQL).
    r = both.c
    per_trace = (
        select(r.name, r.v, func.max(r.in_slice).label("in_slice"))
        .where(r.v.is_not(None))
        .group_by(r.request_id, r.name, r.v)
        .subquery("per_trace")
    )
    p = per_trace.c
    stmt = select(p.name, p.v, func.count(), _sum(p.in_slice)).group_by(p.name, p.v)
    candidates = []
    for name, value, count, joint in await session.execute(stmt):
        typing = typings.get(str(name))
        label = _boolean_label(typing, str(value)) if str(name) in boolean else str(value)
        candidates.append(Candidate("assessment", f"{name}={label}", int(count), int(joint)))
    return candidates


def _boolean_label(typing: FeedbackTyping | None, truth: str) -> str:
    yes, no = catalog.boolean_values(typing) if typing else (TRUE, FALSE)
    return yes if truth == TRUE else no


KindQuery = Callable[[AsyncSession, Flagged], Coroutine[Any, Any, list[Candidate]]]
KIND_QUERIES: Final[dict[str, KindQuery]] = {
    "tags": _tags,
    "assessments": _assessments,
}
SPAN_KINDS: Final = ("span_types", "tools")


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
    sums are the totals), one for the spans (span types and tools), one per other kind asked
    for, and one to type the feedback names when assessments are asked for; at most five,
    whatever the number of values."""
    slice_clauses, scope = scope.clauses, scope.unfiltered()
    # Session feedback counts within one experiment in the slice, as this endpoint always did.
    slice_predicates = predicates(slice_clauses)
    asked = set(kinds)
    typings = (
        await feedback_typing(session, scope, match=NameMatch.COLLATION)
        if "assessments" in asked
        else {}
    )
    flagged = Flagged(flag_traces(scope, slice_predicates), include_system_tags, typings, scope)
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
    rows = []
    for c in candidates:
        if (c.dimension, c.value) in pins or c.joint < min_count:
            continue
        scores = npmi(c.joint, slice_count, c.count, total)
        rows.append(
            CorrelationRow(
                dimension=c.dimension,
                value=c.value,
                npmi_score=scores.npmi_score,
                npmi_smoothed=scores.npmi_smoothed,
                trace_count=c.joint,
                percentage_of_slice=rate(c.joint, slice_count),
                percentage_of_total=rate(c.count, total),
                strength=scores.strength,
            )
        )
    rows.sort(key=_order)
    return CorrelationsResponse(slice_count=slice_count, total_count=total, data=rows[:limit])


def _order(row: CorrelationRow) -> tuple[Any, ...]:
    score = row.npmi_score
    return (score is None, -(score or 0.0), -row.trace_count, row.dimension, row.value)
