"""The request set of the golden capture: every endpoint over several windows, buckets, zones,
filters and names, plus a few refused requests (their messages are part of the answer too)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

DAY_MS = 86_400_000

Post = Callable[[str, dict[str, Any]], Awaitable[tuple[int, Any]]]

FILTERS: tuple[str | None, ...] = (
    None,
    "status = 'ERROR'",
    "span.type = 'TOOL' AND span.status = 'ERROR'",
    "tags.persona = 'admin'",
    "feedback.correctness = 'false'",
    "feedback.quality_score > 0.5",
    "execution_time_ms > 1500",
)
BUCKETINGS = (("hour", "UTC"), ("day", "Europe/Berlin"), ("week", "America/New_York"))
SERIES_ENDPOINTS = (
    "traffic-cost/volume",
    "traffic-cost/latency",
    "traffic-cost/errors",
    "traffic-cost/tokens",
    "traffic-cost/cost",
)
REFUSED: tuple[tuple[str, Any], ...] = (
    ("traffic-cost/volume", {"experiment_ids": []}),
    ("traffic-cost/volume", {"experiment_ids": ["0"], "filter_string": "foo = 'x'"}),
    ("traffic-cost/volume", {"experiment_ids": ["0"], "time_bucket": "month"}),
    ("traffic-cost/volume", {"experiment_ids": ["424242"]}),
    ("traffic-cost/latency", {"experiment_ids": ["0"], "start_time": 5, "end_time": 4}),
    ("tags/metrics", {"experiment_ids": ["0"], "tag_key": "no-such-key"}),
    ("tools/metrics", {"experiment_ids": ["0"], "tool_name": "no-such-tool"}),
    ("assessments/metrics", {"experiment_ids": ["0"], "assessment_name": "nope"}),
    ("dimensions/calculate-npmi", {"experiment_ids": ["0"], "dimension1": {"name": "x"}}),
    ("correlations", {"experiment_ids": ["0"], "filter_string": "span.nonsense = 1"}),
)


def key_of(endpoint: str, body: Any) -> str:
    return f"{endpoint} {json.dumps(body, sort_keys=True)}"


def windows(start_ms: int, end_ms: int) -> list[dict[str, int]]:
    """The whole dataset, three days in the middle, and an open window."""
    middle = start_ms + 5 * DAY_MS
    return [
        {"start_time": start_ms, "end_time": end_ms},
        {"start_time": middle, "end_time": middle + 3 * DAY_MS},
        {},
    ]


async def collect(
    post: Post,
    experiment_ids: list[str],
    start_ms: int,
    end_ms: int,
    *,
    filters: Sequence[str | None] = FILTERS,
) -> dict[str, Any]:
    """Send the whole request set (``filters``: a subset, for a shorter run); return
    ``{key: [status, json]}``."""
    answers: dict[str, Any] = {}

    async def ask(endpoint: str, body: dict[str, Any]) -> Any:
        status, payload = await post(endpoint, body)
        answers[key_of(endpoint, body)] = [status, payload]
        return payload

    for experiment_id in experiment_ids:
        base = {"experiment_ids": [experiment_id]}
        for win, flt in itertools.product(windows(start_ms, end_ms), filters):
            scoped: dict[str, Any] = {**base, **win}
            if flt is not None:
                scoped["filter_string"] = flt
            for endpoint, (size, tz) in itertools.product(SERIES_ENDPOINTS, BUCKETINGS):
                await ask(endpoint, {**scoped, "time_bucket": size, "timezone": tz})
            await _named_endpoints(ask, scoped)
            # System tags hold per-trace values such as artifact paths with random trace ids;
            # dimension discovery lists them as enum values, so only user tags are captured.
            await ask("dimensions/discovery", scoped)
            if flt is not None:
                await ask("correlations", {**scoped, "limit": 50})
                await ask(
                    "correlations",
                    {**scoped, "limit": 3, "min_count": 2, "correlation_dimensions": ["tags"]},
                )
        await _npmi(ask, base, start_ms, end_ms)
    for endpoint, body in REFUSED:
        await ask(endpoint, body)
    return answers


async def _named_endpoints(ask: Callable[..., Awaitable[Any]], scoped: dict[str, Any]) -> None:
    series = {**scoped, "time_bucket": "day", "timezone": "Europe/Berlin"}
    found = await ask("assessments/discovery", scoped)
    for info in found.get("data", []):
        await ask("assessments/metrics", {**series, "assessment_name": info["assessment_name"]})
        await ask(
            "assessments/metrics",
            {**series, "assessment_name": info["assessment_name"], "limit": 2},
        )
    tools = await ask("tools/discovery", series)
    for name in [info["tool_name"] for info in tools.get("data", [])] + [None]:
        await ask("tools/metrics", {**series, "tool_name": name})
    for system in (False, True):
        tags = await ask("tags/discovery", {**scoped, "include_system_tags": system})
        # A key with a value per trace (artifact paths with random trace ids) differs between
        # two builds of the same dataset: its counts are captured, its values are not.
        for info in tags.get("data", []):
            if info["unique_values"] == info["trace_count"]:
                continue
            body = {**scoped, "include_system_tags": system, "tag_key": info["tag_key"]}
            await ask("tags/metrics", body)
            await ask("tags/metrics", {**body, "limit": 1})


async def _npmi(
    ask: Callable[..., Awaitable[Any]], base: dict[str, Any], start_ms: int, end_ms: int
) -> None:
    """Every discovered dimension, with each of its first values, against errors and a tool."""
    found = await ask("dimensions/discovery", base)
    dimensions = [_bound(info) for info in found.get("data", [])]
    anchors = [{"name": "status", "parameters": {"value": "ERROR"}}, dimensions[0]]
    for first, second in itertools.product(anchors, dimensions):
        for win in ({}, {"start_time": start_ms, "end_time": end_ms}):
            await ask(
                "dimensions/calculate-npmi",
                {**base, **win, "dimension1": first, "dimension2": second},
            )


def _bound(info: dict[str, Any]) -> dict[str, Any]:
    """The dimension with a value for each parameter: its first enum value, a threshold of
    1000, the operator '>' and, for free strings, a value that exists in the demo data."""
    parameters: dict[str, Any] = {}
    for p in info["parameters"]:
        if p["enum_values"]:
            parameters[p["name"]] = p["enum_values"][0]
        elif p["type"] == "number":
            parameters[p["name"]] = 1000
        elif p["name"] == "operator":
            parameters[p["name"]] = ">"
        else:
            parameters[p["name"]] = "search_orders"
    return {"name": info["name"], "parameters": parameters}
