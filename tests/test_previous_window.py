"""compare_previous on the summary-bearing endpoints (API.md §9): previous_summary is the summary
of the window of the same length ending where the request's starts, computed here from the raw
rows, and equal to a second request made with that window."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from tests import oracle
from tests.conftest import Backend, InsightsClient
from tests.oracle import Raw, Trace, assert_close_json, load_raw
from tests.test_tokens_cost import expected_cost, expected_tokens

ENDPOINTS = [
    "traffic-cost/volume",
    "traffic-cost/latency",
    "traffic-cost/errors",
    "traffic-cost/tokens",
    "traffic-cost/cost",
]
PERSONA = "tags.persona = 'admin'"


@pytest.fixture(scope="module")
def rows(raw: sa.Connection) -> Raw:
    return load_raw(raw)


def second_half(backend: Backend) -> tuple[int, int]:
    """The dataset's second half: its previous window is the first half."""
    start, end = backend.dataset.start_time_ms, backend.dataset.end_time_ms
    return (start + end) // 2, end


def expected_summary(endpoint: str, rows: Raw, traces: dict[str, Trace]) -> dict[str, Any]:
    """The summary of ``endpoint`` over ``traces``, from the raw rows."""
    listed = list(traces.values())
    statuses = [t.status for t in listed]
    latencies = [float(t.execution_time_ms) for t in listed if t.execution_time_ms is not None]
    body: dict[str, Any] = {}  # an open window: only the summary is compared
    if endpoint == "traffic-cost/volume":
        return {
            "count": len(listed),
            "ok_count": statuses.count("OK"),
            "error_count": statuses.count("ERROR"),
        }
    if endpoint == "traffic-cost/latency":
        return {
            "count": len(latencies),
            **{f"p{q}_latency": oracle.percentile(latencies, q) for q in (50, 90, 95, 99)},
            "avg_latency": oracle.mean(latencies),
            "min_latency": min(latencies, default=None),
            "max_latency": max(latencies, default=None),
        }
    if endpoint == "traffic-cost/errors":
        errors = statuses.count("ERROR")
        return {
            "total_count": len(listed),
            "error_count": errors,
            "error_rate": oracle.rate(errors, len(listed)),
        }
    if endpoint == "traffic-cost/tokens":
        return expected_tokens(traces, body, "day", "UTC")["summary"]
    summary: dict[str, Any] = expected_cost(rows, traces, body, "day", "UTC")["summary"]
    return summary


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("filter_string", [None, PERSONA])
async def test_previous_summary_matches_raw_rows(
    client: InsightsClient, backend: Backend, rows: Raw, endpoint: str, filter_string: str | None
) -> None:
    ids = [backend.experiment_id(), backend.experiment_id("sql-copilot")]
    start, end = second_half(backend)
    body: dict[str, Any] = {
        "experiment_ids": ids,
        "start_time": start,
        "end_time": end,
        "time_bucket": "day",
        "timezone": "Europe/Berlin",
        "filter_string": filter_string,
        "compare_previous": True,
    }
    result = await client.ok(endpoint, body)

    def keep(t: Trace) -> bool:
        return filter_string is None or rows.tags_of(t.request_id).get("persona") == "admin"

    previous = rows.in_scope(ids, 2 * start - end, start, keep=keep)
    current = rows.in_scope(ids, start, end, keep=keep)
    assert len(previous) > (5 if filter_string else 50)
    assert_close_json(result["previous_summary"], expected_summary(endpoint, rows, previous))
    assert_close_json(result["summary"], expected_summary(endpoint, rows, current))
    # The current answer is the one without compare_previous, the previous one a second request.
    plain = {k: v for k, v in body.items() if k != "compare_previous"}
    alone = await client.ok(endpoint, plain)
    assert "previous_summary" not in alone
    assert {k: v for k, v in result.items() if k != "previous_summary"} == alone
    before = await client.ok(endpoint, {**plain, "start_time": 2 * start - end, "end_time": start})
    assert result["previous_summary"] == before["summary"]
    assert list(result)[:2] == ["summary", "previous_summary"]


async def test_previous_window_without_traces_has_zero_counts(
    client: InsightsClient, backend: Backend
) -> None:
    """The earliest day of data: the day before it holds no traces."""
    start = backend.dataset.start_time_ms
    body = {
        "experiment_ids": [backend.experiment_id()],
        "start_time": start,
        "end_time": start + 86_400_000,
        "compare_previous": True,
    }
    result = await client.ok("traffic-cost/volume", body)
    assert result["previous_summary"] == {"count": 0, "ok_count": 0, "error_count": 0}
    latency = await client.ok("traffic-cost/latency", body)
    assert latency["previous_summary"]["count"] == 0
    assert latency["previous_summary"]["p50_latency"] is None


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_compare_previous_needs_a_window(
    client: InsightsClient, backend: Backend, endpoint: str
) -> None:
    exp = [backend.experiment_id()]
    for body, word in [
        ({"experiment_ids": exp, "compare_previous": True}, "start_time and end_time"),
        ({"experiment_ids": exp, "compare_previous": True, "start_time": 5}, "end_time"),
        ({"experiment_ids": exp, "compare_previous": "yes"}, "compare_previous"),
        (
            {"experiment_ids": exp, "compare_previous": True, "start_time": 10, "end_time": 30},
            "1970",
        ),
    ]:
        message = await client.error(endpoint, body, 400, "INVALID_PARAMETER_VALUE")
        assert word in message, (body, message)


async def test_other_endpoints_refuse_compare_previous(
    client: InsightsClient, backend: Backend
) -> None:
    body = {"experiment_ids": [backend.experiment_id()], "compare_previous": True}
    message = await client.error("tags/discovery", body, 400, "INVALID_PARAMETER_VALUE")
    assert "compare_previous" in message
