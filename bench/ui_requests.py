"""Case group "ui": the requests the stock MLflow UI's experiment Overview page sends.

The Overview tab (Usage, Quality, Tool calls) fetches its charts with ``POST
ajax-api/3.0/mlflow/traces/metrics``; /work/shared/mlflow_ui_requests.md lists every body, read
from the UI's bundle. For one window this module builds the set the page sends with its default
time unit (24 h: hours, 7 d and 30 d: days) and no filter, deduplicated as the UI's query cache
deduplicates identical bodies, and times

* the service answering them (``/ajax-api/3.0/mlflow/traces/metrics``), one after the other, and
* MLflow computing the same answers: ``SqlAlchemyStore.query_trace_metrics`` with the same
  arguments, in process, on the same database (what MLflow's handler calls).

One sample is the whole set, so the speedup is the page's, not one chart's.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from bench.baseline import BaselinePlan, MlflowBaseline, Window

PATH = "/ajax-api/3.0/mlflow/traces/metrics"
LABEL = "ui: Overview page"
HOUR_S, DAY_S = 3600, 86400


def default_interval(length_ms: int) -> int:
    """The UI's default time unit for a range (module 53665 of its bundle)."""
    seconds = length_ms // 1000
    if seconds <= HOUR_S:
        return 60
    if seconds <= DAY_S:
        return HOUR_S
    if seconds <= 30 * DAY_S:
        return DAY_S
    return 30 * DAY_S


def _agg(kind: str, percentile: float | None = None) -> dict[str, Any]:
    return {"aggregation_type": kind, **({"percentile_value": percentile} if percentile else {})}


def overview_bodies(experiment_id: str, window: Window) -> list[dict[str, Any]]:
    """U1-U11, Q1-Q2 and T1-T6 of the request list, for ``window`` (Q3 is only sent when Q1 and
    Q2 find nothing)."""
    start, end = window.start_ms, window.end_ms
    interval = default_interval(end - start)
    pct = [_agg("PERCENTILE", p) for p in (50, 90, 99)]
    count, total, avg = [_agg("COUNT")], [_agg("SUM")], [_agg("AVG")]
    feedback, tool = ['assessment.type = "feedback"'], ['span.type = "TOOL"']
    rows: list[tuple[str, str, list[dict[str, Any]], list[str], bool, list[str]]] = [
        ("TRACES", "trace_count", count, ["trace_status"], True, []),
        ("TRACES", "latency", pct, [], True, []),
        ("TRACES", "latency", avg, [], False, []),
        ("TRACES", "input_tokens", total, [], True, []),
        ("TRACES", "output_tokens", total, [], True, []),
        ("TRACES", "cache_read_input_tokens", total, [], True, []),
        ("TRACES", "cache_creation_input_tokens", total, [], True, []),
        ("TRACES", "total_tokens", total + avg, [], False, []),
        ("TRACES", "total_tokens", pct, [], True, []),
        ("SPANS", "total_cost", total, ["span_model_name"], False, []),
        ("SPANS", "total_cost", total, ["span_model_name"], True, []),
        ("ASSESSMENTS", "assessment_value", avg, ["assessment_name"], True, feedback),
        ("ASSESSMENTS", "assessment_count", count, ["assessment_name", "assessment_value"],
         False, feedback),
        ("SPANS", "span_count", count, ["span_name", "span_status"], False, tool),
        ("SPANS", "latency", avg, [], False, tool),
        ("SPANS", "latency", avg, ["span_name"], False, tool),
        ("SPANS", "span_count", count, ["span_name"], True, tool),
        ("SPANS", "latency", avg, ["span_name"], True, tool),
        ("SPANS", "span_count", count, ["span_name", "span_status"], True, tool),
    ]  # fmt: skip
    bodies: dict[str, dict[str, Any]] = {}
    for view, metric, aggs, dims, bucketed, filters in rows:
        body: dict[str, Any] = {
            "experiment_ids": [experiment_id],
            "view_type": view,
            "metric_name": metric,
            "aggregations": aggs,
        }
        if bucketed:
            body["time_interval_seconds"] = interval
        body["start_time_ms"], body["end_time_ms"] = start, end
        if filters:
            body["filters"] = filters
        if dims:
            body["dimensions"] = dims
        bodies.setdefault(json.dumps(body, sort_keys=True), body)
    return list(bodies.values())


def time_service(
    client: httpx.Client, bodies: list[dict[str, Any]], repeat: int
) -> tuple[int, list[float], str | None]:
    """One warm-up pass, then ``repeat`` timed passes over the whole set (ms per pass)."""
    samples: list[float] = []
    for attempt in range(repeat + 1):
        started = time.perf_counter()
        for body in bodies:
            response = client.post(PATH, json=body)
            if response.status_code != 200:
                return response.status_code, samples, response.text[:300]
        if attempt:  # the first pass warms up
            samples.append((time.perf_counter() - started) * 1000)
    return 200, samples, None


def mlflow_plan(baseline: MlflowBaseline, bodies: list[dict[str, Any]]) -> BaselinePlan:
    """The same set through MLflow's store, argument for argument."""
    from mlflow.entities.trace_metrics import AggregationType, MetricAggregation, MetricViewType

    def call_for(body: dict[str, Any]) -> Any:
        aggregations = [
            MetricAggregation(AggregationType(a["aggregation_type"]), a.get("percentile_value"))
            for a in body["aggregations"]
        ]
        return lambda: baseline.store.query_trace_metrics(
            body["experiment_ids"],
            MetricViewType(body["view_type"]),
            body["metric_name"],
            aggregations,
            dimensions=body.get("dimensions"),
            filters=body.get("filters"),
            time_interval_seconds=body.get("time_interval_seconds"),
            start_time_ms=body.get("start_time_ms"),
            end_time_ms=body.get("end_time_ms"),
        )

    calls = [(f"{b['view_type']}.{b['metric_name']}", call_for(b)) for b in bodies]
    return BaselinePlan(calls, note=f"{len(bodies)} query_trace_metrics calls")
