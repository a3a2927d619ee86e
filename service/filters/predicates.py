"""Clauses -> SQLAlchemy predicates on the trace row (``SqlTraceInfo``).

Tag, metadata, span and assessment clauses become correlated ``EXISTS``, never joins, so no
trace row is repeated (``child_exists``: on the analytics store, ``request_id IN (...)``, which
DuckDB runs as one semi-join); values are always bound parameters. See ``service.filters`` for where
MLflow's behaviour, which these predicates reproduce, is surprising.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from mlflow.entities.entity_type import EntityAssociationType
from mlflow.store.tracking.dbmodels.models import (
    SqlAssessments,
    SqlEntityAssociation,
    SqlSpan,
    SqlTraceInfo,
    SqlTraceMetadata,
    SqlTraceTag,
)
from mlflow.store.tracking.utils.trace_analytics import TRACE_ANALYTICS_COLUMNS_BY_METADATA_KEY
from mlflow.tracing.constant import TraceMetadataKey
from sqlalchemy import (
    Float,
    and_,
    false,
    literal,
    not_,
    or_,
    true,
)
from sqlalchemy.sql import ColumnElement

from service.dialects.case_sensitive import text_eq, text_in, text_like, text_ne, text_not_in
from service.dialects.expressions import (
    OPEN_WINDOW,
    TraceWindow,
    child_exists,
    trace_time_within,
)
from service.errors import invalid_parameter
from service.filters.keys import (
    INT64,
    NULL_CHECKS,
    ORDERING,
    Assessment,
    Comparator,
    SpanColumn,
    TraceColumn,
    TraceMetadata,
    TraceTag,
    UsageMetadata,
)
from service.filters.parser import Clause, Value
from service.traces import session_assessment

C = Comparator

# MLflow prunes spans that start well before a `timestamp_ms >`/`>=` bound; same tolerance.
_SPAN_TIMESTAMP_TOLERANCE_MS: Final = 10_000


def predicates(
    clauses: Sequence[Clause],
    *,
    experiment_ids: Sequence[int | str] | None = None,
    window: TraceWindow = OPEN_WINDOW,
) -> list[ColumnElement[bool]]:
    """Predicates on SqlTraceInfo (the trace row) that together select the matching traces.

    ``experiment_ids`` are the experiments the caller searches: MLflow lets a session-level
    assessment count for the session's traces in any of them. Without it, only sessions within
    one experiment are considered.

    ``window`` is the window of the traces the predicates will be applied to, when the caller
    applies them only there: each EXISTS over a trace's own child rows (spans, tags, metadata,
    feedback) repeats it with ``trace_time_within``, which changes no answer (the child rows of
    a trace carry its timestamp) and lets the analytics store skip the rest of the child table.
    """
    return _Builder(list(clauses), _scope_ids(experiment_ids), window).predicates()


# --------------------------------------------------------------------------------------------
# Case-sensitive strings and numbers
# --------------------------------------------------------------------------------------------


def compare_strings(
    column: ColumnElement[Any], comparator: Comparator, value: str | tuple[str, ...]
) -> ColumnElement[bool]:
    """``column <comparator> value`` with MLflow's case rules (dialects.case_sensitive)."""
    if comparator is C.ILIKE:
        return column.ilike(value)  # lower(x) LIKE lower(y), or ILIKE: the same everywhere
    if isinstance(value, tuple):
        return text_in(column, value) if comparator is C.IN else text_not_in(column, value)
    if comparator is C.EQ:
        return text_eq(column, value)
    if comparator is C.NE:
        return text_ne(column, value)
    if comparator is C.LIKE:
        return text_like(column, value)
    raise AssertionError(f"not a string comparator: {comparator}")  # the parser prevents it


_NUMBER_OPERATORS = {
    C.EQ: operator.eq,
    C.NE: operator.ne,
    C.LT: operator.lt,
    C.LE: operator.le,
    C.GT: operator.gt,
    C.GE: operator.ge,
}


def compare_numbers(
    column: ColumnElement[Any], comparator: Comparator, value: float
) -> ColumnElement[bool]:
    compare: Callable[[Any, Any], ColumnElement[bool]] = _NUMBER_OPERATORS[comparator]
    # A float is bound as a float even against a BIGINT column: drivers with typed parameters
    # (asyncpg) refuse 1.5 for a BIGINT parameter.
    return compare(column, literal(value, Float(53)) if isinstance(value, float) else value)


