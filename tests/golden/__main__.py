"""``python -m tests.golden capture``: rebuild the golden answers from a fresh SQLite dataset."""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from service.app import create_app
from service.demo.generate import build_tracking_db
from service.settings import Settings
from tests.golden.requests import collect

ANSWERS = Path(__file__).with_name("answers.jsonl.gz")
API = "/api/3.0/mlflow/traces/insights"


def dump(answers: dict[str, Any]) -> bytes:
    """One ``[key, status, json]`` line per answer, sorted by key; gzip without a timestamp, so
    the same answers always give the same bytes."""
    lines = (json.dumps([key, *answers[key]], sort_keys=True) + "\n" for key in sorted(answers))
    return gzip.compress("".join(lines).encode(), mtime=0)


def load() -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for line in gzip.decompress(ANSWERS.read_bytes()).decode().splitlines():
        key, status, payload = json.loads(line)
        answers[key] = [status, payload]
    return answers


async def capture(uri: str, experiment_ids: list[str], start: int, end: int) -> dict[str, Any]:
    app = create_app(Settings(database_url=uri))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://insights") as http:

            async def post(endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
                response = await http.post(f"{API}/{endpoint}", json=body)
                return response.status_code, response.json()

            return await collect(post, experiment_ids, start, end)


def assert_equals_golden(actual: dict[str, Any]) -> dict[str, Any]:
    """Every answer of ``actual`` equals the capture's, byte for byte; returns the capture."""
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
    assert not differing, f"{len(differing)} answers differ, first: {differing[0]}\n" + (
        f"golden: {json.dumps(golden[differing[0]])[:2000]}\n"
        f"actual: {json.dumps(actual[differing[0]])[:2000]}"
    )
    return golden


def main() -> None:
    from tests.conftest import N_TRACES, SEED

    if sys.argv[1:] != ["capture"]:
        sys.exit("usage: python -m tests.golden capture")
    with tempfile.TemporaryDirectory() as tmp:
        ds = build_tracking_db(f"sqlite:///{tmp}/mlflow.db", n_traces=N_TRACES, days=14, seed=SEED)
        ids = sorted(ds.experiment_ids.values(), key=int)
        answers = asyncio.run(capture(ds.tracking_uri, ids, ds.start_time_ms, ds.end_time_ms))
    ANSWERS.write_bytes(dump(answers))
    print(f"wrote {len(answers)} answers to {ANSWERS}")


if __name__ == "__main__":
    main()
