"""traffic-cost/volume, latency and errors, on every backend, against independent computations."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import mlflow
import pytest
from mlflow import MlflowClient

from service.app import create_app
from service.demo.generate import mlflow_tracking
from service.settings import Settings
from tests import oracle
from tests.conftest import (
    AJAX_API,
    Backend,
    InsightsClient,
    empty_tracking_uri,
    serve,
)

DAY_MS = 86_400_000

# (time_bucket, timezone): UTC plus zones whose DST changes fall inside the dataset's two weeks,
# and a half-hour offset.
BUCKETINGS = [
    ("hour", "UTC"),
    ("day", "UTC"),
    ("week", "UTC"),
    ("day", "Europe/Berlin"),
    ("hour", "Europe/Berlin"),
    ("week", "America/New_York"),
    ("day", "America/New_York"),
    ("day", "Asia/Kolkata"),
]


def assert_latency_stats(actual: dict[str, Any], traces: list[oracle.Trace]) -> None:
    values = [t.execution_time_ms for t in traces if t.execution_time_ms is not None]
    assert actual["count"] == len(values)
    for q in (50, 90, 95, 99):
        assert oracle.close(actual[f"p{q}_latency"], oracle.percentile(values, q)), (q, actual)
    assert oracle.close(actual["avg_latency"], oracle.mean(values))


@pytest.mark.parametrize(("size", "tz"), BUCKETINGS)
async def test_volume_matches_raw_traces(
    client: InsightsClient, backend: Backend, raw: Any, size: str, tz: str
) -> None:
    exp = backend.experiment_id()
    body: dict[str, Any] = {
        "experiment_ids": [exp],
        "time_bucket": size,
        "timezone": tz,
        **backend.window(),
    }
    result = await client.ok("traffic-cost/volume", body)

    traces = oracle.load_traces(raw, [exp], body["start_time"], body["end_time"])
    assert len(traces) > 50, "the dataset should put many traces in the window"
    statuses = [t.status for t in traces]
    assert result["summary"] == {
        "count": len(traces),
        "ok_count": statuses.count("OK"),
        "error_count": statuses.count("ERROR"),
    }
    groups = oracle.group_by_bucket(traces, size, tz)
    starts = oracle.expected_starts(traces, body, size, tz)
    assert [p["time_bucket"] for p in result["time_series"]] == starts
    for point in result["time_series"]:
        bucket = groups.get(point["time_bucket"], [])
        assert point["count"] == len(bucket)
        assert point["ok_count"] == sum(t.status == "OK" for t in bucket)
        assert point["error_count"] == sum(t.status == "ERROR" for t in bucket)


@pytest.mark.parametrize(("size", "tz"), BUCKETINGS)
async def test_latency_matches_numpy(
    client: InsightsClient, backend: Backend, raw: Any, size: str, tz: str
) -> None:
    exp = backend.experiment_id()
    body: dict[str, Any] = {
        "experiment_ids": [exp],
        "time_bucket": size,
        "timezone": tz,
        **backend.window(),
    }
    result = await client.ok("traffic-cost/latency", body)

    traces = oracle.load_traces(raw, [exp], body["start_time"], body["end_time"])
    finished = [t.execution_time_ms for t in traces if t.execution_time_ms is not None]
    summary = result["summary"]
    assert_latency_stats(summary, traces)
    assert summary["min_latency"] == min(finished)
    assert summary["max_latency"] == max(finished)

    groups = oracle.group_by_bucket(traces, size, tz)
    assert [p["time_bucket"] for p in result["time_series"]] == oracle.expected_starts(
        traces, body, size, tz
    )
    for point in result["time_series"]:
        assert_latency_stats(point, groups.get(point["time_bucket"], []))


@pytest.mark.parametrize(("size", "tz"), BUCKETINGS[:4])
async def test_errors_match_raw_traces(
    client: InsightsClient, backend: Backend, raw: Any, size: str, tz: str
) -> None:
    exp = backend.experiment_id()
    body: dict[str, Any] = {
        "experiment_ids": [exp],
        "time_bucket": size,
        "timezone": tz,
        **backend.window(),
    }
    result = await client.ok("traffic-cost/errors", body)

    traces = oracle.load_traces(raw, [exp], body["start_time"], body["end_time"])
    errors = sum(t.status == "ERROR" for t in traces)
    assert errors > 0
    assert result["summary"]["total_count"] == len(traces)
    assert result["summary"]["error_count"] == errors
    assert oracle.close(result["summary"]["error_rate"], 100.0 * errors / len(traces))
    groups = oracle.group_by_bucket(traces, size, tz)
    for point in result["time_series"]:
        bucket = groups.get(point["time_bucket"], [])
        bucket_errors = sum(t.status == "ERROR" for t in bucket)
        assert point["total_count"] == len(bucket)
        assert point["error_count"] == bucket_errors
        expected_rate = 100.0 * bucket_errors / len(bucket) if bucket else None
        assert oracle.close(point["error_rate"], expected_rate)


async def test_dst_fall_back_day_bucket_is_25_hours_long(
    client: InsightsClient, backend: Backend
) -> None:
    """Berlin's day buckets follow local midnight across the 2026-10-25 change (a 25 h day)."""
    exp = backend.experiment_id()
    body = {"experiment_ids": [exp], "time_bucket": "day", "timezone": "Europe/Berlin"}
    series = (await client.ok("traffic-cost/volume", {**body, **backend.window()}))["time_series"]
    lengths = {b["time_bucket"] - a["time_bucket"] for a, b in itertools.pairwise(series)}
    assert lengths == {DAY_MS, DAY_MS + 3_600_000}


