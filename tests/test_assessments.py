"""assessments/discovery and assessments/metrics against the raw feedback rows (types decided
with ``json.loads``, not MLflow's helper columns), MLflow's own assessment metrics, the
edge-case DB (mixed types, padded yes, escaped strings, judge failures only, order-dependent
float sums), and across databases."""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.entities.trace_metrics import AggregationType, MetricAggregation, MetricViewType

from service.dialects import exact_text, json_text_value
from tests import oracle
from tests.conftest import Backend, InsightsClient, enabled_backends
from tests.oracle import (
    EDGE_END_MS,
    EDGE_START_MS,
    EDGE_STEP_MS,
    Assessment,
    Raw,
    Trace,
    assert_close_json,
    display,
    exact_mean,
    expected_starts,
    is_failure,
    load_raw,
    mlflow_points,
    mlflow_store,
    name_type,
    percentile,
    rate,
    same_json_everywhere,
    series,
    top_values,
    value_type,
)
from tests.round_trips import counting_client, round_trips

# The edge-case DB fixtures, shared with the other issue-3 test modules.

NAMES = ("correctness", "relevance", "quality_score", "tone")


@pytest.fixture(scope="module")
def rows(raw: sa.Connection) -> Raw:
    return load_raw(raw)


def feedback(rows: Raw, traces: dict[str, Trace]) -> list[Assessment]:
    return [
        a
        for a in rows.assessments
        if a.assessment_type == "feedback" and a.valid and a.trace_id in traces
    ]


def has_value(a: Assessment) -> bool:
    return a.error is None and json.loads(a.value) is not None


def types_in(rows: Raw, experiment_ids: list[str]) -> dict[str, str]:
    """Each feedback name's type over its valid values in the experiments, any window."""
    everything = rows.in_scope(experiment_ids)
    values: dict[str, list[str]] = {}
    for a in feedback(rows, everything):
        values.setdefault(a.name, [])
        if has_value(a):
            values[a.name].append(a.value)
    return {name: name_type(vs) for name, vs in values.items()}


def expected_discovery(
    rows: Raw, traces: dict[str, Trace], experiment_ids: list[str]
) -> dict[str, Any]:
    types = types_in(rows, experiment_ids)
    by_name: dict[str, list[Assessment]] = {}
    for a in feedback(rows, traces):
        by_name.setdefault(a.name, []).append(a)
    data: list[dict[str, Any]] = [
        {
            "assessment_name": name,
            "assessment_type": types[name],
            "sources": sorted({a.source_type for a in rs}),
            "trace_count": len({a.trace_id for a in rs}),
            "assessment_count": len(rs),
            "error_count": sum(a.error is not None for a in rs),
        }
        for name, rs in by_name.items()
    ]
    data.sort(key=lambda d: (-d["trace_count"], d["assessment_name"]))
    return {"data": data}


def expected_metrics(
    rows: Raw,
    traces: dict[str, Trace],
    experiment_ids: list[str],
    name: str,
    body: dict[str, Any],
    size: str,
    tz: str,
    limit: int = 10,
) -> dict[str, Any]:
    kind = types_in(rows, experiment_ids)[name]
    rs = [a for a in feedback(rows, traces) if a.name == name]
    valued = [a for a in rs if has_value(a)]
    errors = sum(a.error is not None for a in rs)
    starts = expected_starts(traces.values(), body, size, tz)
    items = [(traces[a.trace_id].timestamp_ms, a) for a in valued]
    head = {
        "assessment_name": name,
        "assessment_type": kind,
        "sources": sorted({a.source_type for a in rs}),
    }
    if kind == "boolean":
        failures = sum(is_failure(a.value) for a in valued)

        def point(bucket: list[Assessment]) -> dict[str, Any]:
            f = sum(is_failure(a.value) for a in bucket)
            return {
                "total_count": len(bucket),
                "failure_count": f,
                "failure_rate": rate(f, len(bucket)),
            }

        summary: dict[str, Any] = {
            "total_count": len(valued),
            "pass_count": len(valued) - failures,
            "failure_count": failures,
            "failure_rate": rate(failures, len(valued)),
            "error_count": errors,
        }
        return {**head, "summary": summary, "time_series": series(starts, items, size, tz, point)}
    if kind == "numeric":
        values = [float(json.loads(a.value)) for a in valued]
        p50 = percentile(values, 50)

        def numeric_point(bucket: list[Assessment]) -> dict[str, Any]:
            vs = [float(json.loads(a.value)) for a in bucket]
            return {
                "count": len(vs),
                "avg_value": exact_mean(vs),
                "p50_value": percentile(vs, 50),
                "p90_value": percentile(vs, 90),
                "p99_value": percentile(vs, 99),
            }

        summary = {
            "total_count": len(values),
            "avg_value": exact_mean(values),
            "p50_value": p50,
            "p90_value": percentile(values, 90),
            "p99_value": percentile(values, 99),
            "min_value": min(values, default=None),
            "max_value": max(values, default=None),
            "below_p50_count": 0 if p50 is None else sum(v < p50 for v in values),
            "error_count": errors,
        }
        return {
            **head,
            "summary": summary,
            "time_series": series(starts, items, size, tz, numeric_point),
        }
    counter = Counter(display(a.value) for a in valued)
    top = top_values(counter, len(valued), limit)

    def string_point(bucket: list[Assessment]) -> dict[str, Any]:
        c = Counter(display(a.value) for a in bucket)
        return {"total_count": len(bucket), "counts": {v["value"]: c[v["value"]] for v in top}}

    summary = {
        "total_count": len(valued),
        "unique_values": len(counter),
        "top_values": top,
        "other_count": len(valued) - sum(v["count"] for v in top),
        "error_count": errors,
    }
    return {
        **head,
        "summary": summary,
        "time_series": series(starts, items, size, tz, string_point),
    }


