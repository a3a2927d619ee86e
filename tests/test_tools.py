"""tools/discovery and tools/metrics against the raw TOOL spans, MLflow's span counts, the
edge-case DB (names differing in case or trailing spaces), and across databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.entities.trace_metrics import AggregationType, MetricAggregation, MetricViewType

from tests.conftest import Backend, InsightsClient
from tests.oracle import (
    EDGE_END_MS,
    EDGE_START_MS,
    Raw,
    Span,
    Trace,
    assert_close_json,
    expected_starts,
    load_raw,
    mlflow_points,
    mlflow_store,
    percentile,
    rate,
    same_json_everywhere,
    series,
)
from tests.round_trips import counting_client, round_trips

# The edge-case DB fixtures, shared with the other issue-3 test modules.

NS_PER_MS = 1_000_000


@pytest.fixture(scope="module")
def rows(raw: sa.Connection) -> Raw:
    return load_raw(raw)


def tool_calls(rows: Raw, traces: dict[str, Trace]) -> list[tuple[Trace, Span]]:
    return [
        (traces[s.trace_id], s)
        for s in rows.spans
        if s.type == "TOOL" and s.name is not None and s.trace_id in traces
    ]


def latency_stats(calls: list[tuple[Trace, Span]]) -> dict[str, float | None]:
    ms = [(s.end_ns - s.start_ns) / NS_PER_MS for _, s in calls if s.end_ns is not None]
    total_ns = sum(s.end_ns - s.start_ns for _, s in calls if s.end_ns is not None)
    return {
        "avg_latency": total_ns / len(ms) / NS_PER_MS if ms else None,
        "p50_latency": percentile(ms, 50),
        "p90_latency": percentile(ms, 90),
        "p99_latency": percentile(ms, 99),
    }


def expected_info(
    name: str | None,
    calls: list[tuple[Trace, Span]],
    starts: list[int],
    size: str,
    tz: str,
) -> dict[str, Any]:
    errors = sum(s.status == "ERROR" for _, s in calls)
    items = [(t.timestamp_ms, (t, s)) for t, s in calls]
    return {
        "tool_name": name,
        "trace_count": len({t.request_id for t, _ in calls}),
        "invocation_count": len(calls),
        "error_count": errors,
        "error_rate": rate(errors, len(calls)),
        **latency_stats(calls),
        "time_series": {
            "volume": series(
                starts,
                items,
                size,
                tz,
                lambda cs: {
                    "trace_count": len({t.request_id for t, _ in cs}),
                    "invocation_count": len(cs),
                },
            ),
            "latency": series(starts, items, size, tz, latency_stats),
            "errors": series(
                starts,
                items,
                size,
                tz,
                lambda cs: {
                    "error_count": sum(s.status == "ERROR" for _, s in cs),
                    "error_rate": rate(sum(s.status == "ERROR" for _, s in cs), len(cs)),
                },
            ),
        },
    }


def expected_discovery(
    rows: Raw, traces: dict[str, Trace], body: dict[str, Any], size: str, tz: str
) -> dict[str, Any]:
    calls = tool_calls(rows, traces)
    starts = expected_starts(traces.values(), body, size, tz)
    names = sorted({s.name for _, s in calls if s.name is not None})
    infos = [
        expected_info(n, [c for c in calls if c[1].name == n], starts, size, tz) for n in names
    ]
    infos.sort(key=lambda i: (-i["invocation_count"], i["tool_name"]))
    return {"data": infos}


@pytest.mark.parametrize(("size", "tz"), [("day", "UTC"), ("week", "Europe/Berlin")])
async def test_discovery_matches_raw_spans(
    client: InsightsClient, backend: Backend, rows: Raw, size: str, tz: str
) -> None:
    ids = [backend.experiment_id(), backend.experiment_id("sql-copilot")]
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "time_bucket": size,
        "timezone": tz,
        **backend.window(),
    }
    result = await client.ok("tools/discovery", body)
    expected = expected_discovery(
        rows, rows.in_scope(ids, body["start_time"], body["end_time"]), body, size, tz
    )
    assert len(expected["data"]) == 6
    assert all(info["error_count"] > 0 for info in expected["data"])
    assert_close_json(result, expected)


async def test_metrics_of_one_tool_and_of_all_tools(
    client: InsightsClient, backend: Backend, rows: Raw
) -> None:
    ids = [backend.experiment_id()]
    start = backend.dataset.start_time_ms + 3 * 86_400_000
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "time_bucket": "day",
        "timezone": "America/New_York",
        "start_time": start,
        "end_time": start + 5 * 86_400_000,
    }
    traces = rows.in_scope(ids, body["start_time"], body["end_time"])
    calls = tool_calls(rows, traces)
    starts = expected_starts(traces.values(), body, "day", "America/New_York")
    one = [c for c in calls if c[1].name == "send_email"]
    assert one
    result = await client.ok("tools/metrics", {**body, "tool_name": "send_email"})
    assert_close_json(
        result, {"data": expected_info("send_email", one, starts, "day", "America/New_York")}
    )
    everything = {"data": expected_info(None, calls, starts, "day", "America/New_York")}
    for absent in ({}, {"tool_name": None}, {"tool_name": ""}):
        assert_close_json(await client.ok("tools/metrics", {**body, **absent}), everything)


def without_latency_series(expected: dict[str, Any]) -> dict[str, Any]:
    """``expected`` as ``include_latency_series: false`` answers it: no latency series."""

    def strip(info: dict[str, Any]) -> dict[str, Any]:
        return {**info, "time_series": {**info["time_series"], "latency": []}}

    data = expected["data"]
    return {"data": [strip(i) for i in data] if isinstance(data, list) else strip(data)}


@pytest.mark.parametrize(("size", "tz"), [("day", "UTC"), ("hour", "Asia/Kolkata")])
async def test_without_the_latency_series(
    client: InsightsClient, backend: Backend, rows: Raw, size: str, tz: str
) -> None:
    """Everything but the per-bucket latencies, still from the raw rows: the overall latency
    percentiles no longer follow from the per-bucket ones on the store."""
    ids = [backend.experiment_id(), backend.experiment_id("sql-copilot")]
    start = backend.dataset.start_time_ms + 2 * 86_400_000
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "time_bucket": size,
        "timezone": tz,
        "start_time": start,
        "end_time": start + 4 * 86_400_000,
        "include_latency_series": False,
    }
    traces = rows.in_scope(ids, body["start_time"], body["end_time"])
    expected = expected_discovery(rows, traces, body, size, tz)
    assert len(expected["data"]) > 3
    assert_close_json(await client.ok("tools/discovery", body), without_latency_series(expected))
    calls = tool_calls(rows, traces)
    starts = expected_starts(traces.values(), body, size, tz)
    for name in (None, "search_orders"):
        mine = [c for c in calls if name is None or c[1].name == name]
        assert mine
        one = {"data": expected_info(name, mine, starts, size, tz)}
        result = await client.ok("tools/metrics", {**body, "tool_name": name})
        assert_close_json(result, without_latency_series(one))


async def test_filter_string_slices_tools(
    client: InsightsClient, backend: Backend, rows: Raw
) -> None:
    ids = [backend.experiment_id()]
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "time_bucket": "week",
        "filter_string": "span.name = 'search_orders' AND tags.env = 'prod'",
        **backend.window(),
    }

    def keep(t: Trace) -> bool:
        names = {s.name for s in rows.spans if s.trace_id == t.request_id}
        return "search_orders" in names and rows.tags_of(t.request_id).get("env") == "prod"

    traces = rows.in_scope(ids, body["start_time"], body["end_time"], keep=keep)
    expected = expected_discovery(rows, traces, body, "week", "UTC")
    assert 10 < len(traces) < 100 and len(expected["data"]) > 1
    assert_close_json(await client.ok("tools/discovery", body), expected)


async def test_known_tool_outside_the_window_and_unknown_tool(
    client: InsightsClient, backend: Backend
) -> None:
    ids = [backend.experiment_id("sql-copilot")]
    start = backend.dataset.end_time_ms + 86_400_000
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "start_time": start,
        "end_time": start + 2 * 3_600_000,
        "tool_name": "run_sql",
    }
    result = await client.ok("tools/metrics", body)
    zero_volume = {"trace_count": 0, "invocation_count": 0}
    null_latency = dict.fromkeys(("avg_latency", "p50_latency", "p90_latency", "p99_latency"))
    assert result == {
        "data": {
            "tool_name": "run_sql",
            "trace_count": 0,
            "invocation_count": 0,
            "error_count": 0,
            "error_rate": None,
            **null_latency,
            "time_series": {
                "volume": [{"time_bucket": start + h * 3_600_000, **zero_volume} for h in (0, 1)],
                "latency": [{"time_bucket": start + h * 3_600_000, **null_latency} for h in (0, 1)],
                "errors": [
                    {"time_bucket": start + h * 3_600_000, "error_count": 0, "error_rate": None}
                    for h in (0, 1)
                ],
            },
        }
    }
    assert (
        await client.ok("tools/discovery", {k: v for k, v in body.items() if k != "tool_name"})
    ) == {"data": []}
    # send_email is only called in support-agent: unknown in sql-copilot, whatever the window.
    for name in ("send_email", "no_such_tool", "RUN_SQL"):
        message = await client.error(
            "tools/metrics",
            {"experiment_ids": ids, "tool_name": name},
            404,
            "RESOURCE_DOES_NOT_EXIST",
        )
        assert repr(name) in message


async def test_request_errors(client: InsightsClient, backend: Backend) -> None:
    exp = backend.experiment_id()
    for endpoint, body, word in [
        ("tools/discovery", {"experiment_ids": [exp], "tool_name": "x"}, "tool_name"),
        ("tools/metrics", {"experiment_ids": [exp], "tool": "x"}, "tool"),
        ("tools/metrics", {"experiment_ids": [exp], "tool_name": 3}, "tool_name"),
        ("tools/metrics", {"tool_name": "run_sql"}, "experiment_ids"),
        (
            "tools/discovery",
            {"experiment_ids": [exp], "include_latency_series": "false"},
            "include_latency_series",
        ),
        (
            "tools/metrics",
            {"experiment_ids": [exp], "include_latency_series": 0},
            "include_latency",
        ),
    ]:
        message = await client.error(endpoint, body, 400, "INVALID_PARAMETER_VALUE")
        assert word in message, message


def _agg(kind: str) -> MetricAggregation:
    return MetricAggregation(AggregationType(kind))


async def test_span_counts_equal_mlflows(
    client: InsightsClient, backend: Backend, tmp_path: Path
) -> None:
    ids = [backend.experiment_id(), backend.experiment_id("sql-copilot")]
    body: dict[str, Any] = {"experiment_ids": ids, **backend.window()}
    result = await client.ok("tools/discovery", body)
    with mlflow_store(backend.sync_uri, tmp_path) as store:
        points = mlflow_points(
            store,
            ids,
            MetricViewType.SPANS,
            "span_count",
            [_agg("COUNT")],
            dimensions=["span_name", "span_status"],
            filters=['span.type = "TOOL"'],
            start_time_ms=body["start_time"],
            end_time_ms=body["end_time"] - 1,
        )
    counts: dict[str, dict[str, int]] = {}
    for p in points:
        counts.setdefault(p.dimensions["span_name"], {})[p.dimensions["span_status"]] = int(
            p.values["COUNT"]
        )
    assert {i["tool_name"] for i in result["data"]} == set(counts)
    for info in result["data"]:
        by_status = counts[info["tool_name"]]
        assert info["invocation_count"] == sum(by_status.values())
        assert info["error_count"] == by_status.get("ERROR", 0)


async def test_edge_names_differing_in_case_or_spaces_are_distinct_tools(
    edge_clients: dict[str, InsightsClient], edge_dbs: list[Any], edge_raw: dict[str, Raw]
) -> None:
    dbs = {db.name: db for db in edge_dbs}
    body: dict[str, Any] = {
        "time_bucket": "day",
        "start_time": EDGE_START_MS,
        "end_time": EDGE_END_MS,
    }
    answer = await same_json_everywhere(
        edge_clients,
        "tools/discovery",
        lambda name: {"experiment_ids": [dbs[name].experiment_id], **body},
    )
    assert [i["tool_name"] for i in answer["data"]] == ["search", "Search", "lookup", "search "]
    for name, rows in edge_raw.items():
        traces = rows.in_scope([dbs[name].experiment_id], EDGE_START_MS, EDGE_END_MS)
        assert_close_json(answer, expected_discovery(rows, traces, body, "day", "UTC"))
    lookup = next(i for i in answer["data"] if i["tool_name"] == "lookup")
    assert lookup["avg_latency"] == 2.250001  # sub-millisecond durations are kept
    one = await same_json_everywhere(
        edge_clients,
        "tools/metrics",
        lambda name: {"experiment_ids": [dbs[name].experiment_id], "tool_name": "Search", **body},
    )
    assert one["data"]["invocation_count"] == 2 and one["data"]["error_count"] == 1


async def test_round_trips_do_not_grow_with_the_number_of_tools(backend: Backend) -> None:
    one_tool = [backend.experiment_id("sql-copilot")]
    many_tools = [backend.experiment_id(), *one_tool]
    span = {"start_time": backend.dataset.start_time_ms, "end_time": backend.dataset.end_time_ms}
    async with counting_client(backend.service_url) as (client, statements):
        for ids in (one_tool, many_tools):
            body: dict[str, Any] = {"experiment_ids": ids, **span}
            # 1 to check the experiments, then 1 for counts and both latency distributions.
            assert await round_trips(client, statements, "tools/discovery", body) == 2
            assert await round_trips(client, statements, "tools/metrics", body) == 2
            named = {**body, "tool_name": "fetch_docs"}
            assert await round_trips(client, statements, "tools/metrics", named) == 2
            # A tool never called in the window: 1 more to tell it from an unknown tool.
            before = backend.dataset.start_time_ms
            quiet = {**named, "start_time": before - 86_400_000, "end_time": before}
            assert await round_trips(client, statements, "tools/metrics", quiet) == 3
        # An open window costs one more (the range of the traces in scope).
        open_window = {"experiment_ids": many_tools}
        assert await round_trips(client, statements, "tools/discovery", open_window) == 3
