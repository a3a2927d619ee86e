"""NPMI between two yes/no properties of traces, as MLflow's ``calculate_trace_filter_correlation``.

From the four counts over the traces in scope (``N`` traces, ``n1`` with the first property,
``n2`` with the second, ``n11`` with both) the 2x2 table is n11, n10 = n1 - n11,
n01 = n2 - n11 and n00 = N - n1 - n2 + n11, and

    npmi = ln(n11 * N / (n1 * n2)) / -ln(n11 / N)

with MLflow's edge cases (API.md §4.5):

* no traces, a property that matches nothing, or counts that do not form a table: undefined
  (``None`` here, never NaN, so it serialises as JSON ``null``);
* the two never co-occur (n11 = 0): -1;
* they always co-occur (n10 = n01 = n00 = 0): 1, smoothed or not;
* otherwise the formula, clamped to [-1, 1] against rounding.

``npmi_smoothed`` adds 0.5 to each of the four cells first (Jeffreys prior), which pulls scores
built on a handful of traces towards 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

JEFFREYS_PRIOR: Final = 0.5

Strength = Literal["Strong", "Moderate", "Weak"]
STRONG_ABOVE: Final = 0.7
WEAK_BELOW: Final = 0.4


@dataclass(frozen=True)
class NpmiScores:
    npmi_score: float | None
    npmi_smoothed: float | None

    @property
    def strength(self) -> Strength | None:
        return strength(self.npmi_score)


def npmi(joint: int, count1: int, count2: int, total: int) -> NpmiScores:
    """NPMI and smoothed NPMI of two properties from their counts (see the module docstring)."""
    cells = _table(joint, count1, count2, total)
    if cells is None:
        return NpmiScores(None, None)
    return NpmiScores(_score(cells), _npmi_of_table(*cells, JEFFREYS_PRIOR))


def npmi_score(joint: int, count1: int, count2: int, total: int) -> float | None:
    """``npmi(...).npmi_score`` alone: what ranks thousands of candidates, of which only the few
    shown need their smoothed score too."""
    cells = _table(joint, count1, count2, total)
    return None if cells is None else _score(cells)


def _table(joint: int, count1: int, count2: int, total: int) -> tuple[int, int, int, int] | None:
    """The 2x2 table (n11, n10, n01, n00), or None where NPMI is undefined."""
    if total <= 0 or count1 == 0 or count2 == 0:
        return None
    cells = (joint, count1 - joint, count2 - joint, total - count1 - count2 + joint)
    return None if min(cells) < 0 else cells


def _score(cells: tuple[int, int, int, int]) -> float | None:
    return -1.0 if cells[0] == 0 else _npmi_of_table(*cells, 0.0)


def _npmi_of_table(n11: int, n10: int, n01: int, n00: int, prior: float) -> float | None:
    if n10 == 0 and n01 == 0 and n00 == 0:
        return 1.0  # every trace has both properties (decided before smoothing, as MLflow does)
    # Cells are integers or integers + 0.5: every sum below is exact in floating point.
    both, only1, only2, neither = n11 + prior, n10 + prior, n01 + prior, n00 + prior
    first, second = both + only1, both + only2
    total = both + only1 + only2 + neither
    if first <= 0 or second <= 0 or both <= 0:
        return None
    log_both, log_total = math.log(both), math.log(total)
    pmi = (log_both + log_total) - (math.log(first) + math.log(second))
    score = pmi / -(log_both - log_total)
    return max(-1.0, min(1.0, score))


def strength(score: float | None) -> Strength | None:
    """Strength of a score: Strong above 0.7, Moderate from 0.4 to 0.7, Weak below 0.4 (by
    absolute value); None for None."""
    if score is None:
        return None
    magnitude = abs(score)
    if magnitude > STRONG_ABOVE:
        return "Strong"
    if magnitude >= WEAK_BELOW:
        return "Moderate"
    return "Weak"
