"""service.npmi against MLflow's own NPMI (``mlflow.store.analytics.trace_correlation``)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from mlflow.store.analytics.trace_correlation import calculate_npmi_from_counts

from service.npmi import npmi, strength


def mlflow_scores(joint: int, count1: int, count2: int, total: int) -> tuple[float | None, ...]:
    """MLflow's (npmi, npmi_smoothed), with its NaN as None."""
    result = calculate_npmi_from_counts(joint, count1, count2, total)
    return tuple(
        None if value is None or math.isnan(value) else value
        for value in (result.npmi, result.npmi_smoothed)
    )


def all_tables(max_total: int) -> list[tuple[int, int, int, int]]:
    """Every (joint, count1, count2, total) up to ``max_total``, inconsistent ones included."""
    return [
        (joint, c1, c2, total)
        for total in range(max_total + 1)
        for c1 in range(total + 2)
        for c2 in range(total + 2)
        for joint in range(min(c1, c2) + 2)
    ]


def test_equals_mlflow_bit_for_bit_on_every_small_table() -> None:
    tables = all_tables(18)
    assert len(tables) > 10_000
    for table in tables:
        ours = npmi(*table)
        assert (ours.npmi_score, ours.npmi_smoothed) == mlflow_scores(*table), table


def test_equals_mlflow_on_large_random_tables() -> None:
    rng = random.Random(4)
    for _ in range(5000):
        total = rng.randrange(1, 10**7)
        c1, c2 = rng.randrange(total + 1), rng.randrange(total + 1)
        joint = rng.randrange(max(0, c1 + c2 - total), min(c1, c2) + 1)
        ours = npmi(joint, c1, c2, total)
        assert (ours.npmi_score, ours.npmi_smoothed) == mlflow_scores(joint, c1, c2, total)


@pytest.mark.parametrize(
    ("table", "score", "smoothed_sign"),
    [
        ((0, 10, 20, 100), -1.0, -1),  # never together
        ((30, 30, 30, 30), 1.0, None),  # always together: 1, smoothed too
        ((5, 10, 50, 100), 0.0, None),  # independent
    ],
)
def test_edge_cases(
    table: tuple[int, int, int, int], score: float, smoothed_sign: int | None
) -> None:
    result = npmi(*table)
    assert result.npmi_score == pytest.approx(score, abs=1e-12)
    assert result.npmi_smoothed is not None
    if smoothed_sign is not None:
        assert math.copysign(1, result.npmi_smoothed) == smoothed_sign
        assert result.npmi_smoothed > -1.0  # smoothing keeps it off the bound
    if table[1] == table[2] == table[3] == table[0]:
        assert result.npmi_smoothed == 1.0


@pytest.mark.parametrize(
    "table",
    [
        (0, 0, 10, 100),  # the first matches nothing
        (0, 10, 0, 100),  # the second matches nothing
        (0, 0, 0, 0),  # no traces at all
        (11, 10, 20, 100),  # joint above a marginal: not a table
        (0, 60, 60, 100),  # n00 < 0: not a table
    ],
)
def test_undefined_is_none_never_nan(table: tuple[int, int, int, int]) -> None:
    result = npmi(*table)
    assert result.npmi_score is None
    assert result.npmi_smoothed is None
    assert result.strength is None


def numpy_npmi(cells: tuple[int, int, int, int], prior: float) -> float:
    """NPMI of a 2x2 table (n11, n10, n01, n00) from the textbook formula, in numpy."""
    p = np.asarray(cells, dtype=float) + prior
    p /= p.sum()
    return float(np.log(p[0] / ((p[0] + p[1]) * (p[0] + p[2]))) / -np.log(p[0]))


def test_scores_equal_the_formula_in_numpy() -> None:
    """The code clamps to [-1, 1], so a bound check could not fail: compare the numbers with an
    independent computation instead (clamping may only move a value by rounding error)."""
    compared = 0
    for joint, c1, c2, total in all_tables(12):
        cells = (joint, c1 - joint, c2 - joint, total - c1 - c2 + joint)
        if min(c1, c2) == 0 or min(cells) < 0 or cells[0] == total:
            continue  # undefined, or every trace in both: test_edge_cases and MLflow's cover them
        result = npmi(joint, c1, c2, total)
        expected = -1.0 if joint == 0 else numpy_npmi(cells, 0.0)
        assert result.npmi_score == pytest.approx(expected, abs=1e-9), (cells, result)
        assert result.npmi_smoothed == pytest.approx(numpy_npmi(cells, 0.5), abs=1e-9), cells
        compared += 1
    assert compared > 1500


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (None, None),
        (1.0, "Strong"),
        (-1.0, "Strong"),
        (0.7000001, "Strong"),
        (-0.71, "Strong"),
        (0.7, "Moderate"),
        (-0.7, "Moderate"),
        (0.5, "Moderate"),
        (0.4, "Moderate"),
        (-0.4, "Moderate"),
        (0.3999999, "Weak"),
        (-0.2, "Weak"),
        (0.0, "Weak"),
    ],
)
def test_strength_bands(score: float | None, expected: str | None) -> None:
    assert strength(score) == expected
