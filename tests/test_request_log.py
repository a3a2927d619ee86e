"""One structured log line per request; the request id is echoed; no SQL reaches a client."""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import API, Backend, InsightsClient


async def test_one_structured_line_per_request(
    client: InsightsClient, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    body = {"experiment_ids": [backend.experiment_id()]}
    response = await client.http.post(
        f"{API}/traffic-cost/volume", json=body, headers={"X-Request-ID": "req-42"}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "POST"
    assert line["path"] == f"{API}/traffic-cost/volume"
    assert line["status"] == 200
    assert line["request_id"] == "req-42"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0


async def test_made_up_request_id_when_the_callers_is_unusable(client: InsightsClient) -> None:
    response = await client.http.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    generated = response.headers["x-request-id"]
    assert generated != "bad id\twith spaces" and len(generated) == 32


async def test_errors_log_details_but_answer_without_them(
    client: InsightsClient,
    backend: Backend,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected failure answers 500 INTERNAL_ERROR; the stack trace goes to the log."""
    body = {"experiment_ids": [backend.experiment_id()], "filter_string": "status = 'OK'"}
    caplog.set_level(logging.ERROR, logger="service.errors")
    # A statement the database rejects (not a timeout or outage) is an internal error.
    from service.queries import traffic

    async def broken(*args: object, **kwargs: object) -> object:
        from sqlalchemy import text

        session = args[0]
        await session.execute(text("SELECT no_such_column FROM trace_info"))  # type: ignore[attr-defined]
        raise AssertionError("unreachable")

    monkeypatch.setattr(traffic, "volume", broken)
    response = await client.http.post(f"{API}/traffic-cost/volume", json=body)
    assert response.status_code == 500
    payload = response.json()
    assert payload["error_code"] == "INTERNAL_ERROR"
    assert "no_such_column" not in response.text and "SELECT" not in response.text
    assert "no_such_column" in caplog.text
