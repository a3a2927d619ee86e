"""The analytics store's rollups per (experiment, UTC hour) (service/store/rollups.py,
service/queries/hourly.py): where the store reads them, and that what it reads is what the rows
give: tools per tool, cost per trace and per model.

That the sync keeps each rollup equal to one recomputed from scratch after every kind of write
is asserted with every exact copy (tests/store_writes.py, ``assert_rollup_recomputed``); that
the store answers from them as the live path does after those writes, by
tests/test_store_writes.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from service.app import create_app
from service.scope import SeriesFrame, TraceScope
from service.settings import Settings
from service.store import Store
from service.store.hourly import hour_of, hours_of_slot
from service.store.source_sql import PARTITION_MS
from service.timebuckets import DAY_MS, HOUR_MS, TimeBuckets, load_timezone
from tests.conftest import API, Backend, app_reading, serve

# 2026-03-08 07:00 UTC: New York moves from UTC-5 to UTC-4 at 02:00 local.
_NY_SPRING = 1772953200000


def _frame(start: int | None, end: int | None, tz: str, size: str = "hour") -> SeriesFrame:
    first = 1772000000000 if start is None else start
    last = 1774000000000 if end is None else end - 1
    buckets = TimeBuckets.covering(size, load_timezone(tz), first, last)  # type: ignore[arg-type]
    return SeriesFrame(TraceScope((1,), start, end), buckets, ())


@pytest.mark.parametrize(
    ("start", "end", "tz", "whole"),
    [
        (_NY_SPRING - 3 * DAY_MS, _NY_SPRING + 3 * DAY_MS, "UTC", True),
        # A change of offset on a UTC hour, whole hours on both sides.
        (_NY_SPRING - 3 * DAY_MS, _NY_SPRING + 3 * DAY_MS, "America/New_York", True),
        (None, None, "Europe/Berlin", True),
        (_NY_SPRING - 3 * DAY_MS + 1, _NY_SPRING + 3 * DAY_MS, "UTC", False),
        (_NY_SPRING - 3 * DAY_MS, _NY_SPRING + 3 * DAY_MS - 1, "UTC", False),
        # Half-hour and 45-minute offsets: a local hour is not a UTC hour.
        (_NY_SPRING - 3 * DAY_MS, _NY_SPRING + 3 * DAY_MS, "Asia/Kolkata", False),
        (_NY_SPRING - 3 * DAY_MS, _NY_SPRING + 3 * DAY_MS, "Pacific/Chatham", False),
        # Lord Howe moves by 30 minutes (2026-04-05): whole hours before, not after.
        (1775000000000 // HOUR_MS * HOUR_MS, 1776000000000 // HOUR_MS * HOUR_MS, "UTC", True),
        (
            1775000000000 // HOUR_MS * HOUR_MS,
            1776000000000 // HOUR_MS * HOUR_MS,
            "Australia/Lord_Howe",
            False,
        ),
    ],
)
def test_whole_hours_only_where_every_bucket_is_whole_utc_hours(
    start: int | None, end: int | None, tz: str, whole: bool
) -> None:
    assert _frame(start, end, tz).whole_hours is whole
    assert _frame(start, end, tz, "day").whole_hours is whole


async def _both(
    backend: Backend, store: Store, bodies: list[tuple[str, dict[str, Any]]]
) -> tuple[list[bytes], list[bytes]]:
    """Each request's body from the live path and from the store."""
    live_app = create_app(Settings(database_url=backend.service_url))
    store_app = app_reading(store, backend.service_url)

    async def ask(http: httpx.AsyncClient) -> list[bytes]:
        answers = []
        for endpoint, body in bodies:
            response = await http.post(f"{API}/{endpoint}", json=body)
            assert response.status_code == 200, response.text
            answers.append(response.content)
        return answers

    async with serve(live_app) as live, serve(store_app) as stored:
        return await ask(live), await ask(stored)


