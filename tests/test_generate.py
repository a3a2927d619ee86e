"""The demo/test data generator: what it writes, read back through MLflow's own client.

Two small SQLite DBs are built with the same seed; the tests check one of them against the
generator's plan (via ``MlflowClient`` and raw SQL for the denormalised token/cost columns)
and that both hold the same content once random ids are factored out.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import Assessment, Expectation, Feedback, Trace

from service.demo.generate import (
    DAY_MS,
    DEFAULT_END_TIME_MS,
    EMPTY_EXPERIMENT,
    ERROR,
    IN_PROGRESS,
    OK,
    SQL_COPILOT,
    SUPPORT_AGENT,
    TEAM_TAG,
    GeneratedDataset,
    TracePlan,
    build_tracking_db,
    plan_traces,
)

N_TRACES = 40
SEED = 11
PRICED_MODELS = {"gpt-4o", "gpt-4o-mini", "claude-3-7-sonnet-20250219"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[GeneratedDataset, GeneratedDataset]:
    root = tmp_path_factory.mktemp("generate")
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    first = build_tracking_db(f"sqlite:///{root / 'a.db'}", n_traces=N_TRACES, seed=SEED)
    second = build_tracking_db(f"sqlite:///{root / 'b.db'}", n_traces=N_TRACES, seed=SEED)
    # A build leaves the caller's MLflow configuration as it found it.
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
    return first, second


@pytest.fixture(scope="module")
def dataset(datasets: tuple[GeneratedDataset, GeneratedDataset]) -> GeneratedDataset:
    return datasets[0]


@pytest.fixture(scope="module")
def client(dataset: GeneratedDataset) -> MlflowClient:
    return MlflowClient(dataset.tracking_uri)


@pytest.fixture(scope="module")
def infos(dataset: GeneratedDataset, client: MlflowClient) -> dict[str, Trace]:
    """Every trace, without spans: MLflow drops span-less (IN_PROGRESS) traces otherwise."""
    ids = list(dataset.experiment_ids.values())
    found = client.search_traces(locations=ids, include_spans=False, max_results=1000)
    return {trace.info.trace_id: trace for trace in found}


@pytest.fixture(scope="module")
def full_traces(dataset: GeneratedDataset, client: MlflowClient) -> dict[str, Trace]:
    return {
        trace_id: client.get_trace(trace_id)
        for trace_id, plan in zip(dataset.trace_ids, dataset.traces, strict=True)
        if plan.status != IN_PROGRESS
    }


@pytest.fixture(scope="module")
def engine(dataset: GeneratedDataset) -> Iterator[sa.Engine]:
    engine = sa.create_engine(dataset.tracking_uri)
    yield engine
    engine.dispose()


def planned(dataset: GeneratedDataset) -> Iterator[tuple[str, TracePlan]]:
    return zip(dataset.trace_ids, dataset.traces, strict=True)


# --------------------------------------------------------------------------- the plan alone


def test_plan_has_exact_shares_and_pinned_window_edges() -> None:
    plans = plan_traces(n_traces=1000, days=14, seed=3)
    assert Counter(p.status for p in plans) == {OK: 870, ERROR: 100, IN_PROGRESS: 30}
    assert Counter(p.experiment for p in plans) == {SUPPORT_AGENT: 800, SQL_COPILOT: 200}
    stamps = [p.timestamp_ms for p in plans]
    assert stamps == sorted(stamps)
    assert stamps[0] == DEFAULT_END_TIME_MS - 14 * DAY_MS
    assert stamps[-1] == DEFAULT_END_TIME_MS - 1
    assert len({p.tags.get("customer_id") for p in plans} - {None}) == 40
    assert plan_traces(n_traces=50, days=14, seed=3) != plan_traces(n_traces=50, days=14, seed=4)


def test_plan_latencies_have_ties() -> None:
    plans = plan_traces(n_traces=300, days=14, seed=0)
    latencies = [p.duration_ms for p in plans if p.duration_ms is not None]
    assert all(latency % 50 == 0 for latency in latencies)
    assert len(set(latencies)) < len(latencies) / 2
    assert Counter(latencies).most_common(1)[0][1] >= 5


def test_error_traces_fail_in_their_last_span() -> None:
    for plan in plan_traces(n_traces=300, days=14, seed=0):
        if plan.status == ERROR:
            assert plan.spans[-1].error is not None
            assert plan.error == f"{plan.spans[-1].name} failed: {plan.spans[-1].error}"
        else:
            assert plan.error is None


# --------------------------------------------------------------------------- traces


def test_experiments_and_counts(dataset: GeneratedDataset, infos: dict[str, Trace]) -> None:
    assert set(dataset.experiment_ids) == {SUPPORT_AGENT, SQL_COPILOT, EMPTY_EXPERIMENT}
    assert dataset.trace_count == N_TRACES == len(infos)
    by_experiment = Counter(t.info.experiment_id for t in infos.values())
    expected = Counter(dataset.experiment_ids[p.experiment] for p in dataset.traces)
    assert by_experiment == expected
    assert dataset.experiment_ids[EMPTY_EXPERIMENT] not in by_experiment


def test_status_time_and_name(dataset: GeneratedDataset, infos: dict[str, Trace]) -> None:
    assert {p.status for p in dataset.traces} == {OK, ERROR, IN_PROGRESS}
    for trace_id, plan in planned(dataset):
        info = infos[trace_id].info
        assert info.state.value == plan.status
        assert info.request_time == plan.timestamp_ms
        assert dataset.start_time_ms <= info.request_time < dataset.end_time_ms
        assert info.execution_duration == plan.duration_ms
        assert info.tags["mlflow.traceName"] == plan.name
    assert dataset.traces[0].timestamp_ms == dataset.start_time_ms
    assert dataset.traces[-1].timestamp_ms == dataset.end_time_ms - 1


def test_tags(dataset: GeneratedDataset, infos: dict[str, Trace]) -> None:
    for trace_id, plan in planned(dataset):
        tags = infos[trace_id].info.tags
        user_tags = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}
        assert user_tags == plan.tags
        assert tags["mlflow.trace.spansLocation"] == "TRACKING_STORE"


def test_tag_filters_agree_with_mlflow_search(
    dataset: GeneratedDataset, client: MlflowClient
) -> None:
    ids = list(dataset.experiment_ids.values())
    for value in {p.tags.get("persona") for p in dataset.traces} - {None}:
        found = client.search_traces(
            locations=ids, filter_string=f"tags.persona = '{value}'", include_spans=False
        )
        assert len(found) == sum(p.tags.get("persona") == value for p in dataset.traces)
    found = client.search_traces(
        locations=ids, filter_string=f'tags.`{TEAM_TAG}` = "o\'brien"', include_spans=False
    )
    assert len(found) == sum(p.tags.get(TEAM_TAG) == "o'brien" for p in dataset.traces) > 0


def test_spans(dataset: GeneratedDataset, full_traces: dict[str, Trace]) -> None:
    for trace_id, plan in planned(dataset):
        if plan.status == IN_PROGRESS:
            continue
        root, *children = sorted(full_traces[trace_id].data.spans, key=lambda s: s.start_time_ns)
        assert (root.name, root.span_type, root.status.status_code.value) == (
            plan.name,
            plan.root_type,
            plan.status,
        )
        assert root.start_time_ns == plan.timestamp_ms * 1_000_000
        got = [(s.name, s.span_type, s.status.status_code.value) for s in children]
        assert got == [(s.name, s.span_type, "ERROR" if s.error else "OK") for s in plan.spans]
        assert all(s.parent_id == root.span_id for s in children)


def test_span_kinds_present(dataset: GeneratedDataset) -> None:
    kinds = Counter(s.span_type for p in dataset.traces for s in p.spans)
    assert {"LLM", "TOOL", "RETRIEVER"} <= set(kinds)
    assert {p.root_type for p in dataset.traces} == {"AGENT", "CHAIN"}
    assert any(s.error for p in dataset.traces for s in p.spans if s.span_type == "TOOL")
    finished = [p for p in dataset.traces if p.status != IN_PROGRESS]
    assert any(all(s.span_type != "LLM" for s in p.spans) for p in finished)


# --------------------------------------------------------------------------- assessments


def _feedback(assessments: list[Assessment], name: str) -> list[Feedback]:
    return [a for a in assessments if isinstance(a, Feedback) and a.name == name]


def test_assessments(dataset: GeneratedDataset, infos: dict[str, Trace]) -> None:
    overridden = errors = 0
    for trace_id, plan in planned(dataset):
        assessments = infos[trace_id].info.assessments
        for name in ("relevance", "quality_score", "tone"):
            want = [(f.value, f.source_type, f.source_id) for f in plan.feedback if f.name == name]
            got = [
                (a.value, a.source.source_type, a.source.source_id)
                for a in _feedback(assessments, name)
            ]
            assert sorted(got, key=str) == sorted(want, key=str)
        expected = [a for a in assessments if isinstance(a, Expectation)]
        assert [a.value for a in expected] == [value for _, value in plan.expectations]
        for fb in (f for f in plan.feedback if f.name == "correctness"):
            rows = _feedback(assessments, "correctness")
            if fb.error_code:
                errors += 1
                (row,) = rows
                assert row.value is None and row.error is not None
                assert row.error.error_code == "RATE_LIMIT" and row.valid is not False
            elif fb.override_value is not None:
                overridden += 1
                old = next(a for a in rows if a.overrides is None)
                new = next(a for a in rows if a.overrides is not None)
                assert (old.value, old.valid) == (fb.value, False)
                assert (new.value, new.overrides) == (fb.override_value, old.assessment_id)
                assert new.source.source_type == "HUMAN"
            else:
                assert [(a.value, a.valid) for a in rows] == [(fb.value, True)]
    assert overridden > 0 and errors > 0


def test_invalid_rows_in_db(dataset: GeneratedDataset, engine: sa.Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT name, valid, overrides FROM assessments WHERE overrides IS NOT NULL")
        ).all()
        invalid = conn.execute(sa.text("SELECT assessment_id FROM assessments WHERE NOT valid"))
        invalid_ids = {r[0] for r in invalid}
    assert rows and all(name == "correctness" and valid for name, valid, _ in rows)
    assert {r[2] for r in rows} == invalid_ids


def test_feedback_value_kinds() -> None:
    kinds: dict[str, set[type]] = {}
    for plan in plan_traces(n_traces=300, days=14, seed=0):
        for fb in plan.feedback:
            kinds.setdefault(fb.name, set()).add(type(fb.value))
    assert kinds["correctness"] == {bool, type(None)}  # None: the judge failed
    assert kinds["quality_score"] == {int, float}
    assert kinds["relevance"] == kinds["tone"] == {str}


# --------------------------------------------------------------------------- tokens and cost


def _usage(plan: TracePlan, key: str) -> int | None:
    values = [
        s.attributes["mlflow.chat.tokenUsage"].get(key)
        for s in plan.spans
        if "mlflow.chat.tokenUsage" in s.attributes
    ]
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def test_token_and_cost_columns(dataset: GeneratedDataset, engine: sa.Engine) -> None:
    with engine.connect() as conn:
        traces = {
            r.request_id: r
            for r in conn.execute(
                sa.text(
                    "SELECT request_id, input_tokens, output_tokens, total_tokens,"
                    " cache_read_input_tokens, total_cost FROM trace_info"
                )
            )
        }
        span_costs = conn.execute(
            sa.text("SELECT trace_id, model_name, total_cost FROM spans WHERE type = 'LLM'")
        ).all()
    for trace_id, plan in planned(dataset):
        row = traces[trace_id]
        assert row.input_tokens == _usage(plan, "input_tokens")
        assert row.output_tokens == _usage(plan, "output_tokens")
        assert row.total_tokens == _usage(plan, "total_tokens")
        assert row.cache_read_input_tokens == _usage(plan, "cache_read_input_tokens")
        costs = [c for t, _, c in span_costs if t == trace_id and c is not None]
        assert row.total_cost == (pytest.approx(sum(costs)) if costs else None)
    for _, model, cost in span_costs:
        assert (cost is not None) <= (model in PRICED_MODELS)
    assert any(c is not None for *_, c in span_costs)


# --------------------------------------------------------------------------- determinism


def _canonical_dump(uri: str) -> dict[str, Any]:
    """The DB's trace content with random ids replaced by positions in timestamp order."""
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            return _dump(conn)
    finally:
        engine.dispose()


