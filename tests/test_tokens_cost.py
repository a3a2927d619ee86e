"""traffic-cost/tokens and traffic-cost/cost against the raw token and cost columns, MLflow's own
``query_trace_metrics``, and each other across databases (identical JSON)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.entities.trace_metrics import AggregationType, MetricAggregation, MetricViewType

from service.queries.exact_sums import read_sum, sum_columns
from tests import oracle
from tests.conftest import Backend, InsightsClient
from tests.oracle import (
    COST_KEYS,
    Raw,
    Trace,
    assert_close_json,
    exact_mean,
    expected_starts,
    load_raw,
    mlflow_points,
    mlflow_store,
    percentile,
    series,
)
from tests.round_trips import counting_client, round_trips

BUCKETINGS = [("day", "UTC"), ("hour", "Europe/Berlin"), ("week", "America/New_York")]
SUMMED_TOKENS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


@pytest.fixture(scope="module")
def rows(raw: sa.Connection) -> Raw:
    return load_raw(raw)


def reports_usage(t: Trace) -> bool:
    return any(v is not None for v in t.tokens.values())


def reports_cost(t: Trace) -> bool:
    return any(v is not None for v in t.costs.values())


def token_sums(traces: list[Trace], keys: tuple[str, ...]) -> dict[str, int]:
    return {k: sum(t.tokens[k] or 0 for t in traces) for k in keys}


def expected_tokens(
    traces: dict[str, Trace], body: dict[str, Any], size: str, tz: str
) -> dict[str, Any]:
    using = [t for t in traces.values() if reports_usage(t)]
    totals = [
        float(t.tokens["total_tokens"]) for t in using if t.tokens["total_tokens"] is not None
    ]
    sums = token_sums(using, SUMMED_TOKENS)
    summary = {
        "trace_count": len(using),
        **sums,
        "avg_total_tokens": sums["total_tokens"] / len(totals) if totals else None,
        "p50_total_tokens": percentile(totals, 50),
        "p90_total_tokens": percentile(totals, 90),
        "p99_total_tokens": percentile(totals, 99),
    }
    starts = expected_starts(traces.values(), body, size, tz)
    points = series(
        starts,
        [(t.timestamp_ms, t) for t in using],
        size,
        tz,
        lambda ts: {"trace_count": len(ts), **token_sums(ts, SUMMED_TOKENS[:3])},
    )
    return {"summary": summary, "time_series": points}


def cost_sums(costs: list[dict[str, float | None]]) -> dict[str, float]:
    # math.fsum: the correctly rounded exact sum, which the service promises on every DB.
    return {k: math.fsum(v for c in costs if (v := c[k]) is not None) for k in COST_KEYS}


def expected_cost(
    rows: Raw, traces: dict[str, Trace], body: dict[str, Any], size: str, tz: str
) -> dict[str, Any]:
    costing = [t for t in traces.values() if reports_cost(t)]
    starts = expected_starts(traces.values(), body, size, tz)
    points = series(
        starts,
        [(t.timestamp_ms, t) for t in costing],
        size,
        tz,
        lambda ts: cost_sums([t.costs for t in ts]),
    )
    groups: dict[tuple[str | None, str | None], list[dict[str, float | None]]] = {}
    for span in rows.spans:
        if span.trace_id in traces and any(v is not None for v in span.costs.values()):
            groups.setdefault((span.model_name, span.model_provider), []).append(span.costs)
    by_model: list[dict[str, Any]] = [
        {"model_name": m, "model_provider": p, "span_count": len(cs), **cost_sums(cs)}
        for (m, p), cs in groups.items()
    ]
    by_model.sort(key=lambda g: (-g["total_cost"], g["model_name"] or "", g["model_provider"]))
    return {
        "summary": {**cost_sums([t.costs for t in costing]), "trace_count": len(costing)},
        "time_series": points,
        "by_model": by_model,
    }


@pytest.mark.parametrize(("size", "tz"), BUCKETINGS)
async def test_tokens_match_raw_columns(
    client: InsightsClient, backend: Backend, rows: Raw, size: str, tz: str
) -> None:
    ids = [backend.experiment_id(), backend.experiment_id("sql-copilot")]
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "time_bucket": size,
        "timezone": tz,
        **backend.window(),
    }
    result = await client.ok("traffic-cost/tokens", body)
    traces = rows.in_scope(ids, body["start_time"], body["end_time"])
    expected = expected_tokens(traces, body, size, tz)
    assert expected["summary"]["trace_count"] > 100
    assert expected["summary"]["cache_creation_input_tokens"] > 0
    assert_close_json(result, expected)


@pytest.mark.parametrize(("size", "tz"), BUCKETINGS)
async def test_cost_sums_are_exact(
    client: InsightsClient, backend: Backend, rows: Raw, size: str, tz: str
) -> None:
    ids = [backend.experiment_id(), backend.experiment_id("sql-copilot")]
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "time_bucket": size,
        "timezone": tz,
        **backend.window(),
    }
    result = await client.ok("traffic-cost/cost", body)
    traces = rows.in_scope(ids, body["start_time"], body["end_time"])
    expected = expected_cost(rows, traces, body, size, tz)
    assert len(expected["by_model"]) >= 3 and expected["summary"]["trace_count"] > 100
    # Exact sums: equal to math.fsum to the last bit, not just close.
    assert result == expected


async def test_open_window_and_one_experiment(
    client: InsightsClient, backend: Backend, rows: Raw
) -> None:
    ids = [backend.experiment_id("sql-copilot")]
    body: dict[str, Any] = {"experiment_ids": ids, "time_bucket": "day"}
    traces = rows.in_scope(ids)
    assert_close_json(
        await client.ok("traffic-cost/tokens", body), expected_tokens(traces, body, "day", "UTC")
    )
    assert await client.ok("traffic-cost/cost", body) == expected_cost(
        rows, traces, body, "day", "UTC"
    )


async def test_window_without_traces_gives_zeros_and_nulls(
    client: InsightsClient, backend: Backend
) -> None:
    start = backend.dataset.end_time_ms + 10 * 86_400_000
    body: dict[str, Any] = {
        "experiment_ids": [backend.experiment_id()],
        "start_time": start,
        "end_time": start + 2 * 86_400_000,
        "time_bucket": "day",
    }
    tokens = await client.ok("traffic-cost/tokens", body)
    assert tokens["summary"] == {
        "trace_count": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "avg_total_tokens": None,
        "p50_total_tokens": None,
        "p90_total_tokens": None,
        "p99_total_tokens": None,
    }
    zero = {"trace_count": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    assert tokens["time_series"] == [
        {"time_bucket": start, **zero},
        {"time_bucket": start + 86_400_000, **zero},
    ]
    cost = await client.ok("traffic-cost/cost", body)
    nothing = {"total_cost": 0.0, "input_cost": 0.0, "output_cost": 0.0}
    assert cost == {
        "summary": {**nothing, "trace_count": 0},
        "time_series": [
            {"time_bucket": start, **nothing},
            {"time_bucket": start + 86_400_000, **nothing},
        ],
        "by_model": [],
    }
    empty = {"experiment_ids": [backend.experiment_id("empty-experiment")]}
    assert (await client.ok("traffic-cost/cost", empty))["time_series"] == []


async def test_filter_string_slices_tokens_and_cost(
    client: InsightsClient, backend: Backend, rows: Raw
) -> None:
    ids = [backend.experiment_id()]
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "filter_string": "tags.persona = 'admin'",
        "time_bucket": "week",
        **backend.window(),
    }
    traces = rows.in_scope(
        ids,
        body["start_time"],
        body["end_time"],
        keep=lambda t: rows.tags_of(t.request_id).get("persona") == "admin",
    )
    assert 5 < len(traces) < 100
    assert_close_json(
        await client.ok("traffic-cost/tokens", body),
        expected_tokens(traces, body, "week", "UTC"),
    )
    assert await client.ok("traffic-cost/cost", body) == expected_cost(
        rows, traces, body, "week", "UTC"
    )


def _agg(kind: str, percentile: float | None = None) -> MetricAggregation:
    return MetricAggregation(AggregationType(kind), percentile)


async def test_same_numbers_as_mlflow(
    client: InsightsClient, backend: Backend, tmp_path: Path
) -> None:
    ids = [backend.experiment_id(), backend.experiment_id("sql-copilot")]
    body: dict[str, Any] = {"experiment_ids": ids, "time_bucket": "week", **backend.window()}
    tokens = (await client.ok("traffic-cost/tokens", body))["summary"]
    cost = await client.ok("traffic-cost/cost", body)
    mlflow_range: dict[str, Any] = {
        "start_time_ms": body["start_time"],
        "end_time_ms": body["end_time"] - 1,
    }
    with mlflow_store(backend.sync_uri, tmp_path) as store:
        for key in SUMMED_TOKENS:
            [point] = mlflow_points(
                store, ids, MetricViewType.TRACES, key, [_agg("SUM")], **mlflow_range
            )
            assert tokens[key] == point.values["SUM"], key
        [point] = mlflow_points(
            store,
            ids,
            MetricViewType.TRACES,
            "total_tokens",
            [_agg("AVG"), _agg("PERCENTILE", 50.0), _agg("PERCENTILE", 90.0)],
            **mlflow_range,
        )
        # MySQL's AVG of integers is a DECIMAL rounded to 4 places.
        assert oracle.close(tokens["avg_total_tokens"], float(point.values["AVG"]), rel=1e-6)
        if backend.name != "mysql":  # MLflow approximates percentiles on MySQL
            assert oracle.close(
                tokens["p50_total_tokens"], point.values[str(_agg("PERCENTILE", 50.0))]
            )
            assert oracle.close(
                tokens["p90_total_tokens"], point.values[str(_agg("PERCENTILE", 90.0))]
            )
        # Span cost per model (MLflow sums in database order: equal to ~1e-12).
        mlflow_by_model: dict[tuple[str, str, str], float] = {}
        for kind in ("total_cost", "input_cost"):
            for point in mlflow_points(
                store,
                ids,
                MetricViewType.SPANS,
                kind,
                [_agg("SUM")],
                dimensions=["span_model_name", "span_model_provider"],
            ):
                dims = point.dimensions
                model = (dims["span_model_name"], dims["span_model_provider"], kind)
                mlflow_by_model[model] = point.values["SUM"]
    # The whole dataset lies in the window, so span costs by span time and by trace time agree.
    assert cost["by_model"]
    for model in cost["by_model"]:
        for kind in ("total_cost", "input_cost"):
            expected = mlflow_by_model[(model["model_name"], model["model_provider"], kind)]
            assert oracle.close(model[kind], expected, rel=1e-12), (model, kind)


@pytest.mark.parametrize("endpoint", ["traffic-cost/tokens", "traffic-cost/cost"])
async def test_request_errors(client: InsightsClient, backend: Backend, endpoint: str) -> None:
    exp = backend.experiment_id()
    message = await client.error(
        endpoint, {"experiment_ids": [exp], "limit": 3}, 400, "INVALID_PARAMETER_VALUE"
    )
    assert "limit" in message
    message = await client.error(endpoint, {}, 400, "INVALID_PARAMETER_VALUE")
    assert "experiment_ids" in message
    message = await client.error(
        endpoint, {"experiment_ids": ["987654"]}, 404, "RESOURCE_DOES_NOT_EXIST"
    )
    assert "987654" in message


def test_exact_sums_equal_fsum_on_the_database(raw: sa.Connection) -> None:
    """The SQL decomposition behind every cost sum and assessment mean, on doubles whose naive
    sum depends on the order of addition: equal to math.fsum to the last bit."""
    rng = random.Random(3)
    groups = {
        1: [rng.uniform(-5, 5) * 10 ** rng.randint(-12, 6) for _ in range(300)] + [0.1, 0.2, 0.3],
        2: [3e18, 1.0, -3e18, 2.0**-52, -2.5, 1e-15],
        3: [0.0],
    }
    md = sa.MetaData()
    table = sa.Table(
        "insights_exact_sum_check",
        md,
        sa.Column("g", sa.Integer),
        sa.Column("x", sa.Float(precision=53)),
        prefixes=["TEMPORARY"],
    )
    md.create_all(raw, checkfirst=False)
    try:
        raw.execute(table.insert(), [{"g": g, "x": v} for g, vs in groups.items() for v in vs])
        stmt = sa.select(table.c.g, *sum_columns(table.c.x, "s")).group_by(table.c.g)
        result = {row["g"]: read_sum(row, "s") for row in raw.execute(stmt).mappings()}
        for g, values in groups.items():
            assert result[g].value == math.fsum(values), g
            assert result[g].mean(len(values)) == exact_mean(values), g
        assert sum(groups[1]) != math.fsum(groups[1]), "naive sums must be inexact here"
        assert sum(groups[2]) != math.fsum(groups[2]), "naive sums must be inexact here"
    finally:
        md.drop_all(raw, checkfirst=False)
        raw.rollback()


async def test_round_trips(backend: Backend) -> None:
    body: dict[str, Any] = {"experiment_ids": [backend.experiment_id()], **backend.window()}
    async with counting_client(backend.service_url) as (client, statements):
        # 1 to check the experiments, then sums per bucket + the total-token distribution.
        assert await round_trips(client, statements, "traffic-cost/tokens", body) == 3
        # 1 to check the experiments, then trace cost per bucket + span cost per model.
        assert await round_trips(client, statements, "traffic-cost/cost", body) == 3
