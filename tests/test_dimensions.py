"""dimensions/discovery and dimensions/calculate-npmi, on every backend.

Expected numbers come from two independent places: a Python oracle over the raw rows (below),
and MLflow itself: each generated filter string must select, through MLflow's own
``SqlAlchemyStore.search_traces``, exactly the traces the dimension selects, and NPMI must
equal ``SqlAlchemyStore.calculate_trace_filter_correlation`` on the same database.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import mlflow
import pytest
import sqlalchemy as sa
from mlflow.store.analytics.trace_correlation import calculate_npmi_from_counts
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from service import dimension_catalog as dims
from service.app import create_app
from service.demo.generate import mlflow_tracking
from service.settings import Settings
from tests import oracle
from tests.conftest import AJAX_API, Backend, InsightsClient, open_client

DAY_MS = 86_400_000
SESSION_MARKER = '"mlflow.trace.session":'
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


# --------------------------------------------------------------------------------------------
# Oracle: the raw rows, and what each dimension means, in plain Python
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trace:
    request_id: str
    experiment_id: str
    timestamp_ms: int
    execution_time_ms: int | None
    status: str
    session_id: str | None


@dataclass(frozen=True)
class Feedback:
    trace_id: str
    name: str
    value: Any  # decoded JSON
    raw: str
    metadata: str | None


@dataclass
class Rows:
    traces: dict[str, Trace]
    spans: dict[str, list[tuple[str | None, str | None, str]]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    feedback: list[Feedback] = field(default_factory=list)

    def in_scope(
        self, experiment_ids: Iterable[str], start: int | None = None, end: int | None = None
    ) -> set[str]:
        ids = set(experiment_ids)
        return {
            t.request_id
            for t in self.traces.values()
            if t.experiment_id in ids
            and (start is None or t.timestamp_ms >= start)
            and (end is None or t.timestamp_ms < end)
        }


_rows: dict[str, Rows] = {}


def load_rows(backend: Backend, conn: sa.Connection) -> Rows:
    if backend.name not in _rows:
        traces = {
            r[0]: Trace(r[0], str(r[1]), int(r[2]), None if r[3] is None else int(r[3]), r[4], r[5])
            for r in conn.execute(
                sa.text(
                    "SELECT request_id, experiment_id, timestamp_ms, execution_time_ms, status, "
                    "session_id FROM trace_info"
                )
            )
        }
        rows = Rows(traces)
        for trace_id, span_type, name, status in conn.execute(
            sa.text("SELECT trace_id, type, name, status FROM spans")
        ):
            rows.spans.setdefault(trace_id, []).append((span_type, name, status))
        for tag in conn.execute(sa.text("SELECT * FROM trace_tags")).mappings():
            rows.tags.setdefault(tag["request_id"], {})[tag["key"]] = tag["value"]
        for trace_id, name, kind, value, valid, metadata in conn.execute(
            sa.text(
                "SELECT trace_id, name, assessment_type, value, valid, assessment_metadata "
                "FROM assessments"
            )
        ):
            if kind == "feedback" and bool(valid) and value != "null":
                rows.feedback.append(Feedback(trace_id, name, json.loads(value), value, metadata))
        _rows[backend.name] = rows
    return _rows[backend.name]


def feedback_types(rows: Rows, experiment_ids: Iterable[str]) -> dict[str, str]:
    """Each feedback name's type in the experiments (``oracle.name_type`` of its values)."""
    ids = set(experiment_ids)
    values: dict[str, list[str]] = {}
    for f in rows.feedback:
        if rows.traces[f.trace_id].experiment_id in ids:
            values.setdefault(f.name, []).append(f.raw)
    return {name: oracle.name_type(texts) for name, texts in values.items()}


