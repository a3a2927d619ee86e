"""Rate limiting: N insights requests per minute per caller, in memory (a token bucket each).

A caller is the HTTP Basic user name when the request carries one, else the client address
(uvicorn has already replaced it with ``X-Forwarded-For`` from trusted proxies). A bucket holds
N tokens and refills at N per minute, so a burst of N passes and the long-run rate is N/minute.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ErrorCode, InsightsError
from service.http.credentials import Credentials, is_insights_request
from service.http.error_responses import error_response
from service.settings import Settings

# Float refills land a hair under a whole token; this much short of one still counts as one.
_EPSILON = 1e-9


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Caller:
    key: str  # what the bucket is kept under
    label: str  # what the message names


def identify(scope: Scope) -> Caller:
    credentials = Credentials.from_scope(scope)
    user = credentials.basic_username
    if user is not None:
        # Keyed by the whole credential, not the bare name: requests with a wrong password for
        # 'alice' must not use up the real alice's requests.
        return Caller(f"user:{user}:{credentials.digest}", f"user {user!r}")
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    return Caller(f"addr:{host}", f"client {host}")


class RateLimiter:
    """Token buckets per caller; idle callers are forgotten, so memory stays bounded."""

    def __init__(
        self,
        per_minute: int,
        *,
        max_callers: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1; a limit of 0 means no limiter")
        self.per_minute = per_minute
        self.max_callers = max_callers
        self.clock = clock
        self._rate = per_minute / 60.0  # tokens per second
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently seen first

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter | None:
        """The limiter the settings ask for, or None when rate limiting is off."""
        if settings.rate_limit_per_minute <= 0:
            return None
        return cls(settings.rate_limit_per_minute, max_callers=settings.rate_limit_max_callers)

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, caller: str) -> float | None:
        """Take one request from the caller's bucket: None if allowed, else seconds to wait."""
        now = self.clock()
        self._forget_idle(now)
        bucket = self._buckets.pop(caller, None) or _Bucket(float(self.per_minute), now)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.per_minute), bucket.tokens + elapsed * self._rate)
        bucket.updated = now
        self._buckets[caller] = bucket  # re-inserted at the end: most recently seen
        while len(self._buckets) > self.max_callers:
            # Too many active callers: drop the least recently seen (it restarts full: lenient).
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0 - _EPSILON:
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            return None
        return (1.0 - bucket.tokens) / self._rate

    def _forget_idle(self, now: float) -> None:
        # A bucket untouched for a minute is full again, the same as no bucket at all.
        while self._buckets:
            caller, bucket = next(iter(self._buckets.items()))
            if now - bucket.updated < 60.0:
                break
            del self._buckets[caller]


class RateLimitMiddleware:
    """Pure ASGI: answer 429 ``REQUEST_LIMIT_EXCEEDED`` before anything else runs."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter, prefixes: Sequence[str]) -> None:
        self.app = app
        self.limiter = limiter
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_insights_request(scope, self.prefixes):
            await self.app(scope, receive, send)
            return
        caller = identify(scope)
        wait = self.limiter.acquire(caller.key)
        if wait is None:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait - _EPSILON))
        error = InsightsError(
            ErrorCode.REQUEST_LIMIT_EXCEEDED,
            f"Rate limit of {self.limiter.per_minute} requests per minute exceeded for "
            f"{caller.label}; retry in {retry_after} s.",
            details={
                "limit_per_minute": self.limiter.per_minute,
                "retry_after_seconds": retry_after,
            },
            headers={"Retry-After": str(retry_after)},
        )
        await error_response(error)(scope, receive, send)
