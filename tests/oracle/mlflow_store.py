"""MLflow's own numbers: ``SqlAlchemyStore.query_trace_metrics`` over the same database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore


def mlflow_points(store: SqlAlchemyStore, *args: Any, **kwargs: Any) -> list[Any]:
    """``store.query_trace_metrics(...)`` as a list of MetricDataPoint (one page is enough)."""
    return list(store.query_trace_metrics(*args, **kwargs))


@contextmanager
def mlflow_store(uri: str, tmp: Path) -> Iterator[SqlAlchemyStore]:
    store = SqlAlchemyStore(uri, str(tmp / "artifacts"))
    try:
        yield store
    finally:
        store.engine.dispose()
