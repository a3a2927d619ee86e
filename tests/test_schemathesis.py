"""Schemathesis over the service's own ``/openapi.json``, on SQLite and PostgreSQL.

Every operation of the schema is called with bodies generated from its request schema: valid
ones (``positive``) and ones that break it (``negative``), a bounded and seeded number of each,
so a run is deterministic. Valid bodies often get real experiment ids, tag keys, feedback and
tool names, windows and filters of the test data, so they reach the database, not only the
validation. Each response must:

* not be a server error (``not_a_server_error``),
* conform to the schema: a 200 to the operation's response model, an error to
  ``ErrorResponse``, MLflow's ``{"error_code", "message"[, "details"]}`` (checked by hand as
  well),
* for a body that breaks the schema, be a 4xx (``negative_data_rejection``).

Requests go through the conftest ``client`` (httpx over ASGI, in process); Hypothesis runs in a
worker thread and hands each request to the session's event loop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
)

from service.app import create_app
from service.models.correlations import CORRELATION_KINDS
from service.settings import Settings
from tests.conftest import Backend, InsightsClient, enabled_backends

MAX_EXAMPLES = 25  # per operation and generation mode
BASE_URL = "http://insights"

# MariaDB runs the same SQL strategies as SQLite; SQLite and PostgreSQL cover both drivers'
# parameter binding (aiosqlite, asyncpg) and keep the module's time reasonable.
BACKENDS = [name for name in enabled_backends() if name in ("sqlite", "postgresql")]
pytestmark = pytest.mark.parametrize("backend", BACKENDS, indirect=True, scope="session")

SCHEMA = schemathesis.openapi.from_dict(
    create_app(Settings(database_url="sqlite:///unused.db")).openapi()
)


def all_operations() -> list[APIOperation]:
    operations = []
    for result in SCHEMA.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the service's own schema does not load: fail loudly
        operations.append(result.ok())
    return operations


OPERATIONS = all_operations()
CASES = [
    pytest.param(operation.method.upper(), operation.path, mode, id=f"{operation.path}-{mode}")
    for operation in OPERATIONS
    # Operations without parameters or a body have nothing to break.
    for mode in (("positive", "negative") if operation.body else ("positive",))
]

# Values the test data has, so that generated bodies also reach the analytics SQL, and a few
# valid by the schema that no database can compare (NUL, a lone surrogate) or that look like
# LIKE patterns: the service must refuse or answer them, never fail.
TAG_KEYS = ["persona", "env", "team%_name", "customer_id", "mlflow.traceName", "team__name", "%"]
TAG_KEYS += ["a\x00b", "\ud800"]
FEEDBACK_NAMES = ["correctness", "relevance", "quality_score", "tone", "no_such_feedback", "_"]
FEEDBACK_NAMES += ["a\x00b"]
TOOL_NAMES = ["search_orders", "run_sql", "send_email", "", None, "no_such_tool", "%", "a\x00b"]
FILTERS = [
    None,
    "status = 'ERROR'",
    "tags.persona = 'admin'",
    "span.type = 'TOOL' AND span.status = 'ERROR'",
    "tags.`team%_name` LIKE '%\\_%'",
    "feedback.correctness = 'false'",
    "feedback.quality_score >= 4",
    "execution_time_ms > 2000",
    "name ILIKE '%chat%'",
    "tags.`%` = 'x'",
    "tags.persona LIKE 'adm\\'",
]
DIMENSIONS: list[dict[str, Any]] = [
    {"name": "status", "parameters": {"value": "ERROR"}},
    {"name": "span.type", "parameters": {"value": "TOOL"}},
    {"name": "span.name", "parameters": {"value": "search_orders"}},
    {"name": "latency", "parameters": {"threshold": 2000, "operator": ">"}},
    {"name": "tools.search_orders", "parameters": {"value": "error"}},
    {"name": "tags.persona", "parameters": {"value": "admin"}},
    {"name": "tags.team%_name", "parameters": {"value": "100%_club"}},
    {"name": "assessment.correctness", "parameters": {"value": "false"}},
    {"name": "assessment.quality_score", "parameters": {"threshold": 4, "operator": ">="}},
    {"name": "assessment.tone", "parameters": {"value": "friendly"}},
    {"name": "tags.persona", "parameters": {"value": "a\x00b"}},
    {"name": "span.name", "parameters": {"value": "\ud800"}},
]


TIMEZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]


def realistic(body: dict[str, Any], backend: Backend, data: st.DataObject) -> None:
    """Replace, each with some probability, generated values with ones the test data has.

    Hypothesis favours the simplest choice (0, False, the first element), so the simplest
    choice is the realistic one and a generated value is kept one time in four."""

    def keep_generated(label: str) -> bool:
        return data.draw(st.integers(0, 3), label=f"keep generated {label}") == 3

    ids = list(backend.dataset.experiment_ids.values())
    if not keep_generated("experiment_ids"):
        body["experiment_ids"] = data.draw(
            st.lists(st.sampled_from(ids), min_size=1, max_size=3, unique=True),
            label="experiment_ids",
        )
        if data.draw(st.integers(0, 7), label="add an id beyond 32 bits") == 7:
            body["experiment_ids"].append("2147483648")
    if not keep_generated("window"):
        start, end = backend.dataset.start_time_ms, backend.dataset.end_time_ms
        lower = data.draw(st.integers(start - 86_400_000, end), label="start_time")
        body["start_time"] = max(lower, 0)
        body["end_time"] = data.draw(st.integers(lower + 1, end + 86_400_000), label="end_time")
        if "time_bucket" in body:
            body["time_bucket"] = data.draw(st.sampled_from(["day", "hour", "week"]))
    replacements: list[tuple[str, list[Any]]] = [
        ("timezone", TIMEZONES),
        ("tag_key", TAG_KEYS),
        ("assessment_name", FEEDBACK_NAMES),
        ("tool_name", TOOL_NAMES),
        ("filter_string", FILTERS),
        ("dimension1", DIMENSIONS),
        ("dimension2", DIMENSIONS),
    ]
    for field, values in replacements:
        if field in body and not keep_generated(field):
            body[field] = data.draw(st.sampled_from(values), label=field)
    if "correlation_dimensions" in body:  # correlations: the slice is required
        if body.get("filter_string") is None:
            body["filter_string"] = "status = 'ERROR'"
        if not keep_generated("correlation_dimensions"):
            body["correlation_dimensions"] = data.draw(
                st.lists(st.sampled_from(CORRELATION_KINDS), min_size=1, unique=True),
                label="correlation_dimensions",
            )
        if not keep_generated("min_count"):
            body["min_count"] = data.draw(st.integers(0, 5), label="min_count")
    if "limit" in body and not keep_generated("limit"):
        body["limit"] = data.draw(st.integers(1, 20), label="limit")


def assert_mlflow_error(response: httpx.Response) -> None:
    """Every error is MLflow's ``{"error_code": str, "message": str}`` (+ optional details)."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict), response.text
    assert set(body) <= {"error_code", "message", "details"}, body
    assert isinstance(body.get("error_code"), str) and body["error_code"].isupper(), body
    assert isinstance(body.get("message"), str) and body["message"].strip(), body
    assert isinstance(body.get("details", {}), dict), body