def both(backend: Backend) -> list[str]:
    return [backend.experiment_id(), backend.experiment_id("sql-copilot")]


async def test_discovery_matches_raw_feedback(
    client: InsightsClient, backend: Backend, rows: Raw
) -> None:
    ids = both(backend)
    bodies: list[dict[str, Any]] = [
        {"experiment_ids": ids, **backend.window()},
        {"experiment_ids": ids[:1], "start_time": backend.dataset.start_time_ms + 5 * 86_400_000},
        {"experiment_ids": ids, "filter_string": "tags.persona = 'guest'"},
    ]
    for body in bodies:
        keep = None
        if "filter_string" in body:
            keep = lambda t: rows.tags_of(t.request_id).get("persona") == "guest"  # noqa: E731
        traces = rows.in_scope(
            body["experiment_ids"], body.get("start_time"), body.get("end_time"), keep=keep
        )
        expected = expected_discovery(rows, traces, body["experiment_ids"])
        assert {d["assessment_name"] for d in expected["data"]} == set(NAMES)
        assert_close_json(await client.ok("assessments/discovery", body), expected)
    types = {d["assessment_name"]: d["assessment_type"] for d in expected["data"]}
    assert types == {
        "correctness": "boolean",
        "relevance": "boolean",
        "quality_score": "numeric",
        "tone": "string",
    }


@pytest.mark.parametrize(
    ("size", "tz"), [("day", "UTC"), ("week", "Europe/Berlin"), ("hour", "UTC")]
)
@pytest.mark.parametrize("name", NAMES)
async def test_metrics_match_raw_feedback(
    client: InsightsClient, backend: Backend, rows: Raw, name: str, size: str, tz: str
) -> None:
    ids = both(backend)
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "assessment_name": name,
        "time_bucket": size,
        "timezone": tz,
        **backend.window(),
    }
    traces = rows.in_scope(ids, body["start_time"], body["end_time"])
    expected = expected_metrics(rows, traces, ids, name, body, size, tz)
    assert expected["summary"]["total_count"] > 50
    assert_close_json(await client.ok("assessments/metrics", body), expected)


@pytest.mark.parametrize("limit", [1, 3, 11, 12, 1000])
async def test_string_metrics_limit(
    client: InsightsClient, backend: Backend, rows: Raw, limit: int
) -> None:
    ids = [backend.experiment_id()]
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "assessment_name": "tone",
        "time_bucket": "week",
        "limit": limit,
        "filter_string": "status = 'OK'",
    }
    traces = rows.in_scope(ids, keep=lambda t: t.status == "OK")
    expected = expected_metrics(rows, traces, ids, "tone", body, "week", "UTC", limit)
    assert_close_json(await client.ok("assessments/metrics", body), expected)
    # "Friendly" and "friendly" are two values on every database.
    values = {v["value"] for v in expected["summary"]["top_values"]}
    if limit >= 11:
        assert {"Friendly", "friendly"} <= values