def dimension_traces(
    rows: Rows, name: str, params: dict[str, Any], types: dict[str, str]
) -> set[str]:
    """The traces (of the whole DB) that have the dimension, by its definition in API.md §4.5."""
    traces = rows.traces.values()
    if name == "status":
        return {t.request_id for t in traces if t.status == params["value"]}
    if name == "latency":
        op, threshold = OPERATORS[params["operator"]], params["threshold"]
        return {
            t.request_id
            for t in traces
            if t.execution_time_ms is not None and op(t.execution_time_ms, threshold)
        }
    if name in ("span.type", "span.name"):
        index = 0 if name == "span.type" else 1
        return {
            tid
            for tid, spans in rows.spans.items()
            if any(s[index] == params["value"] for s in spans)
        }
    prefix, _, subject = name.partition(".")
    if prefix == "tools":
        calls = {
            tid: [s for s in spans if s[0] == "TOOL" and s[1] == subject]
            for tid, spans in rows.spans.items()
        }
        value = params["value"]
        return {
            tid
            for tid, c in calls.items()
            if c and (value == "used" or (value == "error") == any(s[2] == "ERROR" for s in c))
        }
    if prefix == "tags":
        return {tid for tid, tags in rows.tags.items() if tags.get(subject) == params["value"]}
    assert prefix == "assessment"
    kind = types[subject]

    def matches(f: Feedback) -> bool:
        if f.name != subject:
            return False
        if kind == "boolean":
            passed = f.value is True or (isinstance(f.value, str) and f.value.lower() == "yes")
            return passed == (params["value"] in ("true", "yes"))
        if kind == "numeric":
            return OPERATORS[params["operator"]](float(f.value), params["threshold"])
        return oracle.display(f.raw) == params["value"]

    matched = [f for f in rows.feedback if matches(f)]
    found = {f.trace_id for f in matched}
    for f in matched:  # a feedback for a whole session counts for its traces
        owner = rows.traces[f.trace_id]
        if f.metadata and SESSION_MARKER in f.metadata and owner.session_id is not None:
            found |= {
                t.request_id
                for t in traces
                if t.session_id == owner.session_id and t.experiment_id == owner.experiment_id
            }
    return found


# --------------------------------------------------------------------------------------------
# MLflow itself
# --------------------------------------------------------------------------------------------


class RememberingStore:
    """MLflow's ``SqlAlchemyStore`` on a test DB, each answer kept for the session: the tests
    run on both answering paths and compare with the same answers (the test DBs never change).
    Callers must not modify what it returns."""

    def __init__(self, store: SqlAlchemyStore) -> None:
        self._store = store
        self._answers: dict[str, Any] = {}

    def _remembered(self, method: str, *args: Any, **kwargs: Any) -> Any:
        key = repr((method, args, sorted(kwargs.items())))
        if key not in self._answers:
            self._answers[key] = getattr(self._store, method)(*args, **kwargs)
        return self._answers[key]

    def search_traces(self, *args: Any, **kwargs: Any) -> Any:
        return self._remembered("search_traces", *args, **kwargs)

    def calculate_trace_filter_correlation(self, *args: Any, **kwargs: Any) -> Any:
        return self._remembered("calculate_trace_filter_correlation", *args, **kwargs)


_stores: dict[str, RememberingStore] = {}


def mlflow_store(backend: Backend) -> RememberingStore:
    if backend.name not in _stores:
        store = SqlAlchemyStore(backend.sync_uri, "/tmp/insights-artifacts")
        _stores[backend.name] = RememberingStore(store)
    return _stores[backend.name]


def mlflow_search(backend: Backend, experiment_ids: list[str], filter_string: str) -> set[str]:
    infos, token = mlflow_store(backend).search_traces(
        experiment_ids=experiment_ids, filter_string=filter_string, max_results=50_000
    )
    assert token is None
    return {info.trace_id for info in infos}


def nan_to_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def window_filter(body: dict[str, Any]) -> str:
    return f"timestamp_ms >= {body['start_time']} AND timestamp_ms < {body['end_time']}"


def npmi_body(
    base: dict[str, Any], first: tuple[str, dict[str, Any]], second: tuple[str, dict[str, Any]]
) -> dict[str, Any]:
    return {
        **base,
        "dimension1": {"name": first[0], "parameters": first[1]},
        "dimension2": {"name": second[0], "parameters": second[1]},
    }


STATUS_OK = ("status", {"value": "OK"})


