"""Every endpoint's JSON equals the golden capture byte for byte, on every database.

The capture (``tests/golden/answers.jsonl.gz``) was taken from the service before the code was
reorganised; moving code must not change an answer. Regenerate it only for a change that means
to alter answers: ``python -m tests.golden capture``.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import Backend, InsightsClient
from tests.golden.__main__ import assert_equals_golden
from tests.golden.requests import collect


async def test_every_answer_equals_the_golden_capture(
    backend: Backend, client: InsightsClient
) -> None:
    async def post(endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = await client.post(endpoint, body)
        return response.status_code, response.json()

    ds = backend.dataset
    ids = sorted(ds.experiment_ids.values(), key=int)
    actual = await collect(post, ids, ds.start_time_ms, ds.end_time_ms)
    assert_equals_golden(actual)
