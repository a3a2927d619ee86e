"""Small tracking DBs of the store tests' own, MLflow's writes aimed at them, and the row-for-row
comparison of the store with its source (tests/test_store_sync.py, tests/test_store_writes.py)."""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource, Feedback, Span, TraceInfo, TraceLocation, TraceState
from mlflow.store.tracking.dbmodels.models import SqlTraceTag
from mlflow.tracing.client import TracingClient

from service.demo.generate import build_tracking_db
from service.dialects.expressions import TAG_PAIR_COPY, TRACE_NUMBER_COPY
from service.store import Store, SyncSettings, SyncStats
from service.store.layout import (
    ALL_TABLES,
    ENTITY_ASSOCIATIONS,
    REPEATED_FEEDBACK_TABLE,
    TAG_PAIRS_TABLE,
    TRACE_NUMBERS,
    TRACE_SPAN_SETS_TABLE,
    TRACE_TAGS,
    CopiedTable,
)
from service.store.rollups import ROLLUPS
from tests.conftest import create_reader, recreate_server_database

SEED = 12
DAY_MS = 86_400_000
# A small reconciliation budget makes a pass over the old days take several cycles.
SLICED = SyncSettings(reconcile_budget_traces=4, chunk_rows=7, batch_rows=20)
# A late feedback name given a boolean, a number and a string over time.
FEEDBACK_VALUES: list[bool | float | str] = [True, False, 0.5, "meh"]


@dataclass
class Source:
    """A tracking DB: written through MLflow (``tracking_uri``), read by the store as the
    service's read-only role (``service_url``)."""

    backend: str
    tracking_uri: str
    service_url: str
    experiment_ids: list[str]

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.tracking_uri, isolation_level="AUTOCOMMIT")


def build_source(backend: str, name: str, directory: Path, *, seed: int) -> Source:
    if backend == "sqlite":
        uri = f"sqlite:///{directory / f'{name}.db'}"
    else:
        uri = recreate_server_database(backend, name)
    dataset = build_tracking_db(uri, n_traces=16, days=4, seed=seed)
    service_url = uri if backend == "sqlite" else create_reader(backend, dataset.tracking_uri)
    ids = [dataset.experiment_ids[n] for n in ("support-agent", "sql-copilot")]
    return Source(backend, dataset.tracking_uri, service_url, ids)


# --- the comparison ---------------------------------------------------------------------------


def _source_rows(conn: sa.Connection, table: CopiedTable) -> list[tuple[Any, ...]]:
    """MLflow's rows, and for a child table its trace's timestamp and experiment (the store's
    own columns, in its order)."""
    query = sa.select(*(table.source.c[name] for name in table.columns))
    if table.derived:
        assert table.trace_key is not None, "a table with copies of its trace's columns"
        traces = sa.table(
            "trace_info",
            sa.column("request_id"),
            sa.column("timestamp_ms"),
            sa.column("experiment_id"),
        )
        # An inner join: only links from an existing trace belong to the copy (MLflow keeps
        # orphaned entity associations).
        query = query.add_columns(traces.c.timestamp_ms, traces.c.experiment_id).join(
            traces, traces.c.request_id == table.source.c[table.trace_key]
        )
    if table is ENTITY_ASSOCIATIONS:
        query = query.where(table.source.c.source_type == "TRACE")
    return sorted((tuple(r) for r in conn.execute(query)), key=repr)


def _store_rows(conn: sa.Connection, table: CopiedTable) -> list[tuple[Any, ...]]:
    query = sa.select(*(table.store.c[name] for name in table.store_columns))
    return sorted((tuple(r) for r in conn.execute(query)), key=repr)


def assert_exact_copy(store: Store, source: Source) -> None:
    engine = source.engine()
    try:
        with engine.connect() as src, store.engine().connect() as dst:
            for table in ALL_TABLES:
                expected, copied = _source_rows(src, table), _store_rows(dst, table)
                missing = sorted(set(expected) - set(copied), key=repr)[:3]
                extra = sorted(set(copied) - set(expected), key=repr)[:3]
                assert copied == expected, (
                    f"{table.name}: {len(copied)} rows in the store, {len(expected)} in the "
                    f"source; missing {missing}, extra {extra}"
                )
        assert_rollup_recomputed(store)
        assert_trace_numbers(store)
        assert_tag_pairs(store)
    finally:
        engine.dispose()