def to_httpx(case: Case) -> dict[str, Any]:
    """The request schemathesis would send, as arguments of ``httpx.AsyncClient.request``."""
    prepared = case.as_transport_kwargs(base_url=BASE_URL)
    headers = {str(k): str(v) for k, v in prepared.get("headers", {}).items()}
    request: dict[str, Any] = {
        "method": prepared["method"],
        "url": prepared["url"],
        "params": prepared.get("params") or None,
        "headers": headers,
    }
    if "json" in prepared:
        # json.dumps escapes lone surrogates; httpx's own encoder would fail on them.
        request["content"] = json.dumps(prepared["json"]).encode()
        headers.setdefault("Content-Type", "application/json")
    elif prepared.get("data") is not None:
        data = prepared["data"]
        request["content"] = data if isinstance(data, bytes) else str(data).encode()
    return request


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
async def test_operation_never_fails_and_keeps_its_contract(
    client: InsightsClient, backend: Backend, method: str, path: str, mode: str
) -> None:
    operation = SCHEMA[path][method]
    generation_mode = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    checks = [not_a_server_error, response_schema_conformance]
    if generation_mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)
    loop = asyncio.get_running_loop()
    seen: dict[int, int] = {}

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=generation_mode), data=st.data())
    def run(case: Case, data: st.DataObject) -> None:
        if generation_mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            realistic(case.body, backend, data)
        request = to_httpx(case)
        response = asyncio.run_coroutine_threadsafe(client.http.request(**request), loop).result(
            timeout=120
        )
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert_mlflow_error(response)
        case.validate_response(response, checks=checks)

    await asyncio.to_thread(run)
    if generation_mode is GenerationMode.NEGATIVE:
        assert all(400 <= status < 500 for status in seen), seen
    assert sum(seen.values()) > 0
