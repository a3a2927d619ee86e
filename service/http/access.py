"""Access control: the MLflow tracking server decides who may read which experiment.

For every insights request the middleware reads ``experiment_ids`` from the JSON body and asks
the tracking server (its basic-auth app) ``GET /api/2.0/mlflow/experiments/get`` for each one,
with the caller's own ``Authorization`` and ``Cookie`` headers. MLflow's answer maps to ours:
200 allow, 401 ``UNAUTHENTICATED``, 403 ``PERMISSION_DENIED``, 404 allow (the route then answers
404 naming the experiment), unreachable or 5xx ``TEMPORARILY_UNAVAILABLE``. Answers are cached
briefly per (credentials, experiment) so a dashboard's burst of calls costs one check each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ErrorCode, InsightsError
from service.http.body import BodyTooLarge, LimitedBody, replay, too_large_response
from service.http.credentials import Credentials, is_insights_request
from service.http.error_responses import error_response
from service.models.common import MAX_EXPERIMENT_IDS
from service.settings import Settings

logger = logging.getLogger("service.access")

GET_EXPERIMENT_PATH = "/api/2.0/mlflow/experiments/get"
WWW_AUTHENTICATE = 'Basic realm="mlflow"'  # what MLflow's basic-auth app sends with a 401
# Checks of one request run side by side, but never more than this many at once.
MAX_CONCURRENT_CHECKS = 8
MAX_SQL_ID = 2**63 - 1

K = TypeVar("K")
V = TypeVar("V")


class Decision(Enum):
    ALLOW = "allow"
    UNAUTHENTICATED = "unauthenticated"
    DENIED = "denied"
    UNKNOWN_EXPERIMENT = "unknown_experiment"  # never cached: the experiment may appear later


class TTLCache(Generic[K, V]):
    """A bounded map whose entries expire ``ttl`` seconds after they were put."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self.clock():
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        now = self.clock()
        self._entries[key] = (now + self.ttl, value)
        self._entries.move_to_end(key)
        # One TTL for all, so insertion order is expiry order: expired entries sit at the front.
        while self._entries:
            expires, _ = next(iter(self._entries.values()))
            if expires > now and len(self._entries) <= self.max_entries:
                break
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


@dataclass
class CheckStats:
    sent: int = 0  # requests that reached (or tried to reach) the tracking server
    cache_hits: int = 0
    shared: int = 0  # checks that joined an identical check already in flight


