"""The catalog of dimension kinds (API.md §4.5): named yes/no properties of a trace.

The registry of dimension kinds: their names, parameter specs, the predicate each builds on
``SqlTraceInfo`` (correlated ``EXISTS`` for spans, tags and assessments, so no trace row is ever
repeated) and the equivalent MLflow ``search_traces`` filter string, where that syntax can say
it. The predicates are built directly, never by parsing the filter strings: the filter string
is an output for users, who can paste it into MLflow to open the matching traces.

Each predicate selects exactly what MLflow's ``search_traces`` selects for the dimension's
filter string on the same database (tests/test_dimensions.py checks this on every backend):
string comparisons are exact (byte-wise, also on MySQL/MariaDB), except feedback names, which
MLflow compares with the database's collation; a feedback logged for a whole session
(``mlflow.trace.session`` in its metadata) counts for every trace of that session in the same
experiment, as in ``service.filters`` (one predicate: ``service.traces.session_assessment``).
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlSpan, SqlTraceInfo, SqlTraceTag
from sqlalchemy import and_, not_, or_
from sqlalchemy.sql import ColumnElement

from service.dialects import (
    OPEN_WINDOW,
    TraceWindow,
    child_exists,
    text_equals,
    trace_time_within,
)
from service.errors import invalid_parameter
from service.feedback_types import (
    AssessmentType,
    FeedbackTyping,
    NameMatch,
    ValueKind,
    has_value,
    is_false,
    is_feedback,
    is_numeric,
    is_true,
)
from service.filters.render import backticked, quote, span_filter
from service.traces import SPAN_ERROR, TOOL_SPAN_TYPE, TRACE_STATES, session_assessment

__all__ = [
    "ENUM_LIMIT",
    "OPERATORS",
    "Dimension",
    "DimensionRef",
    "Kind",
    "ParameterSpec",
    "bind",
    "check_parameters",
    "parse_dimension_name",
]

ENUM_LIMIT: Final = 50
"""A string parameter lists the values in scope when there are at most this many."""

Operator = Literal[">", ">=", "<", "<="]
OPERATORS: Final[dict[str, Callable[[Any, Any], ColumnElement[bool]]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
TOOL_VALUES: Final = ("used", "error", "success")
BOOLEAN_VALUES: Final = {"true": True, "yes": True, "false": False, "no": False}


class Kind(StrEnum):
    STATUS = "status"
    SPAN_TYPE = "span.type"
    SPAN_NAME = "span.name"
    LATENCY = "latency"
    TOOL = "tools"
    TAG = "tags"
    ASSESSMENT = "assessment"


_FIXED = {Kind.STATUS, Kind.SPAN_TYPE, Kind.SPAN_NAME, Kind.LATENCY}
_PREFIXED = {Kind.TOOL, Kind.TAG, Kind.ASSESSMENT}
_NAMES_HELP = (
    "status, span.type, span.name, latency, tools.<tool name>, tags.<tag key> or "
    "assessment.<feedback name> (dimensions/discovery lists them)"
)


@dataclass(frozen=True)
class DimensionRef:
    """A dimension named in a request: its kind and, for the prefixed kinds, the subject (a
    tool name, a tag key or a feedback name)."""

    kind: Kind
    subject: str = ""

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.subject}" if self.kind in _PREFIXED else str(self.kind)


def parse_dimension_name(name: str) -> DimensionRef:
    """``tags.team.name`` -> (TAG, "team.name"): the subject is everything after the prefix."""
    if name in {k.value for k in _FIXED}:
        return DimensionRef(Kind(name))
    prefix, dot, subject = name.partition(".")
    if dot and subject and prefix in {k.value for k in _PREFIXED}:
        return DimensionRef(Kind(prefix), subject)
    raise invalid_parameter(f"Unknown dimension {name!r}; use {_NAMES_HELP}", dimension=name)


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    type: Literal["enum", "string", "number"]
    required: bool
    description: str
    enum_values: tuple[str, ...] | None = None


def value_parameter(description: str, values: Sequence[str] | None, *, enum: bool) -> ParameterSpec:
    """``value``: an enum of ``values``, or a string listing ``values`` when there are few."""
    if enum and values is not None:
        return ParameterSpec("value", "enum", True, description, tuple(values))
    listed = tuple(values) if values is not None and len(values) <= ENUM_LIMIT else None
    return ParameterSpec("value", "string", True, description, listed)


def threshold_parameters(unit: str) -> list[ParameterSpec]:
    return [
        ParameterSpec("threshold", "number", True, f"The number to compare with{unit}."),
        ParameterSpec("operator", "enum", True, "How to compare.", tuple(OPERATORS)),
    ]


def _allowed(ref: DimensionRef, typing: FeedbackTyping | None) -> tuple[str, ...]:
    if ref.kind is Kind.LATENCY:
        return ("threshold", "operator")
    if ref.kind is Kind.ASSESSMENT:
        if typing is None:
            return ("value", "threshold", "operator")
        return ("threshold", "operator") if typing.type == "numeric" else ("value",)
    return ("value",)


def check_parameters(ref: DimensionRef, parameters: Mapping[str, Any]) -> None:
    """Everything about the parameters that can be checked without reading the database."""
    if ref.kind is Kind.ASSESSMENT:
        _check_names(ref, parameters, _allowed(ref, None), required=())
    else:
        bind(ref, parameters)


def _check_names(
    ref: DimensionRef,
    parameters: Mapping[str, Any],
    allowed: Sequence[str],
    *,
    required: Sequence[str],
) -> None:
    unknown = [p for p in parameters if p not in allowed]
    takes = f"Dimension {ref.name!r} takes the parameters {', '.join(allowed)}"
    if unknown:
        raise invalid_parameter(
            f"{takes}; unknown parameter {', '.join(repr(p) for p in unknown)}",
            dimension=ref.name,
        )
    missing = [p for p in required if p not in parameters]
    if missing:
        raise invalid_parameter(
            f"{takes}; missing {', '.join(repr(p) for p in missing)}", dimension=ref.name
        )


def _text(ref: DimensionRef, parameters: Mapping[str, Any], choices: Sequence[str] = ()) -> str:
    value = parameters["value"]
    if not isinstance(value, str):
        raise invalid_parameter(
            f"Parameter 'value' of dimension {ref.name!r} must be a string"
            + (f": one of {', '.join(choices)}" if choices else ""),
            dimension=ref.name,
        )
    if choices and value not in choices:
        raise invalid_parameter(
            f"Parameter 'value' of dimension {ref.name!r} must be one of "
            f"{', '.join(choices)}; got {value!r}",
            dimension=ref.name,
        )
    return value


def _threshold(ref: DimensionRef, parameters: Mapping[str, Any]) -> tuple[Operator, int | float]:
    threshold, op = parameters["threshold"], parameters["operator"]
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or abs(threshold) >= 2**63
    ):
        raise invalid_parameter(
            f"Parameter 'threshold' of dimension {ref.name!r} must be a finite number, "
            f"e.g. 500; got {threshold!r}",
            dimension=ref.name,
        )
    if not isinstance(op, str) or op not in OPERATORS:
        raise invalid_parameter(
            f"Parameter 'operator' of dimension {ref.name!r} must be one of "
            f"{', '.join(OPERATORS)}; got {op!r}",
            dimension=ref.name,
        )
    if isinstance(threshold, float) and threshold.is_integer():
        threshold = int(threshold)  # 500.0 -> 500, in the filter string too
    return op, threshold  # type: ignore[return-value]  # checked against OPERATORS


# --------------------------------------------------------------------------------------------
# A dimension with its parameters: predicate, value text, filter string
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dimension:
    ref: DimensionRef
    value: str  # the parameters as text: "ERROR", "used", "> 500"
    # The predicate is built when first asked for: correlations bind a dimension per row shown
    # for its filter string alone.
    build: Callable[[], ColumnElement[bool]] = field(compare=False, repr=False)
    filter_string: str | None

    @functools.cached_property
    def predicate(self) -> ColumnElement[bool]:
        return self.build()

    @property
    def name(self) -> str:
        return self.ref.name


def bind(
    ref: DimensionRef,
    parameters: Mapping[str, Any],
    typing: FeedbackTyping | None = None,
    *,
    window: TraceWindow = OPEN_WINDOW,
) -> Dimension:
    """Validate the parameters and build the dimension (``typing`` for assessment.<name>).

    ``window``: the traces' window, when the predicate is applied only to traces in it (see
    ``service.filters.predicates``)."""
    allowed = _allowed(ref, typing)
    _check_names(ref, parameters, allowed, required=allowed)
    kind = ref.kind
    if kind is Kind.STATUS:
        status = _text(ref, parameters, TRACE_STATES)
        return Dimension(ref, status, lambda: status_is(status), f"status = {quote(status)}")
    if kind is Kind.SPAN_TYPE:
        span_type = _text(ref, parameters)
        return Dimension(
            ref,
            span_type,
            lambda: has_span(type_=span_type, window=window),
            span_filter(type_=span_type),
        )
    if kind is Kind.SPAN_NAME:
        name = _text(ref, parameters)
        return Dimension(
            ref, name, lambda: has_span(name=name, window=window), span_filter(name=name)
        )
    if kind is Kind.LATENCY:
        op, threshold = _threshold(ref, parameters)
        return Dimension(
            ref,
            f"{op} {threshold!r}",
            lambda: OPERATORS[op](SqlTraceInfo.execution_time_ms, threshold),
            f"execution_time_ms {op} {threshold!r}",
        )
    if kind is Kind.TOOL:
        return _tool(ref, _text(ref, parameters, TOOL_VALUES), window)
    if kind is Kind.TAG:
        value = _text(ref, parameters)
        key = backticked(ref.subject, tag=True)
        quoted = quote(value)
        text = None if key is None or quoted is None else f"tags.{key} = {quoted}"
        return Dimension(ref, value, lambda: has_tag(ref.subject, value, window), text)
    assert typing is not None, "assessment dimensions are bound with their typing"
    return _assessment(ref, parameters, typing, window)


def _tool(ref: DimensionRef, value: str, window: TraceWindow) -> Dimension:
    name = ref.subject

    def used() -> ColumnElement[bool]:
        return has_span(type_=TOOL_SPAN_TYPE, name=name, window=window)

    def failed() -> ColumnElement[bool]:
        return has_span(type_=TOOL_SPAN_TYPE, name=name, status=SPAN_ERROR, window=window)

    if value == "used":
        return Dimension(ref, value, used, span_filter(type_=TOOL_SPAN_TYPE, name=name))
    if value == "error":
        text = span_filter(type_=TOOL_SPAN_TYPE, name=name, status=SPAN_ERROR)
        return Dimension(ref, value, failed, text)
    # "called it and no call failed": MLflow's span clauses all hold on one span, so its
    # syntax cannot say "no span" of a kind.
    return Dimension(ref, value, lambda: and_(used(), not_(failed())), None)


def _assessment(
    ref: DimensionRef, parameters: Mapping[str, Any], typing: FeedbackTyping, window: TraceWindow
) -> Dimension:
    name = backticked(ref.subject, tag=False)
    prefix = None if name is None else f"feedback.{name}"
    kind: AssessmentType = typing.type
    if kind == "numeric":
        op, threshold = _threshold(ref, parameters)
        condition = and_(
            is_numeric(),
            OPERATORS[op](SqlAssessments.aggregate_value, threshold),
        )
        text = None if prefix is None else f"{prefix} {op} {threshold!r}"
        return Dimension(
            ref, f"{op} {threshold!r}", lambda: has_feedback(ref.subject, condition, window), text
        )
    if kind == "boolean":
        value = _text(ref, parameters, boolean_values(typing))
        passed = BOOLEAN_VALUES[value]
        condition = is_true() if passed else is_false()
        return Dimension(
            ref,
            value,
            lambda: has_feedback(ref.subject, condition, window),
            _boolean_filter(prefix, passed, typing),
        )
    value = _text(ref, parameters)
    # MLflow's `=` on feedback matches the stored JSON or the JSON encoding of the value.
    condition = or_(
        text_equals(SqlAssessments.value, value),
        text_equals(SqlAssessments.value, json.dumps(value)),
    )
    quoted = quote(value)
    text = None if prefix is None or quoted is None else f"{prefix} = {quoted}"
    return Dimension(ref, value, lambda: has_feedback(ref.subject, condition, window), text)


def boolean_values(typing: FeedbackTyping) -> tuple[str, str]:
    """The values a boolean name takes, as it stores them: yes/no for "yes"/"no" strings,
    true/false otherwise."""
    return ("yes", "no") if typing.yes_no else ("true", "false")


def _boolean_filter(prefix: str | None, passed: bool, typing: FeedbackTyping) -> str | None:
    if prefix is None:
        return None
    if not typing.yes_no:
        if typing.kinds & {ValueKind.YES_NO, ValueKind.YES_NO_CASED}:
            return None  # both true and "yes": no single clause matches both
        return f"{prefix} = '{'true' if passed else 'false'}'"
    word = "yes" if passed else "no"
    if ValueKind.YES_NO_CASED in typing.kinds:
        # "Yes", "NO", ...: MLflow's `=` is case-sensitive; ILIKE on the stored JSON is not.
        return f"{prefix} ILIKE '\"{word}\"'"
    return f"{prefix} = '{word}'"


# --------------------------------------------------------------------------------------------
# Predicates on SqlTraceInfo
# --------------------------------------------------------------------------------------------


def status_is(status: str) -> ColumnElement[bool]:
    return text_equals(SqlTraceInfo.status, status)


def has_span(
    *,
    type_: str | None = None,
    name: str | None = None,
    status: str | None = None,
    window: TraceWindow = OPEN_WINDOW,
) -> ColumnElement[bool]:
    """The trace has one span matching every given column (as MLflow's span clauses)."""
    conditions: list[ColumnElement[bool]] = [trace_time_within(SqlSpan.trace_id, *window)]
    columns: tuple[tuple[Any, str | None], ...] = (
        (SqlSpan.type, type_),
        (SqlSpan.name, name),
        (SqlSpan.status, status),
    )
    for column, value in columns:
        if value is not None:
            conditions.append(text_equals(column, value))
    return child_exists(
        SqlSpan.trace_id,
        SqlTraceInfo.request_id,
        *conditions,
        same_experiment=SqlSpan.experiment_id,
    )


def has_tag(key: str, value: str, window: TraceWindow = OPEN_WINDOW) -> ColumnElement[bool]:
    return child_exists(
        SqlTraceTag.request_id,
        SqlTraceInfo.request_id,
        trace_time_within(SqlTraceTag.request_id, *window),
        text_equals(SqlTraceTag.key, key),
        text_equals(SqlTraceTag.value, value),
    )


def has_feedback(
    name: str, condition: ColumnElement[bool], window: TraceWindow = OPEN_WINDOW
) -> ColumnElement[bool]:
    """A valid feedback of ``name`` whose value meets ``condition``: logged on the trace, or
    logged for the trace's whole session on any trace of that session (same experiment)."""
    conditions = [
        *is_feedback(),
        NameMatch.COLLATION.equals(SqlAssessments.name, name),  # as MLflow's filters
        has_value(),
        condition,
    ]
    direct = child_exists(
        SqlAssessments.trace_id,
        SqlTraceInfo.request_id,
        trace_time_within(SqlAssessments.trace_id, *window),
        *conditions,
    )
    # A session's feedback may sit on a trace outside the window: no window there.
    return or_(direct, session_assessment(conditions))
