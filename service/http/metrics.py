"""Prometheus metrics (``GET /metrics``): insights request durations per endpoint and answering
path, and the analytics store's lag, sync cycles, rows synced and sync errors.

One registry per app, so that several apps in one process (the tests) never share a series.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.answering_path import answer_of
from service.store.runner import FAILURE_KINDS, FailureKind, StoreStatus, now_ms
from service.store.sync import SyncStats

# Requests: from a cached store answer (ms) to a cold 30-day correlation (tens of seconds).
_REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Sync cycles: a steady-state cycle (tens of ms) to a first sync of a million traces (minutes).
_SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

UNKNOWN_ENDPOINT = "unknown"


class Metrics:
    def __init__(self, store_status: Callable[[], StoreStatus | None]) -> None:
        self.registry = CollectorRegistry()
        self._store_status = store_status
        self.request_seconds = Histogram(
            "insights_request_duration_seconds",
            "Duration of insights requests, by endpoint, answering path and HTTP status.",
            ["endpoint", "answered_by", "status"],
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        Gauge(
            "insights_store_lag_seconds",
            "How far the analytics store's copy is behind the tracking DB (NaN: no copy yet).",
            registry=self.registry,
        ).set_function(self._lag_seconds)
        Gauge(
            "insights_store_ready",
            "1 once the analytics store holds a whole copy of the tracking DB, else 0.",
            registry=self.registry,
        ).set_function(self._ready)
        self.sync_seconds = Histogram(
            "insights_store_sync_duration_seconds",
            "Duration of analytics store sync cycles, by outcome (ok, failed).",
            ["outcome"],
            buckets=_SYNC_BUCKETS,
            registry=self.registry,
        )
        self.rows_synced = Counter(
            "insights_store_rows_synced",
            "Rows copied from the tracking DB into the analytics store, by table.",
            ["table"],
            registry=self.registry,
        )
        self.sync_errors = Counter(
            "insights_store_sync_errors",
            "Failed sync cycles, by kind (tracking_db, store, unexpected).",
            ["kind"],
            registry=self.registry,
        )
        for kind in FAILURE_KINDS:  # zeros from the start: alerts need a series to compare
            self.sync_errors.labels(kind)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # --- the store's hook (service.store.runner.SyncObserver) --------------------------------

    def cycle_done(self, stats: SyncStats, seconds: float) -> None:
        self.sync_seconds.labels("ok").observe(seconds)
        for table, rows in stats.rows.items():
            self.rows_synced.labels(table).inc(rows)

    def cycle_failed(self, kind: FailureKind, seconds: float) -> None:
        self.sync_seconds.labels("failed").observe(seconds)
        self.sync_errors.labels(kind).inc()

    def _lag_seconds(self) -> float:
        status = self._store_status()
        lag = status.lag_ms(now_ms()) if status is not None else None
        return math.nan if lag is None else lag / 1000

    def _ready(self) -> float:
        status = self._store_status()
        return 1.0 if status is not None and status.ready else 0.0


class RequestMetricsMiddleware:
    """Times each insights request; runs inside ``AnsweringPathMiddleware`` to read its stamp."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, prefixes: tuple[str, ...], endpoints: frozenset[str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.prefixes = prefixes
        self.endpoints = endpoints  # known paths below a prefix: unknown ones share one label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        prefix = next((p for p in self.prefixes if path.startswith(p)), None)
        if prefix is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app dies before answering, that is what the client gets

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            endpoint = path[len(prefix) :]
            answer = answer_of(scope)
            self.metrics.request_seconds.labels(
                endpoint if endpoint in self.endpoints else UNKNOWN_ENDPOINT,
                answer.answered_by if answer is not None else "live",
                str(status),
            ).observe(time.perf_counter() - started)
