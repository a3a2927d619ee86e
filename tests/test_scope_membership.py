"""``TraceScope.owns``: which child rows (spans, tags, feedback) belong to the traces in scope.

The tracking databases answer it with ``trace_id IN (traces in scope)``. The analytics store
answers it from each child row's copies of its trace's experiment and timestamp, and must read
``trace_info`` only when the scope has a filter (the copies cannot evaluate one). Both are run
here on a DuckDB file laid out as the store, against membership computed in Python from the
rows written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.store.tracking.dbmodels.models import SqlSpan, SqlTraceInfo
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import aliased

from service.dialects.expressions import TRACE_EXPERIMENT_COPY, TRACE_TIMESTAMP_COPY
from service.filters import parse, predicates
from service.scope import TraceScope
from service.store.layout import SPANS, TRACE_INFO
from service.store.store_file import StoreFile
from tests.store_rows import insert_rows

# request_id -> (experiment_id, timestamp_ms, status); each trace has two spans.
TRACES = {
    "tr-a": (1, 1_000, "OK"),
    "tr-b": (1, 2_000, "ERROR"),
    "tr-c": (1, 3_000, "OK"),
    "tr-d": (2, 2_000, "OK"),
}


@pytest.fixture
def store(tmp_path: Path) -> StoreFile:
    store = StoreFile.open(tmp_path / "store.duckdb")
    traces = [
        {"request_id": request_id, "experiment_id": e, "timestamp_ms": stamp, "status": status}
        for request_id, (e, stamp, status) in TRACES.items()
    ]
    insert_rows(store, TRACE_INFO, traces)
    spans = [
        {
            "trace_id": request_id,
            "experiment_id": experiment,
            "span_id": f"{request_id}/{span_id}",
            "name": span_id,
            TRACE_TIMESTAMP_COPY: stamp,
            TRACE_EXPERIMENT_COPY: experiment,
        }
        for request_id, (experiment, stamp, _) in TRACES.items()
        for span_id in ("s1", "s2")
    ]
    insert_rows(store, SPANS, spans)
    return store


def _owned(store: StoreFile, scope: TraceScope) -> tuple[set[str], str]:
    stmt: sa.Select[Any] = sa.select(SqlSpan.span_id).where(scope.owns(SqlSpan.trace_id))
    sql = str(stmt.compile(store.engine, compile_kwargs={"literal_binds": True}))
    return {row[0] for row in store.db.execute(sql).fetchall()}, sql


def _expected(scope: TraceScope, status: str | None = None) -> set[str]:
    return {
        f"{request_id}/{span_id}"
        for request_id, (experiment, stamp, trace_status) in TRACES.items()
        for span_id in ("s1", "s2")
        if experiment in scope.experiment_ids
        and (scope.start_time is None or stamp >= scope.start_time)
        and (scope.end_time is None or stamp < scope.end_time)
        and (status is None or trace_status == status)
    }


@pytest.mark.parametrize(
    ("experiments", "start", "end"),
    [((1,), 1_500, 3_000), ((1, 2), None, 2_500), ((2,), 2_000, None), ((1,), None, None)],
)
def test_the_store_decides_membership_from_its_copies_without_reading_trace_info(
    store: StoreFile, experiments: tuple[int, ...], start: int | None, end: int | None
) -> None:
    scope = TraceScope(experiments, start, end)
    owned, sql = _owned(store, scope)
    assert owned == _expected(scope)
    assert "trace_info" not in sql


def test_a_filtered_scope_is_checked_against_the_traces_on_the_store(store: StoreFile) -> None:
    clauses = tuple(parse("status = 'ERROR'"))
    scope = TraceScope((1, 2), None, None, tuple(predicates(clauses)), clauses)
    owned, sql = _owned(store, scope)
    assert owned == _expected(scope, status="ERROR") == {"tr-b/s1", "tr-b/s2"}
    # Against the traces by their numbers, not their ids.
    assert "spans.insights_trace_number IN (SELECT trace_info.insights_trace_number" in sql


def test_the_tracking_databases_select_membership_from_the_traces_in_scope() -> None:
    scope = TraceScope((1,), 1_500, None)
    stmt: sa.Select[Any] = sa.select(SqlSpan.span_id).where(scope.owns(SqlSpan.trace_id))
    sql = str(stmt.compile(dialect=postgresql.dialect()))
    assert "spans.trace_id IN (SELECT trace_info.request_id" in sql
    assert SqlTraceInfo.__tablename__ in sql and TRACE_TIMESTAMP_COPY not in sql


def test_a_filter_applied_within_a_window_repeats_it_on_the_store(store: StoreFile) -> None:
    """A filter's EXISTS over spans carries the scope's window on the store (so DuckDB skips
    the spans of other traces' times) and selects the same traces as without it."""
    clauses = tuple(parse("span.name = 's2'"))
    window = (1_500, 3_000)
    scope = TraceScope((1, 2), *window, tuple(predicates(clauses, window=window)), clauses)
    stmt = scope.traces(SqlTraceInfo.request_id)
    sql = str(stmt.compile(store.engine, compile_kwargs={"literal_binds": True}))
    found = {row[0] for row in store.db.execute(sql).fetchall()}
    assert found == {"tr-b", "tr-d"}
    assert f"{TRACE_TIMESTAMP_COPY} >= 1500" in sql and f"{TRACE_TIMESTAMP_COPY} < 3000" in sql
    live = str(stmt.compile(dialect=postgresql.dialect()))
    assert TRACE_TIMESTAMP_COPY not in live


def _children(scope: TraceScope) -> sa.Select[tuple[str, int]]:
    """Each span in scope with its trace's timestamp, read through ``TraceScope.children``.
    (An alias, as in the query modules: a filter's EXISTS over spans must not correlate.)"""
    span = aliased(SqlSpan)
    stamp = scope.trace_column(span.trace_id, SqlTraceInfo.timestamp_ms)
    return scope.children(span.trace_id, span.span_id, stamp)


def _stamped(scope: TraceScope, status: str | None = None) -> set[tuple[str, int]]:
    return {(span, TRACES[span.split("/")[0]][1]) for span in _expected(scope, status)}


@pytest.mark.parametrize(
    ("experiments", "start", "end", "filter_string"),
    [
        ((1,), 1_500, 3_000, None),
        ((1, 2), None, 2_500, None),
        ((1, 2), None, None, "status = 'ERROR'"),
        ((1, 2), 1_500, None, "span.name = 's2' AND status = 'OK'"),
    ],
)
def test_children_with_their_trace_timestamp_on_the_store_and_on_sqlite(
    store: StoreFile,
    experiments: tuple[int, ...],
    start: int | None,
    end: int | None,
    filter_string: str | None,
) -> None:
    """The store reads its copies and joins nothing unless a filter asks; SQLite (a tracking
    database, MLflow's own tables) joins the trace: both give each span with its trace's
    timestamp, as computed in Python from the rows written."""
    clauses = tuple(parse(filter_string))
    window = (start, end)
    filters = tuple(predicates(clauses, experiment_ids=experiments, window=window))
    scope = TraceScope(experiments, start, end, filters, clauses)
    status = {None: None, "status = 'ERROR'": "ERROR"}.get(filter_string, "OK")
    expected = _stamped(scope, status)
    sql = str(_children(scope).compile(store.engine, compile_kwargs={"literal_binds": True}))
    assert set(store.db.execute(sql).fetchall()) == expected
    assert ("trace_info" in sql) == bool(filter_string)

    tracking = sa.create_engine("sqlite://")
    SqlTraceInfo.metadata.create_all(tracking, tables=[SqlTraceInfo.__table__, SqlSpan.__table__])
    with tracking.begin() as conn:
        for request_id, (experiment, stamp, trace_status) in TRACES.items():
            conn.execute(
                sa.insert(SqlTraceInfo.__table__).values(
                    request_id=request_id,
                    experiment_id=experiment,
                    timestamp_ms=stamp,
                    execution_time_ms=1,
                    status=trace_status,
                )
            )
            for span_id in ("s1", "s2"):
                conn.execute(
                    sa.insert(SqlSpan.__table__).values(
                        trace_id=request_id,
                        experiment_id=experiment,
                        span_id=f"{request_id}/{span_id}",
                        name=span_id,
                        type="UNKNOWN",
                        status="OK",
                        start_time_unix_nano=0,
                        content="{}",
                    )
                )
        live = {tuple(row) for row in conn.execute(_children(scope))}
    assert live == expected