async def test_known_name_without_data_in_the_window(
    client: InsightsClient, backend: Backend
) -> None:
    start = backend.dataset.end_time_ms + 86_400_000
    body: dict[str, Any] = {
        "experiment_ids": both(backend),
        "start_time": start,
        "end_time": start + 2 * 86_400_000,
        "time_bucket": "day",
    }
    days = [start, start + 86_400_000]
    bool_result = await client.ok("assessments/metrics", {**body, "assessment_name": "relevance"})
    assert bool_result == {
        "assessment_name": "relevance",
        "assessment_type": "boolean",
        "sources": [],
        "summary": {
            "total_count": 0,
            "pass_count": 0,
            "failure_count": 0,
            "failure_rate": None,
            "error_count": 0,
        },
        "time_series": [
            {"time_bucket": d, "total_count": 0, "failure_count": 0, "failure_rate": None}
            for d in days
        ],
    }
    numeric = await client.ok("assessments/metrics", {**body, "assessment_name": "quality_score"})
    assert numeric["assessment_type"] == "numeric"
    assert numeric["summary"] == {
        "total_count": 0,
        "avg_value": None,
        "p50_value": None,
        "p90_value": None,
        "p99_value": None,
        "min_value": None,
        "max_value": None,
        "below_p50_count": 0,
        "error_count": 0,
    }
    assert [p["count"] for p in numeric["time_series"]] == [0, 0]
    string = await client.ok("assessments/metrics", {**body, "assessment_name": "tone"})
    assert string["summary"] == {
        "total_count": 0,
        "unique_values": 0,
        "top_values": [],
        "other_count": 0,
        "error_count": 0,
    }
    assert string["time_series"] == [
        {"time_bucket": d, "total_count": 0, "counts": {}} for d in days
    ]
    assert await client.ok(
        "assessments/discovery", {k: v for k, v in body.items() if k != "time_bucket"}
    ) == {"data": []}


async def test_unknown_names_are_404(client: InsightsClient, backend: Backend) -> None:
    ids = both(backend)
    for name in ("no_such_judge", "expected_answer", "Correctness", "tone "):
        message = await client.error(
            "assessments/metrics",
            {"experiment_ids": ids, "assessment_name": name},
            404,
            "RESOURCE_DOES_NOT_EXIST",
        )
        assert repr(name) in message
    empty = [backend.experiment_id("empty-experiment")]
    await client.error(
        "assessments/metrics",
        {"experiment_ids": empty, "assessment_name": "correctness"},
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )


async def test_request_errors(client: InsightsClient, backend: Backend) -> None:
    exp = backend.experiment_id()
    for endpoint, body, word in [
        ("assessments/metrics", {"experiment_ids": [exp]}, "assessment_name"),
        (
            "assessments/metrics",
            {"experiment_ids": [exp], "assessment_name": ""},
            "assessment_name",
        ),
        ("assessments/metrics", {"experiment_ids": [exp], "assessment_name": 1}, "assessment_name"),
        (
            "assessments/metrics",
            {"experiment_ids": [exp], "assessment_name": "tone", "limit": 0},
            "limit",
        ),
        (
            "assessments/metrics",
            {"experiment_ids": [exp], "assessment_name": "tone", "limit": -1},
            "limit",
        ),
        (
            "assessments/metrics",
            {"experiment_ids": [exp], "assessment_name": "tone", "name": "x"},
            "name",
        ),
        (
            "assessments/discovery",
            {"experiment_ids": [exp], "assessment_name": "tone"},
            "assessment_name",
        ),
        ("assessments/discovery", {"experiment_ids": [exp], "time_bucket": "day"}, "time_bucket"),
        ("assessments/discovery", {"experiment_ids": ["99999"]}, "99999"),
    ]:
        status, code = (
            (404, "RESOURCE_DOES_NOT_EXIST")
            if word == "99999"
            else (400, "INVALID_PARAMETER_VALUE")
        )
        message = await client.error(endpoint, body, status, code)
        assert word in message, (body, message)


def _agg(kind: str, percentile: float | None = None) -> MetricAggregation:
    return MetricAggregation(AggregationType(kind), percentile)