# --------------------------------------------------------------------------------------------
# The spring change (a 23 h day), on a small DB with one trace at hh:30 UTC of every hour
# --------------------------------------------------------------------------------------------

HOUR_MS = 3_600_000
# Zone -> its spring change: the local date, and the first of the 48 hourly traces (UTC).
SPRING: dict[str, tuple[date, datetime]] = {
    "Europe/Berlin": (date(2026, 3, 29), datetime(2026, 3, 28, 12, 30, tzinfo=UTC)),
    "America/New_York": (date(2026, 3, 8), datetime(2026, 3, 7, 12, 30, tzinfo=UTC)),
}
SPRING_TRACES = 48
# Traces per local day (the day before, the 23 h day, the day after), counted by hand from the
# UTC offsets: Berlin +01:00 -> +02:00 at 01:00 UTC, New York -05:00 -> -04:00 at 07:00 UTC.
SPRING_DAY_COUNTS = {"Europe/Berlin": [11, 23, 14], "America/New_York": [17, 23, 8]}

_spring_built: dict[str, tuple[str, str]] = {}


def build_spring_db(uri: str) -> str:
    """The hourly traces of ``SPRING`` through MLflow's tracing API; returns the experiment."""
    with mlflow_tracking(uri):
        experiment_id = str(MlflowClient(uri).create_experiment("dst-spring"))
        for _, first in SPRING.values():
            for i in range(SPRING_TRACES):
                start_ns = (int(first.timestamp() * 1000) + i * HOUR_MS) * 1_000_000
                root = mlflow.start_span_no_context(
                    "spring", experiment_id=experiment_id, start_time_ns=start_ns
                )
                root.end(end_time_ns=start_ns + 5_000_000)
    return experiment_id


@pytest.fixture(scope="session")
async def spring(backend: Backend, data_dir: Path) -> AsyncIterator[tuple[InsightsClient, str]]:
    """A client over this backend's spring-change DB, and its experiment id."""
    if backend.name not in _spring_built:
        uri = empty_tracking_uri(backend.name, data_dir, "_spring")
        _spring_built[backend.name] = (uri, build_spring_db(uri))
    uri, experiment_id = _spring_built[backend.name]
    async with serve(create_app(Settings(database_url=oracle.mlflow_style_url(uri)))) as http:
        yield InsightsClient(http, backend), experiment_id


