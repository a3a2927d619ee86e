"""Access control against a real ``mlflow server --app-name basic-auth`` (no mocks of MLflow).

One tracking server per module, over a small SQLite tracking DB; its auth DB grants alice READ
on experiment A only and bob nothing (``default_permission = NO_PERMISSIONS``). The service runs
in-process and asks that server, with the caller's credentials, before answering.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from service.app import create_app
from service.demo.generate import build_tracking_db
from service.http.access import AccessChecker, requested_experiment_ids
from service.http.body import TOO_LARGE_MESSAGE
from service.settings import Settings
from tests.conftest import AJAX_API, API, assert_error, serve
from tests.mlflow_server import MlflowServer, start_mlflow_server, wait_until_up

ADMIN = ("admin", "admin-pass-1234")
ALICE = ("alice", "alice-pass-1234")
BOB = ("bob", "bob-pass-1234")
VOLUME = f"{API}/traffic-cost/volume"


@dataclass
class TrackingServer(MlflowServer):
    db_uri: str
    exp_a: str  # alice may read it
    exp_b: str  # alice may not


def set_up_users(server: TrackingServer) -> None:
    """alice: READ on A only; bob: nothing. Through MLflow's own REST API, as admin."""
    with httpx.Client(base_url=server.url, auth=ADMIN, timeout=30) as admin:
        for name, password in (ALICE, BOB):
            created = admin.post(
                "/api/2.0/mlflow/users/create", json={"username": name, "password": password}
            )
            assert created.status_code == 200, created.text
        # MLflow 3.17 grants per-user permissions here (the 2.x experiments/permissions/create
        # route is gone).
        grant = {
            "username": ALICE[0],
            "resource_type": "experiment",
            "resource_id": server.exp_a,
            "permission": "READ",
        }
        granted = admin.post("/api/3.0/mlflow/users/permissions/grant", json=grant)
        assert granted.status_code == 200, granted.text


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    workdir = tmp_path_factory.mktemp("basic_auth")
    db_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    dataset = build_tracking_db(db_uri, n_traces=20, days=2, seed=1)
    config = workdir / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{workdir / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN[0]}\n"
        f"admin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # MLflow's own credential cache: skips re-hashing a good password on every request.
        "auth_cache_ttl_seconds = 300\n"
    )
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "insights-test-secret",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        env.pop(name, None)
    started = start_mlflow_server(db_uri, workdir, extra_args=("--app-name", "basic-auth"), env=env)
    server = TrackingServer(
        url=started.url,
        process=started.process,
        log_path=started.log_path,
        db_uri=db_uri,
        exp_a=dataset.experiment_ids["support-agent"],
        exp_b=dataset.experiment_ids["sql-copilot"],
    )
    try:
        wait_until_up(server)
        set_up_users(server)
        yield server
    finally:
        server.stop()


def secured_app(server: TrackingServer, **settings: Any) -> FastAPI:
    # Password hashing makes a busy CI machine's MLflow slow to answer: a generous timeout.
    settings.setdefault("auth_timeout_seconds", 120.0)
    return create_app(
        Settings(database_url=server.db_uri, auth_tracking_uri=server.url, **settings)
    )


def checker_of(app: FastAPI) -> AccessChecker:
    checker: AccessChecker = app.state.access_checker
    return checker


@pytest.fixture(scope="module")
def service_app(tracking_server: TrackingServer) -> FastAPI:
    return secured_app(tracking_server)


@pytest.fixture(scope="module")
async def service(service_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(service_app) as http:
        yield http


@pytest.fixture(scope="module")
def app_checker(service_app: FastAPI) -> AccessChecker:
    return checker_of(service_app)


def raw_counts(server: TrackingServer, experiment_id: str) -> tuple[int, int, int]:
    """(traces, ok, error) of one experiment, straight from the tracking DB."""
    engine = sa.create_engine(server.db_uri)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT COUNT(*), "
                    "SUM(CASE WHEN status = 'OK' THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN status = 'ERROR' THEN 1 ELSE 0 END) "
                    "FROM trace_info WHERE experiment_id = :e"
                ),
                {"e": int(experiment_id)},
            ).one()
    finally:
        engine.dispose()
    return int(row[0]), int(row[1] or 0), int(row[2] or 0)


