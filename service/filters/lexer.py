"""Filter strings -> tokens: the words, strings, numbers and operators of a filter.

Also the checks on the raw text (length, NUL, encoding) that come before any tokenizing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from service.errors import InsightsError, invalid_parameter

MAX_FILTER_LENGTH: Final = 10_000
"""Longest filter_string accepted; far above any hand-written filter, far below SQL limits."""


class TokenKind(StrEnum):
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
    | (?P<{TokenKind.STRING}>'[^']*'|"[^"]*")
    | (?P<{TokenKind.NUMBER}>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.]))
    | (?P<{TokenKind.WORD}>{_SEGMENT}(?:\.(?:[A-Za-z0-9_]+|`[^`]*`))*)
    | (?P<{TokenKind.OP}><=|>=|!=|<>|==|=|<|>)
    | (?P<{TokenKind.LPAREN}>\()
    | (?P<{TokenKind.RPAREN}>\))
    | (?P<{TokenKind.COMMA}>,)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str
    pos: int  # 1-based character position, for messages

    def upper(self) -> str:
        return self.text.upper() if self.kind is TokenKind.WORD else ""


def check_text(filter_string: str) -> None:
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


def tokenize(text: str) -> Iterator[Token]:
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise _unreadable(text, pos)
        kind = str(match.lastgroup)
        if kind != "space":
            yield Token(TokenKind(kind), match.group(), pos + 1)
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