def local_midnight(day: date, tz: str) -> int:
    return int(datetime.combine(day, time(), ZoneInfo(tz)).timestamp() * 1000)


async def spring_volume(
    spring: tuple[InsightsClient, str], tz: str, days: tuple[int, int], size: str
) -> dict[str, Any]:
    """Volume from local midnight ``days[0]`` days after the change day to ``days[1]``."""
    client, experiment_id = spring
    change_day, _ = SPRING[tz]
    start, end = (local_midnight(change_day + timedelta(days=d), tz) for d in days)
    body = {
        "experiment_ids": [experiment_id],
        "start_time": start,
        "end_time": end,
        "time_bucket": size,
        "timezone": tz,
    }
    return await client.ok("traffic-cost/volume", body)


@pytest.mark.parametrize("tz", sorted(SPRING))
async def test_dst_spring_forward_day_bucket_is_23_hours_long(
    spring: tuple[InsightsClient, str], tz: str
) -> None:
    result = await spring_volume(spring, tz, (-1, 2), "day")
    change_day, _ = SPRING[tz]
    days = [change_day + timedelta(days=d) for d in (-1, 0, 1, 2)]
    starts = [p["time_bucket"] for p in result["time_series"]]
    assert starts == [local_midnight(d, tz) for d in days[:3]]
    # The change day is 23 h long; the days around it 24 h.
    ends = [*starts[1:], local_midnight(days[3], tz)]
    assert [b - a for a, b in zip(starts, ends, strict=True)] == [DAY_MS, 23 * HOUR_MS, DAY_MS]
    assert [p["count"] for p in result["time_series"]] == SPRING_DAY_COUNTS[tz]
    assert result["summary"]["count"] == sum(SPRING_DAY_COUNTS[tz])


@pytest.mark.parametrize("tz", sorted(SPRING))
async def test_dst_spring_forward_hour_buckets_skip_the_missing_hour(
    spring: tuple[InsightsClient, str], tz: str
) -> None:
    series = (await spring_volume(spring, tz, (0, 1), "hour"))["time_series"]
    change_day, _ = SPRING[tz]
    start = local_midnight(change_day, tz)
    starts = [p["time_bucket"] for p in series]
    assert starts == [start + i * HOUR_MS for i in range(23)]
    local_hours = [datetime.fromtimestamp(s / 1000, ZoneInfo(tz)).hour for s in starts]
    assert local_hours == [0, 1, *range(3, 24)]  # 02:00 does not exist that night
    assert [p["count"] for p in series] == [1] * 23


async def test_open_window_spans_earliest_to_latest_trace(
    client: InsightsClient, backend: Backend, raw: Any
) -> None:
    exp = backend.experiment_id("sql-copilot")
    body = {"experiment_ids": [exp], "time_bucket": "day", "timezone": "America/New_York"}
    result = await client.ok("traffic-cost/volume", body)
    traces = oracle.load_traces(raw, [exp])
    assert result["summary"]["count"] == len(traces) > 0
    assert [p["time_bucket"] for p in result["time_series"]] == oracle.expected_starts(
        traces, body, "day", "America/New_York"
    )
    assert sum(p["count"] for p in result["time_series"]) == len(traces)


async def test_half_open_windows(client: InsightsClient, backend: Backend, raw: Any) -> None:
    exp = backend.experiment_id()
    middle = (backend.dataset.start_time_ms + backend.dataset.end_time_ms) // 2
    bodies: list[dict[str, Any]] = [
        {"experiment_ids": [exp], "start_time": middle, "time_bucket": "day"},
        {"experiment_ids": [exp], "end_time": middle, "time_bucket": "day"},
    ]
    for body in bodies:
        result = await client.ok("traffic-cost/volume", body)
        traces = oracle.load_traces(raw, [exp], body.get("start_time"), body.get("end_time"))
        assert result["summary"]["count"] == len(traces) > 0
        assert [p["time_bucket"] for p in result["time_series"]] == oracle.expected_starts(
            traces, body, "day", "UTC"
        )


