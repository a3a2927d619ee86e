"""Every endpoint's JSON equals the golden capture byte for byte, on every database.

The capture (``tests/golden/answers.jsonl.gz``) was taken from the service before the code was
reorganised; moving code must not change an answer. Regenerate it only for a change that means
to alter answers: ``python -m tests.golden capture``.
"""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Backend, InsightsClient
from tests.golden.__main__ import load
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
    golden = load()
    assert sorted(actual) == sorted(golden), (
        f"the request set differs from the capture's: {sorted(set(actual) ^ set(golden))[:3]}"
    )
    # The capture is not vacuous: most answers carry data, some are refusals.
    assert sum(1 for status, _ in golden.values() if status == 200) > 2500
    differing = [
        key
        for key in sorted(golden)
        if json.dumps(actual[key], sort_keys=True) != json.dumps(golden[key], sort_keys=True)
    ]
    assert not differing, f"{len(differing)} answers changed, first: {differing[0]}\n" + (
        f"golden: {json.dumps(golden[differing[0]])[:2000]}\n"
        f"actual: {json.dumps(actual[differing[0]])[:2000]}"
    )