async def test_same_numbers_as_mlflow(
    client: InsightsClient, backend: Backend, tmp_path: Path
) -> None:
    ids = both(backend)
    body: dict[str, Any] = {"experiment_ids": ids, **backend.window()}
    discovery = await client.ok("assessments/discovery", body)
    metrics = {
        name: await client.ok("assessments/metrics", {**body, "assessment_name": name})
        for name in NAMES
    }
    p50 = _agg("PERCENTILE", 50.0)
    mlflow_range: dict[str, Any] = {
        "start_time_ms": body["start_time"],
        "end_time_ms": body["end_time"] - 1,
    }
    with mlflow_store(backend.sync_uri, tmp_path) as store:
        counts = mlflow_points(
            store,
            ids,
            MetricViewType.ASSESSMENTS,
            "assessment_count",
            [_agg("COUNT")],
            dimensions=["assessment_name"],
            filters=['assessment.type = "feedback"'],
            **mlflow_range,
        )
        values = mlflow_points(
            store,
            ids,
            MetricViewType.ASSESSMENTS,
            "assessment_value",
            [_agg("AVG"), p50],
            dimensions=["assessment_name"],
            **mlflow_range,
        )
    mlflow_counts = {p.dimensions["assessment_name"]: p.values["COUNT"] for p in counts}
    assert mlflow_counts == {d["assessment_name"]: d["assessment_count"] for d in discovery["data"]}
    mlflow_values = {p.dimensions["assessment_name"]: p.values for p in values}
    # MLflow averages its aggregate (1/0 for booleans): the pass rate, and the numeric mean.
    for name in ("correctness", "relevance"):
        s = metrics[name]["summary"]
        assert oracle.close(s["pass_count"] / s["total_count"], mlflow_values[name]["AVG"])
    numeric = metrics["quality_score"]["summary"]
    assert oracle.close(numeric["avg_value"], mlflow_values["quality_score"]["AVG"])
    if backend.name != "mysql":  # MLflow approximates percentiles on MySQL
        assert oracle.close(numeric["p50_value"], mlflow_values["quality_score"][str(p50)])
    assert "tone" not in mlflow_values  # MLflow has no aggregate for strings


async def test_edge_types_values_and_exact_means(
    edge_clients: dict[str, InsightsClient], edge_dbs: list[Any], edge_raw: dict[str, Raw]
) -> None:
    dbs = {db.name: db for db in edge_dbs}
    window_ = {"start_time": EDGE_START_MS, "end_time": EDGE_END_MS}

    def body(name: str, **extra: Any) -> dict[str, Any]:
        return {"experiment_ids": [dbs[name].experiment_id], **window_, **extra}

    discovery = await same_json_everywhere(edge_clients, "assessments/discovery", body)
    types = {d["assessment_name"]: d["assessment_type"] for d in discovery["data"]}
    assert types == {
        "mixed": "string",  # numbers and strings
        "yesno": "boolean",  # "Yes", "no", true, false, "NO"
        "padded": "string",  # " yes" is not "yes"
        "escaped": "string",
        "all_failed": "string",  # no value at all
        "numbers": "numeric",
        "late": "numeric",
    }
    answers = {}
    for name in types:
        answers[name] = await same_json_everywhere(
            edge_clients,
            "assessments/metrics",
            functools.partial(body, assessment_name=name, limit=3, time_bucket="day"),
        )
    for backend_name, rows in edge_raw.items():
        ids = [dbs[backend_name].experiment_id]
        traces = rows.in_scope(ids, EDGE_START_MS, EDGE_END_MS)
        assert_close_json(discovery, expected_discovery(rows, traces, ids))
        for name, answer in answers.items():
            expected = expected_metrics(rows, traces, ids, name, {**window_}, "day", "UTC", limit=3)
            assert_close_json(answer, expected)
    assert answers["yesno"]["summary"]["failure_count"] == 3
    assert [v["value"] for v in answers["mixed"]["summary"]["top_values"]] == ["two", "1", "3.5"]
    assert [v["value"] for v in answers["escaped"]["summary"]["top_values"]] == [
        "\u00e9",
        "line\nbreak",
        'q"uote',
    ]
    assert answers["all_failed"]["summary"] == {
        "total_count": 0,
        "unique_values": 0,
        "top_values": [],
        "other_count": 0,
        "error_count": 2,
    }
    # The mean is the correctly rounded exact mean, whatever order the DB adds values in.
    numbers = [0.1, 0.2, 0.3, 7.0, -2.5, 1e-3, 0.7]
    assert answers["numbers"]["summary"]["avg_value"] == exact_mean(numbers)
    # "late" has its only value in the last trace: in a window without it, the name is known,
    # so zero counts rather than a 404, and discovery leaves it out.
    assert answers["late"]["summary"]["total_count"] == 1
    early = {"start_time": EDGE_START_MS, "end_time": EDGE_END_MS - EDGE_STEP_MS}
    quiet = await same_json_everywhere(
        edge_clients, "assessments/metrics", lambda n: {**body(n, assessment_name="late"), **early}
    )
    assert quiet["assessment_type"] == "numeric" and quiet["summary"]["total_count"] == 0
    quiet = await same_json_everywhere(
        edge_clients, "assessments/discovery", lambda n: {**body(n), **early}
    )
    assert "late" not in {d["assessment_name"] for d in quiet["data"]}
    for name, client in edge_clients.items():
        await client.error(
            "assessments/metrics",
            body(name, assessment_name="expected"),
            404,
            "RESOURCE_DOES_NOT_EXIST",
        )


