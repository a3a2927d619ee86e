"""Which path answers a request: the store when its copy is whole and fresh enough, else live."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from service.store.runner import StoreStatus

StoreState = Literal["off", "building", "ready", "lagging"]


def asks_for_live(cache_control: str | None) -> bool:
    """``Cache-Control: no-cache`` (any directive of the header, any case) asks for live."""
    if not cache_control:
        return False
    directives = (d.split("=", 1)[0].strip().lower() for d in cache_control.split(","))
    return "no-cache" in directives


def store_state(status: StoreStatus | None, *, max_lag_ms: int, at_ms: int) -> StoreState:
    if status is None:
        return "off"
    lag = status.lag_ms(at_ms)
    if lag is None:
        return "building"
    return "ready" if lag <= max_lag_ms else "lagging"


def store_answers(
    status: StoreStatus | None,
    *,
    max_lag_ms: int,
    at_ms: int,
    cache_control: str | None,
    experiment_ids: Iterable[str] = (),
) -> bool:
    """Never a partial answer: only a whole copy lagging by at most the limit answers, and only
    for experiments it holds. One created after the last cycle is answered live, not with a 404
    that would be true only as of the copy."""
    if asks_for_live(cache_control):
        return False
    if store_state(status, max_lag_ms=max_lag_ms, at_ms=at_ms) != "ready":
        return False
    assert status is not None
    return all(e in status.experiment_ids for e in experiment_ids)