def assert_one_to_one(dst: sa.Connection, table: str, keys: str, number: str) -> None:
    """The store's numbering ``table`` gives each of its ``keys`` one number, and each number
    to one of them."""
    rows, distinct_keys, distinct_numbers = dst.execute(
        sa.text(f"SELECT count(*), count(DISTINCT {keys}), count(DISTINCT {number}) FROM {table}")
    ).one()
    assert rows == distinct_keys == distinct_numbers, (table, rows, distinct_keys, distinct_numbers)


def assert_trace_numbers(store: Store) -> None:
    """Each trace id has one number and each number one trace id, and every row of a trace
    (copied rows, span sets, repeated feedback pairs) carries its trace's number, whichever
    cycle copied it."""
    numbers = TRACE_NUMBERS.name
    with store.engine().connect() as dst:
        assert_one_to_one(dst, numbers, "trace_id", TRACE_NUMBER_COPY)
        keyed = [(t.name, t.trace_key) for t in ALL_TABLES if t.numbered]
        keyed += [
            (TRACE_SPAN_SETS_TABLE.name, "trace_id"),
            (REPEATED_FEEDBACK_TABLE.name, "trace_id"),
        ]
        for table, key in keyed:
            wrong = dst.execute(
                sa.text(
                    f"SELECT count(*) FROM {table} AS r LEFT JOIN {numbers} AS n "
                    f'ON n.trace_id = r."{key}" WHERE r.{TRACE_NUMBER_COPY} IS DISTINCT FROM '
                    f"n.{TRACE_NUMBER_COPY}"
                )
            ).scalar_one()
            assert wrong == 0, f"{table}: {wrong} rows without their trace's number"


def assert_tag_pairs(store: Store) -> None:
    """Each (key, value) pair of user tags has one number and each number one pair, and every
    tag row carries the number of its own pair exactly when it is a user tag with a value
    (a key not starting with ``mlflow.``, compared by code points), whichever cycle copied it."""
    pairs, number, tags = TAG_PAIRS_TABLE.name, TAG_PAIR_COPY, TRACE_TAGS.name
    with store.engine().connect() as dst:
        assert_one_to_one(dst, pairs, "(key, value)", number)
        tagged = dst.execute(sa.text(f"SELECT key, value, {number} FROM {tags}")).all()
        by_number = dict(
            (n, (k, v))
            for k, v, n in dst.execute(sa.text(f"SELECT key, value, {number} FROM {pairs}"))
        )
    for key, value, pair in tagged:
        user_tag = value is not None and not key.startswith("mlflow.")
        assert (pair is not None) == user_tag, (key, value, pair)
        if user_tag:
            assert by_number[pair] == (key, value), (key, value, pair, by_number[pair])


def assert_rollup_recomputed(store: Store) -> None:
    """Each rollup the cycles kept equals one computed from scratch over the copied rows: each
    cycle recomputed every hour whose rows it changed, and no other."""
    with store.engine().connect() as dst:
        for rollup in ROLLUPS:
            kept = dst.execute(sa.select(rollup.table)).all()
            fresh = dst.execute(sa.text(rollup.rows("TRUE"))).all()
            assert sorted(map(tuple, kept), key=repr) == sorted(map(tuple, fresh), key=repr), (
                f"{rollup.name}: {len(kept)} rows kept, {len(fresh)} recomputed"
            )


def store_counts(store: Store) -> dict[str, int]:
    with store.engine().connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t.store)).scalar_one()
            for t in ALL_TABLES
        }