def _requests(backend: Backend, *, shift_ms: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """Tools' and cost requests over the dataset's days (whole hours unless ``shift_ms``)."""
    window = backend.window(widen_days=1)
    window["start_time"] += shift_ms
    one = [backend.experiment_id()]
    both = sorted(backend.dataset.experiment_ids.values())
    hourly = {"time_bucket": "hour", "timezone": "UTC", **window}
    requests: list[tuple[str, dict[str, Any]]] = []
    for endpoint in ("tools/discovery", "traffic-cost/cost"):
        requests += [
            (endpoint, {"experiment_ids": one, **hourly}),
            (endpoint, {"experiment_ids": both, **hourly}),
            (endpoint, {"experiment_ids": one, **hourly, "timezone": "America/New_York"}),
            (endpoint, {"experiment_ids": one, **hourly, "timezone": "Asia/Kolkata"}),
            (endpoint, {"experiment_ids": one, **hourly, "time_bucket": "day"}),
            (endpoint, {"experiment_ids": one, "time_bucket": "day"}),
        ]
    return [
        *requests,
        ("tools/discovery", {"experiment_ids": one, **hourly, "include_latency_series": False}),
        ("tools/metrics", {"experiment_ids": one, **hourly, "tool_name": _a_tool(backend)}),
        ("tools/metrics", {"experiment_ids": one, **hourly}),
        ("tools/metrics", {"experiment_ids": one, **hourly, "time_bucket": "day"}),
        ("traffic-cost/cost", {"experiment_ids": one, **hourly, "compare_previous": True}),
    ]


def _a_tool(backend: Backend) -> str:
    with backend.sync_engine().connect() as conn:
        return str(
            conn.exec_driver_sql(
                "SELECT name FROM spans WHERE type = 'TOOL' GROUP BY name ORDER BY count(*) DESC"
            )
            .scalars()
            .first()
        )


async def test_the_store_answers_from_its_rollups_as_the_live_path_does(
    backend: Backend, synced_store: Store
) -> None:
    bodies = _requests(backend)
    live, stored = await _both(backend, synced_store, bodies)
    # Hours with calls and latencies, and with costs: the rollups hold rows that count.
    assert re.search(rb'"invocation_count":[1-9]', live[0])
    assert re.search(rb'"p99_latency":[0-9]', live[0])
    cost = next(a for (e, _b), a in zip(bodies, live, strict=True) if e == "traffic-cost/cost")
    assert re.search(rb'"total_cost":0\.0*[1-9]', cost) and b'"by_model":[{' in cost
    differ = [body for (body, a, b) in zip(bodies, live, stored, strict=True) if a != b]
    assert not differ, f"the store answered differently: {differ}"


async def test_the_rollups_answer_whole_hours_without_a_filter_only(
    backend: Backend, synced_store: Store, tmp_path: Path
) -> None:
    """Rows of the rollups changed behind the sync's back show where they are read: in
    whole-hour requests without a filter, and nowhere else."""
    db = synced_store._file.db  # the store's own writer connection
    changes = [
        ("insights_tool_hours", "invocation_count"),
        ("insights_trace_cost_hours", "n"),
        ("insights_model_cost_hours", "n"),
    ]
    for table, count in changes:
        db.execute(f"UPDATE {table} SET {count} = {count} + 1000")
    try:
        whole = _requests(backend)
        shifted = _requests(backend, shift_ms=1)
        filtered = [(e, {**b, "filter_string": "status = 'OK'"}) for e, b in whole]
        live, stored = await _both(backend, synced_store, whole + shifted + filtered)
    finally:
        for table, count in changes:
            db.execute(f"UPDATE {table} SET {count} = {count} - 1000")
    read_rollup = [a != b for a, b in zip(live, stored, strict=True)]
    # Every whole-hour request but Kolkata's, and the open window's however shifted.
    expected = [b.get("timezone") != "Asia/Kolkata" for _e, b in whole]
    expected += ["start_time" not in b for _e, b in shifted]
    expected += [False] * len(filtered)
    assert read_rollup == expected


@pytest.mark.parametrize("slot", [-9, -5, -4, -1, 0, 3, 4, 1_990_000])
def test_a_slot_refreshes_every_hour_its_rows_roll_up_into(slot: int) -> None:
    """The hours a changed partition's refresh recomputes are those DuckDB files its rows
    under, before 1970 too (where integer division truncates toward zero)."""
    first = slot * PARTITION_MS
    stamps = [first, first + PARTITION_MS - 1, *range(first, first + PARTITION_MS, 60_001)]
    filed = (
        duckdb.connect()
        .execute(f"SELECT DISTINCT {hour_of('ts')} FROM (SELECT unnest({stamps}) AS ts)")
        .fetchall()
    )
    assert {h for (h,) in filed} == hours_of_slot(slot)
