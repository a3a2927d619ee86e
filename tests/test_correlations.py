"""correlations (API.md §4.6), on every backend.

Each row must equal MLflow's own ``calculate_trace_filter_correlation(slice, value)`` on the
same database (the value's filter string is the row's, and equals dimensions/calculate-npmi's);
the set of rows must be every value of the data in scope but the pinned ones (a Python oracle
over the raw rows); and the number of SQL statements must not depend on how many values there are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from mlflow.store.analytics.trace_correlation import calculate_npmi_from_counts
from sqlalchemy import event

from service.app import create_app
from service.settings import Settings
from tests import oracle
from tests.conftest import Backend, InsightsClient, open_client
from tests.test_dimensions import (
    Rows,
    dimension_traces,
    feedback_types,
    load_rows,
    mlflow_search,
    mlflow_store,
    nan_to_none,
    window_filter,
)

ALL = 1000  # a limit above the number of values, to get every row


def as_dimension(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The dimensions/calculate-npmi dimension a correlation row stands for."""
    kind, value = row["dimension"], row["value"]
    if kind == "status":
        return "status", {"value": value}
    if kind == "span_type":
        return "span.type", {"value": value}
    if kind in ("tool", "tool_error"):
        return f"tools.{value}", {"value": "used" if kind == "tool" else "error"}
    key, _, text = value.partition("=")
    return ("tags." if kind == "tag" else "assessment.") + key, {"value": text}


def oracle_candidates(
    rows: Rows, experiment_ids: list[str], scope: set[str]
) -> set[tuple[str, str]]:
    """Every (dimension, value) that some trace in scope has."""
    found: set[tuple[str, str]] = set()
    types = feedback_types(rows, experiment_ids)
    as_strings = {f.name for f in rows.feedback if isinstance(f.value, str)}
    for tid in scope:
        found.add(("status", rows.traces[tid].status))
        for span_type, name, status in rows.spans.get(tid, []):
            if span_type:
                found.add(("span_type", span_type))
            if span_type == "TOOL" and name:
                found.add(("tool", name))
                if status == "ERROR":
                    found.add(("tool_error", name))
        for key, value in rows.tags.get(tid, {}).items():
            if not key.startswith("mlflow."):
                found.add(("tag", f"{key}={value}"))
    for f in rows.feedback:
        if f.trace_id not in scope or types[f.name] == "numeric":
            continue
        if types[f.name] == "boolean":
            passed = f.value is True or (isinstance(f.value, str) and f.value.lower() == "yes")
            words = ("yes", "no") if f.name in as_strings else ("true", "false")
            found.add(("assessment", f"{f.name}={words[0] if passed else words[1]}"))
        else:
            found.add(("assessment", f"{f.name}={oracle.display(f.raw)}"))
    return found


SLICES = [
    "status = 'ERROR'",
    "tags.persona = 'admin'",
    "span.type = 'TOOL' AND span.name = 'send_email'",
    "feedback.correctness = 'false'",
    "execution_time_ms > 2000 AND tags.env = 'prod'",
]


