"""The analytics store's exact percentiles (``ListPercentiles``) against the textbook rule.

The store reads the two ranks PostgreSQL's ``percentile_cont`` interpolates between from each
group's sorted list of values, or, for one group of every value or for few large groups of
integer keys (``large_groups``), from a ``row_number()`` over one sort of them. Expected numbers
here come from the raw values in Python: sort, take ranks ``floor(q*(n-1))`` and the next one,
interpolate as PostgreSQL does (checked against numpy's linear percentile too). Every group size
up to a few hundred, with ties and NULLs, and the odd fractions MLflow's ``P33.3`` style asks for.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import pytest
import sqlalchemy as sa

from service.dialects import P50, P90, P95, P99, Quantile, percentiles
from service.dialects.percentiles import MAX_PICKED_GROUPS, ListPercentiles

QUANTILES = (
    P50,
    P90,
    P95,
    P99,
    Quantile("third", 1, 3),
    Quantile("p0", 0),
    Quantile("p100", 100),
    Quantile("p99_9", 999, 1000),
    Quantile("p0_1", 1, 1000),
)


def textbook(values: Sequence[float], q: Quantile) -> float | None:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    low_rank = q.num * (n - 1) // q.den
    low = ordered[low_rank]
    high = ordered[min(low_rank + 1, n - 1)]
    position = q.fraction * (n - 1)
    return low + (high - low) * (position - math.floor(position))


def groups_of_every_size() -> dict[int | None, list[float | None]]:
    rng = random.Random(11)
    groups: dict[int | None, list[float | None]] = {}
    for size in range(0, 320):
        spread = rng.choice([3, 50, 10**6])  # few distinct values: many ties
        values: list[float | None] = [float(rng.randrange(spread)) for _ in range(size)]
        values += [None] * rng.randrange(3)
        groups[size] = values
    groups[1000] = [float(v) for v in rng.choices(range(7), k=5000)]
    groups[1001] = [rng.lognormvariate(7, 1) for _ in range(4999)]
    groups[None] = [float(v) for v in rng.choices(range(40), k=77)]  # a NULL key is a group too
    return groups


def name_of(k: int | None) -> str | None:
    """A string key beside each integer key: several groups per name, the NULL group's NULL."""
    return None if k is None else f"tool-{k % 7}"


@pytest.fixture(scope="module")
def store_engine() -> sa.Engine:
    engine = sa.create_engine("duckdb:///:memory:")
    groups = groups_of_every_size()
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE samples (k INTEGER, name VARCHAR, v DOUBLE)")
        conn.execute(
            sa.text("INSERT INTO samples VALUES (:k, :name, :v)"),
            [{"k": k, "name": name_of(k), "v": v} for k, values in groups.items() for v in values],
        )
    return engine


def samples_source() -> sa.Subquery:
    """The samples table as the strategies read it: a subquery of its three columns."""
    samples = sa.table(
        "samples",
        sa.column("k", sa.Integer),
        sa.column("name", sa.String),
        sa.column("v", sa.Float),
    )
    return sa.select(samples.c.k, samples.c.name, samples.c.v).subquery("source")


def summarize(
    engine: sa.Engine, keys: Sequence[str], *, large_groups: bool = False
) -> list[dict[str, object]]:
    source = samples_source()
    strategy = ListPercentiles()
    statement = strategy.summarize(
        source, value="v", keys=keys, quantiles=QUANTILES, large_groups=large_groups
    )
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(statement)]
    return [
        {**{k: row[k] for k in keys}, "n": row["n"]}
        | {q.name: strategy.read(row, q) for q in QUANTILES}
        for row in rows
    ]


@pytest.mark.parametrize("large_groups", [False, True], ids=["lists", "one sort"])
def test_every_group_size_gives_postgres_percentiles(
    store_engine: sa.Engine, large_groups: bool
) -> None:
    groups = groups_of_every_size()
    rows = summarize(store_engine, ["k"], large_groups=large_groups)
    answered = {row["k"]: row for row in rows}
    assert len(rows) == len(answered)  # one row per group, the NULL group once
    assert set(answered) == set(groups)
    for k, values in groups.items():
        present = [v for v in values if v is not None]
        assert answered[k]["n"] == len(present)
        for q in QUANTILES:
            expected = textbook(present, q)
            assert answered[k][q.name] == expected, (k, q)
            if expected is not None:
                assert expected == pytest.approx(
                    float(np.percentile(present, 100 * q.fraction)), rel=1e-12
                )


