"""MLflow's own trace-metrics routes (API.md §8) answer as MLflow's own server does.

One ``mlflow server`` per test database (tests/mlflow_server.py) over the same tracking DB as the
service; the same bodies go to both, and the JSON must be equal. The bodies are generated from
MLflow's own configuration (``VIEW_TYPE_CONFIGS``: every view x metric x aggregation x dimension
it accepts), with and without filters, windows and time buckets, plus every request the stock
UI sends (/work/shared/mlflow_ui_requests.md) and invalid ones (same error code and status).

Differences are the documented ones (docs/decisions/trace-metrics.md), each checked here as
narrowly as it is stated:

* sums and means of doubles (span cost, assessment values) are exact here; MLflow's are the
  database's float accumulation: equal within 1e-12 relative;
* MySQL/MariaDB: MLflow's AVG of integers is a DECIMAL rounded to 4 places (equal within 5e-5),
  and its PERCENT_RANK percentiles drift with ties: there ours must equal MLflow's answer on the
  SQLite copy of the same data (the generator writes the same content everywhere), which
  interpolates exactly;
* MLflow answers a malformed aggregation (a percentile without a value, out of range, or a value
  on another aggregation) with a 500 and an unknown enum name as if it were the first one; this
  service says 400.

Like every test asking through ``client`` (conftest), these run on both answering paths: live
and from a synced analytics store, each compared with MLflow's own server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from mlflow.entities.trace_metrics import AggregationType, MetricViewType
from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlSpan, SqlTraceInfo, SqlTraceTag
from mlflow.store.tracking.utils.sql_trace_metrics_utils import VIEW_TYPE_CONFIGS

from service.models.trace_metrics import MetricAggregation
from service.queries import trace_metrics
from service.queries.trace_metrics import DIMENSION_COLUMNS, VALUE_COLUMNS, _quantiles
from tests.conftest import Backend, InsightsClient, build_backend, enabled_backends
from tests.mlflow_server import MlflowServer, start_mlflow_server, wait_until_up

METRICS = "/api/3.0/mlflow/traces/metrics"
AJAX_METRICS = "/ajax-api/3.0/mlflow/traces/metrics"
CORRELATION = "/ajax-api/3.0/mlflow/traces/calculate-filter-correlation"
HOUR_MS, DAY_MS = 3_600_000, 86_400_000
PERCENTILES = (0, 50, 90, 99, 100, 33.3)
DOUBLE_METRICS = {
    ("SPANS", "input_cost"),
    ("SPANS", "output_cost"),
    ("SPANS", "total_cost"),
    ("ASSESSMENTS", "assessment_value"),
}
CONCURRENCY = 4

_servers: dict[str, MlflowServer] = {}


def mlflow_server_for(backend: Backend, root: Path) -> MlflowServer:
    """One MLflow server per database for the whole session."""
    if backend.name not in _servers:
        workdir = root / f"mlflow-{backend.name}"
        workdir.mkdir(parents=True, exist_ok=True)
        server = start_mlflow_server(
            backend.sync_uri,
            workdir,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        _servers[backend.name] = server
        wait_until_up(server)
    return _servers[backend.name]


@pytest.fixture(scope="session", autouse=True)
def _stop_mlflow_servers() -> Iterator[None]:
    yield
    for server in _servers.values():
        server.stop()
    _servers.clear()


@dataclass
class Mlflow:
    http: httpx.AsyncClient
    reference: httpx.AsyncClient | None  # MLflow on the SQLite copy (MySQL percentiles)


# MLflow's answers, kept for the session: both answering paths compare with the same ones.
# Key: (MLflow server's URL, API path, the body as JSON).
_mlflow_answers: dict[tuple[str, str, str], httpx.Response] = {}


async def mlflow_answers(
    http: httpx.AsyncClient, path: str, bodies: list[dict[str, Any]]
) -> list[httpx.Response]:
    """MLflow's answers to ``bodies``, each asked once per session."""
    keys = [(str(http.base_url), path, json.dumps(b, sort_keys=True)) for b in bodies]
    missing = {
        key: body for key, body in zip(keys, bodies, strict=True) if key not in _mlflow_answers
    }
    answers = await send_all(http, path, list(missing.values()))
    _mlflow_answers.update(zip(missing, answers, strict=True))
    return [_mlflow_answers[key] for key in keys]