@pytest.mark.parametrize("slice_filter", SLICES)
async def test_every_row_equals_mlflow_and_no_value_is_missing(
    client: InsightsClient, backend: Backend, raw: sa.Connection, slice_filter: str
) -> None:
    exp = backend.experiment_id()
    base: dict[str, Any] = {"experiment_ids": [exp], **backend.window(widen_days=-1)}
    body = {**base, "filter_string": slice_filter, "limit": ALL}
    result = await client.ok("correlations", body)
    rows = load_rows(backend, raw)
    scope = rows.in_scope([exp], base["start_time"], base["end_time"])
    in_slice = mlflow_search(backend, [exp], f"{window_filter(base)} AND {slice_filter}")
    assert result["total_count"] == len(scope)
    assert result["slice_count"] == len(in_slice) > 0
    store = mlflow_store(backend)
    types = feedback_types(rows, [exp])
    returned: set[tuple[str, str]] = set()
    for row in result["data"]:
        name, params = as_dimension(row)
        returned.add((row["dimension"], row["value"]))
        # Every row: the oracle's counts and MLflow's NPMI of them.
        having = dimension_traces(rows, name, params, types) & scope
        counts = (len(having & in_slice), len(in_slice), len(having), len(scope))
        assert row["trace_count"] == counts[0], row
        assert row["percentage_of_total"] == pytest.approx(100 * counts[2] / counts[3])
        assert row["percentage_of_slice"] == pytest.approx(100 * counts[0] / counts[1])
        scores = calculate_npmi_from_counts(*counts)
        assert row["npmi_score"] == nan_to_none(scores.npmi), row
        assert row["npmi_smoothed"] == nan_to_none(scores.npmi_smoothed), row
        # MLflow's own correlation query, with the value's filter string, for every row.
        npmi_body = {
            **base,
            "dimension1": {"name": name, "parameters": params},
            "dimension2": {"name": "status", "parameters": {"value": "OK"}},
        }
        dimension = (await client.ok("dimensions/calculate-npmi", npmi_body))["dimension1"]
        assert dimension["count"] == counts[2]
        assert dimension["filter_string"] is not None, row
        # The row carries the same filter string, so a link needs no calculate-npmi call.
        assert row["filter_string"] == dimension["filter_string"], row
        expected = store.calculate_trace_filter_correlation(
            [exp], slice_filter, row["filter_string"], base_filter=window_filter(base)
        )
        assert result["slice_count"] == expected.filter1_count
        assert result["total_count"] == expected.total_count
        assert row["trace_count"] == expected.joint_count, row
        assert dimension["count"] == expected.filter2_count, row
        assert row["npmi_score"] == nan_to_none(expected.npmi), row
        assert row["npmi_smoothed"] == nan_to_none(expected.npmi_smoothed), row
    # Every value of the data in scope seen in the slice is there, unless the slice pins it.
    candidates = oracle_candidates(rows, [exp], scope)
    assert returned <= candidates
    assert {r["dimension"] for r in result["data"]} >= {"span_type", "tool", "tag", "assessment"}
    for kind, value in candidates - returned:
        row = {"dimension": kind, "value": value}
        name, params = as_dimension(row)
        seen = dimension_traces(rows, name, params, types) & in_slice
        assert not seen or _pinned(slice_filter, row), row
    assert any(_pinned(slice_filter, {"dimension": k, "value": v}) for k, v in candidates)


def _pinned(slice_filter: str, row: dict[str, str]) -> bool:
    kind, value = row["dimension"], row["value"]
    key, _, text = value.partition("=")
    clause = {
        "status": f"status = '{value}'",
        "span_type": f"span.type = '{value}'",
        "tool": f"span.name = '{value}'",
        "tag": f"tags.{key} = '{text}'",
        "assessment": f"feedback.{key} = '{text}'",
    }.get(kind)
    return clause is not None and clause in slice_filter


async def test_rows_are_ordered_limited_and_filtered_by_min_count(
    client: InsightsClient, backend: Backend
) -> None:
    body = {"experiment_ids": [backend.experiment_id()], "filter_string": "status = 'ERROR'"}
    everything = (await client.ok("correlations", {**body, "limit": ALL, "min_count": 0}))["data"]
    keys = [(-r["npmi_score"], -r["trace_count"], r["dimension"], r["value"]) for r in everything]
    assert keys == sorted(keys)
    assert any(r["trace_count"] == 0 and r["npmi_score"] == -1.0 for r in everything)
    assert len({(r["dimension"], r["value"]) for r in everything}) == len(everything)
    for min_count in (1, 3):
        kept = await client.ok("correlations", {**body, "limit": ALL, "min_count": min_count})
        assert kept["data"] == [r for r in everything if r["trace_count"] >= min_count]
    default = await client.ok("correlations", body)
    assert default["data"] == [r for r in everything if r["trace_count"] >= 1][:5]
    top = (await client.ok("correlations", {**body, "limit": 2}))["data"]
    assert top == default["data"][:2]
    for row in everything:
        assert row["strength"] in ("Strong", "Moderate", "Weak")