@pytest.mark.parametrize("large_groups", [False, True], ids=["lists", "one sort"])
def test_string_and_integer_keys_give_postgres_percentiles(
    store_engine: sa.Engine, large_groups: bool
) -> None:
    """Groups of a string key and an integer key (a tool and a bucket), ranked either way: one
    sort is what a request asks for once its values are too many for lists in memory."""
    groups = groups_of_every_size()
    rows = summarize(store_engine, ["name", "k"], large_groups=large_groups)
    answered = {(row["name"], row["k"]): row for row in rows}
    assert len(rows) == len(answered) == len(groups)
    for k, values in groups.items():
        present = [v for v in values if v is not None]
        row = answered[(name_of(k), k)]
        assert row["n"] == len(present)
        for q in QUANTILES:
            assert row[q.name] == textbook(present, q), (k, q)


def test_without_keys_the_whole_table_is_one_group(store_engine: sa.Engine) -> None:
    everything = [v for values in groups_of_every_size().values() for v in values if v is not None]
    (row,) = summarize(store_engine, [])
    assert row["n"] == len(everything)
    for q in QUANTILES:
        assert row[q.name] == textbook(everything, q)


@pytest.mark.parametrize("many_values", [False, True], ids=["", "past MANY_VALUES"])
def test_counted_picks_give_postgres_percentiles_for_every_count(
    store_engine: sa.Engine, many_values: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``summarize_counted``: ``quantile_disc`` with fractions that land on the two ranks, for
    one group of every value whose count is known; every count from 0 to 320 and two large
    ones, with ties, NULLs and the odd fractions."""
    if many_values:  # too many values to pick: one sort answers
        monkeypatch.setattr(percentiles, "MANY_VALUES", 1)
    samples = sa.table("samples", sa.column("k", sa.Integer), sa.column("v", sa.Float))
    strategy = ListPercentiles()
    with store_engine.connect() as conn:
        for k, values in groups_of_every_size().items():
            present = [v for v in values if v is not None]
            of_k = samples.c.k.is_(None) if k is None else samples.c.k == k
            source = sa.select(samples.c.v).where(of_k).subquery("source")
            statement = strategy.summarize_counted(
                source, value="v", count=len(present), quantiles=QUANTILES
            )
            picked = "quantile_disc" in str(statement)
            assert picked == (bool(present) and not many_values)
            row = dict(conn.execute(statement).mappings().one())
            assert row["n"] == len(present)
            for q in QUANTILES:
                assert strategy.read(row, q) == textbook(present, q), (k, q)


@pytest.mark.parametrize("many_values", [False, True], ids=["", "past MANY_VALUES"])
@pytest.mark.parametrize(
    "keys", [["name"], ["name", "k"]], ids=["few groups: picks", "323 groups: lists"]
)
def test_counted_groups_give_postgres_percentiles(
    store_engine: sa.Engine, keys: list[str], many_values: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``summarize_counted_groups``: every group's ranks picked by one ``quantile_disc`` over
    fractions the groups share when the groups are few (eight names, the NULL one included), the
    sorted lists beyond ``MAX_PICKED_GROUPS``; the counts given are those of the raw values."""
    expected: dict[tuple[object, ...], list[float]] = {}
    for k, values in groups_of_every_size().items():
        key = (name_of(k),) if keys == ["name"] else (name_of(k), k)
        expected.setdefault(key, []).extend(v for v in values if v is not None)
    assert (len(expected) <= MAX_PICKED_GROUPS) == (keys == ["name"])
    if many_values:  # too many values to pick: the plain forms answer
        monkeypatch.setattr(percentiles, "MANY_VALUES", 1)
    source = samples_source()
    strategy = ListPercentiles()
    counts = {key: len(values) for key, values in expected.items()}
    statement = strategy.summarize_counted_groups(
        source, value="v", keys=keys, counts=counts, quantiles=QUANTILES
    )
    picked = "quantile_disc" in str(statement)
    assert picked == (keys == ["name"] and not many_values)
    with store_engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(statement)]
    assert {tuple(row[k] for k in keys) for row in rows} == set(expected)
    for row in rows:
        present = expected[tuple(row[k] for k in keys)]
        assert row["n"] == len(present)
        for q in QUANTILES:
            assert strategy.read(row, q) == textbook(present, q), (row["name"], q)


