"""Exact percentiles, one strategy per kind of database, the same numbers on every one.

A percentile is linear interpolation between closest ranks (PostgreSQL's ``percentile_cont``).
PostgreSQL computes it natively; SQLite and MySQL/MariaDB rank rows with window functions and
Python interpolates. Which strategy a database uses is its connection policy's choice
(``DialectPolicy.percentiles``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Double,
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY
from sqlalchemy.dialects.postgresql import array as pg_array
from sqlalchemy.sql import ColumnElement, Select, select
from sqlalchemy.sql.elements import Grouping
from sqlalchemy.sql.selectable import Subquery

from service.dialects.expressions import int_div


@dataclass(frozen=True)
class Quantile:
    """A percentile as an exact fraction ``num/den``, so row ranks are computed exactly."""

    name: str
    num: int
    den: int = 100
    # Derived once: ``read`` runs for every quantile of every group (100K times for the tools'
    # latency per hour over 30 days).
    fraction: float = field(init=False, repr=False, compare=False)
    low_column: str = field(init=False, repr=False, compare=False)
    high_column: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fraction", self.num / self.den)
        object.__setattr__(self, "low_column", f"{self.name}_lo")
        object.__setattr__(self, "high_column", f"{self.name}_hi")


P50, P90, P95, P99 = (
    Quantile("p50", 50),
    Quantile("p90", 90),
    Quantile("p95", 95),
    Quantile("p99", 99),
)

# Columns every percentile summary select carries besides the grouping keys and percentiles.
STAT_COLUMNS = ("n", "total", "minimum", "maximum")

# More values in all than a strategy should hold in memory group by group: a caller that knows
# its count asks for ``large_groups`` from here on, and the store's exact picks
# (``summarize_counted``, ``summarize_counted_groups``) sort instead. Neither per-group lists nor
# quantile_disc can spill to disk: the MLflow UI's latency per hour over 30 days of 10M traces
# ran out of the store's 512 MB as lists. Above every request at 1M traces (at most 1.5M tool
# calls over 30 days).
MANY_VALUES = 2_000_000


class PercentileStrategy(Protocol):
    def summarize(
        self,
        source: Subquery,
        *,
        value: str,
        keys: Sequence[str],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> Select[Any]:
        """Group ``source`` by ``keys``; select the keys, ``STAT_COLUMNS`` over the non-null
        ``value``s and whatever ``read`` needs for each quantile. ``large_groups``: the caller
        expects few groups of many values each (traces per day), or ``MANY_VALUES`` or more in
        all, which a strategy may rank differently; the numbers are the same."""
        ...

    def read(self, row: Mapping[str, Any], quantile: Quantile) -> float | None:
        """The quantile's value from one result row of ``summarize`` (None without values)."""
        ...

    def reader(
        self, positions: Mapping[str, int], quantile: Quantile
    ) -> Callable[[Sequence[Any]], float | None]:
        """``read`` for rows read by position (``positions``: column name -> index), the
        positions resolved once: for statements of thousands of rows (a series per tool)."""
        ...

    # Whether one group of every value is cheaper once its count is known: the caller then asks
    # ``summarize_counted`` with the count (from a finer grouping of the same rows, or counted).
    counts_first: bool

    def summarize_counted(
        self, source: Subquery, *, value: str, count: int, quantiles: Sequence[Quantile]
    ) -> Select[Any]:
        """``summarize`` with no keys, for a ``source`` of exactly ``count`` non-null values
        (only called where ``counts_first``)."""
        ...

    def summarize_counted_groups(
        self,
        source: Subquery,
        *,
        value: str,
        keys: Sequence[str],
        counts: Mapping[tuple[Any, ...], int],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> Select[Any]:
        """``summarize`` for groups whose counts of non-null values are known (``counts``, by
        key tuple; with no keys ``summarize_counted`` of ``counts[()]``; only called where
        ``counts_first``). A group whose ``n`` differs from its
        count was counted in another snapshot: the caller then asks ``summarize``.
        ``large_groups`` as for ``summarize``, where the groups are summarized that way."""
        ...

    def summarize_levels(
        self,
        source: Subquery,
        *,
        value: str,
        levels: Sequence[Sequence[str]],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> list[LeveledSelect]:
        """``summarize`` at several grouping levels (e.g. per bucket, and overall): statements
        whose rows each carry the level they belong to (``LeveledSelect.level_of``)."""
        ...


def _constant_level(level: int, _row: Mapping[str, Any]) -> int:
    return level


@dataclass(frozen=True)
class LeveledSelect:
    """A statement of ``summarize_levels`` and how to tell which level one of its rows is of."""

    statement: Select[Any]
    level_of: Callable[[Mapping[str, Any]], int]


def _stat_columns(value: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    return [
        func.count(value).label("n"),
        func.sum(value).label("total"),
        func.min(value).label("minimum"),
        func.max(value).label("maximum"),
    ]


class _SummarizesWithoutCount:
    """A strategy for which knowing the count first changes nothing: ``summarize_counted`` is
    ``summarize`` with no keys."""

    counts_first = False

    def summarize(
        self,
        source: Subquery,
        *,
        value: str,
        keys: Sequence[str],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> Select[Any]:
        raise NotImplementedError

    def summarize_counted(
        self, source: Subquery, *, value: str, count: int, quantiles: Sequence[Quantile]
    ) -> Select[Any]:
        return self.summarize(source, value=value, keys=(), quantiles=quantiles)

    def summarize_counted_groups(
        self,
        source: Subquery,
        *,
        value: str,
        keys: Sequence[str],
        counts: Mapping[tuple[Any, ...], int],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> Select[Any]:
        return self.summarize(
            source, value=value, keys=keys, quantiles=quantiles, large_groups=large_groups
        )


class NativePercentiles(_SummarizesWithoutCount):
    """PostgreSQL: ``percentile_cont``, linear interpolation between closest ranks."""

    def summarize(
        self,
        source: Subquery,
        *,
        value: str,
        keys: Sequence[str],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> Select[Any]:
        v = source.c[value]
        key_cols = [source.c[k] for k in keys]
        percentiles: list[ColumnElement[Any]] = []
        if quantiles:
            # One ordered-set aggregate for all fractions: one sort, read once per fraction.
            # PostgreSQL computes identical aggregates of a query once, so each [i] reuses it;
            # separate percentile_cont calls re-read the sort per fraction (once it spills to
            # disk, several times the I/O). Same interpolation, same numbers.
            fractions: ColumnElement[Any] = pg_array(
                [literal(q.fraction, Double()) for q in quantiles]
            )
            combined: ColumnElement[Any] = type_coerce(
                Grouping(func.percentile_cont(fractions).within_group(v)), PG_ARRAY(Double())
            )
            percentiles = [
                combined[literal_column(str(i))].label(q.name)
                for i, q in enumerate(quantiles, start=1)
            ]
        return select(*key_cols, *_stat_columns(v), *percentiles).group_by(*key_cols)

    def read(self, row: Mapping[str, Any], quantile: Quantile) -> float | None:
        value = row[quantile.name]
        return None if value is None else float(value)

    def reader(
        self, positions: Mapping[str, int], quantile: Quantile
    ) -> Callable[[Sequence[Any]], float | None]:
        at = positions[quantile.name]

        def read(row: Sequence[Any]) -> float | None:
            value = row[at]
            return None if value is None else float(value)

        return read

    def summarize_levels(
        self,
        source: Subquery,
        *,
        value: str,
        levels: Sequence[Sequence[str]],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> list[LeveledSelect]:
        # One statement, one read of the rows: GROUP BY GROUPING SETS, each row tagged with
        # GROUPING(all keys), a bit mask of the keys its level does not group by.
        all_keys = list(dict.fromkeys(k for level in levels for k in level))
        if not all_keys:
            return [
                LeveledSelect(
                    self.summarize(source, value=value, keys=(), quantiles=quantiles),
                    lambda _row: 0,
                )
            ]
        plain = self.summarize(source, value=value, keys=all_keys, quantiles=quantiles)
        columns = [source.c[k] for k in all_keys]
        sets = [tuple_(*[source.c[k] for k in level]) for level in levels]
        statement = (
            plain.add_columns(func.grouping(*columns).label("grouping_level"))
            .group_by(None)
            .group_by(func.grouping_sets(*sets))
        )

        def mask(level: Sequence[str]) -> int:
            width = len(all_keys)
            return sum(1 << (width - 1 - i) for i, k in enumerate(all_keys) if k not in level)

        index = {mask(level): i for i, level in enumerate(levels)}
        return [LeveledSelect(statement, lambda row: index[int(row["grouping_level"])])]


def _lerp(low: Any, high: Any, fraction: float, n: int) -> float:
    """The value at ``fraction`` of ``n`` sorted values, from the two closest ranks' values
    (``high`` None: past the last one)."""
    position = fraction * (n - 1)
    proportion = position - math.floor(position)
    low_f = float(low)
    high_f = low_f if high is None else float(high)
    # Same expression as PostgreSQL's float8 lerp, for bit-identical results.
    return low_f + (high_f - low_f) * proportion


class WindowPercentiles(_SummarizesWithoutCount):
    """SQLite and MySQL/MariaDB: rank rows with window functions, pick the two closest ranks.

    SQL returns the values at ranks ``floor(q*(n-1))+1`` and the next one (computed with exact
    integer arithmetic); Python interpolates exactly as PostgreSQL's ``percentile_cont`` does, so
    every database gives the same number.
    """

    def summarize(
        self,
        source: Subquery,
        *,
        value: str,
        keys: Sequence[str],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> Select[Any]:
        v = source.c[value]
        partition = [source.c[k] for k in keys] or None
        ranked = (
            select(
                *[source.c[k] for k in keys],
                v.label("v"),
                func.row_number().over(partition_by=partition, order_by=v).label("rn"),
                func.count().over(partition_by=partition).label("cnt"),
            )
            .where(v.is_not(None))
            .subquery("ranked")
        )
        key_cols = [ranked.c[k] for k in keys]
        picks: list[ColumnElement[Any]] = []
        for q in quantiles:
            low_rank = int_div(q.num * (ranked.c.cnt - 1), q.den) + 1
            picks.append(func.max(case((ranked.c.rn == low_rank, ranked.c.v))).label(q.low_column))
            picks.append(
                func.max(case((ranked.c.rn == low_rank + 1, ranked.c.v))).label(q.high_column)
            )
        return select(*key_cols, *_stat_columns(ranked.c.v), *picks).group_by(*key_cols)

    def read(self, row: Mapping[str, Any], quantile: Quantile) -> float | None:
        low = row[quantile.low_column]
        if low is None:
            return None
        return _lerp(low, row[quantile.high_column], quantile.fraction, row["n"])

    def reader(
        self, positions: Mapping[str, int], quantile: Quantile
    ) -> Callable[[Sequence[Any]], float | None]:
        low_at, high_at, n_at = (
            positions[quantile.low_column],
            positions[quantile.high_column],
            positions["n"],
        )
        fraction = quantile.fraction

        def read(row: Sequence[Any]) -> float | None:
            low = row[low_at]
            return None if low is None else _lerp(low, row[high_at], fraction, row[n_at])

        return read

    def summarize_levels(
        self,
        source: Subquery,
        *,
        value: str,
        levels: Sequence[Sequence[str]],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> list[LeveledSelect]:
        # No GROUPING SETS on SQLite (MySQL's WITH ROLLUP cannot carry the window ranks):
        # one statement per level.
        return [
            LeveledSelect(
                self.summarize(
                    source, value=value, keys=level, quantiles=quantiles, large_groups=large_groups
                ),
                functools.partial(_constant_level, i),
            )
            for i, level in enumerate(levels)
        ]


class ListPercentiles(WindowPercentiles):
    """DuckDB (the analytics store): each group's values collected into one sorted list, the
    two closest ranks read from it by index; Python interpolates as for ``WindowPercentiles``.

    The same ranks and the same arithmetic, so the same digits, at half the cost of ranking
    every row with window functions (tool latencies over 30 days of a million traces: 243 ms
    against 576 ms). DuckDB's own ``quantile_cont`` interpolates differently in the last digits.
    """

    def summarize(
        self,
        source: Subquery,
        *,
        value: str,
        keys: Sequence[str],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> Select[Any]:
        if not keys:
            return self._summarize_all(source, value=value, quantiles=quantiles)
        if large_groups and quantiles:
            return self._summarize_ranked(source, value=value, keys=keys, quantiles=quantiles)
        v = source.c[value]
        key_cols = [source.c[k] for k in keys]
        # list() keeps NULLs: only values are ranked, as count(v) counts them.
        grouped = (
            select(
                *key_cols,
                *_stat_columns(v),
                func.list_sort(func.list(v).filter(v.is_not(None))).label("sorted_values"),
            )
            .group_by(*key_cols)
            .subquery("sorted_groups")
        )
        g = grouped.c
        picks = sorted_list_picks(g.sorted_values, g.n, quantiles)
        return select(*[g[k] for k in keys], *[g[c] for c in STAT_COLUMNS], *picks)

    def _summarize_ranked(
        self, source: Subquery, *, value: str, keys: Sequence[str], quantiles: Sequence[Quantile]
    ) -> Select[Any]:
        """Few large groups of integer keys (traces per day bucket): every value ranked by one
        sort by (keys, value), which DuckDB runs on every core and can spill, where each group's
        list is sorted on one core and held in memory. A million latencies in 30 day buckets:
        118 -> 85 ms. Many small groups are faster as lists (720 hour buckets: 74 -> 90 ms this
        way; numeric feedback in day buckets 24 -> 36 ms), and string keys sort slowly (tools'
        (tool, bucket) groups took 4 times as long): those keep the lists, unless the values
        are too many for lists in memory (``MANY_VALUES``), which only this form can spill.

        A group's ranks follow the values of the groups before it in the same order
        (``offset``); only the picked ranks are joined back to their group.
        """
        v = source.c[value]
        key_cols = [source.c[k] for k in keys]
        counted = select(*key_cols, *_stat_columns(v)).group_by(*key_cols).subquery("groups")
        before = func.sum(counted.c.n).over(order_by=[counted.c[k] for k in keys], rows=(None, -1))
        groups = select(counted, func.coalesce(before, 0).label("offset")).subquery("offsets")
        g = groups.c
        rank = func.row_number().over(order_by=[*key_cols, v])
        ranked = (
            select(*key_cols, v.label("v"), rank.label("rn"))
            .where(v.is_not(None))
            .subquery("ranked_values")
        )
        lows = [g.offset + int_div(q.num * (g.n - 1), q.den) + 1 for q in quantiles]
        wanted = select(func.unnest(_both_ranks(lows))).select_from(groups)
        picked = select(ranked).where(ranked.c.rn.in_(wanted)).subquery("picked_values")
        return _picks_per_group(groups, picked, keys, quantiles, lows, g.offset)

    counts_first = True

    def summarize_counted(
        self, source: Subquery, *, value: str, count: int, quantiles: Sequence[Quantile]
    ) -> Select[Any]:
        """One group of every value, ``count`` of them: each of the two ranks picked by
        ``quantile_disc`` with a fraction that lands on it exactly, a selection instead of a
        sort (a million latencies: 52 -> 22 ms).

        DuckDB picks index ``ceil(n * f) - 1`` for a ``DECIMAL`` fraction ``f``, in integer
        arithmetic; ``f = floor(r * 10^30 / n) / 10^30`` has ``n * f`` in ``(r - 1, r]`` for
        ``n < 10^30``, so the pick is rank ``r``. The count must be that of the rows the
        statement reads (one snapshot); ``n`` is returned so the caller can check it.
        """
        v = source.c[value]
        if count >= MANY_VALUES and quantiles and _is_integer(v):
            # quantile_disc holds every value and cannot spill: so many integers are binned.
            return self._summarize_binned(
                source, value=value, keys=(), quantiles=quantiles, group_count=1
            )
        if count <= 0 or not quantiles or count >= MANY_VALUES:
            # quantile_disc holds every value and cannot spill: so many are sorted, which can.
            return self._summarize_all(source, value=value, quantiles=quantiles)
        fractions = ", ".join(_exact_fraction(r, count) for r in _pick_ranks(quantiles, count))
        picked = func.quantile_disc(v, literal_column(f"[{fractions}]"))
        counted = select(*_stat_columns(v), picked.label("picked")).subquery("counted_values")
        c = counted.c
        return select(
            *(c[name] for name in STAT_COLUMNS),
            *(
                func.list_extract(c.picked, i).label(name)
                for i, name in enumerate(_pick_names(quantiles), 1)
            ),
        )

    def summarize_counted_groups(
        self,
        source: Subquery,
        *,
        value: str,
        keys: Sequence[str],
        counts: Mapping[tuple[Any, ...], int],
        quantiles: Sequence[Quantile],
        large_groups: bool = False,
    ) -> Select[Any]:
        """A few groups of known counts: one ``quantile_disc`` per group over fractions shared
        by every group, each group reading its own ranks from the list.

        A fraction ``f`` picks rank ``r`` of ``n`` values where ``(r - 1) / n < f <= r / n``
        (``summarize_counted``); groups of similar counts share most of those intervals, so
        one fraction serves several groups (``_shared_fractions``): 30 days in day buckets
        need 12 fractions instead of 8 per group (240). Selections instead of sorts: latency
        per day over 30 days of 1M traces 88 -> 7 (counts) + 33 ms; tools' latency per tool
        125 -> 62 ms; all tools' calls per day 156 -> 109 ms. Beyond ``MAX_PICKED_GROUPS``
        the sorted lists answer instead (each group's list of ranks is spelled in the
        statement).
        """
        if not keys:
            count = counts.get((), 0)
            return self.summarize_counted(source, value=value, count=count, quantiles=quantiles)
        wanted = [(key, n) for key, n in counts.items() if n > 0]
        # quantile_disc holds every value and cannot spill (15M values needed 512 MB where one
        # sort needed 128): MANY_VALUES or more go the way they went before the picks.
        many = sum(n for _key, n in wanted) >= MANY_VALUES
        if many and quantiles and _is_integer(source.c[value]):
            return self._summarize_binned(
                source, value=value, keys=keys, quantiles=quantiles, group_count=len(wanted)
            )
        if not quantiles or not wanted or len(wanted) > MAX_PICKED_GROUPS or many:
            return self.summarize(
                source, value=value, keys=keys, quantiles=quantiles, large_groups=large_groups
            )
        v = source.c[value]
        key_cols = [source.c[k] for k in keys]
        fractions, ranks_at = _shared_fractions([n for _key, n in wanted], quantiles)
        literals = ", ".join(_decimal_fraction(f) for f in fractions)
        picked = func.quantile_disc(v, literal_column(f"[{literals}]"))
        grouped = (
            select(*key_cols, *_stat_columns(v), picked.label("picked"))
            .group_by(*key_cols)
            .subquery("counted_groups")
        )
        g = grouped.c
        # This group's picks, by their places in the list; NULL for a group not counted.
        own = case(
            *(
                (_is_key([g[k] for k in keys], key), literal_column(f"{places}"))
                for (key, _count), places in zip(wanted, ranks_at, strict=True)
            ),
            else_=null(),
        )
        chosen = (
            select(*(g[k] for k in keys), *(g[c] for c in STAT_COLUMNS))
            .add_columns(func.list_select(g.picked, own).label("chosen"))
            .subquery("chosen_picks")
        )
        c = chosen.c
        return select(
            *(c[k] for k in keys),
            *(c[name] for name in STAT_COLUMNS),
            *(
                func.list_extract(c.chosen, j).label(name)
                for j, name in enumerate(_pick_names(quantiles), 1)
            ),
        )

    def _summarize_binned(
        self,
        source: Subquery,
        *,
        value: str,
        keys: Sequence[str],
        quantiles: Sequence[Quantile],
        group_count: int,
    ) -> Select[Any]:
        """Groups of ``MANY_VALUES`` or more integers in all: each group's ranks found by
        counting, not sorting. The values go into bins of equal width over their range
        (``_bins(group_count)`` of them; ``v // width`` never decreases as ``v`` grows); the counts
        per (group, bin), summed in bin order, tell which bin holds each wanted rank and how
        many values come before it; only the values of those few bins are then sorted. The
        same ranks as ``_summarize_ranked``, so the same digits: 30 day buckets of 10M
        latencies 940 -> 240 ms, and memory for the counts and the picked bins only.
        """
        v = source.c[value]
        valued = (
            select(*(source.c[k] for k in keys), v.label("v"))
            .where(v.is_not(None))
            .cte("binned_values")
        )
        vals = valued.c
        # Any bins in the order of their values are exact (``v // width`` never decreases as
        # ``v`` grows): here about _bins(group_count) of equal width over the values' range, in
        # DOUBLE (the range of two BIGINTs may not fit one).
        spread = cast(func.max(vals.v), Double) - cast(func.min(vals.v), Double)
        bin_count = _bins(group_count)
        width = select((cast(func.floor(spread / bin_count), BigInteger) + 1).label("width"))
        ruler = width.cte("bin_width")
        bin_of = int_div(vals.v, ruler.c.width)
        binned = (
            select(*(vals[k] for k in keys), vals.v, bin_of.label("b"))
            .select_from(valued.join(ruler, literal(True)))
            .subquery("binned")
        )
        bk = [binned.c[k] for k in keys]
        per_bin = (
            select(*bk, binned.c.b, func.count().label("in_bin"))
            .group_by(*bk, binned.c.b)
            .subquery("per_bin")
        )
        h = per_bin.c
        upto = func.sum(h.in_bin).over(partition_by=[h[k] for k in keys], order_by=h.b)
        cumulative = select(*h, upto.label("upto")).subquery("cumulative_bins")
        groups = (
            select(*(vals[k] for k in keys), *_stat_columns(vals.v))
            .group_by(*(vals[k] for k in keys))
            .subquery("binned_groups")
        )
        g = groups.c
        lows = [int_div(q.num * (g.n - 1), q.den) + 1 for q in quantiles]
        ranks = func.unnest(_both_ranks(lows)).label("r")
        wanted = select(*(g[k] for k in keys), ranks).subquery("ranks")
        c, w = cumulative.c, wanted.c
        holds = and_(
            *(c[k].is_not_distinct_from(w[k]) for k in keys),
            w.r > c.upto - c.in_bin,
            w.r <= c.upto,
        )
        bins = (
            select(*(c[k] for k in keys), c.b, (c.upto - c.in_bin).label("before"))
            .select_from(cumulative.join(wanted, holds))
            .distinct()
            .cte("wanted_bins")
        )
        b = bins.c
        in_bin = and_(*(binned.c[k].is_not_distinct_from(b[k]) for k in keys), binned.c.b == b.b)
        rank = b.before + func.row_number().over(
            partition_by=[*bk, binned.c.b], order_by=binned.c.v
        )
        picked = (
            select(*bk, binned.c.v, rank.label("rn"))
            .select_from(binned.join(bins, in_bin))
            .subquery("picked_values")
        )
        return _picks_per_group(groups, picked, keys, quantiles, lows)

    def _summarize_all(
        self, source: Subquery, *, value: str, quantiles: Sequence[Quantile]
    ) -> Select[Any]:
        """One group of every value: ranked by one sort (``row_number() OVER (ORDER BY v)``),
        which DuckDB runs on every core and can spill, where one list of a million values is
        sorted on one core (a million latencies: 84-91 -> 50-63 ms). The same two ranks."""
        v = source.c[value]
        stats = select(*_stat_columns(v)).subquery("all_values")
        stat_cols = [stats.c[c] for c in STAT_COLUMNS]
        if not quantiles:
            return select(*stat_cols)
        ranked = (
            select(v.label("v"), func.row_number().over(order_by=v).label("rn"))
            .where(v.is_not(None))
            .subquery("ranked_values")
        )
        rn, n = ranked.c.rn, stats.c.n
        picks: list[ColumnElement[Any]] = []
        wanted: list[ColumnElement[bool]] = []
        for q in quantiles:
            low_rank = int_div(q.num * (n - 1), q.den) + 1  # from 1; past the end: no row
            picks.append(func.max(case((rn == low_rank, ranked.c.v))).label(q.low_column))
            picks.append(func.max(case((rn == low_rank + 1, ranked.c.v))).label(q.high_column))
            wanted += [rn == low_rank, rn == low_rank + 1]
        # Only the picked ranks join the one row of counts.
        joined = stats.outerjoin(ranked, or_(*wanted))
        return select(*stat_cols, *picks).select_from(joined).group_by(*stat_cols)


def _both_ranks(lows: Sequence[ColumnElement[Any]]) -> ColumnElement[Any]:
    """Each quantile's two ranks (from 1) as one DuckDB list: its low rank and the next."""
    return func.list_value(*(low + step for low in lows for step in (0, 1)))


def _picks_per_group(
    groups: Subquery,
    picked: Subquery,
    keys: Sequence[str],
    quantiles: Sequence[Quantile],
    lows: Sequence[ColumnElement[Any]],
    *grouped_too: ColumnElement[Any],
) -> Select[Any]:
    """Each group of ``groups`` (its keys and ``STAT_COLUMNS``) with the values ``picked``
    holds at its ranks (``rn``, from ``lows`` and the next), labelled as ``read`` expects
    them; ``grouped_too``: more columns of ``groups`` its rows are grouped by."""
    g, p = groups.c, picked.c
    picks: list[ColumnElement[Any]] = []
    for q, low in zip(quantiles, lows, strict=True):
        picks.append(func.max(case((p.rn == low, p.v))).label(q.low_column))
        picks.append(func.max(case((p.rn == low + 1, p.v))).label(q.high_column))
    # Keys may be NULL: one NULL group on each side.
    on = and_(literal(True), *(p[k].is_not_distinct_from(g[k]) for k in keys))
    group_cols = [g[k] for k in keys] + [g[c] for c in STAT_COLUMNS]
    return (
        select(*group_cols, *picks)
        .select_from(groups.outerjoin(picked, on))
        .group_by(*group_cols, *grouped_too)
    )


def sorted_list_picks(
    sorted_values: ColumnElement[Any], n: ColumnElement[Any], quantiles: Sequence[Quantile]
) -> list[ColumnElement[Any]]:
    """The two closest ranks of each quantile read from a DuckDB list of ``n`` sorted values,
    labelled as ``WindowPercentiles.read`` expects them."""
    picks: list[ColumnElement[Any]] = []
    for q in quantiles:
        # DuckDB lists are indexed from 1; past the end is NULL (read() then uses low).
        low_index = int_div(q.num * (n - 1), q.den) + 1
        picks.append(func.list_extract(sorted_values, low_index).label(q.low_column))
        picks.append(func.list_extract(sorted_values, low_index + 1).label(q.high_column))
    return picks


_FRACTION_DIGITS = 30

# Most groups ``summarize_counted_groups`` picks from; more are ranked in sorted lists.
MAX_PICKED_GROUPS = 32

# Bins over the range of ``_summarize_binned``'s values, for all its groups together: few
# enough to count in a small hash table, many enough that the few bins sorted hold a small share
# of the values (30 days of 10M traces: latencies in 30 day buckets 458 ms with 4,096 bins a
# group, 526 with 16,384; ten tools' durations 1,250 ms with 4,096, 920 with 16,384).
_HISTOGRAM = 2**18
_MIN_BINS, _MAX_BINS = 4096, 65536


def _bins(groups: int) -> int:
    """Bins over the values' range for ``groups`` groups (``_HISTOGRAM``)."""
    return max(_MIN_BINS, min(_MAX_BINS, _HISTOGRAM // max(groups, 1)))


def _is_integer(value: ColumnElement[Any]) -> bool:
    """Whether ``value``'s type is an integer type (what ``_summarize_binned`` bins)."""
    return isinstance(value.type, Integer)


def _is_key(columns: Sequence[ColumnElement[Any]], key: tuple[Any, ...]) -> ColumnElement[bool]:
    """The row's key columns hold ``key`` (NULL parts match NULL), values bound as parameters."""
    return and_(
        *(c.is_not_distinct_from(literal(part)) for c, part in zip(columns, key, strict=True))
    )


def _pick_names(quantiles: Sequence[Quantile]) -> list[str]:
    """The columns ``read`` takes the two ranks of each quantile from, in ``_pick_ranks`` order."""
    return [name for q in quantiles for name in (q.low_column, q.high_column)]


def _pick_ranks(quantiles: Sequence[Quantile], count: int) -> list[int]:
    """The two ranks (from 1) of each quantile among ``count`` values, low then high; past
    the end the high one is the last (``read`` then uses the low one)."""
    ranks: list[int] = []
    for q in quantiles:
        low = q.num * (count - 1) // q.den + 1
        ranks += [low, min(low + 1, count)]
    return ranks


def _exact_fraction(rank: int, count: int) -> str:
    """``floor(rank * 10^30 / count) / 10^30`` as a DuckDB ``DECIMAL`` literal (see
    ``ListPercentiles.summarize_counted``)."""
    return _decimal_fraction(rank * 10**_FRACTION_DIGITS // count)


def _decimal_fraction(scaled: int) -> str:
    """``scaled / 10^30`` as a DuckDB ``DECIMAL`` literal."""
    whole, part = divmod(scaled, 10**_FRACTION_DIGITS)
    return (
        f"{whole}.{part:0{_FRACTION_DIGITS}d}::DECIMAL({_FRACTION_DIGITS + 1}, {_FRACTION_DIGITS})"
    )


def _shared_fractions(
    counts: Sequence[int], quantiles: Sequence[Quantile]
) -> tuple[list[int], list[list[int]]]:
    """Fewest fractions (scaled by 10^30, ascending) that pick every group's ranks, and for
    each group the places (from 1) of its ranks' fractions, in ``_pick_ranks`` order.

    Rank ``r`` of ``n`` is picked by any ``f`` with ``(r - 1) / n < f <= r / n``. Taking the
    intervals by their upper ends, each fraction is the upper end (rounded down to the
    decimal grid, still inside) of the first interval the last fraction does not fall in:
    the classic greedy stabbing, fewest points. Integer arithmetic throughout.
    """
    scale = 10**_FRACTION_DIGITS
    wanted = [
        (rank * scale // count, rank, count, group, at)
        for group, count in enumerate(counts)
        for at, rank in enumerate(_pick_ranks(quantiles, count))
    ]
    wanted.sort()
    fractions: list[int] = []
    places = [[0] * (2 * len(quantiles)) for _ in counts]
    for upper, rank, count, group, at in wanted:
        if not fractions or fractions[-1] * count <= (rank - 1) * scale:
            fractions.append(upper)  # the last one is below this interval: a new one
        places[group][at] = len(fractions)
    return fractions, places
