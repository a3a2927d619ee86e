"""Tags (API.md §4.4): the tags of the traces in scope.

A trace carries a key when it has a tag row with that key and a value (MLflow's API cannot
store a tag without one). Keys and values are compared, counted and ordered by their code
points on every database (MySQL's collations would merge 'Prod' and 'prod').

System tags (keys starting with ``mlflow.``) are left out unless asked for. MLflow 3.17 keeps
the trace name in ``trace_info.trace_name`` instead of a ``mlflow.traceName`` tag row, but still
shows it to users as that tag (``TraceInfo.tags``, ``search_traces`` filters on
``tags.mlflow.traceName``). So ``mlflow.traceName`` is a system tag here too, read from the
column: listed and analysable with ``include_system_tags``, exactly as MLflow presents it.
"""

from __future__ import annotations

from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlTraceInfo, SqlTraceTag
from sqlalchemy import exists, func, literal, not_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import Subquery

from service.dialects import exact_text, text_equals
from service.dialects.expressions import kept_span_sets, per_tag_pair
from service.errors import does_not_exist
from service.models.tags import (
    TagInfo,
    TagMetrics,
    TagMetricsResponse,
    TagsDiscoveryResponse,
    ValueCount,
)
from service.queries.stats import rate
from service.scope import TraceScope
from service.traces import SYSTEM_TAG_PREFIX, TRACE_NAME_TAG, is_system_tag, not_system_tag

# An alias, so that filter_string subqueries over ``trace_tags`` never correlate with it.
_tag = aliased(SqlTraceTag, name="tag")


def _tags_in_scope(scope: TraceScope, *, include_system: bool, key: str | None = None) -> Subquery:
    """(request_id, tag_key, tag_value) of the tags of the traces in scope."""
    # Membership only: no column of the trace is read (the store answers from its copies).
    rows: Any = select(
        _tag.request_id.label("request_id"),
        _tag.key.label("tag_key"),
        _tag.value.label("tag_value"),
    ).where(
        _tag.value.is_not(None),
        not_(text_equals(_tag.key, TRACE_NAME_TAG)),
        scope.owns(_tag.request_id),
    )
    if key is not None:
        rows = rows.where(text_equals(_tag.key, key))
    if not include_system:
        rows = rows.where(not_system_tag(_tag))
    if not include_system or (key is not None and key != TRACE_NAME_TAG):
        return rows.subquery("tags")
    names = scope.traces(
        SqlTraceInfo.request_id.label("request_id"),
        literal(TRACE_NAME_TAG).label("tag_key"),
        SqlTraceInfo.trace_name.label("tag_value"),
    ).where(SqlTraceInfo.trace_name.is_not(None))
    if key is not None:  # only the trace name is asked for
        return names.subquery("tags")
    return union_all(rows, names).subquery("tags")


async def discovery(
    session: AsyncSession, scope: TraceScope, *, include_system: bool
) -> TagsDiscoveryResponse:
    """Every tag key in scope with its trace count and number of distinct values.

    Round trips: 1. Two-level aggregation: (key, value) pairs with their trace counts first,
    then per key the sum of the counts and the number of pairs; the same numbers as
    ``count(*)`` and ``count(DISTINCT value)`` per key (a trace has at most one row per key),
    but hashed instead of sorting every tag row of the window.
    """
    tags = _tags_in_scope(scope, include_system=include_system)
    pair_key = exact_text(tags.c.tag_key).label("key")
    pair_value = exact_text(tags.c.tag_value).label("value")
    grouped: Any = select(pair_key, pair_value, func.count().label("n")).group_by(
        pair_key, pair_value
    )
    pairs = (
        grouped.subquery("pairs")
        if include_system
        else kept_span_sets.of(grouped, _numbered_pairs(scope), name="pairs")
    )
    stmt = select(
        pairs.c.key,
        func.sum(pairs.c.n).label("trace_count"),
        func.count().label("unique_values"),
    ).group_by(pairs.c.key)
    data = [
        TagInfo(
            tag_key=row.key,
            trace_count=int(row.trace_count),
            unique_values=int(row.unique_values),
        )
        for row in await session.execute(stmt)
    ]
    data.sort(key=lambda info: (-info.trace_count, info.tag_key))
    return TagsDiscoveryResponse(data=data)


async def metrics(
    session: AsyncSession, scope: TraceScope, tag_key: str, *, include_system: bool, limit: int
) -> TagMetricsResponse:
    """The value distribution of one tag key: counts, distinct values, top values.

    Round trips: 1 (top values, with the key's trace count and distinct values computed over
    the groups by window functions); 2 when the key has no trace in scope (to tell an unknown
    key, a 404, from a quiet one).
    """
    if is_system_tag(tag_key) and not include_system:
        raise does_not_exist(
            f"{tag_key!r} is a system tag (its key starts with {SYSTEM_TAG_PREFIX!r}); set "
            "include_system_tags: true to analyse it",
            tag_key=tag_key,
        )
    tags = _tags_in_scope(scope, include_system=include_system, key=tag_key)
    value = exact_text(tags.c.tag_value).label("value")
    grouped: Any = select(value, func.count().label("n")).group_by(value)
    counts = (
        grouped.subquery("value_counts")
        if is_system_tag(tag_key)
        else kept_span_sets.of(grouped, _numbered_pairs(scope, tag_key), name="value_counts")
    )
    stmt = (
        select(
            counts.c.value,
            counts.c.n,
            func.count().over().label("unique_values"),
            func.sum(counts.c.n).over().label("trace_count"),
        )
        .order_by(counts.c.n.desc(), counts.c.value)
        .limit(limit)
    )
    rows = (await session.execute(stmt)).all()
    if not rows and not await _key_exists(session, scope, tag_key):
        ids = ", ".join(str(i) for i in scope.experiment_ids)
        raise does_not_exist(
            f"No trace in experiment(s) {ids} has a tag {tag_key!r}; tags/discovery lists "
            "the tag keys",
            tag_key=tag_key,
        )
    trace_count = int(rows[0].trace_count) if rows else 0
    top = [
        ValueCount(
            value=row.value, count=int(row.n), percentage=rate(int(row.n), trace_count) or 0.0
        )
        for row in rows
    ]
    return TagMetricsResponse(
        data=TagMetrics(
            tag_key=tag_key,
            trace_count=trace_count,
            unique_values=int(rows[0].unique_values) if rows else 0,
            top_values=top,
            other_count=trace_count - sum(v.count for v in top),
        )
    )


def _numbered_pairs(scope: TraceScope, key: str | None = None) -> Select[Any]:
    """The store's form of the user tags in scope counted per (key, value) (``key``: of that
    key only, per value), by their pair numbers (``per_tag_pair``)."""
    where = [scope.owns(_tag.request_id)]
    if key is not None:
        where.append(text_equals(_tag.key, key))
    return per_tag_pair(_tag, where, func.count().label("n"), key="key" if key is None else None)


async def _key_exists(session: AsyncSession, scope: TraceScope, tag_key: str) -> bool:
    """Whether any trace of the listed experiments carries the key, any window."""
    in_experiments: ColumnElement[bool] = SqlTraceInfo.experiment_id.in_(scope.experiment_ids)
    condition: ColumnElement[Any]
    if tag_key == TRACE_NAME_TAG:
        condition = exists().where(in_experiments, SqlTraceInfo.trace_name.is_not(None))
    else:
        condition = exists().where(
            _tag.request_id == SqlTraceInfo.request_id,
            in_experiments,
            text_equals(_tag.key, tag_key),
            _tag.value.is_not(None),
        )
    return bool((await session.execute(select(condition))).scalar())
