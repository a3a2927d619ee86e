"""Feedback repeated on one trace, and the store's table of such pairs (``repeated_feedback``).

The analytics store counts a feedback name's traces (assessments/discovery) and a value's traces
(correlations) without de-duplicating every row: only the rows of the (trace, name) pairs with
two or more valid feedback rows, which the sync keeps in ``insights_repeated_feedback``, and the
rows a session feedback can repeat. Here MLflow's own client writes the cases that need the
de-duplication to a SQLite tracking DB: one value logged twice on a trace, two values of one
name on a trace, an overridden feedback (the old row invalid), a session feedback that repeats a
trace's own row. The answers of an app reading the store must equal the live path's byte for
byte and the counts computed in Python from the raw rows, before and after writes that create and
remove repeated pairs (the sync then recomputes the pairs of the traces it copied).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import mlflow
import sqlalchemy as sa
from mlflow.entities import AssessmentSource

from service.app import create_app
from service.db import Database
from service.demo.generate import mlflow_tracking
from service.dialects.expressions import REPEATED_FEEDBACK
from service.settings import Settings
from service.store import Store
from tests.conftest import API, app_reading, serve

HUMAN = AssessmentSource(source_type="HUMAN", source_id="reviewer")
SESSION = {"mlflow.trace.session": "s1"}


def _write_traces(experiment_id: str) -> list[str]:
    """Six traces: the first three in session s1, the others in none."""
    ids = []
    for i in range(6):
        metadata = SESSION if i < 3 else {}
        span = mlflow.start_span_no_context(
            f"t{i}", inputs={"i": i}, metadata=metadata, experiment_id=experiment_id
        )
        span.end(outputs={"ok": True})
        ids.append(span.trace_id)
    return ids


def _log(trace_id: str, name: str, value: Any, **extra: Any) -> str:
    logged = mlflow.log_feedback(trace_id=trace_id, name=name, value=value, source=HUMAN, **extra)
    return str(logged.assessment_id)


def _write_feedback(ids: list[str]) -> None:
    # A session feedback on t0, and t0's own row of the same value: t0 has resolved=true once.
    _log(ids[0], "resolved", True, metadata=SESSION)
    _log(ids[0], "resolved", True)
    _log(ids[1], "resolved", False)  # t1: false of its own, true from its session
    _log(ids[2], "resolved", True)  # t2: true of its own (its one row) and from its session
    _log(ids[3], "resolved", True)  # t3: the same value twice
    _log(ids[3], "resolved", True)
    _log(ids[3], "tone", "curt")  # t3: two values of one name
    _log(ids[3], "tone", "friendly")
    _log(ids[4], "tone", "curt")
    overridden = _log(ids[5], "resolved", True)
    mlflow.override_feedback(trace_id=ids[5], assessment_id=overridden, value=False)


def _valid_feedback(uri: str) -> list[tuple[str, str, str, str | None]]:
    """(trace, name, value, metadata) of every valid feedback row, read from the tracking DB."""
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT trace_id, name, value, assessment_metadata FROM assessments "
                    "WHERE assessment_type = 'feedback' AND valid"
                )
            )
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def _expected(rows: list[tuple[str, str, str, str | None]], ids: list[str]) -> dict[str, Any]:
    """Per name its traces, per (name, value) its traces (session feedback counting for every
    trace of the session), from the raw rows."""
    traces_per_name = {n: len({t for t, name, _, _ in rows if name == n}) for _, n, _, _ in rows}
    values: dict[tuple[str, str], set[str]] = {}
    for trace, name, value, metadata in rows:
        label = {"true": "true", "false": "false"}.get(value, value.strip('"'))
        holders = ids[:3] if metadata and "mlflow.trace.session" in metadata else [trace]
        for holder in holders:
            values.setdefault((name, label), set()).add(holder)
    return {
        "traces_per_name": traces_per_name,
        "traces_per_value": {f"{n}={v}": len(t) for (n, v), t in values.items()},
    }


def _repeated_pairs(rows: list[tuple[str, str, str, str | None]]) -> set[tuple[str, str]]:
    counts = Counter((trace, name) for trace, name, _, _ in rows)
    return {pair for pair, n in counts.items() if n > 1}


async def _answers(http: httpx.AsyncClient, experiment_id: str) -> dict[str, httpx.Response]:
    scope = {"experiment_ids": [experiment_id]}
    requests = {
        "discovery": ("assessments/discovery", scope),
        "correlations": (
            "correlations",
            {**scope, "filter_string": "status = 'OK'", "min_count": 0, "limit": 100},
        ),
        "correlations of t1": (
            "correlations",
            {**scope, "filter_string": "name = 't1'", "min_count": 0, "limit": 100},
        ),
    }
    return {
        key: await http.post(f"{API}/{endpoint}", json=body)
        for key, (endpoint, body) in requests.items()
    }


async def _assert_store_answers(
    live: httpx.AsyncClient, stored: httpx.AsyncClient, experiment_id: str, expected: Any
) -> None:
    want, got = await _answers(live, experiment_id), await _answers(stored, experiment_id)
    for key in want:
        assert want[key].status_code == got[key].status_code == 200, key
        assert got[key].content == want[key].content, key
    discovery = got["discovery"].json()["data"]
    assert {d["assessment_name"]: d["trace_count"] for d in discovery} == (
        expected["traces_per_name"]
    )
    correlations = got["correlations"].json()
    # Every trace is OK: the slice is every trace, and a value's slice count its trace count.
    assert correlations["slice_count"] == correlations["total_count"] == 6
    assert {
        row["value"]: row["trace_count"]
        for row in correlations["data"]
        if row["dimension"] == "assessment"
    } == expected["traces_per_value"]


def _stored_pairs(store: Store) -> set[tuple[str, str]]:
    with store.engine().connect() as conn:
        rows = conn.execute(sa.text(f"SELECT trace_id, name FROM {REPEATED_FEEDBACK}"))
        return {(str(t), str(n)) for t, n in rows}


async def test_repeated_feedback_is_counted_once_per_trace_on_the_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mlflow_tracking(uri):
        experiment_id = mlflow.create_experiment("repeated-feedback")
        ids = _write_traces(experiment_id)
        _write_feedback(ids)
    database = Database(Settings(database_url=uri))
    store = Store.open(tmp_path / "insights-store.duckdb", database)
    live_app = create_app(Settings(database_url=uri))
    store_app = app_reading(store, uri)
    try:
        await store.sync_once()
        async with serve(live_app) as live, serve(store_app) as stored:

            async def check(pairs: set[tuple[str, str]]) -> None:
                rows = _valid_feedback(uri)
                assert _stored_pairs(store) == _repeated_pairs(rows) == pairs
                await _assert_store_answers(live, stored, experiment_id, _expected(rows, ids))

            await check({(ids[0], "resolved"), (ids[3], "resolved"), (ids[3], "tone")})
            # One of t3's two rows deleted (its pair no longer repeated), t4's tone repeated.
            with mlflow_tracking(uri):
                trace = mlflow.get_trace(ids[3])
                doomed = next(a for a in trace.info.assessments if a.name == "resolved")
                mlflow.delete_assessment(trace_id=ids[3], assessment_id=doomed.assessment_id)
                _log(ids[4], "tone", "curt")
            await store.sync_once(full=True)
            await check({(ids[0], "resolved"), (ids[3], "tone"), (ids[4], "tone")})
    finally:
        store.close()
        await database.dispose()