@pytest.fixture(scope="session")
async def mlflow_http(
    backend: Backend, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mlflow]:
    root = tmp_path_factory.getbasetemp()
    server = mlflow_server_for(backend, root)
    reference = None
    if backend.name == "mysql" and "sqlite" in enabled_backends():
        reference = mlflow_server_for(build_backend("sqlite", data_dir), root)
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        if reference is None:
            yield Mlflow(http, None)
            return
        async with httpx.AsyncClient(base_url=reference.url, timeout=120) as ref:
            yield Mlflow(http, ref)


# ------------------------------------------------------------------------------ the bodies


@dataclass(frozen=True)
class Data:
    """What the bodies refer to, read from the tracking DB."""

    experiment: str
    other: str
    empty: str
    first_ms: int
    last_ms: int
    trace_name: str
    session_id: str
    tag: tuple[str, str]
    span_name: str
    assessment_name: str


def _most_common(conn: sa.Connection, column: Any, *where: Any) -> Any:
    """The most common non-null value of ``column`` (ties: the smallest)."""
    stmt = (
        sa.select(column)
        .where(column.is_not(None), *where)
        .group_by(column)
        .order_by(sa.func.count().desc(), column)
        .limit(1)
    )
    return conn.execute(stmt).scalar_one()


def read_data(backend: Backend) -> Data:
    engine = backend.sync_engine()
    with engine.connect() as conn:
        stamp: Any = SqlTraceInfo.timestamp_ms
        first: int
        last: int
        first, last = conn.execute(sa.select(sa.func.min(stamp), sa.func.max(stamp))).one()
        data = Data(
            experiment=backend.experiment_id("support-agent"),
            other=backend.experiment_id("sql-copilot"),
            empty=backend.experiment_id("empty-experiment"),
            first_ms=int(first),
            last_ms=int(last),
            trace_name=_most_common(conn, SqlTraceInfo.trace_name),
            session_id=_most_common(conn, SqlTraceInfo.session_id),
            tag=("persona", _most_common(conn, SqlTraceTag.value, SqlTraceTag.key == "persona")),
            span_name=_most_common(conn, SqlSpan.name, SqlSpan.type == "TOOL"),
            assessment_name=_most_common(
                conn, SqlAssessments.name, SqlAssessments.assessment_type == "feedback"
            ),
        )
    engine.dispose()
    return data


def aggregation(kind: AggregationType, percentile: float | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"aggregation_type": kind.value}
    if percentile is not None:
        body["percentile_value"] = percentile
    return body


def all_aggregations(kinds: set[AggregationType]) -> list[dict[str, Any]]:
    result = []
    for kind in sorted(kinds, key=lambda k: k.value):
        if kind == AggregationType.PERCENTILE:
            result += [aggregation(kind, p) for p in PERCENTILES]
        else:
            result.append(aggregation(kind))
    return result


def dimension_sets(dimensions: set[str]) -> list[list[str]]:
    names = sorted(dimensions)
    pairs = [list(p) for p in itertools.permutations(names, 2)]
    return [[], *([d] for d in names), *pairs, *([names] if len(names) > 2 else [])]


def view_filters(view: MetricViewType, data: Data) -> list[list[str]]:
    """Filters each view accepts, in both quotings, one or several ANDed."""
    key, value = data.tag
    trace = [
        ['trace.status = "OK"'],
        ["trace.status = 'ERROR'"],
        [f'trace.tag.`mlflow.traceName` = "{data.trace_name}"'],
        [f'trace.tag.{key} = "{value}"'],
        [f'trace.metadata.`mlflow.trace.session` = "{data.session_id}"'],
        ['trace.metadata.`mlflow.user` = "demo-user"', 'trace.status = "OK"'],
        ['trace.metadata.`mlflow.source.git.branch` = "main"'],
    ]
    if view == MetricViewType.SPANS:
        return [
            *trace[:4],
            ['span.type = "TOOL"'],
            ['span.status = "ERROR"'],
            [f'span.name = "{data.span_name}"', 'span.type = "TOOL"'],
            ['span.type = "LLM"', 'trace.status = "OK"'],
        ]
    if view == MetricViewType.ASSESSMENTS:
        return [
            trace[0],
            trace[2],
            ['assessment.type = "feedback"'],
            [f'assessment.name = "{data.assessment_name}"'],
            ['assessment.type = "expectation"', "trace.status = 'OK'"],
        ]
    return trace


