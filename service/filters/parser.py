"""Tokens -> ``Clause``s: THE parsed form of a filter string, read once per request.

A filter is ``clause (AND clause)*``; each clause is a key (resolved to what it refers to), a
comparator and a value. Everything wrong with a filter is found here, before any SQL is built,
and reported as INVALID_PARAMETER_VALUE saying what to change.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from service.errors import InsightsError, invalid_parameter
from service.filters.keys import (
    INT64,
    KNOWN_KEYS,
    LISTS,
    NULL_CHECKS,
    ORDERING,
    SUBQUERY_TARGETS,
    Assessment,
    Comparator,
    Key,
    Target,
    TraceColumn,
    resolve_key,
)
from service.filters.lexer import Token, TokenKind, check_text, tokenize

C = Comparator

MAX_FILTER_SUBQUERIES: Final = 50
"""Most tag, metadata and feedback/expectation clauses accepted. Each is a correlated EXISTS,
and PostgreSQL's planning time grows steeply with their number (80 took 1.6 s, 160 took 27 s,
300 ran past the statement timeout); clauses on trace columns cost next to nothing."""


def parse(filter_string: str | None) -> tuple[Clause, ...]:
    """The clauses of a filter string; ``()`` for None or a blank string.

    Raises ``InsightsError`` (INVALID_PARAMETER_VALUE) naming what is wrong with the filter.
    """
    if filter_string is None:
        return ()
    if not isinstance(filter_string, str):
        raise invalid_parameter("filter_string must be a string")
    if not filter_string.strip():
        return ()
    check_text(filter_string)
    clauses = _Parser(list(tokenize(filter_string))).clauses()
    subqueries = sum(isinstance(c.key.target, SUBQUERY_TARGETS) for c in clauses)
    if subqueries > MAX_FILTER_SUBQUERIES:
        raise invalid_parameter(
            f"filter_string has {subqueries} tag, metadata and assessment clauses; the limit "
            f"is {MAX_FILTER_SUBQUERIES}. Drop repeated clauses."
        )
    return tuple(clauses)


Value = str | int | float | tuple[str, ...] | None


@dataclass(frozen=True)
class Clause:
    """One ``key comparator value`` of a filter: what callers read, and what predicates and
    pinned values are built from."""

    key: Key
    comparator: Comparator
    value: Value

    def pinned_value(self) -> str | None:
        """The one value every matching trace has: an ``=`` or a one-item ``IN``, else None."""
        if self.comparator is C.EQ and isinstance(self.value, str):
            return self.value
        if self.comparator is C.IN and isinstance(self.value, tuple) and len(self.value) == 1:
            return self.value[0]
        return None


_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "RLIKE", "IS", "NULL"})
_SYMBOLS = {"=": C.EQ, "!=": C.NE, "<": C.LT, "<=": C.LE, ">": C.GT, ">=": C.GE}


class _Parser:
    """``clause (AND clause)*``; a clause is ``key comparator [value]``."""

    def __init__(self, tokens: list[Token]) -> None:
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
        if token.kind is not TokenKind.WORD or token.upper() in _KEYWORDS:
            raise invalid_parameter(
                f"Expected a key at position {token.pos} of filter_string, found "
                f"{_show(token.text)}; use {KNOWN_KEYS}",
                position=token.pos,
            )
        key = resolve_key(token)
        comparator = self._comparator(key)
        return Clause(key, comparator, self._value(key, comparator))

    def _comparator(self, key: Key) -> Comparator:
        token = self._next()
        if token is None:
            raise invalid_parameter(
                f"Clause on '{key.text}' has no comparator; use one of {_listing(key)}"
            )
        comparator = self._read_comparator(token, key)
        if comparator not in key.comparators:
            raise _unsupported_comparator(comparator, key)
        return comparator

    def _read_comparator(self, token: Token, key: Key) -> Comparator:
        if token.kind is TokenKind.OP:
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

    def _after_not(self, key: Key) -> Comparator:
        token = self._next()
        if token is not None and token.upper() == "IN":
            return C.NOT_IN
        found = "NOT" if token is None else f"NOT {token.text.upper()}"
        raise _unsupported_comparator(found, key)

    def _after_is(self, key: Key) -> Comparator:
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

    def _value(self, key: Key, comparator: Comparator) -> Value:
        if comparator in NULL_CHECKS:
            return None
        if comparator in LISTS:
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

    def _string_list(self, key: Key, comparator: Comparator) -> tuple[str, ...]:
        example = f"{key.text} {comparator} ('a', 'b')"
        opening = self._next()
        if opening is None or opening.kind is not TokenKind.LPAREN:
            raise invalid_parameter(f"{comparator} needs a parenthesised list, e.g. {example}")
        items: list[str] = []
        while True:
            token = self._next()
            if token is None:
                raise invalid_parameter(f"Unclosed {comparator} list; close it with ')'")
            if token.kind is TokenKind.RPAREN and not items:
                raise invalid_parameter(
                    f"Empty {comparator} list for '{key.text}'; list at least one value, "
                    f"e.g. {example}"
                )
            items.append(_string(token, key, comparator))
            separator = self._next()
            if separator is None:
                raise invalid_parameter(f"Unclosed {comparator} list; close it with ')'")
            if separator.kind is TokenKind.RPAREN:
                return tuple(items)
            if separator.kind is not TokenKind.COMMA:
                raise invalid_parameter(
                    f"Malformed {comparator} list for '{key.text}': separate quoted values "
                    f"with commas and close with ')', e.g. {example}"
                )

    # -- helpers -----------------------------------------------------------------------------

    def _next(self) -> Token | None:
        if self._index >= len(self._tokens):
            return None
        token = self._tokens[self._index]
        self._index += 1
        return token

    @staticmethod
    def _refuse_grouping(token: Token) -> None:
        if token.kind in (TokenKind.LPAREN, TokenKind.RPAREN):
            raise invalid_parameter(
                f"Parentheses are not supported in filter_string (position {token.pos}); "
                "they only enclose IN lists. Join clauses with AND, without grouping.",
                position=token.pos,
            )

    @staticmethod
    def _expected_and(token: Token) -> InsightsError:
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
    return isinstance(target, Assessment) and comparator in ORDERING


def _ends_with_escape(pattern: str) -> bool:
    """Whether the pattern ends with an odd number of backslashes (an escape of nothing)."""
    return (len(pattern) - len(pattern.rstrip("\\"))) % 2 == 1


def _number(token: Token, key: Key, comparator: Comparator) -> int | float:
    if token.kind is not TokenKind.NUMBER:
        raise invalid_parameter(
            f"'{key.text} {comparator}' needs a bare number, found {_show(token.text)}, "
            f"e.g. {key.text} {comparator} 100",
            position=token.pos,
        )
    text = token.text
    number: int | float = int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    if isinstance(number, int) and number not in INT64:
        raise invalid_parameter(f"Number {_show(text)} for '{key.text}' is out of range")
    if isinstance(number, float) and not math.isfinite(number):
        raise invalid_parameter(f"Number {_show(text)} for '{key.text}' is out of range")
    return number


def _string(token: Token, key: Key, comparator: Comparator) -> str:
    if token.kind is TokenKind.STRING:
        return token.text[1:-1]
    hint = f"'{token.text}'" if token.kind in (TokenKind.WORD, TokenKind.NUMBER) else "'value'"
    raise invalid_parameter(
        f"'{key.text} {comparator}' needs a quoted string value, found {_show(token.text)}; "
        f"write {key.text} {comparator} {_show(hint, 60)}",
        position=token.pos,
    )


def _unsupported_comparator(comparator: str, key: Key) -> InsightsError:
    return invalid_parameter(
        f"Unsupported comparator {_show(comparator)} for key '{key.text}'{key.note} in "
        f"filter_string; use one of {_listing(key)}",
        key=key.text,
        comparator=comparator,
    )


def _listing(key: Key) -> str:
    return ", ".join(key.comparators)


def _show(text: str, limit: int = 40) -> str:
    """Quote a piece of user input for a message, cut short so messages stay readable."""
    text = str(text)  # a Comparator (StrEnum) would otherwise show as <Comparator.ILIKE: ...>
    return repr(text if len(text) <= limit else text[:limit] + "...")