def _dump(conn: sa.Connection) -> dict[str, Any]:
    traces = conn.execute(sa.text("SELECT * FROM trace_info ORDER BY timestamp_ms")).mappings()
    trace_rows = [dict(r) for r in traces]
    position = {r.pop("request_id"): i for i, r in enumerate(trace_rows)}
    tags = conn.execute(sa.text("SELECT request_id, key, value FROM trace_tags")).all()
    metadata = conn.execute(sa.text("SELECT request_id, key, value FROM trace_request_metadata"))
    spans = conn.execute(sa.text("SELECT * FROM spans")).mappings()
    assessments = conn.execute(sa.text("SELECT * FROM assessments")).mappings()
    return {
        "experiments": conn.execute(sa.text("SELECT * FROM experiment_tags")).all(),
        "trace_info": trace_rows,
        "tags": sorted((position[t], k, v) for t, k, v in tags if k != "mlflow.artifactLocation"),
        "metadata": sorted((position[t], k, v) for t, k, v in metadata),
        "spans": sorted(_canonical_span(dict(s), position) for s in spans),
        "assessments": _canonical_assessments([dict(a) for a in assessments], position),
    }


def _canonical_span(span: dict[str, Any], position: dict[str, int]) -> str:
    content = json.loads(span.pop("content"))
    for key in ("trace_id", "span_id", "parent_span_id"):
        content.pop(key)
    content["attributes"].pop("mlflow.traceRequestId")
    trace = position[span.pop("trace_id")]
    span.pop("span_id")
    span["parent_span_id"] = span["parent_span_id"] is not None  # children hang off the root
    return json.dumps([trace, span, content], sort_keys=True, default=str)


def _canonical_assessments(
    rows: list[dict[str, Any]], position: dict[str, int]
) -> list[tuple[Any, ...]]:
    content = {r["assessment_id"]: (r["name"], r["value"], r["source_id"]) for r in rows}
    return sorted(
        (
            position[r["trace_id"]],
            r["name"],
            r["assessment_type"],
            r["value"],
            r["error"],
            r["source_type"],
            r["source_id"],
            r["rationale"],
            bool(r["valid"]),
            content.get(r["overrides"]),
        )
        for r in rows
    )


def test_same_seed_gives_same_content(
    datasets: tuple[GeneratedDataset, GeneratedDataset],
) -> None:
    first, second = datasets
    assert first.traces == second.traces
    assert first.experiment_ids == second.experiment_ids
    assert _canonical_dump(first.tracking_uri) == _canonical_dump(second.tracking_uri)


def test_build_refuses_a_filled_db(dataset: GeneratedDataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty database"):
        build_tracking_db(dataset.tracking_uri, n_traces=1)
    assert mlflow.get_tracking_uri() != dataset.tracking_uri