def generated_bodies(data: Data) -> list[dict[str, Any]]:
    """Every view x metric x aggregation x dimension combination MLflow accepts, from MLflow's
    configuration; then windows, time buckets and filters."""
    window = {"start_time_ms": data.first_ms, "end_time_ms": data.last_ms}
    inner = {
        "start_time_ms": data.first_ms + 3 * DAY_MS + 1234,
        "end_time_ms": data.last_ms - 4 * DAY_MS,
    }
    bodies: list[dict[str, Any]] = []
    for view, metrics in VIEW_TYPE_CONFIGS.items():
        for metric, config in metrics.items():
            base = {
                "experiment_ids": [data.experiment],
                "view_type": view.value,
                "metric_name": str(metric),
            }
            aggs = all_aggregations(config.aggregation_types)
            for one in aggs:
                bodies.append({**base, "aggregations": [one]})
            for dims in dimension_sets(config.dimensions):
                bodies.append({**base, "aggregations": aggs, "dimensions": dims})
                bodies.append(
                    {
                        **base,
                        "aggregations": aggs,
                        "dimensions": dims,
                        "time_interval_seconds": 86400,
                        **window,
                    }
                )
            some_dims = sorted(config.dimensions)[:1]
            for interval in (60, 3600, 7 * 86400):
                bodies.append(
                    {
                        **base,
                        "aggregations": aggs,
                        "dimensions": some_dims,
                        "time_interval_seconds": interval,
                        **inner,
                    }
                )
            bodies.append({**base, "aggregations": aggs, **inner})
            bodies.append({**base, "aggregations": aggs, "start_time_ms": inner["start_time_ms"]})
            bodies.append({**base, "aggregations": aggs, "end_time_ms": inner["end_time_ms"]})
            bodies.append(
                {**base, "experiment_ids": [data.experiment, data.other], "aggregations": aggs}
            )
            bodies.append({**base, "experiment_ids": [data.empty], "aggregations": aggs})
            for filters in view_filters(view, data):
                bodies.append(
                    {
                        **base,
                        "aggregations": aggs,
                        "dimensions": some_dims,
                        "filters": filters,
                        "time_interval_seconds": 86400,
                        **window,
                    }
                )
            for limit in (0, 1, 3):
                bodies.append(
                    {
                        **base,
                        "aggregations": aggs,
                        "dimensions": some_dims,
                        "time_interval_seconds": 86400,
                        "max_results": limit,
                        **window,
                    }
                )
    return bodies


# The Overview page's bodies (/work/shared/mlflow_ui_requests.md), as its UI builds them.
RANGES_MS = {
    "LAST_HOUR": (HOUR_MS, 60),
    "LAST_24_HOURS": (DAY_MS, 3600),
    "LAST_7_DAYS": (7 * DAY_MS, 86400),
    "LAST_30_DAYS": (30 * DAY_MS, 86400),
    "LAST_YEAR": (365 * DAY_MS, 2592000),
}
USAGE_FILTERS: tuple[list[str], ...] = (
    [],
    ['trace.metadata.`mlflow.trace.user` = "demo-user"'],
    ['trace.metadata.`mlflow.trace.session` = "{session}"'],
    ['trace.status = "ERROR"'],
    ['trace.metadata.`mlflow.source.git.branch` = "main"'],
    ['trace.metadata.`mlflow.source.git.commit` = "abc123"'],
)


def pct(*values: int) -> list[dict[str, Any]]:
    return [aggregation(AggregationType.PERCENTILE, v) for v in values]


def count() -> list[dict[str, Any]]:
    return [aggregation(AggregationType.COUNT)]


