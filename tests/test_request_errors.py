"""Every request error of API.md §3 that applies to the traffic endpoints, in MLflow's shape."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import API, Backend, InsightsClient

ENDPOINTS = ["traffic-cost/volume", "traffic-cost/latency", "traffic-cost/errors"]


def bad_bodies(exp: str) -> list[tuple[Any, str]]:
    """(body, a word the error message must contain so the user knows what to fix)."""
    return [
        ({}, "experiment_ids"),
        ({"experiment_ids": []}, "experiment_ids"),
        ({"experiment_ids": exp}, "experiment_ids"),
        ({"experiment_ids": [int(exp)]}, "experiment_ids"),
        ({"experiment_ids": ["abc"]}, "digits"),
        ({"experiment_ids": [exp], "unknown_field": 1}, "unknown_field"),
        ({"experiment_ids": [exp], "start_time": "yesterday"}, "start_time"),
        ({"experiment_ids": [exp], "start_time": 1.5}, "start_time"),
        ({"experiment_ids": [exp], "start_time": True}, "start_time"),
        ({"experiment_ids": [exp], "start_time": -1}, "start_time"),
        ({"experiment_ids": [exp], "end_time": 10**20}, "end_time"),
        ({"experiment_ids": [exp], "start_time": 10, "end_time": 10}, "end_time"),
        ({"experiment_ids": [exp], "start_time": 20, "end_time": 10}, "start_time"),
        ({"experiment_ids": [exp], "time_bucket": "minute"}, "time_bucket"),
        ({"experiment_ids": [exp], "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"experiment_ids": [exp], "timezone": 3}, "timezone"),
        ({"experiment_ids": [exp], "filter_string": 5}, "filter_string"),
        (
            {"experiment_ids": [exp], "start_time": 0, "end_time": 4_000_000_000_000},
            "buckets",
        ),
        ([exp], "JSON object"),
        ("text", "JSON object"),
    ]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_bad_requests_are_400_naming_the_problem(
    client: InsightsClient, backend: Backend, endpoint: str
) -> None:
    for body, word in bad_bodies(backend.experiment_id()):
        message = await client.error(endpoint, body, 400, "INVALID_PARAMETER_VALUE")
        assert word.lower() in message.lower(), (body, message)


async def test_malformed_json_is_400(client: InsightsClient) -> None:
    for raw_body in (b"{not json", b"", b'{"experiment_ids": ["1"]'):
        response = await client.http.post(f"{API}/traffic-cost/volume", content=raw_body)
        assert response.status_code == 400, response.text
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


async def test_form_encoded_json_body_is_read_as_json(
    client: InsightsClient, backend: Backend
) -> None:
    """`curl -d '{...}'` sends a form Content-Type; the body is still JSON."""
    response = await client.http.post(
        f"{API}/traffic-cost/volume",
        content=f'{{"experiment_ids": ["{backend.experiment_id()}"]}}'.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["summary"]["count"] > 0


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_unknown_experiments_are_404_naming_them(
    client: InsightsClient, backend: Backend, endpoint: str
) -> None:
    body = {"experiment_ids": [backend.experiment_id(), "987654", "123456789"]}
    message = await client.error(endpoint, body, 404, "RESOURCE_DOES_NOT_EXIST")
    assert "987654" in message and "123456789" in message
    assert backend.experiment_id() not in message.replace("987654", "").replace("123456789", "")


async def test_unknown_endpoint_and_wrong_method(client: InsightsClient) -> None:
    response = await client.http.post(f"{API}/traffic-cost/nothing", json={})
    assert response.status_code == 404
    assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    response = await client.http.get(f"{API}/traffic-cost/volume")
    assert response.status_code == 405
    assert set(response.json()) == {"error_code", "message"}


async def test_health_and_ready(client: InsightsClient) -> None:
    health = await client.http.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await client.http.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
