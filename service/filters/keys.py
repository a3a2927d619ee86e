"""Filter keys: what a key refers to (a trace column, tag, metadata entry, span column or
assessment), and which comparators it takes, as MLflow's ``search_traces`` reads it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from mlflow.store.tracking.utils.trace_analytics import TRACE_ANALYTICS_COLUMNS_BY_METADATA_KEY
from mlflow.tracing.constant import TraceMetadataKey

from service.errors import InsightsError, invalid_parameter
from service.filters.lexer import Token
from service.traces import TRACE_NAME_TAG

# The integers a filter may compare with: those a BIGINT column holds.
INT64 = range(-(2**63), 2**63)


class Comparator(StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "IN"
    NOT_IN = "NOT IN"
    LIKE = "LIKE"
    ILIKE = "ILIKE"
    IS_NULL = "IS NULL"
    IS_NOT_NULL = "IS NOT NULL"


C = Comparator
ORDERING = frozenset({C.LT, C.LE, C.GT, C.GE})
NULL_CHECKS = frozenset({C.IS_NULL, C.IS_NOT_NULL})
LISTS = frozenset({C.IN, C.NOT_IN})
_STRING_ATTRIBUTE = (C.EQ, C.NE, C.IN, C.NOT_IN, C.LIKE, C.ILIKE)
_NUMERIC_ATTRIBUTE = (C.EQ, C.NE, C.LT, C.LE, C.GT, C.GE)
_KEY_VALUE = (C.EQ, C.NE, C.LIKE, C.ILIKE, C.IS_NULL, C.IS_NOT_NULL)
_ASSESSMENT = (C.EQ, C.NE, C.LT, C.LE, C.GT, C.GE, C.IS_NULL, C.IS_NOT_NULL)
_USAGE_METADATA = (C.EQ, C.NE, C.IS_NULL, C.IS_NOT_NULL)


@dataclass(frozen=True)
class TraceColumn:
    """A column of trace_info: status, trace_name, session_id, timestamp_ms, ..."""

    column: str
    numeric: bool = False


@dataclass(frozen=True)
class TraceTag:
    key: str


@dataclass(frozen=True)
class TraceMetadata:
    key: str


@dataclass(frozen=True)
class UsageMetadata:
    """Token usage or cost metadata, which MLflow stores only as trace_info columns."""

    key: str


@dataclass(frozen=True)
class SpanColumn:
    column: str


@dataclass(frozen=True)
class Assessment:
    assessment_type: str  # "feedback" or "expectation"
    name: str


Target = TraceColumn | TraceTag | TraceMetadata | UsageMetadata | SpanColumn | Assessment
# Targets whose every clause is a correlated subquery (MAX_FILTER_SUBQUERIES).
SUBQUERY_TARGETS = (TraceTag, TraceMetadata, Assessment)


@dataclass(frozen=True)
class Key:
    text: str  # as written, for messages
    target: Target
    comparators: tuple[Comparator, ...]
    note: str = ""  # why the comparators are what they are, when it is not obvious


STATUS = TraceColumn("status")
TRACE_NAME = TraceColumn("trace_name")
_ATTRIBUTES: dict[str, tuple[TraceColumn, tuple[Comparator, ...]]] = {
    "status": (STATUS, _STRING_ATTRIBUTE),
    "name": (TRACE_NAME, _STRING_ATTRIBUTE),
    "timestamp_ms": (TraceColumn("timestamp_ms", numeric=True), _NUMERIC_ATTRIBUTE),
    "timestamp": (TraceColumn("timestamp_ms", numeric=True), _NUMERIC_ATTRIBUTE),
    "execution_time_ms": (TraceColumn("execution_time_ms", numeric=True), _NUMERIC_ATTRIBUTE),
    "execution_time": (TraceColumn("execution_time_ms", numeric=True), _NUMERIC_ATTRIBUTE),
}
# Attribute keys MLflow knows but this service does not filter on.
_UNSUPPORTED_ATTRIBUTES = frozenset(
    {"request_id", "client_request_id", "end_time", "end_time_ms", "run_id", "prompt", "text"}
)
_ATTRIBUTE_PREFIXES = frozenset({"trace", "attributes", "attribute"})
_TAG_PREFIXES = frozenset({"tag", "tags"})
_METADATA_PREFIXES = frozenset({"metadata", "request_metadata"})
_ASSESSMENT_PREFIXES = frozenset({"feedback", "expectation"})
_SPAN_ATTRIBUTES = frozenset({"name", "type", "status"})
# MLflow rewrites these keys (compared lower-cased) under every prefix but span.
KEY_ALIASES = {
    "timestamp": "timestamp_ms",
    "execution_time": "execution_time_ms",
    "end_time": "end_time_ms",
}
REROUTED_KEYS = {
    "run_id": "the trace's source run",
    "prompt": "the trace's linked prompts",
    "text": "a full-text search of span contents",
}
KNOWN_KEYS = (
    "status, name, timestamp_ms, execution_time_ms (each also with a trace. prefix), "
    "tags.<key>, metadata.<key>, span.name, span.type, span.status, feedback.<name> or "
    "expectation.<name>"
)


def resolve_key(token: Token) -> Key:
    segments = _split_key(token)
    if len(segments) == 1:
        return _attribute_key(token.text, _unquote(segments[0]))
    prefix, rest = _unquote(segments[0]), segments[1:]
    if prefix in _ATTRIBUTE_PREFIXES:
        return _attribute_key(token.text, _join_key(token, rest))
    if prefix == "span":
        return _span_key(token.text, _join_key(token, rest))
    if prefix in _TAG_PREFIXES | _METADATA_PREFIXES | _ASSESSMENT_PREFIXES:
        return _named_key(token.text, prefix, _join_key(token, rest))
    if prefix == "issue":
        raise invalid_parameter(
            f"Filtering on issues ('{token.text}') is not supported by Trace Insights"
        )
    raise unknown_key(token.text)


def _split_key(token: Token) -> list[str]:
    """``tags.`a.b``` -> ["tags", "`a.b`"]: dots inside backticks do not split."""
    return re.findall(r"`[^`]*`|[^.`]+", token.text)


def _unquote(segment: str) -> str:
    return segment[1:-1] if segment.startswith("`") else segment


def _join_key(token: Token, rest: list[str]) -> str:
    if len(rest) == 1:
        name = _unquote(rest[0])
    elif any(part.startswith("`") for part in rest):
        raise invalid_parameter(
            f"Key '{token.text}' mixes backticked and bare parts; put the whole name after "
            "the prefix in one pair of backticks, e.g. tags.`my.key`"
        )
    else:
        name = ".".join(rest)
    if not name:
        raise invalid_parameter(f"Key '{token.text}' has an empty name")
    return name


def _attribute_key(text: str, name: str) -> Key:
    if name in _ATTRIBUTES:
        target, comparators = _ATTRIBUTES[name]
        return Key(text, target, comparators)
    if name in _UNSUPPORTED_ATTRIBUTES:
        raise invalid_parameter(
            f"Filtering on '{text}' is not supported by Trace Insights; use {KNOWN_KEYS}"
        )
    raise unknown_key(text)


def _span_key(text: str, name: str) -> Key:
    if name in _SPAN_ATTRIBUTES:
        return Key(text, SpanColumn(name), _STRING_ATTRIBUTE)
    raise invalid_parameter(
        f"Unsupported span key '{text}' in filter_string; use span.name, span.type or span.status"
    )


def _named_key(text: str, prefix: str, name: str) -> Key:
    lowered = name.lower()
    if lowered in REROUTED_KEYS:
        raise invalid_parameter(
            f"MLflow reads '{text}' as {REROUTED_KEYS[lowered]}, which Trace Insights does "
            "not filter on; rename the key in the filter or drop the clause"
        )
    if lowered == "name":
        # MLflow reads <prefix>.name as the trace name, with tag comparators.
        allowed = _intersect(_family(prefix), _KEY_VALUE)
        return Key(text, TRACE_NAME, allowed, note=" (MLflow reads it as the trace name)")
    name = KEY_ALIASES.get(lowered, name)
    if prefix in _TAG_PREFIXES:
        if name == TRACE_NAME_TAG:
            return Key(text, TRACE_NAME, _KEY_VALUE)
        return Key(text, TraceTag(name), _KEY_VALUE)
    if prefix in _METADATA_PREFIXES:
        return _metadata_key(text, name)
    return Key(text, Assessment(prefix, name), _ASSESSMENT)


def _metadata_key(text: str, name: str) -> Key:
    if name == TraceMetadataKey.TRACE_SESSION:
        return Key(text, TraceColumn("session_id"), _KEY_VALUE)
    if name in TRACE_ANALYTICS_COLUMNS_BY_METADATA_KEY:
        note = " (MLflow stores it as numeric columns and compares only exact JSON)"
        return Key(text, UsageMetadata(name), _USAGE_METADATA, note=note)
    return Key(text, TraceMetadata(name), _KEY_VALUE)


def _family(prefix: str) -> tuple[Comparator, ...]:
    if prefix in _ASSESSMENT_PREFIXES:
        return _ASSESSMENT
    return _KEY_VALUE


def _intersect(
    first: tuple[Comparator, ...], second: tuple[Comparator, ...]
) -> tuple[Comparator, ...]:
    return tuple(c for c in first if c in second)


def unknown_key(text: str) -> InsightsError:
    return invalid_parameter(
        f"Unknown key '{text}' in filter_string; keys are case-sensitive: use {KNOWN_KEYS}. "
        "Wrap key names with special characters in backticks, e.g. tags.`team%_name`",
        key=text,
    )
