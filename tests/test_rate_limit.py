"""Rate limiting: N insights requests per minute per caller, on an injected clock (no sleep)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.demo.generate import build_tracking_db
from service.http.rate_limit import RateLimiter
from service.settings import Settings
from tests.conftest import AJAX_API, API

VOLUME = f"{API}/traffic-cost/volume"
LIMIT = 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(database URL, experiment id) of a small tracking DB."""
    path: Path = tmp_path_factory.mktemp("ratelimit") / "mlflow.db"
    dataset = build_tracking_db(f"sqlite:///{path}", n_traces=20, days=2, seed=1)
    return f"sqlite:///{path}", dataset.experiment_ids["support-agent"]


@asynccontextmanager
async def running(
    app: FastAPI, client: tuple[str, int] = ("10.0.0.1", 40000)
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=client)
    async with httpx.AsyncClient(transport=transport, base_url="http://insights") as http:
        yield http


@pytest.fixture
async def limited(small_db: tuple[str, str]) -> AsyncIterator[tuple[FastAPI, FakeClock]]:
    """A fresh app limited to LIMIT requests per minute, on a clock the test moves."""
    app = create_app(Settings(database_url=small_db[0], rate_limit_per_minute=LIMIT))
    clock = FakeClock()
    limiter: RateLimiter = app.state.rate_limiter
    limiter.clock = clock
    async with app.router.lifespan_context(app):
        yield app, clock


def body(small_db: tuple[str, str]) -> dict[str, list[str]]:
    return {"experiment_ids": [small_db[1]]}


def basic(user: str, password: str = "pw") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def assert_limited(response: httpx.Response, retry_after: int) -> str:
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == str(retry_after)
    payload = response.json()
    assert payload["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    message: str = payload["message"]
    assert f"{LIMIT} requests per minute" in message
    assert f"retry in {retry_after} s" in message
    return message


async def test_fourth_request_in_a_minute_is_refused(
    limited: tuple[FastAPI, FakeClock], small_db: tuple[str, str]
) -> None:
    app, _clock = limited
    async with running(app) as http:
        for _ in range(LIMIT):
            response = await http.post(VOLUME, json=body(small_db))
            assert response.status_code == 200, response.text
        message = assert_limited(await http.post(VOLUME, json=body(small_db)), 20)
        assert "10.0.0.1" in message


async def test_other_callers_are_unaffected(
    limited: tuple[FastAPI, FakeClock], small_db: tuple[str, str]
) -> None:
    app, _clock = limited
    async with running(app) as http:
        for _ in range(LIMIT):
            await http.post(VOLUME, json=body(small_db), headers=basic("alice"))
        message = assert_limited(
            await http.post(VOLUME, json=body(small_db), headers=basic("alice")), 20
        )
        assert "'alice'" in message
        # Same address, another user; and alice's name with a wrong password gets its own bucket,
        # so nobody can use up alice's requests by guessing.
        for headers in (basic("bob"), basic("alice", "guess")):
            response = await http.post(VOLUME, json=body(small_db), headers=headers)
            assert response.status_code == 200, response.text
        # The address itself has not been counted while users were named.
        response = await http.post(VOLUME, json=body(small_db))
        assert response.status_code == 200, response.text
    async with running(app, client=("10.0.0.2", 40000)) as other:
        response = await other.post(VOLUME, json=body(small_db))
        assert response.status_code == 200, response.text


async def test_both_prefixes_share_the_callers_budget(
    limited: tuple[FastAPI, FakeClock], small_db: tuple[str, str]
) -> None:
    app, _clock = limited
    async with running(app) as http:
        for i in range(LIMIT):
            prefix = API if i % 2 else AJAX_API
            response = await http.post(f"{prefix}/traffic-cost/volume", json=body(small_db))
            assert response.status_code == 200, response.text
        assert_limited(await http.post(f"{AJAX_API}/traffic-cost/errors", json=body(small_db)), 20)


async def test_budget_refills_with_time(
    limited: tuple[FastAPI, FakeClock], small_db: tuple[str, str]
) -> None:
    app, clock = limited
    async with running(app) as http:
        for _ in range(LIMIT):
            await http.post(VOLUME, json=body(small_db))
        clock.advance(5)
        assert_limited(await http.post(VOLUME, json=body(small_db)), 15)
        clock.advance(15)  # one request's worth (60 s / 3) since the bucket emptied
        assert (await http.post(VOLUME, json=body(small_db))).status_code == 200
        assert_limited(await http.post(VOLUME, json=body(small_db)), 20)
        clock.advance(60)  # a minute idle: the full burst again
        for _ in range(LIMIT):
            assert (await http.post(VOLUME, json=body(small_db))).status_code == 200


async def test_operations_endpoints_are_never_limited(
    limited: tuple[FastAPI, FakeClock], small_db: tuple[str, str]
) -> None:
    app, _clock = limited
    async with running(app) as http:
        for _ in range(LIMIT):
            await http.post(VOLUME, json=body(small_db))
        assert (await http.post(VOLUME, json=body(small_db))).status_code == 429
        for _ in range(3 * LIMIT):
            assert (await http.get("/health")).status_code == 200
            assert (await http.get("/ready")).status_code == 200


async def test_zero_means_unlimited(small_db: tuple[str, str]) -> None:
    app = create_app(Settings(database_url=small_db[0], rate_limit_per_minute=0))
    assert not hasattr(app.state, "rate_limiter")
    async with app.router.lifespan_context(app), running(app) as http:
        for _ in range(5 * LIMIT):
            response = await http.post(VOLUME, json=body(small_db))
            assert response.status_code == 200, response.text


async def test_retry_after_is_a_whole_second_at_least(small_db: tuple[str, str]) -> None:
    app = create_app(Settings(database_url=small_db[0], rate_limit_per_minute=120))
    app.state.rate_limiter.clock = FakeClock()  # a token every 0.5 s, and time stands still
    async with app.router.lifespan_context(app), running(app) as http:
        for _ in range(120):
            # Bad requests count too (and need no database to answer).
            assert (await http.post(VOLUME, content=b"{}")).status_code == 400
        response = await http.post(VOLUME, json=body(small_db))
        assert response.status_code == 429, response.text
        assert response.headers["Retry-After"] == "1"
        assert response.json()["details"] == {"limit_per_minute": 120, "retry_after_seconds": 1}


def test_idle_callers_are_forgotten() -> None:
    clock = FakeClock()
    limiter = RateLimiter(LIMIT, clock=clock)
    for i in range(1000):
        limiter.acquire(f"caller-{i}")
    assert len(limiter) == 1000
    clock.advance(60)  # all full again: nothing worth remembering
    limiter.acquire("new")
    assert len(limiter) == 1


def test_memory_is_capped_even_under_a_crowd() -> None:
    clock = FakeClock()
    limiter = RateLimiter(LIMIT, max_callers=100, clock=clock)
    for i in range(1000):
        limiter.acquire(f"caller-{i}")
    assert len(limiter) == 100
    # The most recent callers are the ones remembered.
    for _ in range(LIMIT - 1):
        assert limiter.acquire("caller-999") is None
    assert limiter.acquire("caller-999") is not None


def test_limit_below_one_is_rejected() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