@pytest.mark.parametrize(
    ("slice_filter", "pinned"),
    [
        ("status = 'ERROR'", {("status", "ERROR")}),
        ("trace.status IN ('ERROR')", {("status", "ERROR")}),
        ("tags.persona = 'admin'", {("tag", "persona=admin")}),
        (
            "span.type = 'TOOL' AND span.name = 'send_email' AND span.status = 'ERROR'",
            {("span_type", "TOOL"), ("tool", "send_email"), ("tool_error", "send_email")},
        ),
        ("feedback.relevance = 'yes'", {("assessment", "relevance=yes")}),
        ("feedback.correctness = 'false'", {("assessment", "correctness=false")}),
    ],
)
async def test_values_the_slice_pins_are_left_out(
    client: InsightsClient, backend: Backend, slice_filter: str, pinned: set[tuple[str, str]]
) -> None:
    body = {"experiment_ids": [backend.experiment_id()], "filter_string": slice_filter}
    rows = (await client.ok("correlations", {**body, "limit": ALL}))["data"]
    returned = {(r["dimension"], r["value"]) for r in rows}
    assert rows and not returned & pinned
    # Each pinned value has every slice trace, so it would otherwise be there.
    for kind, value in pinned:
        name, params = as_dimension({"dimension": kind, "value": value})
        check = await client.ok(
            "dimensions/calculate-npmi",
            {
                **body,
                "dimension1": {"name": name, "parameters": params},
                "dimension2": {"name": "status", "parameters": {"value": "OK"}},
            },
        )
        assert check["dimension1"]["count"] == check["total_count"] > 0


async def test_slices_that_pin_nothing_keep_every_value(
    client: InsightsClient, backend: Backend
) -> None:
    body = {"experiment_ids": [backend.experiment_id()], "limit": ALL}
    rows = (await client.ok("correlations", {**body, "filter_string": "status != 'OK'"}))["data"]
    assert ("status", "ERROR") in {(r["dimension"], r["value"]) for r in rows}
    rows = (await client.ok("correlations", {**body, "filter_string": "tags.persona LIKE 'adm%'"}))[
        "data"
    ]
    assert ("tag", "persona=admin") in {(r["dimension"], r["value"]) for r in rows}


async def test_only_the_kinds_asked_for(client: InsightsClient, backend: Backend) -> None:
    body = {
        "experiment_ids": [backend.experiment_id()],
        "filter_string": "status = 'ERROR'",
        "limit": ALL,
        "min_count": 0,
    }
    for kinds, dimensions in [
        (["tools"], {"tool", "tool_error"}),
        (["tags", "status", "tags"], {"tag", "status"}),
        (["assessments"], {"assessment"}),
        (["span_types"], {"span_type"}),
    ]:
        rows = (await client.ok("correlations", {**body, "correlation_dimensions": kinds}))["data"]
        assert {r["dimension"] for r in rows} == dimensions, kinds
    rows = (await client.ok("correlations", {**body, "include_system_tags": True}))["data"]
    system = [r for r in rows if r["dimension"] == "tag" and r["value"].startswith("mlflow.")]
    assert system, "with include_system_tags, the values of system tags are scored too"


# --------------------------------------------------------------------------------------------
# The number of statements does not grow with the number of values
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def counted(backend: Backend) -> AsyncIterator[tuple[InsightsClient, FastAPI]]:
    app = create_app(Settings(database_url=backend.service_url))
    async for c in open_client(app, backend):
        yield c, app


@contextmanager
def statements(app: FastAPI) -> Iterator[list[str]]:
    executed: list[str] = []
    engine = app.state.database.engine.sync_engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        executed.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield executed
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_statement_count_does_not_grow_with_the_values(
    counted: tuple[InsightsClient, FastAPI], backend: Backend
) -> None:
    client, app = counted
    ds = backend.dataset
    both = [backend.experiment_id(), backend.experiment_id("sql-copilot")]
    few = {
        "experiment_ids": [backend.experiment_id("sql-copilot")],
        "start_time": ds.start_time_ms,
        "end_time": ds.start_time_ms + 86_400_000,
    }
    many = {"experiment_ids": both, "include_system_tags": True}
    await client.ok("correlations", {**few, "filter_string": "status = 'OK'"})  # warm up
    sizes, counts = [], []
    for body in (few, many):
        with statements(app) as executed:
            result = await client.ok(
                "correlations",
                {**body, "filter_string": "status = 'OK'", "limit": ALL, "min_count": 0},
            )
        sizes.append(len(result["data"]))
        counts.append(len(executed))
    assert sizes[1] > 5 * sizes[0] > 0, sizes  # hundreds of values against a handful
    # The experiments, the feedback names' types, statuses (and totals), the spans' names and
    # their per-trace bits, tags, feedback.
    assert counts[0] == counts[1] <= 7, counts


