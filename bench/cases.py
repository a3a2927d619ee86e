"""Which requests to benchmark: every POST endpoint the running service lists in its OpenAPI,
with request bodies filled from the service's own discovery endpoints.

Endpoints are found at run time, so endpoints added later are benchmarked too. A body is the
common fields the endpoint's request schema accepts (experiments, window, time bucket) plus,
for the endpoints that need more, values picked from discovery (the busiest boolean, numeric
and string feedback names, the busiest tool and all tools, the tag key with the most values,
an NPMI pair, the slice ``status = 'ERROR'``). An unknown endpoint with other required fields
gets the examples of its schema; if the service refuses them, the case is reported as skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

#: Posts a JSON body to a path of the service and returns the response.
Post = Callable[[str, dict[str, Any]], httpx.Response]

API_PREFIX = "/api/3.0/mlflow/traces/insights/"
COMMON_FIELDS = ("experiment_ids", "start_time", "end_time", "time_bucket")


@dataclass(frozen=True)
class Endpoint:
    name: str  # path below the API prefix, e.g. "traffic-cost/volume"
    properties: dict[str, Any]
    required: tuple[str, ...]

    @property
    def path(self) -> str:
        return API_PREFIX + self.name


@dataclass
class Case:
    endpoint: Endpoint
    label: str
    extra: dict[str, Any] = field(default_factory=dict)
    # What the MLflow baseline needs to know (assessment type, MLflow filters, ...).
    baseline_params: dict[str, Any] = field(default_factory=dict)

    def body(self, experiment_ids: list[str], start: int, end: int, bucket: str) -> dict:
        common = {
            "experiment_ids": experiment_ids,
            "start_time": start,
            "end_time": end,
            "time_bucket": bucket,
        }
        body = {k: v for k, v in common.items() if k in self.endpoint.properties}
        return {**body, **self.extra}


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return components[ref.rsplit("/", 1)[1]] if ref else schema


def discover_endpoints(openapi: dict[str, Any]) -> list[Endpoint]:
    components = openapi.get("components", {}).get("schemas", {})
    endpoints = []
    for path, operations in openapi["paths"].items():
        post = operations.get("post")
        if not path.startswith(API_PREFIX) or post is None:
            continue
        content = post.get("requestBody", {}).get("content", {})
        schema = _resolve(content.get("application/json", {}).get("schema", {}), components)
        endpoints.append(
            Endpoint(
                path[len(API_PREFIX) :],
                schema.get("properties", {}),
                tuple(schema.get("required", ())),
            )
        )
    return endpoints


def _example(prop: dict[str, Any]) -> Any:
    examples = prop.get("examples")
    return examples[0] if examples else prop.get("default")


def build_cases(
    post: Post,
    endpoints: list[Endpoint],
    experiment_ids: list[str],
    start: int,
    end: int,
) -> list[Case]:
    """Cases for every endpoint; parameters come from discovery over [start, end)."""
    by_name = {e.name: e for e in endpoints}

    def discovered(name: str) -> list[dict[str, Any]]:
        if name not in by_name:
            return []
        case = Case(by_name[name], name)
        response = post(case.endpoint.path, case.body(experiment_ids, start, end, "day"))
        response.raise_for_status()
        return list(response.json().get("data", []))

    assessments = discovered("assessments/discovery")
    tools = discovered("tools/discovery")
    tags = discovered("tags/discovery")
    dimensions = discovered("dimensions/discovery")

    cases: list[Case] = []
    for endpoint in endpoints:
        name = endpoint.name
        if name == "assessments/metrics":
            for kind in ("boolean", "numeric", "string"):
                typed = [a for a in assessments if a.get("assessment_type") == kind]
                if typed:
                    top = max(typed, key=lambda a: a["trace_count"])
                    cases.append(Case(
                        endpoint, f"{name} ({kind}: {top['assessment_name']})",
                        {"assessment_name": top["assessment_name"]},
                        {"assessment_type": kind, "assessment_name": top["assessment_name"]},
                    ))  # fmt: skip
        elif name == "tools/metrics" and tools:
            top = max(tools, key=lambda t: t["invocation_count"])
            cases.append(
                Case(
                    endpoint,
                    f"{name} ({top['tool_name']})",
                    {"tool_name": top["tool_name"]},
                    {"tool_name": top["tool_name"]},
                )
            )
            cases.append(Case(endpoint, f"{name} (all tools)", {"tool_name": None}))
        elif name == "tags/metrics" and tags:
            widest = max(tags, key=lambda t: t["unique_values"])
            cases.append(
                Case(
                    endpoint,
                    f"{name} ({widest['tag_key']}, {widest['unique_values']} values)",
                    {"tag_key": widest["tag_key"]},
                )
            )
        elif name == "dimensions/calculate-npmi":
            cases.append(_npmi_case(endpoint, dimensions, tools))
        elif name == "correlations":
            slice_filter = "status = 'ERROR'"
            cases.append(
                Case(
                    endpoint,
                    f"{name} ({slice_filter})",
                    {"filter_string": slice_filter},
                    {"filter_string": slice_filter},
                )
            )
        else:
            missing = [f for f in endpoint.required if f not in COMMON_FIELDS]
            extra = {f: _example(endpoint.properties[f]) for f in missing}
            cases.append(Case(endpoint, name, extra))
    return cases  # fmt: skip


def _npmi_case(endpoint: Endpoint, dimensions: list[dict[str, Any]], tools: list[dict]) -> Case:
    """status = ERROR against the busiest tool being used (the question NPMI answers most)."""
    names = {d["name"] for d in dimensions}
    tool = max(tools, key=lambda t: t["invocation_count"])["tool_name"] if tools else None
    second: dict[str, Any]
    if tool and f"tools.{tool}" in names:
        second = {"name": f"tools.{tool}", "parameters": {"value": "used"}}
        mlflow_filter = f"span.type = 'TOOL' AND span.name = '{tool}'"
    else:
        second = {"name": "span.type", "parameters": {"value": "TOOL"}}
        mlflow_filter = "span.type = 'TOOL'"
    extra = {
        "dimension1": {"name": "status", "parameters": {"value": "ERROR"}},
        "dimension2": second,
    }
    return Case(
        endpoint,
        f"{endpoint.name} (status=ERROR x {second['name']})",
        extra,
        {"mlflow_filter1": "status = 'ERROR'", "mlflow_filter2": mlflow_filter},
    )
