"""Time buckets in any IANA timezone, computed the same way in SQL and in Python.

SQL groups rows by an integer *bucket key*; Python turns keys into the UTC epoch ms of the
bucket start and fills the gaps. The key depends only on the row's timestamp and the UTC offset
in force at that instant, so DST changes are handled exactly:

* ``hour``: key = UTC ms of the start of the local hour holding the timestamp;
* ``day``: key = local day number (days since 1970-01-01 in local time);
* ``week``: key = local week number, weeks starting on Monday.

Within the range being bucketed the offset is piecewise constant; SQL gets one ``CASE`` branch
per DST period (none at all in UTC), so the expression stays cheap.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import BigInteger, case, literal
from sqlalchemy.sql import ColumnElement

from service.dialects import int_div

BucketSize = Literal["hour", "day", "week"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_EPOCH_DATE = date(1970, 1, 1)
# 1970-01-01 was a Thursday: shifting day numbers by 3 makes weeks start on Monday.
_MONDAY_SHIFT = 3
# DST periods are months long; sampling every 6 hours cannot step over one.
_SAMPLE_STEP_MS = 6 * HOUR_MS


def load_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"Unknown timezone {name!r}; use an IANA name such as 'Europe/Berlin'"
        ) from None


@dataclass(frozen=True)
class OffsetPeriod:
    """From ``start_ms`` (inclusive) until the next period, local time is UTC + ``offset_ms``."""

    start_ms: int
    offset_ms: int


def _offset_ms(tz: ZoneInfo, ts_ms: int) -> int:
    offset = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(tz).utcoffset()
    return int(offset.total_seconds() * 1000) if offset else 0


def offset_periods(tz: ZoneInfo, first_ms: int, last_ms: int) -> list[OffsetPeriod]:
    """The offsets in force between ``first_ms`` and ``last_ms``, with exact change instants."""
    periods = [OffsetPeriod(first_ms, _offset_ms(tz, first_ms))]
    probe = first_ms
    while probe < last_ms:
        nxt = min(probe + _SAMPLE_STEP_MS, last_ms)
        if _offset_ms(tz, nxt) != periods[-1].offset_ms:
            low, high = probe, nxt  # offset(low) is the old one, offset(high) the new one
            while high - low > 1:
                mid = (low + high) // 2
                if _offset_ms(tz, mid) == periods[-1].offset_ms:
                    low = mid
                else:
                    high = mid
            periods.append(OffsetPeriod(high, _offset_ms(tz, high)))
        probe = nxt
    return periods


@dataclass(frozen=True)
class TimeBuckets:
    size: BucketSize
    tz: ZoneInfo
    periods: tuple[OffsetPeriod, ...]

    @classmethod
    def covering(cls, size: BucketSize, tz: ZoneInfo, first_ms: int, last_ms: int) -> TimeBuckets:
        """Buckets valid for every timestamp in ``[first_ms, last_ms]``."""
        return cls(size, tz, tuple(offset_periods(tz, first_ms, last_ms)))

    # -- SQL --------------------------------------------------------------------------------

    def key_expr(self, ts: ColumnElement[Any]) -> ColumnElement[Any]:
        """SQL expression for the bucket key of timestamp column ``ts`` (epoch ms)."""
        if len(self.periods) == 1:
            return self._key_expr_for_offset(ts, self.periods[0].offset_ms)
        whens = [
            (ts < literal(nxt.start_ms, BigInteger), self._key_expr_for_offset(ts, cur.offset_ms))
            for cur, nxt in itertools.pairwise(self.periods)
        ]
        return case(*whens, else_=self._key_expr_for_offset(ts, self.periods[-1].offset_ms))

    def _key_expr_for_offset(self, ts: ColumnElement[Any], offset_ms: int) -> ColumnElement[Any]:
        local = ts + literal(offset_ms, BigInteger) if offset_ms else ts
        if self.size == "hour":
            start = int_div(local, HOUR_MS) * HOUR_MS
            return start - literal(offset_ms, BigInteger) if offset_ms else start
        day = int_div(local, DAY_MS)
        if self.size == "day":
            return day
        return int_div(day + _MONDAY_SHIFT, 7)

    # -- Python -----------------------------------------------------------------------------

    def _offset_at(self, ts_ms: int) -> int:
        offset = self.periods[0].offset_ms
        for period in self.periods[1:]:
            if ts_ms < period.start_ms:
                break
            offset = period.offset_ms
        return offset

    def key_of(self, ts_ms: int) -> int:
        """The same key SQL computes for ``ts_ms``."""
        offset = self._offset_at(ts_ms)
        local = ts_ms + offset
        if self.size == "hour":
            return local // HOUR_MS * HOUR_MS - offset
        day = local // DAY_MS
        return day if self.size == "day" else (day + _MONDAY_SHIFT) // 7

    def start_of(self, key: int) -> int:
        """UTC epoch ms at which the bucket with this key starts."""
        if self.size == "hour":
            return key
        day = key if self.size == "day" else key * 7 - _MONDAY_SHIFT
        local_date = _EPOCH_DATE + timedelta(days=day)
        # Local midnight; where midnight does not exist (DST jump at 00:00), the pre-change
        # offset maps it to the instant the day actually starts.
        midnight = datetime(local_date.year, local_date.month, local_date.day, tzinfo=self.tz)
        return int(midnight.timestamp()) * 1000

    def keys_between(self, first_ms: int, last_ms: int, *, limit: int) -> list[int]:
        """Every bucket key from the one holding ``first_ms`` to the one holding ``last_ms``."""
        keys = list(self._iter_keys(first_ms, last_ms, limit + 1))
        if len(keys) > limit:
            raise ValueError(
                f"The time range spans more than {limit} {self.size} buckets; "
                "narrow start_time/end_time or use a larger time_bucket"
            )
        return keys

    def _iter_keys(self, first_ms: int, last_ms: int, cap: int) -> Iterator[int]:
        key, last_key = self.key_of(first_ms), self.key_of(last_ms)
        for _ in range(cap):
            if key > last_key:
                return
            yield key
            key = self.key_of(key + HOUR_MS) if self.size == "hour" else key + 1
