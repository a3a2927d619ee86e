"""MLflow ``search_traces`` filter strings -> SQLAlchemy predicates on the trace row (API.md §6).

A filter is parsed once, by a small tokenizer and a clause-by-clause parser, into ``Clause``s
(a key resolved through a table to what it refers to, a comparator, a value); each becomes one
predicate on ``SqlTraceInfo`` (tag, metadata, span and assessment clauses as correlated
``EXISTS``, never joins, so no trace row is repeated). Values are always bound parameters.

The predicates select exactly what MLflow's own ``SqlAlchemyStore.search_traces`` returns for the
same filter on the same database, including where MLflow's behaviour is surprising:

* String comparisons (``=``, ``!=``, ``LIKE``, ``IN``) are case-sensitive on every database,
  ``ILIKE`` is ``lower(x) LIKE lower(y)`` (ASCII-only folding on SQLite). MLflow gets there with
  a byte-wise comparison on MySQL/MariaDB and ``PRAGMA case_sensitive_like`` on SQLite; we use
  the same byte-wise comparison and, on SQLite, ``GLOB`` (see ``_PerDatabase``).
* ``tags.k != 'v'`` (and ``LIKE``) only matches traces that carry the tag; ``IS NULL`` is the
  way to ask for traces without it. The same holds for metadata, spans and assessments.
* ``IS NULL``/``IS NOT NULL`` on tags and metadata match the key with the database's collation
  (case-insensitive on MySQL), while value comparisons match it byte-wise.
* ``<prefix>.name`` (any case, for tags/metadata/feedback/expectation) means the trace name, and
  ``<prefix>.timestamp``/``execution_time`` mean the key ``timestamp_ms``/``execution_time_ms``.
* Metadata that MLflow 3.17 promotes to ``trace_info`` columns (session id, token usage, cost)
  is compared on those columns; ``metadata.mlflow.sourceRun = 'x'`` also matches traces linked
  to the run.
* Assessments count only when ``valid``; ``=``/``!=`` compare the stored JSON text with the value
  and with its JSON encoding, ``<``/``>`` the numeric aggregate of numeric values only. An
  assessment logged for a whole session (``mlflow.trace.session`` in its metadata) counts for
  every trace of that session.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
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
from mlflow.tracing.constant import TraceMetadataKey, TraceTagKey
from sqlalchemy import (
    Boolean,
    Float,
    LargeBinary,
    String,
    and_,
    cast,
    exists,
    false,
    literal,
    not_,
    or_,
    true,
    type_coerce,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from service.errors import InsightsError, invalid_parameter

__all__ = ["MAX_FILTER_LENGTH", "MAX_FILTER_SUBQUERIES", "parse_filter_string"]

MAX_FILTER_LENGTH: Final = 10_000
"""Longest filter_string accepted; far above any hand-written filter, far below SQL limits."""
MAX_FILTER_SUBQUERIES: Final = 50
"""Most tag, metadata and feedback/expectation clauses accepted. Each is a correlated EXISTS,
and PostgreSQL's planning time grows steeply with their number (80 took 1.6 s, 160 took 27 s,
300 ran past the statement timeout); clauses on trace columns cost next to nothing."""

# MLflow prunes spans that start well before a `timestamp_ms >`/`>=` bound; same tolerance.
_SPAN_TIMESTAMP_TOLERANCE_MS: Final = 10_000
_INT64 = range(-(2**63), 2**63)
_SESSION_ASSESSMENT_MARKER: Final = f'"{TraceMetadataKey.TRACE_SESSION}":'


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def parse_filter_string(
    filter_string: str | None, *, experiment_ids: Sequence[int | str] | None = None
) -> list[ColumnElement[bool]]:
    """Predicates on SqlTraceInfo (the trace row) that together select the matching traces.

    ``[]`` for None or a blank string. ``experiment_ids`` are the experiments the caller
    searches: MLflow lets a session-level assessment count for the session's traces in any of
    them. Without it, only sessions within one experiment are considered (the usual case).
    Raises ``InsightsError`` (INVALID_PARAMETER_VALUE) naming what is wrong with the filter.
    """
    if filter_string is None:
        return []
    if not isinstance(filter_string, str):
        raise invalid_parameter("filter_string must be a string")
    if not filter_string.strip():
        return []
    _check_text(filter_string)
    clauses = _Parser(list(_tokenize(filter_string))).clauses()
    subqueries = sum(isinstance(c.key.target, _SUBQUERY_TARGETS) for c in clauses)
    if subqueries > MAX_FILTER_SUBQUERIES:
        raise invalid_parameter(
            f"filter_string has {subqueries} tag, metadata and assessment clauses; the limit "
            f"is {MAX_FILTER_SUBQUERIES}. Drop repeated clauses."
        )
    return _Builder(clauses, _scope_ids(experiment_ids)).predicates()


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


class _Tok(StrEnum):
    WORD = "word"  # keys (dotted, segments may be backticked) and keywords
    STRING = "string"
    NUMBER = "number"
    OP = "op"
    LPAREN = "lparen"
    RPAREN = "rparen"
    COMMA = "comma"


_BARE = r"[A-Za-z_][A-Za-z0-9_]*"
_SEGMENT = rf"(?:{_BARE}|`[^`]*`)"
_TOKEN_RE = re.compile(
    rf"""
    (?P<space>\s+)
    | (?P<{_Tok.STRING}>'[^']*'|"[^"]*")
    | (?P<{_Tok.NUMBER}>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.]))
    | (?P<{_Tok.WORD}>{_SEGMENT}(?:\.(?:[A-Za-z0-9_]+|`[^`]*`))*)
    | (?P<{_Tok.OP}><=|>=|!=|<>|==|=|<|>)
    | (?P<{_Tok.LPAREN}>\()
    | (?P<{_Tok.RPAREN}>\))
    | (?P<{_Tok.COMMA}>,)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: _Tok
    text: str
    pos: int  # 1-based character position, for messages

    def upper(self) -> str:
        return self.text.upper() if self.kind is _Tok.WORD else ""


def _check_text(filter_string: str) -> None:
    if len(filter_string) > MAX_FILTER_LENGTH:
        raise invalid_parameter(
            f"filter_string is {len(filter_string)} characters long; the limit is "
            f"{MAX_FILTER_LENGTH}. Narrow the filter or split the request."
        )
    if "\x00" in filter_string:
        raise invalid_parameter("filter_string contains a NUL character; remove it")
    try:
        filter_string.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_parameter("filter_string is not valid Unicode text") from None


def _tokenize(text: str) -> Iterator[_Token]:
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise _unreadable(text, pos)
        kind = str(match.lastgroup)
        if kind != "space":
            yield _Token(_Tok(kind), match.group(), pos + 1)
        pos = match.end()


def _unreadable(text: str, pos: int) -> InsightsError:
    char = text[pos]
    where = f"at position {pos + 1} of filter_string"
    if char in "'\"":
        return invalid_parameter(
            f"Unterminated string {where}: close the value with a matching {char}. A value "
            "cannot contain its own quote character; quote it with the other kind instead.",
            position=pos + 1,
        )
    if char == "`" or text[pos : pos + 2] == ".`":
        return invalid_parameter(
            f"Unbalanced backtick {where}: wrap the whole key name in a pair of backticks, "
            "e.g. tags.`team%_name`",
            position=pos + 1,
        )
    if char.isdigit() or (char in "-." and text[pos + 1 : pos + 2].isdigit()):
        return invalid_parameter(
            f"Malformed number {where}; write numbers like 100, -5 or 0.75",
            position=pos + 1,
        )
    return invalid_parameter(
        f"Unexpected character {char!r} {where}. A filter is clauses like "
        "status = 'OK' joined by AND; quote values with ' or \" and wrap key names with "
        "special characters in backticks.",
        position=pos + 1,
    )


# --------------------------------------------------------------------------------------------
# Keys: what a key refers to, and which comparators and values it takes
# --------------------------------------------------------------------------------------------


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
_ORDERING = frozenset({C.LT, C.LE, C.GT, C.GE})
_NULL_CHECKS = frozenset({C.IS_NULL, C.IS_NOT_NULL})
_LISTS = frozenset({C.IN, C.NOT_IN})
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
_SUBQUERY_TARGETS = (TraceTag, TraceMetadata, Assessment)


@dataclass(frozen=True)
class _Key:
    text: str  # as written, for messages
    target: Target
    comparators: tuple[Comparator, ...]
    note: str = ""  # why the comparators are what they are, when it is not obvious


_STATUS = TraceColumn("status")
_TRACE_NAME = TraceColumn("trace_name")
_ATTRIBUTES: dict[str, tuple[TraceColumn, tuple[Comparator, ...]]] = {
    "status": (_STATUS, _STRING_ATTRIBUTE),
    "name": (_TRACE_NAME, _STRING_ATTRIBUTE),
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
_KEY_ALIASES = {
    "timestamp": "timestamp_ms",
    "execution_time": "execution_time_ms",
    "end_time": "end_time_ms",
}
_REROUTED_KEYS = {
    "run_id": "the trace's source run",
    "prompt": "the trace's linked prompts",
    "text": "a full-text search of span contents",
}
_KNOWN_KEYS = (
    "status, name, timestamp_ms, execution_time_ms (each also with a trace. prefix), "
    "tags.<key>, metadata.<key>, span.name, span.type, span.status, feedback.<name> or "
    "expectation.<name>"
)


def _resolve_key(token: _Token) -> _Key:
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
    raise _unknown_key(token.text)


def _split_key(token: _Token) -> list[str]:
    """``tags.`a.b``` -> ["tags", "`a.b`"]: dots inside backticks do not split."""
    return re.findall(r"`[^`]*`|[^.`]+", token.text)


def _unquote(segment: str) -> str:
    return segment[1:-1] if segment.startswith("`") else segment


def _join_key(token: _Token, rest: list[str]) -> str:
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


def _attribute_key(text: str, name: str) -> _Key:
    if name in _ATTRIBUTES:
        target, comparators = _ATTRIBUTES[name]
        return _Key(text, target, comparators)
    if name in _UNSUPPORTED_ATTRIBUTES:
        raise invalid_parameter(
            f"Filtering on '{text}' is not supported by Trace Insights; use {_KNOWN_KEYS}"
        )
    raise _unknown_key(text)


def _span_key(text: str, name: str) -> _Key:
    if name in _SPAN_ATTRIBUTES:
        return _Key(text, SpanColumn(name), _STRING_ATTRIBUTE)
    raise invalid_parameter(
        f"Unsupported span key '{text}' in filter_string; use span.name, span.type or span.status"
    )


def _named_key(text: str, prefix: str, name: str) -> _Key:
    lowered = name.lower()
    if lowered in _REROUTED_KEYS:
        raise invalid_parameter(
            f"MLflow reads '{text}' as {_REROUTED_KEYS[lowered]}, which Trace Insights does "
            "not filter on; rename the key in the filter or drop the clause"
        )
    if lowered == "name":
        # MLflow reads <prefix>.name as the trace name, with tag comparators.
        allowed = _intersect(_family(prefix), _KEY_VALUE)
        return _Key(text, _TRACE_NAME, allowed, note=" (MLflow reads it as the trace name)")
    name = _KEY_ALIASES.get(lowered, name)
    if prefix in _TAG_PREFIXES:
        if name == TraceTagKey.TRACE_NAME:
            return _Key(text, _TRACE_NAME, _KEY_VALUE)
        return _Key(text, TraceTag(name), _KEY_VALUE)
    if prefix in _METADATA_PREFIXES:
        return _metadata_key(text, name)
    return _Key(text, Assessment(prefix, name), _ASSESSMENT)


def _metadata_key(text: str, name: str) -> _Key:
    if name == TraceMetadataKey.TRACE_SESSION:
        return _Key(text, TraceColumn("session_id"), _KEY_VALUE)
    if name in TRACE_ANALYTICS_COLUMNS_BY_METADATA_KEY:
        note = " (MLflow stores it as numeric columns and compares only exact JSON)"
        return _Key(text, UsageMetadata(name), _USAGE_METADATA, note=note)
    return _Key(text, TraceMetadata(name), _KEY_VALUE)


def _family(prefix: str) -> tuple[Comparator, ...]:
    if prefix in _ASSESSMENT_PREFIXES:
        return _ASSESSMENT
    return _KEY_VALUE


def _intersect(
    first: tuple[Comparator, ...], second: tuple[Comparator, ...]
) -> tuple[Comparator, ...]:
    return tuple(c for c in first if c in second)


def _unknown_key(text: str) -> InsightsError:
    return invalid_parameter(
        f"Unknown key '{text}' in filter_string; keys are case-sensitive: use {_KNOWN_KEYS}. "
        "Wrap key names with special characters in backticks, e.g. tags.`team%_name`",
        key=text,
    )


# --------------------------------------------------------------------------------------------
# Clauses
# --------------------------------------------------------------------------------------------

Value = str | int | float | tuple[str, ...] | None


@dataclass(frozen=True)
class Clause:
    key: _Key
    comparator: Comparator
    value: Value


_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "RLIKE", "IS", "NULL"})
_SYMBOLS = {"=": C.EQ, "!=": C.NE, "<": C.LT, "<=": C.LE, ">": C.GT, ">=": C.GE}


class _Parser:
    """``clause (AND clause)*``; a clause is ``key comparator [value]``."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._index = 0

    def clauses(self) -> list[Clause]:
        result = [self._clause()]
        while (token := self._next()) is not None:
            if token.upper() != "AND":
                raise self._expected_and(token)
            result.append(self._clause())
        return result

    # -- one clause ---------------------------------------------------------------------------

    def _clause(self) -> Clause:
        token = self._next()
        if token is None:
            raise invalid_parameter("filter_string ends after AND; add a clause or drop the AND")
        self._refuse_grouping(token)
        if token.kind is not _Tok.WORD or token.upper() in _KEYWORDS:
            raise invalid_parameter(
                f"Expected a key at position {token.pos} of filter_string, found "
                f"{_show(token.text)}; use {_KNOWN_KEYS}",
                position=token.pos,
            )
        key = _resolve_key(token)
        comparator = self._comparator(key)
        return Clause(key, comparator, self._value(key, comparator))

    def _comparator(self, key: _Key) -> Comparator:
        token = self._next()
        if token is None:
            raise invalid_parameter(
                f"Clause on '{key.text}' has no comparator; use one of {_listing(key)}"
            )
        comparator = self._read_comparator(token, key)
        if comparator not in key.comparators:
            raise _unsupported_comparator(comparator, key)
        return comparator

    def _read_comparator(self, token: _Token, key: _Key) -> Comparator:
        if token.kind is _Tok.OP:
            if token.text in _SYMBOLS:
                return _SYMBOLS[token.text]
            raise _unsupported_comparator(token.text, key)
        word = token.upper()
        if word in ("IN", "LIKE", "ILIKE"):
            return C(word)
        if word == "NOT":
            return self._after_not(key)
        if word == "IS":
            return self._after_is(key)
        if word == "RLIKE":
            raise _unsupported_comparator(word, key)
        raise invalid_parameter(
            f"Expected a comparator after '{key.text}' at position {token.pos} of "
            f"filter_string, found {_show(token.text)}; use one of {_listing(key)}",
            position=token.pos,
        )

    def _after_not(self, key: _Key) -> Comparator:
        token = self._next()
        if token is not None and token.upper() == "IN":
            return C.NOT_IN
        found = "NOT" if token is None else f"NOT {token.text.upper()}"
        raise _unsupported_comparator(found, key)

    def _after_is(self, key: _Key) -> Comparator:
        token = self._next()
        if token is not None and token.upper() == "NULL":
            return C.IS_NULL
        if token is not None and token.upper() == "NOT":
            last = self._next()
            if last is not None and last.upper() == "NULL":
                return C.IS_NOT_NULL
        raise invalid_parameter(
            f"After '{key.text} IS' write NULL or NOT NULL (IS only tests for a missing value)"
        )

    # -- values ------------------------------------------------------------------------------

    def _value(self, key: _Key, comparator: Comparator) -> Value:
        if comparator in _NULL_CHECKS:
            return None
        if comparator in _LISTS:
            return self._string_list(key, comparator)
        token = self._next()
        if token is None:
            raise invalid_parameter(f"Clause '{key.text} {comparator}' has no value")
        self._refuse_grouping(token)
        if _wants_number(key.target, comparator):
            return _number(token, key, comparator)
        value = _string(token, key, comparator)
        if comparator in (C.LIKE, C.ILIKE) and _ends_with_escape(value):
            # PostgreSQL refuses such a pattern; answer the same on every database.
            raise invalid_parameter(
                f"The {comparator} pattern {_show(value)} for '{key.text}' ends with a lone "
                "backslash, the escape character of LIKE patterns, with nothing to escape; "
                "write \\\\ to match a backslash",
                position=token.pos,
            )
        return value

    def _string_list(self, key: _Key, comparator: Comparator) -> tuple[str, ...]:
        example = f"{key.text} {comparator} ('a', 'b')"
        opening = self._next()
        if opening is None or opening.kind is not _Tok.LPAREN:
            raise invalid_parameter(f"{comparator} needs a parenthesised list, e.g. {example}")
        items: list[str] = []
        while True:
            token = self._next()
            if token is None:
                raise invalid_parameter(f"Unclosed {comparator} list; close it with ')'")
            if token.kind is _Tok.RPAREN and not items:
                raise invalid_parameter(
                    f"Empty {comparator} list for '{key.text}'; list at least one value, "
                    f"e.g. {example}"
                )
            items.append(_string(token, key, comparator))
            separator = self._next()
            if separator is None:
                raise invalid_parameter(f"Unclosed {comparator} list; close it with ')'")
            if separator.kind is _Tok.RPAREN:
                return tuple(items)
            if separator.kind is not _Tok.COMMA:
                raise invalid_parameter(
                    f"Malformed {comparator} list for '{key.text}': separate quoted values "
                    f"with commas and close with ')', e.g. {example}"
                )

    # -- helpers -----------------------------------------------------------------------------

    def _next(self) -> _Token | None:
        if self._index >= len(self._tokens):
            return None
        token = self._tokens[self._index]
        self._index += 1
        return token

    @staticmethod
    def _refuse_grouping(token: _Token) -> None:
        if token.kind in (_Tok.LPAREN, _Tok.RPAREN):
            raise invalid_parameter(
                f"Parentheses are not supported in filter_string (position {token.pos}); "
                "they only enclose IN lists. Join clauses with AND, without grouping.",
                position=token.pos,
            )

    @staticmethod
    def _expected_and(token: _Token) -> InsightsError:
        if token.upper() == "OR":
            return invalid_parameter(
                f"OR is not supported in filter_string (position {token.pos}); clauses can "
                "only be joined with AND. Use IN ('a', 'b') for alternatives of one key, or "
                "make one request per alternative.",
                position=token.pos,
            )
        _Parser._refuse_grouping(token)
        return invalid_parameter(
            f"Expected AND at position {token.pos} of filter_string, found {_show(token.text)}; "
            "join clauses with AND and quote values containing spaces",
            position=token.pos,
        )


def _wants_number(target: Target, comparator: Comparator) -> bool:
    if isinstance(target, TraceColumn):
        return target.numeric
    return isinstance(target, Assessment) and comparator in _ORDERING


def _ends_with_escape(pattern: str) -> bool:
    """Whether the pattern ends with an odd number of backslashes (an escape of nothing)."""
    return (len(pattern) - len(pattern.rstrip("\\"))) % 2 == 1


def _number(token: _Token, key: _Key, comparator: Comparator) -> int | float:
    if token.kind is not _Tok.NUMBER:
        raise invalid_parameter(
            f"'{key.text} {comparator}' needs a bare number, found {_show(token.text)}, "
            f"e.g. {key.text} {comparator} 100",
            position=token.pos,
        )
    text = token.text
    number: int | float = int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    if isinstance(number, int) and number not in _INT64:
        raise invalid_parameter(f"Number {_show(text)} for '{key.text}' is out of range")
    if isinstance(number, float) and not math.isfinite(number):
        raise invalid_parameter(f"Number {_show(text)} for '{key.text}' is out of range")
    return number


def _string(token: _Token, key: _Key, comparator: Comparator) -> str:
    if token.kind is _Tok.STRING:
        return token.text[1:-1]
    hint = f"'{token.text}'" if token.kind in (_Tok.WORD, _Tok.NUMBER) else "'value'"
    raise invalid_parameter(
        f"'{key.text} {comparator}' needs a quoted string value, found {_show(token.text)}; "
        f"write {key.text} {comparator} {_show(hint, 60)}",
        position=token.pos,
    )


def _unsupported_comparator(comparator: str, key: _Key) -> InsightsError:
    return invalid_parameter(
        f"Unsupported comparator {_show(comparator)} for key '{key.text}'{key.note} in "
        f"filter_string; use one of {_listing(key)}",
        key=key.text,
        comparator=comparator,
    )


def _listing(key: _Key) -> str:
    return ", ".join(key.comparators)


def _show(text: str, limit: int = 40) -> str:
    """Quote a piece of user input for a message, cut short so messages stay readable."""
    text = str(text)  # a Comparator (StrEnum) would otherwise show as <Comparator.ILIKE: ...>
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --------------------------------------------------------------------------------------------
# Case-sensitive string comparison, as MLflow does it on each database
# --------------------------------------------------------------------------------------------


class _PerDatabase(ColumnElement[bool]):
    """One predicate, spelled differently where a database's plain SQL would mean something else.

    MLflow compares strings case-sensitively, which PostgreSQL does natively. MySQL/MariaDB's
    default collations ignore case (and trailing spaces), so MLflow adds a byte-wise comparison
    there. SQLite's LIKE ignores ASCII case unless a connection PRAGMA (which MLflow sets) says
    otherwise; its GLOB never does. This is the only dialect knowledge of the module.
    """

    inherit_cache = True
    _is_implicitly_boolean = True  # a comparison already; never render it as `x = 1`
    _traverse_internals = [
        ("portable", InternalTraversal.dp_clauseelement),
        ("mysql", InternalTraversal.dp_clauseelement),
        ("sqlite", InternalTraversal.dp_clauseelement),
    ]

    def __init__(
        self,
        portable: ColumnElement[bool],
        *,
        mysql: ColumnElement[bool] | None = None,
        sqlite: ColumnElement[bool] | None = None,
    ) -> None:
        self.portable = portable
        self.mysql = portable if mysql is None else mysql
        self.sqlite = portable if sqlite is None else sqlite
        self.type = Boolean()

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.portable._from_objects)


@compiles(_PerDatabase)
def _compile_portable(element: _PerDatabase, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.portable, **kw)})"


@compiles(_PerDatabase, "mysql")
@compiles(_PerDatabase, "mariadb")
def _compile_mysql(element: _PerDatabase, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.mysql, **kw)})"


@compiles(_PerDatabase, "sqlite")
def _compile_sqlite(element: _PerDatabase, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.sqlite, **kw)})"


def _compare_strings(
    column: ColumnElement[Any], comparator: Comparator, value: str | tuple[str, ...]
) -> ColumnElement[bool]:
    """``column <comparator> value`` with MLflow's case rules (see ``_PerDatabase``)."""
    if comparator is C.ILIKE:
        return column.ilike(value)  # lower(x) LIKE lower(y), or ILIKE: the same everywhere
    # MySQL: CAST(x AS BINARY), compared byte by byte; typed as a string for the operators.
    raw = type_coerce(cast(column, LargeBinary), String())
    if isinstance(value, tuple):
        if comparator is C.IN:
            return _PerDatabase(column.in_(value), mysql=raw.in_(value))
        return _PerDatabase(column.not_in(value), mysql=raw.not_in(value))
    if comparator is C.EQ:
        return _PerDatabase(column == value, mysql=and_(column == value, raw == value))
    if comparator is C.NE:
        return _PerDatabase(column != value, mysql=or_(column != value, raw != value))
    if comparator is C.LIKE:
        glob = column.op("GLOB", is_comparison=True)(literal(_like_to_glob(value), String()))
        return _PerDatabase(
            column.like(value), mysql=and_(column.like(value), raw.like(value)), sqlite=glob
        )
    raise AssertionError(f"not a string comparator: {comparator}")  # the parser prevents it


def _like_to_glob(pattern: str) -> str:
    """The GLOB pattern matching what ``LIKE pattern`` (no ESCAPE) matches, case-sensitively."""
    special = {"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}
    return "".join(special.get(char, char) for char in pattern)


_NUMBER_OPERATORS = {
    C.EQ: operator.eq,
    C.NE: operator.ne,
    C.LT: operator.lt,
    C.LE: operator.le,
    C.GT: operator.gt,
    C.GE: operator.ge,
}


def _compare_numbers(
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

    def __init__(self, clauses: list[Clause], scope: tuple[int, ...] | None) -> None:
        self._clauses = clauses
        self._scope = scope

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
            return _key_value(SqlTraceTag, target.key, comparator, value)
        if isinstance(target, TraceMetadata):
            if target.key == TraceMetadataKey.SOURCE_RUN and comparator is C.EQ:
                return _source_run(str(value))
            return _key_value(SqlTraceMetadata, target.key, comparator, value)
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
        return _compare_strings(column, clause.comparator, _text_value(clause.value))

    def _one_span(self, conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
        scope: list[ColumnElement[bool]] = [
            SqlSpan.trace_id == SqlTraceInfo.request_id,
            SqlSpan.experiment_id == SqlTraceInfo.experiment_id,
        ]
        lower_bound = self._span_start_lower_bound_ns()
        if lower_bound is not None:
            scope.append(_compare_numbers(SqlSpan.start_time_unix_nano, C.GE, lower_bound))
        return exists().where(*scope, *conditions)

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
        if comparator not in _NULL_CHECKS:
            conditions.append(_assessment_value(comparator, value))
        found = or_(
            exists().where(SqlAssessments.trace_id == SqlTraceInfo.request_id, *conditions),
            self._session_assessment(conditions),
        )
        return not_(found) if comparator is C.IS_NULL else found

    def _session_assessment(self, conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
        """A matching assessment logged for the trace's whole session, on any of its traces."""
        sibling = aliased(SqlTraceInfo)
        in_scope: ColumnElement[bool] = (
            sibling.experiment_id == SqlTraceInfo.experiment_id
            if self._scope is None
            else sibling.experiment_id.in_(self._scope)
        )
        return and_(
            SqlTraceInfo.session_id.is_not(None),
            exists().where(
                sibling.session_id == SqlTraceInfo.session_id,
                in_scope,
                SqlAssessments.trace_id == sibling.request_id,
                *conditions,
                SqlAssessments.assessment_metadata.is_not(None),
                SqlAssessments.assessment_metadata.contains(_SESSION_ASSESSMENT_MARKER),
            ),
        )


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
        return _compare_numbers(column, comparator, value)
    return _compare_strings(column, comparator, _text_value(value))


def _key_value(
    model: type[SqlTraceTag] | type[SqlTraceMetadata],
    key: str,
    comparator: Comparator,
    value: Value,
) -> ColumnElement[bool]:
    """A tag or metadata clause: EXISTS a row of the trace with that key and a matching value."""
    owned: ColumnElement[bool] = model.request_id == SqlTraceInfo.request_id
    if comparator in _NULL_CHECKS:
        # MLflow matches the key with the database's collation here, byte-wise below.
        present = exists().where(owned, model.key == key)
        return present if comparator is C.IS_NOT_NULL else not_(present)
    return exists().where(
        owned,
        _compare_strings(model.key, C.EQ, key),
        _compare_strings(model.value, comparator, _text_value(value)),
    )


def _source_run(run_id: str) -> ColumnElement[bool]:
    """``metadata.mlflow.sourceRun = x``: logged under the run, or linked to it afterwards."""
    linked = exists().where(
        SqlEntityAssociation.source_id == SqlTraceInfo.request_id,
        SqlEntityAssociation.source_type == EntityAssociationType.TRACE,
        SqlEntityAssociation.destination_type == EntityAssociationType.RUN,
        SqlEntityAssociation.destination_id == run_id,
    )
    logged = exists().where(
        SqlTraceMetadata.request_id == SqlTraceInfo.request_id,
        SqlTraceMetadata.key == TraceMetadataKey.SOURCE_RUN,
        SqlTraceMetadata.value == run_id,
    )
    return or_(linked, logged)


def _assessment_value(comparator: Comparator, value: Value) -> ColumnElement[bool]:
    if comparator in _ORDERING:
        assert isinstance(value, (int, float))
        return and_(
            SqlAssessments.is_numeric_value == true(),
            _compare_numbers(SqlAssessments.aggregate_value, comparator, float(value)),
        )
    # Values are stored as JSON: match the raw text (true, 5) or the JSON string ("yes").
    text = str(value)
    either = or_(
        _compare_strings(SqlAssessments.value, C.EQ, text),
        _compare_strings(SqlAssessments.value, C.EQ, json.dumps(text)),
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
    return int(number) if int(number) in _INT64 else None


def _finite_float(value: object) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None
