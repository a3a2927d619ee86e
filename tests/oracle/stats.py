"""Statistics computed independently: percentiles and means with numpy, exact means with
``fractions``, float comparison to 1e-9 relative."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q, method="linear"))


def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(np.asarray(values, dtype=float))) if values else None


def exact_mean(values: Sequence[float]) -> float | None:
    """The correctly rounded mean of doubles (what an exact sum / count gives)."""
    if not values:
        return None
    return float(sum((Fraction(v) for v in values), Fraction(0)) / len(values))


def rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def close(actual: float | None, expected: float | None, rel: float = 1e-9) -> bool:
    if actual is None or expected is None:
        return actual is expected
    return bool(np.isclose(actual, expected, rtol=rel, atol=1e-12))