async def test_several_experiments_add_up(client: InsightsClient, backend: Backend) -> None:
    a, b = backend.experiment_id("support-agent"), backend.experiment_id("sql-copilot")
    base = {"time_bucket": "day", **backend.window()}
    both = await client.ok("traffic-cost/volume", {"experiment_ids": [a, b], **base})
    only_a = await client.ok("traffic-cost/volume", {"experiment_ids": [a], **base})
    only_b = await client.ok("traffic-cost/volume", {"experiment_ids": [b], **base})
    for key in ("count", "ok_count", "error_count"):
        assert both["summary"][key] == only_a["summary"][key] + only_b["summary"][key]
    assert only_b["summary"]["count"] > 0


async def test_in_progress_traces_count_only_in_totals(
    client: InsightsClient, backend: Backend, raw: Any
) -> None:
    exp = backend.experiment_id()
    traces = oracle.load_traces(raw, [exp])
    in_progress = [t for t in traces if t.status not in ("OK", "ERROR")]
    assert in_progress, "the dataset should hold in-progress traces"
    assert all(t.execution_time_ms is None for t in in_progress)
    volume = (await client.ok("traffic-cost/volume", {"experiment_ids": [exp]}))["summary"]
    latency = (await client.ok("traffic-cost/latency", {"experiment_ids": [exp]}))["summary"]
    assert volume["count"] - volume["ok_count"] - volume["error_count"] == len(in_progress)
    assert latency["count"] == sum(t.execution_time_ms is not None for t in traces)


@pytest.mark.parametrize("endpoint", ["volume", "latency", "errors"])
async def test_empty_window_gives_zero_counts_and_null_statistics(
    client: InsightsClient, backend: Backend, endpoint: str
) -> None:
    start = backend.dataset.start_time_ms - 30 * DAY_MS
    body = {
        "experiment_ids": [backend.experiment_id()],
        "start_time": start,
        "end_time": start + 2 * DAY_MS,
        "time_bucket": "day",
    }
    result = await client.ok(f"traffic-cost/{endpoint}", body)
    assert len(result["time_series"]) == 2
    for row in [result["summary"], *result["time_series"]]:
        for key, value in row.items():
            if key == "time_bucket":
                continue
            assert value == (0 if key.endswith("count") else None), (key, value)


async def test_empty_experiment_with_open_window_has_no_series(
    client: InsightsClient, backend: Backend
) -> None:
    body = {"experiment_ids": [backend.experiment_id("empty-experiment")]}
    result = await client.ok("traffic-cost/latency", body)
    assert result["time_series"] == []
    assert result["summary"]["count"] == 0
    assert result["summary"]["p50_latency"] is None


async def test_padded_window_is_gap_filled(client: InsightsClient, backend: Backend) -> None:
    body = {
        "experiment_ids": [backend.experiment_id()],
        "time_bucket": "day",
        **backend.window(widen_days=3),
    }
    result = await client.ok("traffic-cost/latency", body)
    series = result["time_series"]
    assert series[0]["count"] == 0 and series[0]["p50_latency"] is None
    assert series[-1]["count"] == 0 and series[-1]["avg_latency"] is None
    assert [p["time_bucket"] for p in series] == sorted({p["time_bucket"] for p in series})


async def test_ajax_prefix_answers_the_same(client: InsightsClient, backend: Backend) -> None:
    body = {"experiment_ids": [backend.experiment_id()], "time_bucket": "day"}
    api = await client.post("traffic-cost/latency", body)
    ajax = await client.post("traffic-cost/latency", body, prefix=AJAX_API)
    assert api.status_code == ajax.status_code == 200
    assert api.json() == ajax.json()
