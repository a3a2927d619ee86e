"""Bucket keys computed by the service agree with calendar arithmetic, in SQL and in Python."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from service.dialects import int_div
from service.timebuckets import TimeBuckets, load_timezone, offset_periods
from tests import oracle

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "America/Santiago",
    "Pacific/Chatham",
]
# 2026-01-01 .. 2027-01-01: every DST change of the year for these zones.
YEAR_START, YEAR_END = 1_767_225_600_000, 1_798_761_600_000


@pytest.mark.parametrize("tz_name", ZONES)
@pytest.mark.parametrize("size", ["hour", "day", "week"])
def test_bucket_start_matches_calendar(tz_name: str, size: str) -> None:
    if size == "hour" and tz_name == "Pacific/Chatham":
        # Chatham (UTC+12:45) repeats 02:45-03:45 at its DST change: an hour bucket there is
        # the local hour at the offset in force, which calendar arithmetic cannot express.
        pytest.skip("no calendar definition of an hour bucket across Chatham's DST change")
    tz = load_timezone(tz_name)
    buckets = TimeBuckets.covering(size, tz, YEAR_START, YEAR_END)  # type: ignore[arg-type]
    rng = random.Random(tz_name + size)
    samples = [rng.randrange(YEAR_START, YEAR_END) for _ in range(2000)]
    # Plus the instants around every offset change.
    for period in buckets.periods[1:]:
        samples += [period.start_ms + d for d in (-3_600_001, -1, 0, 1, 3_599_999)]
    for ts in samples:
        assert buckets.start_of(buckets.key_of(ts)) == oracle.bucket_start(ts, size, tz_name), ts


@pytest.mark.parametrize("tz_name", ZONES)
@pytest.mark.parametrize("size", ["hour", "day", "week"])
def test_keys_between_walks_every_bucket(tz_name: str, size: str) -> None:
    tz = load_timezone(tz_name)
    first, last = YEAR_START + 12_345, YEAR_START + 40 * 86_400_000 if size != "week" else YEAR_END
    buckets = TimeBuckets.covering(size, tz, first, last)  # type: ignore[arg-type]
    starts = [buckets.start_of(k) for k in buckets.keys_between(first, last, limit=100_000)]
    assert starts == oracle.bucket_starts(first, last, size, tz_name)


def test_offset_periods_find_exact_change_instants() -> None:
    periods = offset_periods(load_timezone("Europe/Berlin"), YEAR_START, YEAR_END)
    # 2026-03-29 01:00 UTC and 2026-10-25 01:00 UTC.
    assert [p.start_ms for p in periods[1:]] == [1_774_746_000_000, 1_792_890_000_000]
    assert [p.offset_ms for p in periods] == [3_600_000, 7_200_000, 3_600_000]


def test_too_many_buckets_is_refused() -> None:
    buckets = TimeBuckets.covering("hour", load_timezone("UTC"), YEAR_START, YEAR_END)
    with pytest.raises(ValueError, match="more than 100 hour buckets"):
        buckets.keys_between(YEAR_START, YEAR_END, limit=100)


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (postgresql.dialect(), "(x) / (7)"),
        (sqlite.dialect(), "(x) / (7)"),
        (mysql.dialect(), "(x) DIV (7)"),
    ],
)
def test_int_div_compiles_per_dialect(dialect: sa.Dialect, expected: str) -> None:
    compiled = int_div(sa.column("x"), 7).compile(
        dialect=dialect, compile_kwargs={"literal_binds": True}
    )
    assert str(compiled) == expected


def test_sql_key_expression_matches_python_on_sqlite() -> None:
    """Run the generated CASE expression on a real SQLite and compare with ``key_of``."""
    tz = load_timezone("America/New_York")
    engine = sa.create_engine("sqlite://")
    rng = random.Random(3)
    samples = [rng.randrange(YEAR_START, YEAR_END) for _ in range(500)]
    samples_table = sa.Table("samples", sa.MetaData(), sa.Column("ts", sa.BigInteger))
    with engine.connect() as conn:
        samples_table.create(conn)
        conn.execute(samples_table.insert(), [{"ts": s} for s in samples])
        for size in ("hour", "day", "week"):
            buckets = TimeBuckets.covering(size, tz, YEAR_START, YEAR_END)
            ts = samples_table.c.ts
            rows = conn.execute(sa.select(ts, buckets.key_expr(ts))).all()
            assert {int(t): int(k) for t, k in rows} == {s: buckets.key_of(s) for s in samples}