def test_json_text_value_decodes_like_python(raw: sa.Connection) -> None:
    """The SQL that shows string values, on every database: JSON strings decoded (escapes,
    surrogate pairs), other JSON as written, compared by code points."""
    stored = [
        json.dumps(v)
        for v in ["plain", 'q"uote', "\u00e9", "\U0001f600 x", "line\nbreak", "Yes", "yes ", "a\\b"]
    ] + ["true", "3.5", "[1, 2]", "NaN", '{"a": 1}']
    selects = [sa.select(sa.literal(s, sa.Text()).label("v")) for s in stored]
    values = sa.union_all(*selects).subquery()
    shown = exact_text(json_text_value(values.c.v)).label("shown")
    rows = raw.execute(sa.select(values.c.v, shown)).all()
    assert {r.v: r.shown for r in rows} == {s: display(s) for s in stored}
    assert value_type('"YES"') == "boolean" and value_type('" yes"') == "string"


async def test_round_trips(backend: Backend) -> None:
    body: dict[str, Any] = {"experiment_ids": both(backend), **backend.window()}
    async with counting_client(backend.service_url) as (client, statements):
        # 1 to check the experiments, then counts, sources and types per name.
        assert await round_trips(client, statements, "assessments/discovery", body) == 4
        # 1 + types, then by type: boolean 1 (counts per bucket); numeric 2 (distributions
        # overall and per bucket; counts per bucket with the count below p50); string 3.
        for name, expected in (("correctness", 3), ("quality_score", 4), ("tone", 5)):
            metrics = {**body, "assessment_name": name}
            assert await round_trips(client, statements, "assessments/metrics", metrics) == expected


# Writes to a file copy of the tracking DB: collected on SQLite only.
@pytest.mark.parametrize(
    "backend", [b for b in enabled_backends() if b == "sqlite"], indirect=True, scope="session"
)
async def test_rows_without_the_denormalised_trace_timestamp(
    client: InsightsClient, backend: Backend, tmp_path: Path
) -> None:
    """Rows are read by MLflow's ``assessments.trace_timestamp_ms``; a row without it (the
    column is nullable) counts by its trace's ``timestamp_ms``: same answers either way."""
    copy = tmp_path / "nulled.db"
    source = sa.create_engine(backend.sync_uri)
    with source.connect() as conn:
        conn.exec_driver_sql(f"VACUUM INTO '{copy}'")
    source.dispose()
    engine = sa.create_engine(f"sqlite:///{copy}")
    with engine.begin() as conn:
        nulled = conn.exec_driver_sql(
            "UPDATE assessments SET trace_timestamp_ms = NULL WHERE rowid % 3 <> 0"
        ).rowcount
    engine.dispose()
    assert nulled > 100
    ids = both(backend)
    bodies: list[dict[str, Any]] = [
        {"experiment_ids": ids, **backend.window(), "time_bucket": "day"},
        {"experiment_ids": ids[:1], "start_time": backend.dataset.start_time_ms + 5 * 86_400_000},
        {"experiment_ids": ids, "filter_string": "tags.persona = 'guest'", "time_bucket": "week"},
    ]
    async with counting_client(f"sqlite:///{copy}") as (nulled_client, _):
        for body in bodies:
            plain = {k: v for k, v in body.items() if k != "time_bucket"}
            expected = await client.ok("assessments/discovery", plain)
            assert expected["data"]
            assert await nulled_client.ok("assessments/discovery", plain) == expected
            for name in NAMES:
                metrics = {**body, "assessment_name": name}
                expected = await client.ok("assessments/metrics", metrics)
                assert await nulled_client.ok("assessments/metrics", metrics) == expected
