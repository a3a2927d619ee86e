"""Every endpoint answers the same JSON on every database, and the answer carries data.

One request per case is sent to each enabled backend (``clients`` of ``tests/conftest.py``).
First every answer must be 200 with data in it (non-empty series and lists, non-zero counts), so
an endpoint that answers nothing cannot pass; then the JSON text must be identical everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from tests.conftest import Backend, InsightsClient

DAY_MS = 86_400_000
Window = Literal["open", "full", "trimmed"]


@dataclass(frozen=True)
class Request:
    endpoint: str
    extra: dict[str, Any] = field(default_factory=dict)
    window: Window = "full"

    def body(self, backend: Backend) -> dict[str, Any]:
        ds = backend.dataset
        ids = [backend.experiment_id(), backend.experiment_id("sql-copilot")]
        window: dict[str, int] = {}
        if self.window == "full":
            window = {"start_time": ds.start_time_ms, "end_time": ds.end_time_ms}
        elif self.window == "trimmed":
            # Two days off each end: buckets that start before the window.
            window = {
                "start_time": ds.start_time_ms + 2 * DAY_MS,
                "end_time": ds.end_time_ms - 2 * DAY_MS,
            }
        return {"experiment_ids": ids, **window, **self.extra}


def _day(tz: str) -> dict[str, str]:
    return {"time_bucket": "day", "timezone": tz}


REQUESTS: list[Request] = [
    # Traffic and cost.
    *[
        Request(f"traffic-cost/{name}", extra)
        for name in ("volume", "latency", "errors")
        for extra in ({"time_bucket": "hour"}, _day("Europe/Berlin"))
    ],
    Request("traffic-cost/volume", {"time_bucket": "week", "filter_string": "tags.env = 'prod'"}),
    Request("traffic-cost/latency", {**_day("Asia/Kolkata"), "filter_string": "name = 'chat'"}),
    Request("traffic-cost/errors", {"time_bucket": "hour"}, "trimmed"),
    Request("traffic-cost/tokens", _day("Europe/Berlin"), "open"),
    Request("traffic-cost/tokens", {"time_bucket": "hour"}, "open"),
    Request("traffic-cost/cost", _day("America/New_York"), "open"),
    Request("traffic-cost/cost", {"time_bucket": "week", "filter_string": "status = 'ERROR'"}),
    # Assessments.
    Request("assessments/discovery", {}, "open"),
    Request("assessments/discovery", {"filter_string": "status = 'OK'"}, "trimmed"),
    Request("assessments/metrics", {"assessment_name": "correctness", "time_bucket": "day"}),
    Request("assessments/metrics", {"assessment_name": "relevance", "timezone": "Asia/Kolkata"}),
    Request("assessments/metrics", {"assessment_name": "quality_score", "time_bucket": "day"}),
    Request("assessments/metrics", {"assessment_name": "tone", "limit": 4, "time_bucket": "week"}),
    # Tools.
    Request("tools/discovery", _day("Europe/Berlin")),
    Request("tools/metrics", {"time_bucket": "hour"}, "open"),
    Request("tools/metrics", {"tool_name": "fetch_docs", "time_bucket": "week"}),
    Request("tools/metrics", {"tool_name": "search_orders", "filter_string": "status = 'ERROR'"}),
    # Tags.
    Request("tags/discovery", {"include_system_tags": True}, "open"),
    Request("tags/discovery", {"filter_string": "tags.env = 'staging'"}, "trimmed"),
    Request("tags/metrics", {"tag_key": "customer_id", "limit": 7}, "open"),
    Request("tags/metrics", {"tag_key": "team%_name", "filter_string": "tags.env = 'prod'"}),
    Request("tags/metrics", {"tag_key": "mlflow.traceName", "include_system_tags": True}),
    # Dimensions and NPMI.
    Request("dimensions/discovery", {}, "trimmed"),
    Request(
        "dimensions/calculate-npmi",
        {
            "dimension1": {"name": "tags.team%_name", "parameters": {"value": "zürich"}},
            "dimension2": {"name": "assessment.relevance", "parameters": {"value": "no"}},
        },
        "trimmed",
    ),
    Request(
        "dimensions/calculate-npmi",
        {
            "dimension1": {"name": "tools.fetch_docs", "parameters": {"value": "success"}},
            "dimension2": {"name": "latency", "parameters": {"threshold": 800, "operator": ">="}},
        },
        "trimmed",
    ),
    Request(
        "dimensions/calculate-npmi",
        {
            "dimension1": {"name": "status", "parameters": {"value": "ERROR"}},
            "dimension2": {"name": "span.type", "parameters": {"value": "TOOL"}},
            "filter_string": "tags.env = 'prod'",
        },
    ),
    # Correlations.
    Request("correlations", {"filter_string": "status = 'ERROR'", "limit": 1000, "min_count": 0}),
    Request("correlations", {"filter_string": "feedback.relevance = 'no'", "limit": 20}, "trimmed"),
    Request(
        "correlations",
        {"filter_string": 'tags.`team%_name` = "o\'brien"', "correlation_dimensions": ["tags"]},
        "trimmed",
    ),
]


# --------------------------------------------------------------------------- "has data" checks


def _series(answer: dict[str, Any], count_key: str) -> None:
    series = answer["time_series"]
    assert series, "empty time series"
    assert sum(point[count_key] for point in series) > 0, f"every bucket has {count_key} 0"


def _summary(answer: dict[str, Any], count_key: str) -> None:
    assert answer["summary"][count_key] > 0, f"summary {count_key} is 0"


def _traffic(count_key: str) -> Callable[[dict[str, Any]], None]:
    def check(answer: dict[str, Any]) -> None:
        _summary(answer, count_key)
        _series(answer, count_key)

    return check


def _cost(answer: dict[str, Any]) -> None:
    _summary(answer, "trace_count")
    assert answer["summary"]["total_cost"] > 0
    assert answer["by_model"] and all(m["span_count"] > 0 for m in answer["by_model"])
    assert any(point["total_cost"] for point in answer["time_series"])


def _assessment_metrics(answer: dict[str, Any]) -> None:
    _summary(answer, "total_count")
    count_key = "count" if answer["assessment_type"] == "numeric" else "total_count"
    _series(answer, count_key)


def _listing(count_key: str) -> Callable[[dict[str, Any]], None]:
    def check(answer: dict[str, Any]) -> None:
        assert answer["data"], "empty data"
        assert all(row[count_key] > 0 for row in answer["data"]), f"a row with {count_key} 0"

    return check


def _tool_metrics(answer: dict[str, Any]) -> None:
    tool = answer["data"]
    assert tool["invocation_count"] > 0 and tool["trace_count"] > 0
    assert sum(p["invocation_count"] for p in tool["time_series"]["volume"]) > 0


def _tag_metrics(answer: dict[str, Any]) -> None:
    tag = answer["data"]
    assert tag["trace_count"] > 0 and tag["top_values"]
    assert all(v["count"] > 0 for v in tag["top_values"])


def _dimensions(answer: dict[str, Any]) -> None:
    names = {d["name"] for d in answer["data"]}
    assert {"status", "span.type", "latency"} <= names, names
    assert any(n.startswith("tools.") for n in names) and any(n.startswith("tags.") for n in names)


def _npmi(answer: dict[str, Any]) -> None:
    assert answer["total_count"] > 0
    assert answer["dimension1"]["count"] > 0 and answer["dimension2"]["count"] > 0
    assert answer["intersection"]["count"] > 0
    assert answer["correlation"]["npmi_score"] is not None


def _correlations(answer: dict[str, Any]) -> None:
    assert answer["total_count"] > 0 and answer["slice_count"] > 0
    # With ``min_count: 0`` values absent from the slice are listed too; most are in it.
    assert answer["data"] and answer["data"][0]["trace_count"] > 0


HAS_DATA: dict[str, Callable[[dict[str, Any]], None]] = {
    "traffic-cost/volume": _traffic("count"),
    "traffic-cost/latency": _traffic("count"),
    "traffic-cost/errors": _traffic("total_count"),
    "traffic-cost/tokens": _traffic("trace_count"),
    "traffic-cost/cost": _cost,
    "assessments/discovery": _listing("assessment_count"),
    "assessments/metrics": _assessment_metrics,
    "tools/discovery": _listing("invocation_count"),
    "tools/metrics": _tool_metrics,
    "tags/discovery": _listing("trace_count"),
    "tags/metrics": _tag_metrics,
    "dimensions/discovery": _dimensions,
    "dimensions/calculate-npmi": _npmi,
    "correlations": _correlations,
}


def test_every_endpoint_is_covered() -> None:
    """A new endpoint must get a case here (the routes come from the app itself)."""
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(database_url="sqlite:///unused.db"))
    prefix = "/api/3.0/mlflow/traces/insights/"
    routes = {path.removeprefix(prefix) for path in app.openapi()["paths"] if prefix in path}
    # The listing takes no experiment_ids and no window: tests/test_experiments.py checks it
    # against the raw rows on every database.
    routes -= {"experiments"}
    assert routes == set(HAS_DATA), sorted(routes ^ set(HAS_DATA))
    assert {r.endpoint for r in REQUESTS} == set(HAS_DATA)


def _case_id(request: Request) -> str:
    extra = ",".join(f"{k}={v}" for k, v in request.extra.items() if not isinstance(v, dict))
    return f"{request.endpoint}[{request.window}]{extra}"


@pytest.mark.parametrize("request_", REQUESTS, ids=_case_id)
async def test_identical_json_on_every_database(
    clients: dict[str, InsightsClient], request_: Request
) -> None:
    texts: dict[str, str] = {}
    for name, client in clients.items():
        response = await client.post(request_.endpoint, request_.body(client.backend))
        assert response.status_code == 200, f"{name}: {response.text}"
        HAS_DATA[request_.endpoint](response.json())
        texts[name] = response.text
    assert len(set(texts.values())) == 1, {name: text[:300] for name, text in texts.items()}