def discovered_dimensions(data: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every (name, parameters) worth checking, from a discovery response."""
    result: list[tuple[str, dict[str, Any]]] = []
    for info in data:
        params = {p["name"]: p for p in info["parameters"]}
        if "threshold" in params:
            thresholds = (300, 1000.5, 2500) if info["name"] == "latency" else (2, 3.5, 4.5)
            for threshold, op in itertools.product(thresholds, OPERATORS):
                result.append((info["name"], {"threshold": threshold, "operator": op}))
        else:
            for value in params["value"]["enum_values"] or []:
                result.append((info["name"], {"value": value}))
    return result


# --------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------


async def test_discovery_lists_what_the_data_in_scope_offers(
    client: InsightsClient, backend: Backend, raw: sa.Connection
) -> None:
    exp = backend.experiment_id()
    body: dict[str, Any] = {"experiment_ids": [exp], **backend.window(widen_days=-2)}
    data = (await client.ok("dimensions/discovery", body))["data"]
    rows = load_rows(backend, raw)
    scope = rows.in_scope([exp], body["start_time"], body["end_time"])
    spans = [s for tid in scope for s in rows.spans.get(tid, [])]
    tags = [(k, v) for tid in scope for k, v in rows.tags.get(tid, {}).items()]
    feedback = [f for f in rows.feedback if f.trace_id in scope]
    types = feedback_types(rows, [exp])

    by_name = {d["name"]: d for d in data}
    assert len(by_name) == len(data)

    def enum(name: str, parameter: str = "value") -> Any:
        return next(p for p in by_name[name]["parameters"] if p["name"] == parameter)["enum_values"]

    assert enum("status") == sorted({rows.traces[t].status for t in scope})
    assert enum("span.type") == sorted({s[0] for s in spans if s[0]})
    span_names = sorted({s[1] for s in spans if s[1]})
    assert enum("span.name") == (span_names if len(span_names) <= 50 else None)
    assert enum("latency", "operator") == [">", ">=", "<", "<="]
    tools = sorted({s[1] for s in spans if s[0] == "TOOL" and s[1]})
    assert len(tools) >= 4
    assert [n for n in by_name if n.startswith("tools.")] == [f"tools.{t}" for t in tools]
    assert all(enum(f"tools.{t}") == ["used", "error", "success"] for t in tools)

    user_tags = {k for k, _ in tags if not k.startswith("mlflow.")}
    assert [n for n in by_name if n.startswith("tags.")] == [f"tags.{k}" for k in sorted(user_tags)]
    for key in user_tags:
        values = sorted({v for k, v in tags if k == key})
        assert enum(f"tags.{key}") == (values if len(values) <= 50 else None), key
        assert by_name[f"tags.{key}"]["parameters"][0]["type"] == "string"

    names = sorted({f.name for f in feedback})
    assert [n for n in by_name if n.startswith("assessment.")] == [f"assessment.{n}" for n in names]
    assert {types[n] for n in names} == {"boolean", "numeric", "string"}
    for name in names:
        info = by_name[f"assessment.{name}"]
        assert f"({types[name]})" in info["display_name"]
        if types[name] == "numeric":
            assert [p["name"] for p in info["parameters"]] == ["threshold", "operator"]
        elif types[name] == "boolean":
            as_strings = any(isinstance(f.value, str) for f in rows.feedback if f.name == name)
            assert enum(f"assessment.{name}") == (
                ["yes", "no"] if as_strings else ["true", "false"]
            )
        else:
            values = sorted({oracle.display(f.raw) for f in feedback if f.name == name})
            assert enum(f"assessment.{name}") == values


async def test_discovery_system_tags_on_request(client: InsightsClient, backend: Backend) -> None:
    body = {"experiment_ids": [backend.experiment_id()]}
    default = (await client.ok("dimensions/discovery", body))["data"]
    everything = (await client.ok("dimensions/discovery", {**body, "include_system_tags": True}))[
        "data"
    ]
    system = [d["name"] for d in everything if d["name"].startswith("tags.mlflow.")]
    assert system, "MLflow writes system tags on every trace"
    assert not [d for d in default if d["name"].startswith("tags.mlflow.")]
    assert len(everything) == len(default) + len(system)


async def test_discovery_of_an_empty_scope_keeps_the_built_in_kinds(
    client: InsightsClient, backend: Backend
) -> None:
    body = {"experiment_ids": [backend.experiment_id("empty-experiment")]}
    data = (await client.ok("dimensions/discovery", body))["data"]
    assert [d["name"] for d in data] == ["status", "span.type", "span.name", "latency"]
    assert data[0]["parameters"][0]["enum_values"] == []


# --------------------------------------------------------------------------------------------
# Every discovered dimension: its count, and its filter string in MLflow
# --------------------------------------------------------------------------------------------


async def test_every_dimension_counts_its_traces_and_its_filter_selects_them_in_mlflow(
    client: InsightsClient, backend: Backend, raw: sa.Connection
) -> None:
    exp = backend.experiment_id()
    base: dict[str, Any] = {"experiment_ids": [exp], **backend.window(widen_days=-2)}
    data = (await client.ok("dimensions/discovery", base))["data"]
    rows = load_rows(backend, raw)
    scope = rows.in_scope([exp], base["start_time"], base["end_time"])
    ok = {t for t in scope if rows.traces[t].status == "OK"}
    types = feedback_types(rows, [exp])
    checked = without_filter = 0
    for name, params in discovered_dimensions(data):
        result = await client.ok(
            "dimensions/calculate-npmi", npmi_body(base, (name, params), STATUS_OK)
        )
        first = result["dimension1"]
        expected = dimension_traces(rows, name, params, types) & scope
        assert first["name"] == name
        assert first["count"] == len(expected), (name, params)
        assert result["intersection"]["count"] == len(expected & ok), (name, params)
        if first["filter_string"] is None:
            without_filter += 1
            continue
        found = mlflow_search(backend, [exp], f"{window_filter(base)} AND {first['filter_string']}")
        assert found == expected, (name, params, first["filter_string"])
        checked += 1
    assert checked > 100
    assert without_filter == len(
        [n for n in discovered_dimensions(data) if n[1] == {"value": "success"}]
    )


@pytest.mark.parametrize(
    ("name", "params", "filter_string"),
    [
        ("status", {"value": "ERROR"}, "status = 'ERROR'"),
        ("span.type", {"value": "LLM"}, "span.type = 'LLM'"),
        ("span.name", {"value": "get_weather"}, "span.name = 'get_weather'"),
        ("latency", {"threshold": 500, "operator": ">"}, "execution_time_ms > 500"),
        ("latency", {"threshold": 500.0, "operator": "<="}, "execution_time_ms <= 500"),
        ("latency", {"threshold": 99.5, "operator": ">="}, "execution_time_ms >= 99.5"),
        (
            "tools.search_orders",
            {"value": "used"},
            "span.type = 'TOOL' AND span.name = 'search_orders'",
        ),
        (
            "tools.search_orders",
            {"value": "error"},
            "span.type = 'TOOL' AND span.name = 'search_orders' AND span.status = 'ERROR'",
        ),
        ("tools.search_orders", {"value": "success"}, None),
        ("tags.persona", {"value": "admin"}, "tags.`persona` = 'admin'"),
        ("tags.team%_name", {"value": "o'brien"}, 'tags.`team%_name` = "o\'brien"'),
        ("tags.team%_name", {"value": 'the "A" team'}, "tags.`team%_name` = 'the \"A\" team'"),
        ("tags.team%_name", {"value": 'it\'s "both"'}, None),
        ("assessment.correctness", {"value": "false"}, "feedback.`correctness` = 'false'"),
        ("assessment.relevance", {"value": "yes"}, "feedback.`relevance` ILIKE '\"yes\"'"),
        (
            "assessment.quality_score",
            {"threshold": 4, "operator": ">="},
            "feedback.`quality_score` >= 4",
        ),
        ("assessment.tone", {"value": "Friendly"}, "feedback.`tone` = 'Friendly'"),
    ],
)
async def test_filter_strings_read_as_documented(
    client: InsightsClient,
    backend: Backend,
    name: str,
    params: dict[str, Any],
    filter_string: str | None,
) -> None:
    body = npmi_body({"experiment_ids": [backend.experiment_id()]}, (name, params), STATUS_OK)
    result = await client.ok("dimensions/calculate-npmi", body)
    assert result["dimension1"]["filter_string"] == filter_string
    assert result["dimension2"]["filter_string"] == "status = 'OK'"


@pytest.mark.parametrize(
    ("ref", "filter_string"),
    [
        (
            dims.DimensionRef(dims.Kind.TAG, "name"),
            None,
        ),  # MLflow reads tags.name as the trace name
        (dims.DimensionRef(dims.Kind.TAG, "Timestamp"), None),
        (dims.DimensionRef(dims.Kind.TAG, "mlflow.traceName"), None),
        (dims.DimensionRef(dims.Kind.TAG, "a`b"), None),
        (dims.DimensionRef(dims.Kind.TAG, "mlflow.user"), "tags.`mlflow.user` = 'v'"),
        (dims.DimensionRef(dims.Kind.TAG, "a b.c"), "tags.`a b.c` = 'v'"),
        (dims.DimensionRef(dims.Kind.SPAN_NAME), "span.name = 'v'"),
    ],
)
def test_keys_mlflow_reads_differently_have_no_filter_string(
    ref: dims.DimensionRef, filter_string: str | None
) -> None:
    assert dims.bind(ref, {"value": "v"}).filter_string == filter_string


# --------------------------------------------------------------------------------------------
# NPMI equals MLflow's calculate_trace_filter_correlation
# --------------------------------------------------------------------------------------------

PAIR_DIMENSIONS: list[tuple[str, dict[str, Any]]] = [
    ("status", {"value": "ERROR"}),
    ("status", {"value": "IN_PROGRESS"}),
    ("span.type", {"value": "RETRIEVER"}),
    ("span.name", {"value": "chat.completions.create"}),
    ("latency", {"threshold": 1500, "operator": ">"}),
    ("latency", {"threshold": 600.5, "operator": "<="}),
    ("tools.search_orders", {"value": "used"}),
    ("tools.send_email", {"value": "error"}),
    ("tags.persona", {"value": "admin"}),
    ("tags.team%_name", {"value": "o'brien"}),
    ("tags.team%_name", {"value": "100%_club"}),
    ("tags.team%_name", {"value": "zürich"}),
    ("assessment.correctness", {"value": "false"}),
    ("assessment.relevance", {"value": "no"}),
    ("assessment.quality_score", {"threshold": 3.5, "operator": "<"}),
    ("assessment.tone", {"value": "friendly"}),
]


@pytest.mark.parametrize("scope_filter", [None, "tags.env = 'prod'"])
async def test_npmi_equals_mlflow_for_every_pair(
    client: InsightsClient, backend: Backend, raw: sa.Connection, scope_filter: str | None
) -> None:
    exp = backend.experiment_id()
    base: dict[str, Any] = {"experiment_ids": [exp], **backend.window(widen_days=-1)}
    base_filter = window_filter(base)
    rows = load_rows(backend, raw)
    scope = rows.in_scope([exp], base["start_time"], base["end_time"])
    if scope_filter:
        base["filter_string"] = scope_filter
        base_filter += f" AND {scope_filter}"
        scope &= dimension_traces(rows, "tags.env", {"value": "prod"}, {})
    types = feedback_types(rows, [exp])
    store = mlflow_store(backend)
    kinds_of_score: set[str] = set()
    for first, second in itertools.combinations(PAIR_DIMENSIONS, 2):
        result = await client.ok("dimensions/calculate-npmi", npmi_body(base, first, second))
        one, two = result["dimension1"], result["dimension2"]
        pair = (first, second)
        # The oracle's counts, and MLflow's NPMI of them.
        a = dimension_traces(rows, first[0], first[1], types) & scope
        b = dimension_traces(rows, second[0], second[1], types) & scope
        counts = (len(a & b), len(a), len(b), len(scope))
        assert (result["intersection"]["count"], one["count"], two["count"]) == counts[:3], pair
        assert result["total_count"] == len(scope)
        correlation = result["correlation"]
        scores = calculate_npmi_from_counts(*counts)
        assert correlation["npmi_score"] == nan_to_none(scores.npmi), pair
        assert correlation["npmi_smoothed"] == nan_to_none(scores.npmi_smoothed), pair
        kinds_of_score.add(correlation["strength"] or "null")
        if counts[0] == 0 and counts[1] and counts[2]:
            assert correlation["npmi_score"] == -1.0
        # MLflow's own correlation query on the same database, with the filter strings.
        expected = store.calculate_trace_filter_correlation(
            [exp], one["filter_string"], two["filter_string"], base_filter=base_filter
        )
        assert result["total_count"] == expected.total_count, pair
        assert one["count"] == expected.filter1_count, pair
        assert two["count"] == expected.filter2_count, pair
        assert result["intersection"]["count"] == expected.joint_count, pair
        assert correlation["npmi_score"] == nan_to_none(expected.npmi), pair
        assert correlation["npmi_smoothed"] == nan_to_none(expected.npmi_smoothed), pair
    assert len(kinds_of_score) >= 2, kinds_of_score


@pytest.mark.parametrize("days", [1, 2, 3])
async def test_npmi_counts_the_same_in_short_and_long_windows(
    client: InsightsClient, backend: Backend, raw: sa.Connection, days: int
) -> None:
    """Windows up to two days count by conditional sums, longer ones by grouping the traces
    (``pair_counts``): both shapes give the oracle's counts."""
    exp = backend.experiment_id()
    start = backend.dataset.start_time_ms + 5 * DAY_MS
    base: dict[str, Any] = {
        "experiment_ids": [exp],
        "start_time": start,
        "end_time": start + days * DAY_MS,
    }
    rows = load_rows(backend, raw)
    scope = rows.in_scope([exp], base["start_time"], base["end_time"])
    types = feedback_types(rows, [exp])
    half = len(PAIR_DIMENSIONS) // 2
    pairs = list(zip(PAIR_DIMENSIONS[:half], reversed(PAIR_DIMENSIONS[half:]), strict=True))
    pairs.append((("tools.search_orders", {"value": "success"}), ("span.type", {"value": "LLM"})))
    for first, second in pairs:
        result = await client.ok("dimensions/calculate-npmi", npmi_body(base, first, second))
        a = dimension_traces(rows, first[0], first[1], types) & scope
        b = dimension_traces(rows, second[0], second[1], types) & scope
        counts = (
            result["intersection"]["count"],
            result["dimension1"]["count"],
            result["dimension2"]["count"],
            result["total_count"],
        )
        assert counts == (len(a & b), len(a), len(b), len(scope)), (days, first, second)
    assert scope


async def test_a_dimension_that_matches_nothing_gives_null_not_nan(
    client: InsightsClient, backend: Backend
) -> None:
    body = npmi_body(
        {"experiment_ids": [backend.experiment_id()]},
        ("tags.persona", {"value": "nobody"}),
        ("latency", {"threshold": 10**12, "operator": ">"}),
    )
    result = await client.ok("dimensions/calculate-npmi", body)
    assert result["dimension1"]["count"] == result["dimension2"]["count"] == 0
    assert result["total_count"] > 0
    assert result["correlation"] == {"npmi_score": None, "npmi_smoothed": None, "strength": None}


async def test_a_dimension_with_itself_is_perfect(client: InsightsClient, backend: Backend) -> None:
    error = ("status", {"value": "ERROR"})
    body = npmi_body({"experiment_ids": [backend.experiment_id()]}, error, error)
    result = await client.ok("dimensions/calculate-npmi", body)
    assert result["intersection"]["count"] == result["dimension1"]["count"] > 0
    assert result["correlation"]["npmi_score"] == pytest.approx(1.0)
    assert result["correlation"]["strength"] == "Strong"


async def test_exclusive_dimensions_never_co_occur(
    client: InsightsClient, backend: Backend
) -> None:
    body = npmi_body(
        {"experiment_ids": [backend.experiment_id()]},
        ("status", {"value": "ERROR"}),
        ("status", {"value": "OK"}),
    )
    result = await client.ok("dimensions/calculate-npmi", body)
    assert result["intersection"]["count"] == 0
    assert result["correlation"]["npmi_score"] == -1.0
    assert -1.0 < result["correlation"]["npmi_smoothed"] < 0


async def test_known_names_without_data_in_the_window_answer_zero(
    client: InsightsClient, backend: Backend
) -> None:
    start = backend.dataset.start_time_ms - 30 * DAY_MS
    body = npmi_body(
        {
            "experiment_ids": [backend.experiment_id()],
            "start_time": start,
            "end_time": start + DAY_MS,
        },
        ("tools.search_orders", {"value": "error"}),
        ("assessment.correctness", {"value": "true"}),
    )
    result = await client.ok("dimensions/calculate-npmi", body)
    assert result["total_count"] == 0
    assert result["dimension1"]["count"] == result["dimension2"]["count"] == 0
    assert result["correlation"]["npmi_score"] is None


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def bad_dimensions() -> list[tuple[dict[str, Any], list[str]]]:
    """(dimension1, words the 400 message must contain)."""
    return [
        ({"name": "colour", "parameters": {"value": "red"}}, ["colour", "status", "tags.<"]),
        ({"name": "tags", "parameters": {"value": "x"}}, ["'tags'"]),
        ({"name": "tags.", "parameters": {"value": "x"}}, ["'tags.'"]),
        ({"name": "Status", "parameters": {"value": "OK"}}, ["'Status'"]),
        ({"name": "status", "parameters": {}}, ["missing", "'value'"]),
        ({"name": "status", "parameters": {"value": "FAILED"}}, ["OK", "ERROR", "IN_PROGRESS"]),
        ({"name": "status", "parameters": {"value": 1}}, ["string"]),
        ({"name": "status", "parameters": {"value": "OK", "colour": "red"}}, ["'colour'", "value"]),
        ({"name": "latency", "parameters": {"threshold": 5}}, ["missing", "'operator'"]),
        ({"name": "latency", "parameters": {"threshold": 5, "operator": "=="}}, ["==", ">", "<="]),
        ({"name": "latency", "parameters": {"threshold": "5", "operator": ">"}}, ["threshold"]),
        ({"name": "latency", "parameters": {"threshold": True, "operator": ">"}}, ["threshold"]),
        ({"name": "latency", "parameters": {"value": "slow"}}, ["threshold", "operator"]),
        ({"name": "tools.search_orders", "parameters": {"value": "failed"}}, ["used", "success"]),
        ({"name": "tags.persona", "parameters": {"value": None}}, ["string"]),
        ({"name": "assessment.correctness", "parameters": {"value": "maybe"}}, ["true", "false"]),
        ({"name": "assessment.correctness", "parameters": {"value": "yes"}}, ["true", "false"]),
        ({"name": "assessment.relevance", "parameters": {"value": "true"}}, ["yes", "no"]),
        ({"name": "assessment.quality_score", "parameters": {"value": "4"}}, ["threshold"]),
        (
            {"name": "assessment.quality_score", "parameters": {"threshold": 4, "operator": "="}},
            [">="],
        ),
        ({"name": "assessment.tone", "parameters": {"threshold": 4}}, ["value"]),
        ({"name": "assessment.tone", "parameters": {"colour": 4}}, ["colour"]),
        ({"name": "status"}, ["missing", "'value'"]),
        ({"parameters": {"value": "OK"}}, ["dimension1.name"]),
        ({"name": "status", "parameters": ["OK"]}, ["dimension1.parameters"]),
        ({"name": "status", "parameters": {"value": "OK"}, "extra": 1}, ["dimension1.extra"]),
    ]


async def test_bad_dimensions_are_400_saying_what_is_allowed(
    client: InsightsClient, backend: Backend
) -> None:
    base = {"experiment_ids": [backend.experiment_id()]}
    for dimension, words in bad_dimensions():
        body = {
            **base,
            "dimension1": dimension,
            "dimension2": {"name": "status", "parameters": {"value": "OK"}},
        }
        message = await client.error(
            "dimensions/calculate-npmi", body, 400, "INVALID_PARAMETER_VALUE"
        )
        for word in words:
            assert word in message, (dimension, message)


@pytest.mark.parametrize(
    ("name", "params", "what"),
    [
        ("tools.run_sql", {"value": "used"}, "tool"),  # a sql-copilot tool only
        ("tools.search_orders ", {"value": "used"}, "tool"),
        ("tags.colour", {"value": "red"}, "tag key"),
        ("tags.Persona", {"value": "admin"}, "tag key"),
        ("assessment.helpfulness", {"value": "yes"}, "feedback"),
        ("assessment.expected_answer", {"value": "x"}, "feedback"),  # an expectation
    ],
)
async def test_names_that_appear_nowhere_are_404(
    client: InsightsClient, backend: Backend, name: str, params: dict[str, Any], what: str
) -> None:
    body = npmi_body({"experiment_ids": [backend.experiment_id()]}, STATUS_OK, (name, params))
    message = await client.error("dimensions/calculate-npmi", body, 404, "RESOURCE_DOES_NOT_EXIST")
    assert what in message and name.partition(".")[2] in message


async def test_other_request_errors(client: InsightsClient, backend: Backend) -> None:
    exp = backend.experiment_id()
    good = npmi_body({"experiment_ids": [exp]}, STATUS_OK, ("status", {"value": "ERROR"}))
    await client.error(
        "dimensions/calculate-npmi",
        {**good, "experiment_ids": ["987654"]},
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    await client.error(
        "dimensions/discovery", {"experiment_ids": ["987654"]}, 404, "RESOURCE_DOES_NOT_EXIST"
    )
    message = await client.error(
        "dimensions/calculate-npmi",
        {k: v for k, v in good.items() if k != "dimension2"},
        400,
        "INVALID_PARAMETER_VALUE",
    )
    assert "dimension2" in message
    message = await client.error(
        "dimensions/calculate-npmi",
        {**good, "filter_string": "status = "},
        400,
        "INVALID_PARAMETER_VALUE",
    )
    assert "status" in message
    message = await client.error(
        "dimensions/discovery",
        {"experiment_ids": [exp], "colour": 1},
        400,
        "INVALID_PARAMETER_VALUE",
    )
    assert "colour" in message


# --------------------------------------------------------------------------------------------
# Both prefixes answer the same
# --------------------------------------------------------------------------------------------


async def test_ajax_prefix_answers_the_same(client: InsightsClient, backend: Backend) -> None:
    body = npmi_body(
        {"experiment_ids": [backend.experiment_id()]}, STATUS_OK, ("span.type", {"value": "TOOL"})
    )
    api = await client.post("dimensions/calculate-npmi", body)
    ajax = await client.post("dimensions/calculate-npmi", body, prefix=AJAX_API)
    assert api.status_code == ajax.status_code == 200
    assert api.json() == ajax.json()


# --------------------------------------------------------------------------------------------
# A feedback logged for a whole session (the demo data has none)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionDB:
    uri: str
    experiment_id: str
    trace_ids: list[str]  # sessions s1, s1, s1, s2, none


@pytest.fixture(scope="module")
def session_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionDB]:
    """A small SQLite DB written through MLflow: a feedback for session s1 on its first trace."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('sessions') / 'mlflow.db'}"
    try:
        with mlflow_tracking(uri):  # synchronous: a trace is written before end() returns
            experiment_id = mlflow.create_experiment("sessions")
            ids = []
            for session in ("s1", "s1", "s1", "s2", None):
                metadata = {"mlflow.trace.session": session} if session else {}
                span = mlflow.start_span_no_context(
                    "chat", inputs={"q": "hi"}, metadata=metadata, experiment_id=experiment_id
                )
                span.end(outputs={"a": "hello"})
                ids.append(span.trace_id)
            mlflow.log_feedback(
                trace_id=ids[0],
                name="resolved",
                value=True,
                metadata={"mlflow.trace.session": "s1"},
            )
            mlflow.log_feedback(trace_id=ids[3], name="resolved", value=False)
            yield SessionDB(uri, experiment_id, ids)
    finally:
        engine = SqlAlchemyStore._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()


async def test_a_session_feedback_counts_for_every_trace_of_the_session(
    session_db: SessionDB,
) -> None:
    store = SqlAlchemyStore(session_db.uri, "/tmp/insights-artifacts")
    exp, ids = session_db.experiment_id, session_db.trace_ids
    app = create_app(Settings(database_url=session_db.uri))
    async for client in open_client(app, cast(Backend, None)):
        for value, expected in (("true", set(ids[:3])), ("false", {ids[3]})):
            body = npmi_body(
                {"experiment_ids": [exp]}, ("assessment.resolved", {"value": value}), STATUS_OK
            )
            first = (await client.ok("dimensions/calculate-npmi", body))["dimension1"]
            assert first["count"] == len(expected), value
            infos, _ = store.search_traces([exp], first["filter_string"], max_results=100)
            assert {info.trace_id for info in infos} == expected, value
        rows = (
            await client.ok(
                "correlations",
                {
                    "experiment_ids": [exp],
                    "filter_string": "tags.`mlflow.traceName` = 'chat'",
                    "correlation_dimensions": ["assessments"],
                    "min_count": 0,
                },
            )
        )["data"]
        assert {(r["value"], r["trace_count"]) for r in rows} == {
            ("resolved=true", 3),
            ("resolved=false", 1),
        }
