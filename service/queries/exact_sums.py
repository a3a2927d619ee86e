"""Exact sums of doubles (costs, assessment values) in SQL, identical on every database.

``SUM`` over a double column depends on the order the database adds the rows in, so SQLite,
PostgreSQL and MySQL/MariaDB disagree in the last digits (and MySQL's ``AVG`` is a DECIMAL).
Instead, each value ``x`` is split in SQL into integers that represent it exactly:

    x = a + d1 * 2^-26 + d2 * 2^-52 + d3 * 2^-78 + d4 * 2^-104,
    a = floor(x),  d_k = floor(x * 2^(26k)) - floor(x * 2^(26(k-1))) * 2^26  in [0, 2^26)

Every step is exact in IEEE doubles (scaling by powers of two, ``floor``, and a subtraction
whose result is representable), so the database sums integers, exactly, and Python turns the
integer sums into the correctly rounded float of the true sum (what ``math.fsum`` gives).

Limits: exact for every value with ``|x| >= 2^-52`` (about 2.2e-16; smaller magnitudes lose
their bits below 2^-104) and ``|x| < 2^63`` (about 9.2e18).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, cast, func, literal
from sqlalchemy.sql import ColumnElement

from service.dialects import floor_float

_DIGIT_BITS = 26
_DIGITS = 4
_SCALE_BITS = _DIGIT_BITS * _DIGITS  # the sum is an integer multiple of 2^-104


def _parts(value: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    # x * 2^(26k) as k successive exact multiplications by 2^26, an integer literal that every
    # database reads exactly (a float literal such as 2^78 may be read as a rounded DECIMAL).
    radix = literal(1 << _DIGIT_BITS, BigInteger)
    scaled = [value]
    for _ in range(_DIGITS):
        scaled.append(scaled[-1] * radix)
    floors = [floor_float(s) for s in scaled]
    parts: list[ColumnElement[Any]] = [cast(floors[0], BigInteger)]
    return parts + [
        cast(floors[k] - floors[k - 1] * radix, BigInteger) for k in range(1, _DIGITS + 1)
    ]


def sum_column_names(name: str) -> list[str]:
    """The labels of ``sum_columns(value, name)``, in its order."""
    return [f"{name}__{k}" for k in range(_DIGITS + 1)]


def sum_columns(value: ColumnElement[Any], name: str) -> list[ColumnElement[Any]]:
    """Aggregate columns (labelled ``{name}__0`` ...) whose integer sums ``read_sum`` combines
    into the exact sum of the non-null ``value``s of a group."""
    return [
        func.sum(part).label(label)
        for label, part in zip(sum_column_names(name), _parts(value), strict=True)
    ]


@dataclass(frozen=True)
class ExactSum:
    """A sum of doubles held exactly, as an integer multiple of 2^-104; sums add up exactly."""

    scaled: int = 0

    def __add__(self, other: ExactSum) -> ExactSum:
        return ExactSum(self.scaled + other.scaled)

    @property
    def value(self) -> float:
        """The correctly rounded float of the sum."""
        return self.scaled / (1 << _SCALE_BITS)

    def mean(self, count: int) -> float | None:
        """The correctly rounded float of sum / count; None without values."""
        return None if count == 0 else self.scaled / (count << _SCALE_BITS)


def read_sum(row: Mapping[Any, Any], name: str) -> ExactSum:
    """The exact sum from the columns of ``sum_columns`` (0 when the group had no values)."""
    scaled = 0
    for k in range(_DIGITS + 1):
        part = row[f"{name}__{k}"]
        if part is not None:
            scaled += int(part) << (_SCALE_BITS - _DIGIT_BITS * k)
    return ExactSum(scaled)


def total(sums: Any) -> ExactSum:
    """The exact sum of several ``ExactSum``s."""
    result = ExactSum()
    for s in sums:
        result = result + s
    return result