def ui_bodies(data: Data) -> list[dict[str, Any]]:
    """U1-U11, Q1-Q3, T1-T6 for every preset range (and a finer user-picked unit), each Usage
    filter; X1-X5. Key order and key omission as the UI's JSON.stringify makes them."""
    e = [data.experiment]
    now = data.last_ms + 2 * HOUR_MS  # the latest traces are in every range
    bodies: list[dict[str, Any]] = []

    def body(
        view: str,
        metric: str,
        aggs: list[dict[str, Any]],
        interval: int | None,
        start: int | None,
        end: int | None,
        filters: list[str] | None = None,
        dims: list[str] | None = None,
    ) -> dict[str, Any]:
        b: dict[str, Any] = {
            "experiment_ids": e,
            "view_type": view,
            "metric_name": metric,
            "aggregations": aggs,
        }
        if interval is not None:
            b["time_interval_seconds"] = interval
        if start is not None:
            b["start_time_ms"], b["end_time_ms"] = start, end
        if filters:
            b["filters"] = filters
        if dims:
            b["dimensions"] = dims
        return b

    sum_ = [aggregation(AggregationType.SUM)]
    avg = [aggregation(AggregationType.AVG)]
    for length, default_interval in RANGES_MS.values():
        s, t = now - length, now
        for interval in sorted({default_interval, 3600 if length > DAY_MS else 60}):
            # Each filter-bar column with the default unit; a user-picked unit without filters.
            for raw_filters in USAGE_FILTERS if interval == default_interval else ([],):
                f = [x.replace("{session}", data.session_id) for x in raw_filters]
                bodies += [
                    body("TRACES", "trace_count", count(), interval, s, t, f, ["trace_status"]),
                    body("TRACES", "latency", pct(50, 90, 99), interval, s, t, f),
                    body("TRACES", "latency", avg, None, s, t, f),
                    body("TRACES", "input_tokens", sum_, interval, s, t, f),
                    body("TRACES", "output_tokens", sum_, interval, s, t, f),
                    body("TRACES", "cache_read_input_tokens", sum_, interval, s, t, f),
                    body("TRACES", "cache_creation_input_tokens", sum_, interval, s, t, f),
                    body("TRACES", "total_tokens", sum_ + avg, None, s, t, f),
                    body("TRACES", "total_tokens", pct(50, 90, 99), interval, s, t, f),
                ]
                for model_dim in ("span_model_name", "span_model_provider"):
                    bodies += [
                        body("SPANS", "total_cost", sum_, None, s, t, f, [model_dim]),
                        body("SPANS", "total_cost", sum_, interval, s, t, f, [model_dim]),
                    ]
            feedback = ['assessment.type = "feedback"']
            bodies += [
                body(
                    "ASSESSMENTS",
                    "assessment_value",
                    avg,
                    interval,
                    s,
                    t,
                    feedback,
                    ["assessment_name"],
                ),
                body(
                    "ASSESSMENTS",
                    "assessment_count",
                    count(),
                    None,
                    s,
                    t,
                    feedback,
                    ["assessment_name", "assessment_value"],
                ),
                body(
                    "ASSESSMENTS",
                    "assessment_count",
                    count(),
                    None,
                    None,
                    None,
                    feedback,
                    ["assessment_name"],
                ),
            ]
            tool = ['span.type = "TOOL"']
            bodies += [
                body(
                    "SPANS", "span_count", count(), None, s, t, tool, ["span_name", "span_status"]
                ),
                body("SPANS", "latency", avg, None, s, t, tool),
                body("SPANS", "latency", avg, None, s, t, tool, ["span_name"]),
                body("SPANS", "span_count", count(), interval, s, t, tool, ["span_name"]),
                body("SPANS", "latency", avg, interval, s, t, tool, ["span_name"]),
                body(
                    "SPANS",
                    "span_count",
                    count(),
                    interval,
                    s,
                    t,
                    tool,
                    ["span_name", "span_status"],
                ),
            ]
        bodies += [
            body("TRACES", "trace_count", count(), None, s, t),
            body("TRACES", "session_count", count(), None, s, t),
            body(
                "ASSESSMENTS",
                "assessment_count",
                count(),
                None,
                s,
                t,
                None,
                ["assessment_name", "assessment_value"],
            ),
        ]
    bodies += [
        body("TRACES", "trace_count", count(), None, None, None),
        body("TRACES", "session_count", count(), None, None, None),
        body(
            "TRACES",
            "trace_count",
            count(),
            None,
            None,
            None,
            ['trace.metadata.`mlflow.modelId` = "m-123"'],
        ),
        *(
            body(view_metric[0], view_metric[1], count(), None, None, None, [run_filter])
            for view_metric in (("TRACES", "trace_count"), ("TRACES", "session_count"))
            for run_filter in ('trace.metadata.`mlflow.sourceRun` = "0123456789abcdef"',)
        ),
        body(
            "ASSESSMENTS",
            "assessment_count",
            count(),
            None,
            None,
            None,
            None,
            ["assessment_name", "assessment_value"],
        ),
    ]
    return bodies