# ----------------------------------------------------------------------------- authentication


async def test_no_credentials_is_unauthenticated(
    service: httpx.AsyncClient, tracking_server: TrackingServer
) -> None:
    response = await service.post(VOLUME, json={"experiment_ids": [tracking_server.exp_a]})
    assert_error(response, 401, "UNAUTHENTICATED")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'


async def test_wrong_password_is_unauthenticated(
    service: httpx.AsyncClient, tracking_server: TrackingServer
) -> None:
    body = {"experiment_ids": [tracking_server.exp_a]}
    response = await service.post(VOLUME, json=body, auth=(ALICE[0], "not-her-password"))
    assert_error(response, 401, "UNAUTHENTICATED")
    assert response.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'
    response = await service.post(VOLUME, json=body, auth=("mallory", "whatever-1234"))
    assert_error(response, 401, "UNAUTHENTICATED")


async def test_ajax_prefix_and_form_bodies_are_checked_too(
    service: httpx.AsyncClient, tracking_server: TrackingServer
) -> None:
    body = {"experiment_ids": [tracking_server.exp_a]}
    response = await service.post(f"{AJAX_API}/traffic-cost/volume", json=body)
    assert_error(response, 401, "UNAUTHENTICATED")
    # curl -d sends JSON as a form; the route reads it as JSON, so the check must too.
    response = await service.post(
        VOLUME,
        content=json.dumps(body),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_error(response, 401, "UNAUTHENTICATED")


async def test_operations_endpoints_are_not_checked(service: httpx.AsyncClient) -> None:
    for path in ("/health", "/ready", "/openapi.json", "/docs"):
        response = await service.get(path)
        assert response.status_code == 200, (path, response.text)


async def test_malformed_bodies_reach_the_route(service: httpx.AsyncClient) -> None:
    """No experiment_ids to check: the route itself answers its 400."""
    for content in (b"{not json", b"{}", b'{"experiment_ids": "1"}', b'["1"]'):
        response = await service.post(VOLUME, content=content)
        assert_error(response, 400, "INVALID_PARAMETER_VALUE")


# ----------------------------------------------------------------------------- authorization


async def test_alice_reads_her_experiment_with_the_right_numbers(
    service: httpx.AsyncClient, tracking_server: TrackingServer
) -> None:
    response = await service.post(
        VOLUME, json={"experiment_ids": [tracking_server.exp_a]}, auth=ALICE
    )
    assert response.status_code == 200, response.text
    count, ok, error = raw_counts(tracking_server, tracking_server.exp_a)
    assert count > 0
    assert response.json()["summary"] == {"count": count, "ok_count": ok, "error_count": error}


async def test_ids_are_checked_in_the_form_the_route_reads_them(
    service: httpx.AsyncClient, tracking_server: TrackingServer
) -> None:
    """'007' is experiment 7 to the route, so it is experiment 7 that MLflow is asked about."""
    padded_a = tracking_server.exp_a.zfill(3)
    response = await service.post(VOLUME, json={"experiment_ids": [padded_a]}, auth=ALICE)
    assert response.status_code == 200, response.text
    padded_b = tracking_server.exp_b.zfill(3)
    response = await service.post(VOLUME, json={"experiment_ids": [padded_b]}, auth=ALICE)
    assert_error(response, 403, "PERMISSION_DENIED")


async def test_alice_may_not_read_b(
    service: httpx.AsyncClient, tracking_server: TrackingServer
) -> None:
    b = tracking_server.exp_b
    response = await service.post(VOLUME, json={"experiment_ids": [b]}, auth=ALICE)
    message = assert_error(response, 403, "PERMISSION_DENIED")
    assert f"'{b}'" in message and "alice" in message
    assert response.json()["details"] == {"experiment_ids": [b]}


async def test_one_forbidden_experiment_forbids_the_request(
    service: httpx.AsyncClient, tracking_server: TrackingServer
) -> None:
    a, b = tracking_server.exp_a, tracking_server.exp_b
    response = await service.post(VOLUME, json={"experiment_ids": [a, b]}, auth=ALICE)
    message = assert_error(response, 403, "PERMISSION_DENIED")
    assert f"'{b}'" in message and f"'{a}'" not in message


async def test_bob_may_read_nothing(
    service: httpx.AsyncClient, tracking_server: TrackingServer
) -> None:
    a = tracking_server.exp_a
    response = await service.post(VOLUME, json={"experiment_ids": [a]}, auth=BOB)
    message = assert_error(response, 403, "PERMISSION_DENIED")
    assert f"'{a}'" in message


async def test_admin_reads_everything(
    service: httpx.AsyncClient, tracking_server: TrackingServer
) -> None:
    a, b = tracking_server.exp_a, tracking_server.exp_b
    response = await service.post(VOLUME, json={"experiment_ids": [a, b]}, auth=ADMIN)
    assert response.status_code == 200, response.text
    expected = sum(raw_counts(tracking_server, e)[0] for e in (a, b))
    assert response.json()["summary"]["count"] == expected


async def test_unknown_experiment_is_answered_by_the_service(
    service: httpx.AsyncClient,
) -> None:
    """MLflow says 404 to the admin: the request goes on and the service names the experiment."""
    response = await service.post(VOLUME, json={"experiment_ids": ["987654"]}, auth=ADMIN)
    message = assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST")
    assert "987654" in message


# ----------------------------------------------------------------------------- cache


async def test_second_identical_request_is_answered_from_the_cache(
    service: httpx.AsyncClient, tracking_server: TrackingServer, app_checker: AccessChecker
) -> None:
    # A cookie the server ignores makes these credentials new to the cache.
    cookies = {"insights-test": "cache"}
    body = {"experiment_ids": [tracking_server.exp_a]}
    sent, hits = app_checker.stats.sent, app_checker.stats.cache_hits
    first = await service.post(VOLUME, json=body, auth=ALICE, headers=_cookie(cookies))
    assert first.status_code == 200, first.text
    assert app_checker.stats.sent == sent + 1
    second = await service.post(VOLUME, json=body, auth=ALICE, headers=_cookie(cookies))
    assert second.json() == first.json()
    assert app_checker.stats.sent == sent + 1  # MLflow was not asked again
    assert app_checker.stats.cache_hits == hits + 1


async def test_a_burst_costs_one_check_per_experiment(
    service: httpx.AsyncClient, tracking_server: TrackingServer, app_checker: AccessChecker
) -> None:
    headers = _cookie({"insights-test": "burst"})
    body = {"experiment_ids": [tracking_server.exp_a, tracking_server.exp_b]}
    sent = app_checker.stats.sent
    responses = await asyncio.gather(
        *(service.post(VOLUME, json=body, auth=ADMIN, headers=headers) for _ in range(6))
    )
    assert [r.status_code for r in responses] == [200] * 6
    assert app_checker.stats.sent == sent + 2


async def test_denials_are_cached_and_unknown_experiments_are_not(
    service: httpx.AsyncClient, tracking_server: TrackingServer, app_checker: AccessChecker
) -> None:
    headers = _cookie({"insights-test": "negative"})
    sent = app_checker.stats.sent
    for _ in range(2):
        response = await service.post(
            VOLUME, json={"experiment_ids": [tracking_server.exp_b]}, auth=BOB, headers=headers
        )
        assert_error(response, 403, "PERMISSION_DENIED")
    assert app_checker.stats.sent == sent + 1
    # An experiment MLflow does not know may be created any moment: asked about every time.
    for _ in range(2):
        response = await service.post(
            VOLUME, json={"experiment_ids": ["987654"]}, auth=ADMIN, headers=headers
        )
        assert_error(response, 404, "RESOURCE_DOES_NOT_EXIST")
    assert app_checker.stats.sent == sent + 3


async def test_cache_is_bounded(tracking_server: TrackingServer) -> None:
    app = secured_app(tracking_server, auth_cache_max_entries=2)
    async with serve(app) as http:
        for i in range(4):
            response = await http.post(
                VOLUME,
                json={"experiment_ids": [tracking_server.exp_a]},
                auth=ALICE,
                headers=_cookie({"n": str(i)}),
            )
            assert response.status_code == 200, response.text
        assert len(checker_of(app).cache) == 2


async def test_rate_limit_answers_before_anyone_asks_mlflow(
    tracking_server: TrackingServer,
) -> None:
    app = secured_app(tracking_server, rate_limit_per_minute=1)
    async with serve(app) as http:
        body = {"experiment_ids": [tracking_server.exp_a]}
        assert (await http.post(VOLUME, json=body, auth=ALICE)).status_code == 200
        sent = checker_of(app).stats.sent
        response = await http.post(VOLUME, json=body, auth=ALICE)
        assert_error(response, 429, "REQUEST_LIMIT_EXCEEDED")
        assert checker_of(app).stats.sent == sent


def test_request_bodies_name_the_experiments_the_route_reads() -> None:
    assert requested_experiment_ids(b'{"experiment_ids": ["1", "007", "1"]}') == ["1", "7", "1"]
    assert requested_experiment_ids(b'{"experiment_ids": [3, true, "x"]}') == ["3"]
    for body in (b"", b"[]", b"{}", b'{"experiment_ids": []}', b'{"experiment_ids": ["a"]}'):
        assert requested_experiment_ids(body) is None
    # Ids no SQL database can hold name no experiment: the route answers their 400.
    assert requested_experiment_ids(b'{"experiment_ids": ["99999999999999999999"]}') is None


async def test_oversized_body_is_refused_before_buffering_it(
    service: httpx.AsyncClient, app_checker: AccessChecker
) -> None:
    sent = app_checker.stats.sent
    # By its Content-Length, before a byte is read.
    response = await service.post(VOLUME, content=b" " * (1024 * 1024 + 1))
    message = assert_error(response, 400, "INVALID_PARAMETER_VALUE")
    # The body reader's one message, the same as without access control (test_hostile_input).
    assert message == TOO_LARGE_MESSAGE and "1 MiB" in message

    # Chunked, without a Content-Length: refused once the bytes received pass the limit.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * (512 * 1024)
        yield json.dumps({"experiment_ids": ["1"]}).encode()

    response = await service.post(VOLUME, content=chunks())
    assert assert_error(response, 400, "INVALID_PARAMETER_VALUE") == TOO_LARGE_MESSAGE
    assert app_checker.stats.sent == sent  # nobody asked MLflow about an unread body


# ----------------------------------------------------------------------------- unreachable
# Last in the module: it stops the shared tracking server.


async def test_tracking_server_stopped_is_temporarily_unavailable(
    tracking_server: TrackingServer,
) -> None:
    body = {"experiment_ids": [tracking_server.exp_a]}
    app = secured_app(tracking_server, auth_cache_ttl_seconds=600)
    async with serve(app) as http:
        assert (await http.post(VOLUME, json=body, auth=ALICE)).status_code == 200
        tracking_server.stop()
        # Within the TTL a cached answer still serves; new credentials have to ask and cannot.
        assert (await http.post(VOLUME, json=body, auth=ALICE)).status_code == 200
        response = await http.post(VOLUME, json=body, auth=ADMIN)
        message = assert_error(response, 503, "TEMPORARILY_UNAVAILABLE")
        assert "retry" in message
    async with serve(secured_app(tracking_server)) as http:
        response = await http.post(VOLUME, json=body, auth=ALICE)
        assert_error(response, 503, "TEMPORARILY_UNAVAILABLE")
        assert (await http.get("/health")).status_code == 200


def _cookie(cookies: dict[str, str]) -> dict[str, str]:
    # Sent as a header, per request: httpx's per-request cookies= argument is deprecated.
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