class AccessChecker:
    """Asks the MLflow tracking server whether credentials may read experiments; caches answers."""

    def __init__(
        self,
        tracking_uri: str,
        *,
        cache_ttl_seconds: float = 30.0,
        cache_max_entries: int = 10_000,
        timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.cache: TTLCache[tuple[str, str], Decision] = TTLCache(
            cache_ttl_seconds, cache_max_entries, clock
        )
        self.stats = CheckStats()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._inflight: dict[tuple[str, str], asyncio.Future[Decision]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessChecker | None:
        """The checker the settings ask for, or None when access control is off."""
        if not settings.auth_tracking_uri:
            return None
        return cls(
            settings.auth_tracking_uri,
            cache_ttl_seconds=settings.auth_cache_ttl_seconds,
            cache_max_entries=settings.auth_cache_max_entries,
            timeout_seconds=settings.auth_timeout_seconds,
        )

    @property
    def client(self) -> httpx.AsyncClient:
        # Made on first use, inside the serving event loop; closed by the app's lifespan.
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                base_url=self.tracking_uri,
                timeout=self.timeout_seconds,
                transport=self._transport,
                follow_redirects=False,  # a redirect (to a login page) is no answer
                trust_env=False,  # never route callers' credentials through an env proxy
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def check(self, experiment_ids: Iterable[str], credentials: Credentials) -> None:
        """Return if the caller may read every experiment; raise the error to answer otherwise."""
        ids, decisions = await self._decisions(experiment_ids, credentials)
        denied = [i for i, d in zip(ids, decisions, strict=True) if d is Decision.DENIED]
        if denied:
            who = credentials.basic_username
            names = ", ".join(repr(i) for i in denied)
            noun = "experiment" if len(denied) == 1 else "experiments"
            raise InsightsError(
                ErrorCode.PERMISSION_DENIED,
                f"{f'User {who!r}' if who else 'The caller'} may not read {noun} {names}: the "
                "MLflow tracking server denied READ permission. Ask an MLflow admin for READ "
                "permission, or leave the experiment out of experiment_ids.",
                details={"experiment_ids": denied},
            )

    async def readable(self, experiment_ids: Iterable[str], credentials: Credentials) -> list[str]:
        """The experiments the caller may read, in order; raise when the credentials are
        refused (a listing must not hide a login problem behind an empty answer)."""
        ids, decisions = await self._decisions(experiment_ids, credentials)
        return [i for i, d in zip(ids, decisions, strict=True) if d is Decision.ALLOW]

    async def _decisions(
        self, experiment_ids: Iterable[str], credentials: Credentials
    ) -> tuple[list[str], list[Decision]]:
        """Each distinct experiment's decision, asked a few at a time; refused credentials
        raise at once, whatever the other answers."""
        ids = list(dict.fromkeys(experiment_ids))
        limit = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)

        async def one(experiment_id: str) -> Decision:
            async with limit:
                return await self._decision(experiment_id, credentials)

        decisions = list(await asyncio.gather(*(one(i) for i in ids)))
        if Decision.UNAUTHENTICATED in decisions:
            raise _unauthenticated()
        return ids, decisions

    async def _decision(self, experiment_id: str, credentials: Credentials) -> Decision:
        key = (credentials.digest, experiment_id)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._ask(experiment_id, credentials))
            self._inflight[key] = future
            future.add_done_callback(lambda done: self._settle(key, done))
        else:
            self.stats.shared += 1
        # Shielded: a caller that disconnects must not cancel the check others wait for.
        return await asyncio.shield(future)

    def _settle(self, key: tuple[str, str], done: asyncio.Future[Decision]) -> None:
        self._inflight.pop(key, None)
        if done.cancelled() or done.exception() is not None:
            return  # failures are never cached: the next request asks again
        if done.result() is not Decision.UNKNOWN_EXPERIMENT:
            self.cache.put(key, done.result())

    async def _ask(self, experiment_id: str, credentials: Credentials) -> Decision:
        self.stats.sent += 1
        try:
            response = await self.client.get(
                GET_EXPERIMENT_PATH,
                params={"experiment_id": experiment_id},
                headers=credentials.forward_headers(),
            )
        except httpx.HTTPError as exc:
            logger.warning("permission check at %s failed: %r", self.tracking_uri, exc)
            raise _unavailable() from exc
        status = response.status_code
        if status == 200:
            return Decision.ALLOW
        if status == 401:
            return Decision.UNAUTHENTICATED
        if status == 403:
            return Decision.DENIED
        if status == 404:
            return Decision.UNKNOWN_EXPERIMENT
        logger.warning(
            "permission check of experiment %s at %s answered HTTP %d: %.200s",
            experiment_id,
            self.tracking_uri,
            status,
            response.text,
        )
        if status >= 500:
            raise _unavailable()
        # Anything else (a redirect to a login page, a 400) is no answer: fail closed.
        raise InsightsError(
            ErrorCode.INTERNAL_ERROR,
            "The permission check got an unexpected answer from the MLflow tracking server; "
            "the details are in the service log.",
        )


def _unauthenticated() -> InsightsError:
    return InsightsError(
        ErrorCode.UNAUTHENTICATED,
        "The MLflow tracking server refused the request's credentials (missing or "
        "wrong). Send the same HTTP Basic credentials you use for MLflow.",
        headers={"WWW-Authenticate": WWW_AUTHENTICATE},
    )


def _unavailable() -> InsightsError:
    return InsightsError(
        ErrorCode.TEMPORARILY_UNAVAILABLE,
        "The MLflow tracking server that checks permissions cannot be reached; retry later.",
    )


def requested_experiment_ids(body: bytes) -> list[str] | None:
    """The experiments a request body names, as the route will read them; None if it names none.

    Ids are canonical (``"007"`` is experiment 7, as the route reads it). A body the route will
    reject anyway (not JSON, no list, too many ids) gives None and goes on to answer its 400.
    """
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    ids = payload.get("experiment_ids") if isinstance(payload, dict) else None
    if not isinstance(ids, list) or len(ids) > MAX_EXPERIMENT_IDS:
        return None
    canonical: list[str] = []
    for value in ids:
        # Check every id the route could possibly resolve, even forms it currently rejects.
        if isinstance(value, str) and value.isascii() and value.isdigit():
            number = int(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            continue
        if 0 <= number <= MAX_SQL_ID:  # larger ids name no row in any SQL database
            canonical.append(str(number))
    return canonical or None


class AccessControlMiddleware:
    """Pure ASGI: buffer the body (with the edge's one limit), check its experiments, replay it."""

    def __init__(self, app: ASGIApp, checker: AccessChecker, prefixes: Sequence[str]) -> None:
        self.app = app
        self.checker = checker
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_insights_request(scope, self.prefixes):
            await self.app(scope, receive, send)
            return
        try:
            body = await LimitedBody(scope, receive).read()
        except BodyTooLarge:
            await too_large_response()(scope, receive, send)
            return
        if body is None:
            return  # the client went away
        experiment_ids = requested_experiment_ids(body)
        if experiment_ids is not None:
            try:
                await self.checker.check(experiment_ids, Credentials.from_scope(scope))
            except InsightsError as error:
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, replay(body, receive), send)