async def sync_until_reconciled(
    store: Store, written_ms: int, *, max_cycles: int = 200
) -> list[SyncStats]:
    """Incremental cycles until the store claims the recent writes (``as_of_ms``; PostgreSQL's
    change gate may report them a second or more late) and a reconciliation pass that began
    after the writes has covered every old slot (two wraps: the first may have begun before)."""
    cycles, wraps = [], 0
    while wraps < 2 or (store.as_of_ms or 0) < written_ms:
        stats = await store.sync_once()
        assert not stats.full
        cycles.append(stats)
        wraps += stats.reconciliation_wrapped
        assert len(cycles) < max_cycles, f"no exact claim after {len(cycles)} cycles"
        if wraps >= 2:
            await asyncio.sleep(0.2)
    return cycles


# --- MLflow's writes --------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Writer:
    """Every kind of write MLflow makes to trace tables, aimed at random traces."""

    def __init__(self, source: Source, rng: random.Random) -> None:
        self.source = source
        self.rng = rng
        self.client = MlflowClient(source.tracking_uri)
        self.tracing = TracingClient(source.tracking_uri)
        self.in_progress: list[tuple[str, TraceInfo]] = []
        self.deleted_experiments: list[str] = []
        self.last_write_ms = 0

    def _scalar_rows(self, query: str, **params: Any) -> list[Any]:
        engine = self.source.engine()
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(sa.text(query), params)]
        finally:
            engine.dispose()

    def _old_trace(self) -> str:
        rows = self._scalar_rows(
            "SELECT request_id FROM trace_info WHERE timestamp_ms < :recent AND status = 'OK' "
            "ORDER BY request_id",
            recent=now_ms() - 2 * DAY_MS,
        )
        return str(self.rng.choice(rows)[0])

    def _valid_feedback(self) -> tuple[str, str]:
        rows = self._scalar_rows(
            "SELECT trace_id, assessment_id FROM assessments WHERE assessment_type = 'feedback' "
            "AND valid = :valid ORDER BY assessment_id",
            valid=True,
        )
        trace_id, assessment_id = self.rng.choice(rows)
        return str(trace_id), str(assessment_id)

    def _experiment(self) -> str:
        return self.rng.choice(self.source.experiment_ids)

    # Each write returns what it did, for failure messages.

    def new_trace(self) -> str:
        root = mlflow.start_span_no_context(
            "late-night-question",
            inputs={"q": "hi"},
            tags={"team": self.rng.choice(["a", "b"])},
            experiment_id=self._experiment(),
        )
        child = mlflow.start_span_no_context("lookup", parent_span=root, span_type="TOOL")
        child.end(outputs={"ok": True})
        root.end(outputs={"a": "hello"})
        return f"new trace {root.trace_id}"

    def start_in_progress(self) -> str:
        info = TraceInfo(
            trace_id=f"tr-{uuid.uuid4().hex}",
            trace_location=TraceLocation.from_experiment_id(self._experiment()),
            request_time=now_ms(),
            execution_duration=None,
            state=TraceState.IN_PROGRESS,
            tags={"mlflow.traceName": "slow-agent"},
        )
        self.tracing.start_trace(info)
        self.in_progress.append((info.trace_id, info))
        return f"in-progress trace {info.trace_id}"

    def finish_in_progress(self) -> str:
        if not self.in_progress:
            return self.start_in_progress()
        trace_id, info = self.in_progress.pop(0)
        info.state = TraceState.OK
        info.execution_duration = 4321
        self.tracing.start_trace(info)  # what MLflow's exporter sends when the root span ends
        return f"finished {trace_id}"

    def late_span(self) -> str:
        trace_id = self._old_trace()
        trace = self.client.get_trace(trace_id)
        span = trace.data.spans[-1].to_dict()
        span["span_id"] = base64.b64encode(secrets.token_bytes(8)).decode()
        span["name"] = "arrived-late"
        experiment_id = trace.info.trace_location.mlflow_experiment.experiment_id
        self.client._tracking_client.store.log_spans(experiment_id, [Span.from_dict(span)])
        return f"late span on {trace_id}"

    def set_tag(self) -> str:
        trace_id = self._old_trace()
        self.client.set_trace_tag(trace_id, "review", "v1")
        return f"tag on {trace_id}"

    def overwrite_tag(self) -> str:
        trace_id = self._old_trace()
        self.client.set_trace_tag(trace_id, "review", "v1")
        self.client.set_trace_tag(trace_id, "review", "v2")  # same length: a hash must see it
        return f"tag overwritten on {trace_id}"

    def delete_tag(self) -> str:
        trace_id = self._old_trace()
        self.client.set_trace_tag(trace_id, "doomed", "x")
        self.client.delete_trace_tag(trace_id, "doomed")
        if self._has_tag(trace_id, "team"):
            self.client.delete_trace_tag(trace_id, "team")
        return f"tags deleted on {trace_id}"

    def _has_tag(self, trace_id: str, key: str) -> bool:
        tags = SqlTraceTag.__table__.c
        engine = self.source.engine()
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    sa.select(tags.key).where(tags.request_id == trace_id, tags.key == key)
                )
                return found.first() is not None
        finally:
            engine.dispose()

    def log_feedback(self) -> str:
        trace_id = self._old_trace()
        mlflow.log_feedback(
            trace_id=trace_id,
            name="late_review",
            value=self.rng.choice(FEEDBACK_VALUES),
            source=AssessmentSource(source_type="HUMAN", source_id="reviewer-cy"),
        )
        return f"feedback on {trace_id}"

    def override_feedback(self) -> str:
        trace_id, assessment_id = self._valid_feedback()
        mlflow.override_feedback(trace_id=trace_id, assessment_id=assessment_id, value=False)
        return f"override of {assessment_id}"

    def update_feedback(self) -> str:
        trace_id, assessment_id = self._valid_feedback()
        mlflow.update_assessment(
            trace_id, assessment_id, Feedback(name="late_review", value=0.25, rationale="edited")
        )
        return f"update of {assessment_id}"

    def delete_feedback(self) -> str:
        trace_id, assessment_id = self._valid_feedback()
        mlflow.delete_assessment(trace_id=trace_id, assessment_id=assessment_id)
        return f"delete of {assessment_id}"

    def delete_trace(self) -> str:
        trace_id = self._old_trace()
        (experiment_id,) = self._scalar_rows(
            "SELECT experiment_id FROM trace_info WHERE request_id = :t", t=trace_id
        )[0]
        self.client.delete_traces(str(experiment_id), trace_ids=[trace_id])
        return f"deleted {trace_id}"

    def retention(self) -> str:
        experiment_id = self._experiment()
        rows = self._scalar_rows(
            "SELECT min(timestamp_ms) FROM trace_info WHERE experiment_id = :e",
            e=int(experiment_id),
        )
        oldest = rows[0][0]
        if oldest is None:
            return "retention: nothing left"
        cutoff = int(oldest) + 6 * 3_600_000
        self.client.delete_traces(experiment_id, max_timestamp_millis=cutoff)
        return f"retention up to {cutoff} in {experiment_id}"

    def delete_or_restore_experiment(self) -> str:
        if self.deleted_experiments:
            experiment_id = self.deleted_experiments.pop()
            self.client.restore_experiment(experiment_id)
            return f"restored {experiment_id}"
        experiment_id = self._experiment()
        self.client.delete_experiment(experiment_id)
        self.deleted_experiments.append(experiment_id)
        return f"deleted experiment {experiment_id}"

    def restore_all(self) -> None:
        while self.deleted_experiments:
            self.client.restore_experiment(self.deleted_experiments.pop())

    def random_round(self, n: int) -> list[str]:
        kinds: list[Callable[[], str]] = [
            self.new_trace,
            self.start_in_progress,
            self.finish_in_progress,
            self.late_span,
            self.set_tag,
            self.overwrite_tag,
            self.delete_tag,
            self.log_feedback,
            self.override_feedback,
            self.update_feedback,
            self.delete_feedback,
            self.delete_trace,
            self.retention,
            self.delete_or_restore_experiment,
        ]
        # Every kind once, then random ones; experiments are restored so traces can be logged.
        chosen = kinds + [self.rng.choice(kinds) for _ in range(n - len(kinds))]
        self.rng.shuffle(chosen)
        done = []
        for write in chosen:
            if write is not self.delete_or_restore_experiment:
                self.restore_all()
            done.append(write())
        self.last_write_ms = now_ms()
        return done
