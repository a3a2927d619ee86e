"""Every endpoint's JSON equals the golden capture byte for byte, on every database.

The capture (``tests/golden/answers.jsonl.gz``) was taken from the service before the code was
reorganised; moving code must not change an answer. Regenerate it only for a change that means
to alter answers: ``python -m tests.golden capture``.

Live, each database answers the whole request set. From the analytics store, each database's
store answers a third of it (``store_shares``), and the three thirds make up the whole set: a
store's statements are compiled for DuckDB whatever database it was copied from, so what one
store answers for a request another store holding the same rows answers alike; what the copy
holds is checked on each database by every other store test (``test_store_writes`` sends the
golden set of one experiment after every kind of write, on each). The requests a store does
not answer are replayed from the capture, so that the requests built from earlier answers
(names found by a discovery) are the same as in a whole run.
"""

from __future__ import annotations

import zlib
from typing import Any

from tests.conftest import ALL_BACKENDS, Backend, InsightsClient, enabled_backends
from tests.golden.__main__ import assert_equals_golden, load
from tests.golden.requests import collect, key_of


def _store_share(key: str) -> int:
    """Which third of the request set a request is in (crc32 of its key)."""
    return zlib.crc32(key.encode()) % len(ALL_BACKENDS)


def store_shares(backend: str) -> set[int]:
    """The thirds ``backend``'s store answers: its own, and those of databases left out of
    this run (``INSIGHTS_TEST_BACKENDS``), which the first one enabled takes."""
    enabled = enabled_backends()
    return {
        share
        for share, name in enumerate(ALL_BACKENDS)
        if name == backend or (name not in enabled and backend == enabled[0])
    }


def test_store_shares_cover_every_request_and_each_share_is_large() -> None:
    golden = load()
    sizes = [0] * len(ALL_BACKENDS)
    for key in golden:
        sizes[_store_share(key)] += 1
    assert sum(sizes) == len(golden)
    assert min(sizes) > len(golden) / 4, sizes
    owned = [store_shares(name) for name in enabled_backends()]
    assert set().union(*owned) == set(range(len(ALL_BACKENDS)))
    assert sum(len(shares) for shares in owned) == len(ALL_BACKENDS)


async def test_every_answer_equals_the_golden_capture(
    backend: Backend, client: InsightsClient
) -> None:
    golden = load() if client.path == "store" else {}
    shares = store_shares(backend.name)
    asked: set[str] = set()

    async def post(endpoint: str, body: dict[str, Any]) -> tuple[int, Any]:
        key = key_of(endpoint, body)
        if golden and _store_share(key) not in shares:
            status, payload = golden[key]
            return status, payload
        asked.add(key)
        response = await client.post(endpoint, body)
        return response.status_code, response.json()

    ds = backend.dataset
    ids = sorted(ds.experiment_ids.values(), key=int)
    actual = await collect(post, ids, ds.start_time_ms, ds.end_time_ms)
    assert_equals_golden(actual)
    if golden:
        assert asked == {key for key in golden if _store_share(key) in shares}