# ------------------------------------------------------------------------------ comparison


def documented_equal(
    body: dict[str, Any], backend: str, key: str, ours: float, theirs: float
) -> bool:
    """Equal, or different only as docs/decisions/trace-metrics.md says."""
    if ours == theirs:
        return True
    is_double = (body["view_type"], body["metric_name"]) in DOUBLE_METRICS
    if is_double and key in ("SUM", "AVG"):
        return math.isclose(ours, theirs, rel_tol=1e-12, abs_tol=1e-300)
    if backend == "mysql" and key == "AVG" and not is_double:
        return abs(ours - theirs) <= 5e-5
    return False


def differences(
    body: dict[str, Any], backend: str, ours: dict[str, Any], theirs: dict[str, Any]
) -> list[str]:
    mine, other = ours.get("data_points", []), theirs.get("data_points", [])
    if set(ours) - {"data_points"} or set(theirs) - {"data_points"}:
        return [f"other keys: {sorted(ours)} vs {sorted(theirs)}"]
    if backend == "mysql" and "assessment_value" in (body.get("dimensions") or []):
        # Documented: MariaDB's collation merges feedback values differing only by case
        # ('"Friendly"', '"friendly"') into one of MLflow's groups; ours stay apart, and
        # folded the same way they give MLflow's counts.
        return _collation_folded_differences(mine, other)
    if len(mine) != len(other):
        return [f"{len(mine)} data points vs MLflow's {len(other)}"]
    problems = []
    for a, b in zip(mine, other, strict=True):
        if a.get("metric_name") != b.get("metric_name") or a.get("dimensions") != b.get(
            "dimensions"
        ):
            problems.append(f"group {a} vs {b}")
        elif set(a["values"]) != set(b["values"]):
            problems.append(f"value keys {sorted(a['values'])} vs {sorted(b['values'])}")
        else:
            for key, value in a["values"].items():
                if not documented_equal(body, backend, key, value, b["values"][key]):
                    problems.append(f"{a.get('dimensions')} {key}: {value} vs {b['values'][key]}")
    return problems


