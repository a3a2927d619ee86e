"""tags/discovery and tags/metrics against the raw tag rows (and trace names), the edge-case DB
(keys and values differing in case, trailing spaces, non-ASCII), and across databases."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Backend, InsightsClient
from tests.oracle import (
    EDGE_END_MS,
    EDGE_START_MS,
    Raw,
    Trace,
    assert_close_json,
    load_raw,
    same_json_everywhere,
    top_values,
)
from tests.round_trips import counting_client, round_trips

# The edge-case DB fixtures, shared with the other issue-3 test modules.

TRACE_NAME = "mlflow.traceName"


@pytest.fixture(scope="module")
def rows(raw: sa.Connection) -> Raw:
    return load_raw(raw)


def tags_in_scope(
    rows: Raw, traces: dict[str, Trace], include_system: bool
) -> dict[str, Counter[str]]:
    """key -> Counter of values over the traces in scope (one value per trace and key)."""
    result: dict[str, Counter[str]] = {}
    for tag in rows.tags:
        if tag.request_id in traces and tag.value is not None and tag.key != TRACE_NAME:
            result.setdefault(tag.key, Counter())[tag.value] += 1
    if include_system:
        for t in traces.values():
            if t.trace_name is not None:
                result.setdefault(TRACE_NAME, Counter())[t.trace_name] += 1
    else:
        result = {k: v for k, v in result.items() if not k.startswith("mlflow.")}
    return result


def expected_discovery(tags: dict[str, Counter[str]]) -> dict[str, Any]:
    data: list[dict[str, Any]] = [
        {"tag_key": k, "trace_count": sum(c.values()), "unique_values": len(c)}
        for k, c in tags.items()
    ]
    data.sort(key=lambda d: (-d["trace_count"], d["tag_key"]))
    return {"data": data}


def expected_metrics(key: str, counter: Counter[str], limit: int) -> dict[str, Any]:
    total = sum(counter.values())
    top = top_values(counter, total, limit)
    return {
        "data": {
            "tag_key": key,
            "trace_count": total,
            "unique_values": len(counter),
            "top_values": top,
            "other_count": total - sum(v["count"] for v in top),
        }
    }


@pytest.mark.parametrize("include_system", [False, True])
async def test_discovery_matches_raw_tags(
    client: InsightsClient, backend: Backend, rows: Raw, include_system: bool
) -> None:
    ids = [backend.experiment_id(), backend.experiment_id("sql-copilot")]
    body: dict[str, Any] = {"experiment_ids": ids, **backend.window()}
    if include_system:
        body["include_system_tags"] = True
    result = await client.ok("tags/discovery", body)
    traces = rows.in_scope(ids, body["start_time"], body["end_time"])
    tags = tags_in_scope(rows, traces, include_system)
    keys = {d["tag_key"] for d in result["data"]}
    assert ("team%_name" in keys) and (TRACE_NAME in keys) == include_system
    assert any(k.startswith("mlflow.") for k in keys) == include_system
    assert_close_json(result, expected_discovery(tags))


@pytest.mark.parametrize("limit", [1, 2, 5, 10, 1000])
async def test_metrics_match_raw_tags(
    client: InsightsClient, backend: Backend, rows: Raw, limit: int
) -> None:
    ids = [backend.experiment_id()]
    start = backend.dataset.start_time_ms + 86_400_000
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "start_time": start,
        "end_time": start + 9 * 86_400_000,
    }
    traces = rows.in_scope(ids, body["start_time"], body["end_time"])
    tags = tags_in_scope(rows, traces, include_system=True)
    for key in ("persona", "env", "customer_id", "team%_name"):
        result = await client.ok("tags/metrics", {**body, "tag_key": key, "limit": limit})
        assert_close_json(result, expected_metrics(key, tags[key], limit))
    result = await client.ok(
        "tags/metrics", {**body, "tag_key": TRACE_NAME, "include_system_tags": True, "limit": limit}
    )
    assert_close_json(result, expected_metrics(TRACE_NAME, tags[TRACE_NAME], limit))
    # customer_id has many values with equal counts: ties are broken by value.
    counts = Counter(tags["customer_id"].values())
    assert max(counts.values()) > 1


async def test_default_limit_is_ten(client: InsightsClient, backend: Backend, rows: Raw) -> None:
    ids = [backend.experiment_id()]
    result = await client.ok("tags/metrics", {"experiment_ids": ids, "tag_key": "customer_id"})
    tags = tags_in_scope(rows, rows.in_scope(ids), include_system=False)
    assert len(tags["customer_id"]) > 10
    assert_close_json(result, expected_metrics("customer_id", tags["customer_id"], 10))


async def test_filter_string_slices_tags(
    client: InsightsClient, backend: Backend, rows: Raw
) -> None:
    ids = [backend.experiment_id()]
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "filter_string": "status = 'ERROR'",
        **backend.window(),
    }
    traces = rows.in_scope(
        ids, body["start_time"], body["end_time"], keep=lambda t: t.status == "ERROR"
    )
    tags = tags_in_scope(rows, traces, include_system=False)
    assert 5 < len(traces) < 60
    assert_close_json(await client.ok("tags/discovery", body), expected_discovery(tags))
    assert_close_json(
        await client.ok("tags/metrics", {**body, "tag_key": "persona"}),
        expected_metrics("persona", tags["persona"], 10),
    )


async def test_unknown_system_and_quiet_keys(client: InsightsClient, backend: Backend) -> None:
    exp = backend.experiment_id()
    for key in ("no_such_key", "Persona", "persona ", "team_name"):
        message = await client.error(
            "tags/metrics",
            {"experiment_ids": [exp], "tag_key": key},
            404,
            "RESOURCE_DOES_NOT_EXIST",
        )
        assert repr(key) in message
    message = await client.error(
        "tags/metrics",
        {"experiment_ids": [exp], "tag_key": TRACE_NAME},
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    assert "include_system_tags" in message
    # Known keys with nothing in the window: zero counts.
    start = backend.dataset.end_time_ms + 86_400_000
    quiet = {"experiment_ids": [exp], "start_time": start, "end_time": start + 1000}
    for key, system in (("persona", False), (TRACE_NAME, True), ("mlflow.artifactLocation", True)):
        result = await client.ok(
            "tags/metrics", {**quiet, "tag_key": key, "include_system_tags": system}
        )
        assert result == {
            "data": {
                "tag_key": key,
                "trace_count": 0,
                "unique_values": 0,
                "top_values": [],
                "other_count": 0,
            }
        }
    assert await client.ok("tags/discovery", quiet) == {"data": []}
    empty = {"experiment_ids": [backend.experiment_id("empty-experiment")], "tag_key": "persona"}
    await client.error("tags/metrics", empty, 404, "RESOURCE_DOES_NOT_EXIST")


async def test_request_errors(client: InsightsClient, backend: Backend) -> None:
    exp = backend.experiment_id()
    for endpoint, body, word in [
        ("tags/metrics", {"experiment_ids": [exp]}, "tag_key"),
        ("tags/metrics", {"experiment_ids": [exp], "tag_key": ""}, "tag_key"),
        ("tags/metrics", {"experiment_ids": [exp], "tag_key": "env", "limit": 0}, "limit"),
        ("tags/metrics", {"experiment_ids": [exp], "tag_key": "env", "limit": -3}, "limit"),
        ("tags/metrics", {"experiment_ids": [exp], "tag_key": "env", "limit": "5"}, "limit"),
        ("tags/metrics", {"experiment_ids": [exp], "tag_key": "env", "limit": 1001}, "limit"),
        ("tags/metrics", {"experiment_ids": [exp], "tag_key": "env", "key": "x"}, "key"),
        ("tags/discovery", {"experiment_ids": [exp], "include_system_tags": "yes"}, "include"),
        ("tags/discovery", {"experiment_ids": [exp], "time_bucket": "day"}, "time_bucket"),
        ("tags/discovery", {"experiment_ids": [exp], "filter_string": "tags.x ~ 'y'"}, "filter"),
    ]:
        message = await client.error(endpoint, body, 400, "INVALID_PARAMETER_VALUE")
        assert word in message, (body, message)


async def test_edge_values_differing_in_case_spaces_and_accents(
    edge_clients: dict[str, InsightsClient], edge_dbs: list[Any], edge_raw: dict[str, Raw]
) -> None:
    dbs = {db.name: db for db in edge_dbs}

    def body(name: str, **extra: Any) -> dict[str, Any]:
        window = {"start_time": EDGE_START_MS, "end_time": EDGE_END_MS}
        return {"experiment_ids": [dbs[name].experiment_id], **window, **extra}

    discovery = await same_json_everywhere(edge_clients, "tags/discovery", body)
    assert {d["tag_key"] for d in discovery["data"]} == {"env", "Env", "letter"}
    env = await same_json_everywhere(
        edge_clients, "tags/metrics", lambda n: body(n, tag_key="env", limit=3)
    )
    assert [(v["value"], v["count"]) for v in env["data"]["top_values"]] == [
        ("Prod", 2),
        ("prod", 2),
        ("prod ", 1),
    ]
    letter = await same_json_everywhere(
        edge_clients, "tags/metrics", lambda n: body(n, tag_key="letter", limit=4)
    )
    assert [v["value"] for v in letter["data"]["top_values"]] == ["B", "a", "a ", "b"]
    assert letter["data"]["unique_values"] == 6 and letter["data"]["other_count"] == 2
    for name, rows in edge_raw.items():
        traces = rows.in_scope([dbs[name].experiment_id], EDGE_START_MS, EDGE_END_MS)
        tags = tags_in_scope(rows, traces, include_system=False)
        assert_close_json(discovery, expected_discovery(tags))
        assert_close_json(env, expected_metrics("env", tags["env"], 3))
        assert_close_json(letter, expected_metrics("letter", tags["letter"], 4))


async def test_round_trips(backend: Backend) -> None:
    body: dict[str, Any] = {"experiment_ids": [backend.experiment_id()], **backend.window()}
    async with counting_client(backend.service_url) as (client, statements):
        assert await round_trips(client, statements, "tags/discovery", body) == 2
        metrics = {**body, "tag_key": "customer_id", "limit": 3}
        assert await round_trips(client, statements, "tags/metrics", metrics) == 2
        # A key with nothing in the window costs one more: is it known at all?
        quiet = {**metrics, "start_time": body["end_time"], "end_time": body["end_time"] + 1}
        assert await round_trips(client, statements, "tags/metrics", quiet) == 3