# --------------------------------------------------------------------------------------------
# Predicates
# --------------------------------------------------------------------------------------------


def _scope_ids(experiment_ids: Sequence[int | str] | None) -> tuple[int, ...] | None:
    if experiment_ids is None:
        return None
    try:
        return tuple(int(e) for e in experiment_ids)
    except (TypeError, ValueError):
        raise invalid_parameter("experiment_ids must be integers") from None


class _Builder:
    """Turns parsed clauses into predicates on SqlTraceInfo."""

    def __init__(
        self, clauses: list[Clause], scope: tuple[int, ...] | None, window: TraceWindow
    ) -> None:
        self._clauses = clauses
        self._scope = scope
        self._window = window

    def predicates(self) -> list[ColumnElement[bool]]:
        result = [self._predicate(c) for c in self._clauses if not _is_span(c)]
        span_conditions = [self._span_condition(c) for c in self._clauses if _is_span(c)]
        if span_conditions:
            result.append(self._one_span(span_conditions))
        return result

    def _predicate(self, clause: Clause) -> ColumnElement[bool]:
        target, comparator, value = clause.key.target, clause.comparator, clause.value
        if isinstance(target, TraceColumn):
            return _trace_column(target, comparator, value)
        if isinstance(target, TraceTag):
            return _key_value(SqlTraceTag, target.key, comparator, value, self._window)
        if isinstance(target, TraceMetadata):
            if target.key == TraceMetadataKey.SOURCE_RUN and comparator is C.EQ:
                return _source_run(str(value))
            return _key_value(SqlTraceMetadata, target.key, comparator, value, self._window)
        if isinstance(target, UsageMetadata):
            return _usage_metadata(target.key, comparator, value)
        if isinstance(target, Assessment):
            return self._assessment(target, comparator, value)
        raise AssertionError(f"unexpected target {target!r}")  # span clauses go elsewhere

    # -- spans: every span clause must hold on one and the same span --------------------------

    @staticmethod
    def _span_condition(clause: Clause) -> ColumnElement[bool]:
        assert isinstance(clause.key.target, SpanColumn)
        column = getattr(SqlSpan, clause.key.target.column)
        return compare_strings(column, clause.comparator, _text_value(clause.value))

    def _one_span(self, conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
        scope: list[ColumnElement[bool]] = [trace_time_within(SqlSpan.trace_id, *self._window)]
        lower_bound = self._span_start_lower_bound_ns()
        if lower_bound is not None:
            scope.append(compare_numbers(SqlSpan.start_time_unix_nano, C.GE, lower_bound))
        return child_exists(
            SqlSpan.trace_id,
            SqlTraceInfo.request_id,
            *scope,
            *conditions,
            same_experiment=SqlSpan.experiment_id,
        )

    def _span_start_lower_bound_ns(self) -> float | None:
        """MLflow skips spans that start long before a ``timestamp_ms >``/``>=`` bound."""
        bounds = [
            c.value
            for c in self._clauses
            if c.key.target == TraceColumn("timestamp_ms", numeric=True)
            and c.comparator in (C.GT, C.GE)
            and isinstance(c.value, (int, float))
        ]
        if not bounds:
            return None
        return (max(bounds) - _SPAN_TIMESTAMP_TOLERANCE_MS) * 1_000_000

    # -- assessments ---------------------------------------------------------------------------

    def _assessment(
        self, target: Assessment, comparator: Comparator, value: Value
    ) -> ColumnElement[bool]:
        conditions: list[ColumnElement[bool]] = [
            SqlAssessments.assessment_type == target.assessment_type,
            SqlAssessments.name == target.name,
            SqlAssessments.valid == true(),
        ]
        if comparator not in NULL_CHECKS:
            conditions.append(_assessment_value(comparator, value))
        found = or_(
            child_exists(
                SqlAssessments.trace_id,
                SqlTraceInfo.request_id,
                trace_time_within(SqlAssessments.trace_id, *self._window),
                *conditions,
            ),
            # A session's feedback may sit on a trace outside the window: no window here.
            session_assessment(conditions, experiment_ids=self._scope),
        )
        return not_(found) if comparator is C.IS_NULL else found


def _is_span(clause: Clause) -> bool:
    return isinstance(clause.key.target, SpanColumn)


def _text_value(value: Value) -> str | tuple[str, ...]:
    assert isinstance(value, (str, tuple)), value  # the parser only gives strings here
    return value


def _trace_column(target: TraceColumn, comparator: Comparator, value: Value) -> ColumnElement[bool]:
    column = getattr(SqlTraceInfo, target.column)
    if comparator is C.IS_NULL:
        return column.is_(None)
    if comparator is C.IS_NOT_NULL:
        return column.is_not(None)
    if target.numeric:
        assert isinstance(value, (int, float))
        return compare_numbers(column, comparator, value)
    return compare_strings(column, comparator, _text_value(value))


def _key_value(
    model: type[SqlTraceTag] | type[SqlTraceMetadata],
    key: str,
    comparator: Comparator,
    value: Value,
    window: TraceWindow,
) -> ColumnElement[bool]:
    """A tag or metadata clause: EXISTS a row of the trace with that key and a matching value."""
    window_of = trace_time_within(model.request_id, *window)
    if comparator in NULL_CHECKS:
        # MLflow matches the key with the database's collation here, byte-wise below.
        present = child_exists(
            model.request_id, SqlTraceInfo.request_id, window_of, model.key == key
        )
        return present if comparator is C.IS_NOT_NULL else not_(present)
    return child_exists(
        model.request_id,
        SqlTraceInfo.request_id,
        window_of,
        compare_strings(model.key, C.EQ, key),
        compare_strings(model.value, comparator, _text_value(value)),
    )


def _source_run(run_id: str) -> ColumnElement[bool]:
    """``metadata.mlflow.sourceRun = x``: logged under the run, or linked to it afterwards."""
    linked = child_exists(
        SqlEntityAssociation.source_id,
        SqlTraceInfo.request_id,
        SqlEntityAssociation.source_type == EntityAssociationType.TRACE,
        SqlEntityAssociation.destination_type == EntityAssociationType.RUN,
        SqlEntityAssociation.destination_id == run_id,
    )
    logged = child_exists(
        SqlTraceMetadata.request_id,
        SqlTraceInfo.request_id,
        SqlTraceMetadata.key == TraceMetadataKey.SOURCE_RUN,
        SqlTraceMetadata.value == run_id,
    )
    return or_(linked, logged)


def _assessment_value(comparator: Comparator, value: Value) -> ColumnElement[bool]:
    if comparator in ORDERING:
        assert isinstance(value, (int, float))
        return and_(
            SqlAssessments.is_numeric_value == true(),
            compare_numbers(SqlAssessments.aggregate_value, comparator, float(value)),
        )
    # Values are stored as JSON: match the raw text (true, 5) or the JSON string ("yes").
    text = str(value)
    either = or_(
        compare_strings(SqlAssessments.value, C.EQ, text),
        compare_strings(SqlAssessments.value, C.EQ, json.dumps(text)),
    )
    return not_(either) if comparator is C.NE else either


# -- token usage and cost metadata ------------------------------------------------------------


def _usage_metadata(key: str, comparator: Comparator, value: Value) -> ColumnElement[bool]:
    columns = {
        item: getattr(SqlTraceInfo, column)
        for item, column in TRACE_ANALYTICS_COLUMNS_BY_METADATA_KEY[key].items()
    }
    present = or_(*(column.is_not(None) for column in columns.values()))
    if comparator is C.IS_NULL:
        return not_(present)
    if comparator is C.IS_NOT_NULL:
        return present
    wanted = _canonical_usage(key, str(value), list(columns))
    if wanted is None:
        matches: ColumnElement[bool] = false()
    else:
        matches = and_(
            *(
                and_(column.is_not(None), column == wanted[item])
                if item in wanted
                else column.is_(None)
                for item, column in columns.items()
            )
        )
    return matches if comparator is C.EQ else and_(present, not_(matches))


def _canonical_usage(key: str, text: str, items: list[str]) -> dict[str, int | float] | None:
    """The column values ``text`` names, if it is exactly the JSON MLflow writes for them.

    MLflow rebuilds this metadata from the columns, so only that exact text can be equal.
    """
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # deeply nested arrays exhaust the JSON decoder
        return None
    if not isinstance(parsed, dict) or not set(parsed) <= set(items):
        return None
    convert = _token_count if key == TraceMetadataKey.TOKEN_USAGE else _finite_float
    values = {item: v for item in items if (v := convert(parsed.get(item))) is not None}
    if not values or json.dumps(values) != text:
        return None
    return values


def _token_count(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or number != number.to_integral_value():
        return None
    return int(number) if int(number) in INT64 else None


def _finite_float(value: object) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None