def _fold(dimensions: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """As MariaDB's default (case-insensitive, PAD SPACE) collation compares the values."""
    return tuple(sorted((k, v.lower().rstrip(" ")) for k, v in dimensions.items()))


def _collation_folded_differences(
    mine: list[dict[str, Any]], other: list[dict[str, Any]]
) -> list[str]:
    folded: dict[tuple[tuple[str, str], ...], float] = {}
    for point in mine:
        key = _fold(point.get("dimensions", {}))
        folded[key] = folded.get(key, 0.0) + point["values"]["COUNT"]
    theirs = {_fold(p.get("dimensions", {})): p["values"]["COUNT"] for p in other}
    if len(theirs) != len(other):
        return ["MLflow's groups are not distinct under MariaDB's collation"]
    return [] if folded == theirs else [f"folded counts {folded} vs {theirs}"]


async def send_all(
    http: httpx.AsyncClient, path: str, bodies: list[dict[str, Any]]
) -> list[httpx.Response]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(body: dict[str, Any]) -> httpx.Response:
        async with gate:
            return await http.post(path, json=body)

    return list(await asyncio.gather(*(one(b) for b in bodies)))


def uses_percentiles(body: dict[str, Any]) -> bool:
    return any(a["aggregation_type"] == "PERCENTILE" for a in body["aggregations"])


async def compare(
    client: InsightsClient,
    mlflow_http: Mlflow,
    bodies: list[dict[str, Any]],
    *,
    path: str = METRICS,
) -> None:
    ours = await send_all(client.http, path, bodies)
    theirs = await mlflow_answers(mlflow_http.http, path, bodies)
    # conftest runs this on both answering paths: each answer must come from the one under test.
    assert {r.headers.get("X-Insights-Answered-By") for r in ours} <= {client.path}
    backend = client.backend.name
    # MySQL: percentiles of MLflow's SQLite copy (same data) are the exact reference.
    reference: dict[int, dict[str, Any]] = {}
    if backend == "mysql":
        picked = [i for i, b in enumerate(bodies) if uses_percentiles(b)]
        assert mlflow_http.reference is not None, "MySQL percentiles need the SQLite backend too"
        answers = await mlflow_answers(mlflow_http.reference, path, [bodies[i] for i in picked])
        reference = {i: r.json() for i, r in zip(picked, answers, strict=True)}
    failures = []
    for i, (body, a, b) in enumerate(zip(bodies, ours, theirs, strict=True)):
        assert b.status_code == 200, (body, b.text)
        if a.status_code != 200:
            failures.append(f"{body}\n  ours: {a.status_code} {a.text}")
            continue
        expected = b.json()
        if i in reference:
            expected = _with_reference_percentiles(expected, reference[i])
        problems = differences(body, backend, a.json(), expected)
        if problems:
            failures.append(f"{body}\n  " + "\n  ".join(problems[:5]))
    assert not failures, f"{len(failures)} of {len(bodies)} differ:\n" + "\n".join(failures[:10])


def _with_reference_percentiles(mysql: dict[str, Any], sqlite: dict[str, Any]) -> dict[str, Any]:
    """MLflow's MySQL answer with its percentiles replaced by its SQLite answer's (groups are
    the same: the same data, ordered the same way)."""
    points = mysql.get("data_points", [])
    exact = sqlite.get("data_points", [])
    assert [p.get("dimensions") for p in points] == [p.get("dimensions") for p in exact]
    for point, ref in zip(points, exact, strict=True):
        for key in point["values"]:
            if key.startswith("P"):
                point["values"][key] = ref["values"][key]
    return mysql


@pytest.fixture(scope="session")
def data(backend: Backend) -> Data:
    return read_data(backend)


# ------------------------------------------------------------------------------ the tests


def test_every_configured_metric_and_dimension_has_a_column() -> None:
    """MLflow's configuration is the registry: each metric and dimension it allows is served."""
    for view, metrics in VIEW_TYPE_CONFIGS.items():
        assert set(metrics) == set(VALUE_COLUMNS[view]), view
        dims = set().union(*(c.dimensions for c in metrics.values()))
        assert dims <= set(DIMENSION_COLUMNS[view]), view


async def test_generated_combinations_equal_mlflow(
    client: InsightsClient, mlflow_http: Mlflow, data: Data
) -> None:
    bodies = generated_bodies(data)
    assert len(bodies) > 300
    await compare(client, mlflow_http, bodies)


async def test_ui_requests_equal_mlflow(
    client: InsightsClient, mlflow_http: Mlflow, data: Data
) -> None:
    bodies = ui_bodies(data)
    await compare(client, mlflow_http, bodies, path=AJAX_METRICS)


async def test_ui_requests_ranked_by_one_sort_equal_mlflow(
    client: InsightsClient, mlflow_http: Mlflow, data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Percentiles of requests with ``MANY_VALUES`` or more values are ranked by one sort, which
    can spill to disk (the UI's latency per hour at 10M traces); here every request is."""
    monkeypatch.setattr(trace_metrics, "MANY_VALUES", 1)
    bodies = [b for b in ui_bodies(data) if uses_percentiles(b)]
    assert bodies
    await compare(client, mlflow_http, bodies, path=AJAX_METRICS)


async def test_answers_carry_data(client: InsightsClient, data: Data) -> None:
    """The comparison is not vacuous: the UI's main charts have data on this dataset."""
    body = {
        "experiment_ids": [data.experiment],
        "view_type": "SPANS",
        "metric_name": "total_cost",
        "aggregations": [{"aggregation_type": "SUM"}],
        "dimensions": ["span_model_name"],
        "time_interval_seconds": 86400,
        "start_time_ms": data.first_ms,
        "end_time_ms": data.last_ms,
    }
    points = (await client.http.post(AJAX_METRICS, json=body)).json()["data_points"]
    assert len(points) > 10
    assert points[0]["dimensions"]["time_bucket"].endswith("T00:00:00+00:00")


def invalid_bodies(data: Data) -> list[tuple[Any, int | None]]:
    """Bodies MLflow refuses; with the status this service gives where MLflow's is a 500 or a
    silent reading (None: same status and code as MLflow)."""
    ok = {
        "experiment_ids": [data.experiment],
        "view_type": "TRACES",
        "metric_name": "latency",
        "aggregations": [{"aggregation_type": "AVG"}],
    }
    without = {k: v for k, v in ok.items()}
    cases: list[tuple[Any, int | None]] = []
    for key in ("experiment_ids", "view_type", "metric_name", "aggregations"):
        cases.append(({k: v for k, v in without.items() if k != key}, None))
    cases += [
        ({**ok, "metric_name": "nope"}, None),
        ({**ok, "view_type": "SPANS", "metric_name": "total_tokens"}, None),
        ({**ok, "aggregations": [{"aggregation_type": "SUM"}]}, None),
        ({**ok, "aggregations": [{"aggregation_type": "COUNT"}]}, None),
        ({**ok, "dimensions": ["trace_status"]}, None),
        ({**ok, "dimensions": ["span_name"]}, None),
        (
            {**ok, "view_type": "SPANS", "metric_name": "total_cost", "dimensions": ["span_name"]},
            None,
        ),
        ({**ok, "time_interval_seconds": 3600}, None),
        ({**ok, "time_interval_seconds": 3600, "start_time_ms": 1}, None),
        ({**ok, "filters": ["trace.status != 'OK'"]}, None),
        ({**ok, "filters": ["trace.status = OK"]}, None),
        ({**ok, "filters": ["trace.foo = 'x'"]}, None),
        ({**ok, "filters": ["trace.tag = 'x'"]}, None),
        ({**ok, "filters": ["trace.status = 'OK' AND trace.status = 'OK'"]}, None),
        ({**ok, "filters": [""]}, None),
        ({**ok, "filters": ["span.type = 'TOOL'"]}, None),
        ({**ok, "filters": ["assessment.type = 'feedback'"]}, None),
        ({**ok, "filters": ["run.status = 'x'"]}, None),
        (
            {
                **ok,
                "view_type": "SPANS",
                "metric_name": "latency",
                "filters": ["assessment.name = 'x'"],
            },
            None,
        ),
        ({**ok, "experiment_ids": ["abc"]}, None),
        ({**ok, "experiment_ids": "1"}, None),
        ({**ok, "dimensions": "trace_name"}, None),
        ({**ok, "start_time_ms": "soon"}, None),
        ({**ok, "metric_name": 5}, None),
        # MLflow: 500 (ValueError in MetricAggregation); here 400.
        ({**ok, "aggregations": [{"aggregation_type": "PERCENTILE"}]}, 400),
        (
            {**ok, "aggregations": [{"aggregation_type": "PERCENTILE", "percentile_value": 101}]},
            400,
        ),
        ({**ok, "aggregations": [{"aggregation_type": "AVG", "percentile_value": 50}]}, 400),
        # MLflow reads an unknown enum name as the first value (TRACES, COUNT); here 400.
        ({**ok, "view_type": "NOPE"}, 400),
        ({**ok, "aggregations": [{"aggregation_type": "NOPE"}]}, 400),
    ]
    return cases


async def test_invalid_requests_fail_as_mlflow_does(
    client: InsightsClient, mlflow_http: Mlflow, data: Data
) -> None:
    cases = invalid_bodies(data)
    failures = []
    for body, documented in cases:
        ours = await client.http.post(METRICS, json=body)
        theirs = await mlflow_http.http.post(METRICS, json=body)
        if documented is None:
            expected = (theirs.status_code, theirs.json()["error_code"])
            assert expected[0] == 400, (body, theirs.text)
        else:
            expected = (documented, "INVALID_PARAMETER_VALUE")
        got = (ours.status_code, ours.json().get("error_code"))
        if got != expected:
            failures.append(f"{body}: ours {got} {ours.text[:200]}, expected {expected}")
        message = ours.json().get("message")
        assert isinstance(message, str) and message, ours.text
    assert not failures, "\n".join(failures)


async def test_lenient_fields_as_mlflow(
    client: InsightsClient, mlflow_http: Mlflow, data: Data
) -> None:
    """What MLflow's JSON parsing accepts: unknown fields, enum numbers, integers as strings,
    a page token (ignored), an empty experiment list."""
    ok = {
        "experiment_ids": [data.experiment],
        "view_type": "TRACES",
        "metric_name": "latency",
        "aggregations": [
            {"aggregation_type": "AVG"},
            {"aggregation_type": "PERCENTILE", "percentile_value": 50.0},
        ],
    }
    bodies: list[dict[str, Any]] = [
        {**ok, "unknown_field": 1},
        {**ok, "view_type": 1},
        {
            **ok,
            "view_type": 2,
            "metric_name": "span_count",
            "aggregations": [{"aggregation_type": 1}],
        },
        {
            **ok,
            "start_time_ms": str(data.first_ms),
            "end_time_ms": str(data.last_ms),
            "time_interval_seconds": "3600",
        },
        {**ok, "page_token": "abc"},
        {**ok, "experiment_ids": []},
        {**ok, "time_interval_seconds": 0},
    ]
    await compare(client, mlflow_http, bodies)


async def test_filter_correlation_equals_mlflow(
    client: InsightsClient, mlflow_http: Mlflow, data: Data
) -> None:
    pairs = [
        ("status = 'ERROR'", "span.type = 'TOOL'", None),
        ("status = 'ERROR'", "span.type = 'TOOL'", "status = 'ERROR'"),
        (f"tags.persona = '{data.tag[1]}'", "status = 'OK'", None),
        ("status = 'OK'", "status = 'ERROR'", None),
        ("status = 'OK'", "status = 'OK'", None),
        (f"trace.name = '{data.trace_name}'", "feedback.correctness = 'true'", None),
        (
            "execution_time_ms > 1000",
            "status = 'ERROR'",
            f"timestamp_ms >= {data.first_ms + DAY_MS}",
        ),
    ]
    bodies: list[dict[str, Any]] = []
    for f1, f2, base in pairs:
        for ids in ([data.experiment], [data.experiment, data.other], [data.empty], []):
            body: dict[str, Any] = {
                "experiment_ids": ids,
                "filter_string1": f1,
                "filter_string2": f2,
            }
            if base:
                body["base_filter"] = base
            bodies.append(body)
    ours = await send_all(client.http, CORRELATION, bodies)
    theirs = await mlflow_answers(mlflow_http.http, CORRELATION, bodies)
    for body, a, b in zip(bodies, ours, theirs, strict=True):
        assert b.status_code == 200, (body, b.text)
        assert a.status_code == 200, (body, a.text)
        assert a.json() == b.json(), body
    for bad in (
        {
            "experiment_ids": [data.experiment],
            "filter_string1": "nope = 1",
            "filter_string2": "status = 'OK'",
        },
        {
            "experiment_ids": [data.experiment],
            "filter_string1": "",
            "filter_string2": "status = 'OK'",
        },
        {"experiment_ids": [data.experiment], "filter_string2": "status = 'OK'"},
    ):
        a = await client.http.post(CORRELATION, json=bad)
        b = await mlflow_http.http.post(CORRELATION, json=bad)
        assert (a.status_code, a.json()["error_code"]) == (b.status_code, b.json()["error_code"])


def test_percentile_ranks_stay_bigints_at_any_size() -> None:
    """Ranks are ``num * (count - 1) // den`` in SQL: with the double 0.9 as an exact binary
    fraction (num about 8e15) that overflowed a BIGINT past about 1,100 rows."""
    for value in (*PERCENTILES, 99.9, 12.3456789012345, 1e-9):
        aggs = [
            MetricAggregation(aggregation_type=AggregationType.PERCENTILE, percentile_value=value)
        ]
        (quantile,) = _quantiles(aggs).values()
        assert quantile.den <= 10**6 and quantile.num * 10**12 < 2**63
        assert quantile.fraction == value / 100  # interpolated as MLflow does
