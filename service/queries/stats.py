"""Statistics defined once for every area: exact percentiles, averages, rates.

Percentiles are continuous (linear interpolation between closest ranks, PostgreSQL's
``percentile_cont``); averages are computed from exact SQL sums so every database gives the
same digits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import Subquery

from service.dialects import P50, P90, P95, P99, Quantile, policy_for

DEFAULT_QUANTILES: tuple[Quantile, ...] = (P50, P90, P95, P99)


@dataclass(frozen=True)
class Distribution:
    """Count, sum, min, max, mean and percentiles of the non-null values of one group."""

    count: int
    total: float | None
    minimum: float | None
    maximum: float | None
    percentiles: dict[str, float | None] = field(default_factory=dict)

    @property
    def avg(self) -> float | None:
        return None if not self.count or self.total is None else self.total / self.count

    def p(self, name: str) -> float | None:
        return self.percentiles[name]


def empty_distribution(quantiles: Sequence[Quantile] = DEFAULT_QUANTILES) -> Distribution:
    return Distribution(0, None, None, None, {q.name: None for q in quantiles})


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


async def distributions(
    session: AsyncSession,
    source: Subquery,
    *,
    value: str = "v",
    keys: Sequence[str] = (),
    quantiles: Sequence[Quantile] = DEFAULT_QUANTILES,
) -> dict[tuple[Any, ...], Distribution]:
    """One ``Distribution`` of ``source.c[value]`` per distinct ``keys`` tuple, in one query.

    With no keys the result has exactly one entry, under ``()``.
    """
    strategy = policy_for(session.get_bind().dialect).percentiles
    stmt = strategy.summarize(source, value=value, keys=keys, quantiles=quantiles)
    result: dict[tuple[Any, ...], Distribution] = {}
    for row in (await session.execute(stmt)).mappings():
        result[tuple(row[k] for k in keys)] = Distribution(
            count=int(row["n"] or 0),
            total=_number(row["total"]),
            minimum=_number(row["minimum"]),
            maximum=_number(row["maximum"]),
            percentiles={q.name: strategy.read(row, q) for q in quantiles},
        )
    if not keys and () not in result:
        result[()] = empty_distribution(quantiles)
    return result


def rate(part: int, whole: int) -> float | None:
    """A percentage from 0 to 100, unrounded; None when the denominator is 0."""
    return None if whole == 0 else part * 100.0 / whole