def test_shared_fractions_pick_each_groups_own_ranks() -> None:
    """``_shared_fractions``: for every group, the fraction at each of its places picks its
    rank as DuckDB does (index ``ceil(n * f) - 1``, in integer arithmetic), and groups of
    similar counts share them: far fewer fractions than two per quantile per group."""
    rng = random.Random(5)
    scale = 10**30
    cases = [
        [rng.randrange(1, 12) for _ in range(20)],  # tiny groups, counts 1 and 2 included
        [rng.randrange(30_000, 36_000) for _ in range(30)],  # a million latencies in days
        [rng.randrange(1_200, 1_600) for _ in range(32)],
        [1, 2, 3, 10**6, 10**9],
    ]
    for counts in cases:
        fractions, places = percentiles._shared_fractions(counts, QUANTILES)
        assert fractions == sorted(fractions)
        for count, own in zip(counts, places, strict=True):
            ranks = percentiles._pick_ranks(QUANTILES, count)
            for rank, place in zip(ranks, own, strict=True):
                f = fractions[place - 1]
                assert -((-count * f) // scale) == rank, (count, rank, f)  # ceil(n * f)
    days = percentiles._shared_fractions(cases[1], QUANTILES)[0]
    assert len(days) < 2 * len(QUANTILES) * len(cases[1]) / 4


def test_counted_groups_of_similar_counts_give_postgres_percentiles() -> None:
    """Thirty groups of nearly the same count (days of traces), whose ranks share fractions:
    each group's percentiles still those of its own raw values."""
    rng = random.Random(23)
    groups = {
        k: [rng.lognormvariate(5, 1) for _ in range(rng.randrange(900, 1100))] for k in range(30)
    }
    engine = sa.create_engine("duckdb:///:memory:")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE days (k INTEGER, v DOUBLE)")
        conn.execute(
            sa.text("INSERT INTO days VALUES (:k, :v)"),
            [{"k": k, "v": v} for k, values in groups.items() for v in values],
        )
    days = sa.table("days", sa.column("k", sa.Integer), sa.column("v", sa.Float))
    source = sa.select(days.c.k, days.c.v).subquery("source")
    strategy = ListPercentiles()
    statement = strategy.summarize_counted_groups(
        source,
        value="v",
        keys=["k"],
        counts={(k,): len(values) for k, values in groups.items()},
        quantiles=QUANTILES,
    )
    assert "quantile_disc" in str(statement)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(statement)]
    assert {row["k"] for row in rows} == set(groups)
    for row in rows:
        assert row["n"] == len(groups[row["k"]])
        for q in QUANTILES:
            assert strategy.read(row, q) == textbook(groups[row["k"]], q), (row["k"], q)


def integer_groups() -> dict[int | None, list[int | None]]:
    """Integer values as the store's latencies are (milliseconds, nanoseconds), in groups of
    every kind the bins must rank exactly: ties, NULLs, negatives, a range wider than a
    BIGINT's half, a lone outlier that puts nearly every value in one bin, a NULL key."""
    rng = random.Random(31)
    groups: dict[int | None, list[int | None]] = {}
    for size in range(0, 120):
        spread = rng.choice([3, 1000, 10**12])
        values: list[int | None] = [rng.randrange(spread) - spread // 4 for _ in range(size)]
        groups[size] = values + [None] * rng.randrange(3)
    groups[500] = [int(rng.lognormvariate(7, 1)) for _ in range(6000)]  # latencies in ms
    groups[501] = [*(rng.randrange(10**9) for _ in range(3000)), 10**15]  # one outlier
    groups[502] = [-(2**62), 2**62, 0, 1, -1] * 3  # the widest range a BIGINT column holds
    groups[None] = [rng.randrange(40) for _ in range(77)]
    return groups


@pytest.fixture(scope="module")
def integer_engine() -> sa.Engine:
    engine = sa.create_engine("duckdb:///:memory:")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE integers (k INTEGER, v BIGINT)")
        conn.execute(
            sa.text("INSERT INTO integers VALUES (:k, :v)"),
            [{"k": k, "v": v} for k, values in integer_groups().items() for v in values],
        )
    return engine


@pytest.mark.parametrize("keys", [["k"], []], ids=["groups", "one group"])
def test_many_integers_are_ranked_by_bins_exactly(
    integer_engine: sa.Engine, keys: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``MANY_VALUES`` integers are ranked by counting them in bins of their range
    (``_summarize_binned``), one group or many: each group's percentiles still those of its own
    raw values, computed here by sorting them."""
    monkeypatch.setattr(percentiles, "MANY_VALUES", 1)
    expected: dict[tuple[object, ...], list[float]] = {}
    for k, values in integer_groups().items():
        key = (k,) if keys else ()
        expected.setdefault(key, []).extend(float(v) for v in values if v is not None)
    integers = sa.table("integers", sa.column("k", sa.Integer), sa.column("v", sa.BigInteger))
    source = sa.select(integers.c.k, integers.c.v).subquery("source")
    strategy = ListPercentiles()
    counts = {key: len(values) for key, values in expected.items()}
    statement = (
        strategy.summarize_counted_groups(
            source, value="v", keys=keys, counts=counts, quantiles=QUANTILES
        )
        if keys
        else strategy.summarize_counted(source, value="v", count=counts[()], quantiles=QUANTILES)
    )
    assert "binned" in str(statement)
    with integer_engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(statement)]
    assert {tuple(row[k] for k in keys) for row in rows} == {k for k, v in expected.items() if v}
    for row in rows:
        present = expected[tuple(row[k] for k in keys)]
        assert row["n"] == len(present)
        assert row["minimum"] == min(present) and row["maximum"] == max(present)
        for q in QUANTILES:
            assert strategy.read(row, q) == textbook(present, q), (row.get("k"), q)