async def test_span_types_and_tools_alone_or_together(
    client: InsightsClient, backend: Backend
) -> None:
    """Span types and tools share one pass over the spans when both are asked for: each alone
    gives the rows it gives together."""
    body = {
        "experiment_ids": [backend.experiment_id(), backend.experiment_id("sql-copilot")],
        "filter_string": "status = 'ERROR'",
        "limit": ALL,
        "min_count": 0,
    }

    async def rows(kinds: list[str]) -> list[dict[str, Any]]:
        return (await client.ok("correlations", {**body, "correlation_dimensions": kinds}))["data"]

    together = await rows(["tools", "span_types"])
    types, tools = await rows(["span_types"]), await rows(["tools"])
    assert types and tools
    key = lambda r: (r["dimension"], r["value"])  # noqa: E731
    assert sorted(together, key=key) == sorted(types + tools, key=key)
    assert {r["dimension"] for r in tools} == {"tool", "tool_error"}


# --------------------------------------------------------------------------------------------
# Errors and cross-database identity
# --------------------------------------------------------------------------------------------


async def test_request_errors(client: InsightsClient, backend: Backend) -> None:
    exp = backend.experiment_id()
    good = {"experiment_ids": [exp], "filter_string": "status = 'ERROR'"}
    for body, word in [
        ({"experiment_ids": [exp]}, "filter_string"),
        ({**good, "filter_string": None}, "filter_string"),
        ({**good, "filter_string": "  "}, "filter_string"),
        ({**good, "filter_string": "status = 'ERROR' OR status = 'OK'"}, "OR"),
        ({**good, "filter_string": "colour = 'red'"}, "colour"),
        ({**good, "correlation_dimensions": ["status", "colours"]}, "colours"),
        ({**good, "correlation_dimensions": ["status", "colours"]}, "span_types"),
        ({**good, "correlation_dimensions": []}, "correlation_dimensions"),
        ({**good, "correlation_dimensions": "status"}, "correlation_dimensions"),
        ({**good, "limit": 0}, "limit"),
        ({**good, "min_count": -1}, "min_count"),
        ({**good, "min_count": 1.5}, "min_count"),
        ({**good, "time_bucket": "day"}, "time_bucket"),
    ]:
        message = await client.error("correlations", body, 400, "INVALID_PARAMETER_VALUE")
        assert word in message, (body, message)
    message = await client.error(
        "correlations", {**good, "experiment_ids": ["987654"]}, 404, "RESOURCE_DOES_NOT_EXIST"
    )
    assert "987654" in message


async def test_empty_slice_and_empty_scope(client: InsightsClient, backend: Backend) -> None:
    body = {"experiment_ids": [backend.experiment_id()], "filter_string": "tags.persona = 'nobody'"}
    result = await client.ok("correlations", body)
    assert result["slice_count"] == 0 and result["total_count"] > 0 and result["data"] == []
    zero = await client.ok("correlations", {**body, "min_count": 0, "limit": ALL})
    assert zero["data"] and all(
        r["npmi_score"] is None and r["strength"] is None for r in zero["data"]
    )
    assert all(r["percentage_of_slice"] is None for r in zero["data"])
    empty = {
        "experiment_ids": [backend.experiment_id("empty-experiment")],
        "filter_string": "status = 'OK'",
    }
    assert await client.ok("correlations", empty) == {
        "slice_count": 0,
        "total_count": 0,
        "data": [],
    }
