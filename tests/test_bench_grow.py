"""``bench.grow``: a store file grown N times keeps every child row's copies of its trace's
timestamp and experiment equal to the trace's (the store's queries select by them), and each
trace's span sets equal to what the sync computes from the grown spans."""

from __future__ import annotations

from pathlib import Path

import duckdb

from bench.grow import grow
from service.dialects.expressions import (
    TOOL_HOURS,
    TRACE_EXPERIMENT_COPY,
    TRACE_NUMBER_COPY,
    TRACE_SPAN_SETS,
    TRACE_TIMESTAMP_COPY,
)
from service.store.layout import SPANS, TRACE_INFO, TRACE_NUMBERS
from service.store.store_file import StoreFile
from tests.store_rows import insert_rows


def test_grown_rows_carry_their_own_trace_timestamp(tmp_path: Path) -> None:
    source = tmp_path / "store.duckdb"
    store = StoreFile.open(source)
    for n, (experiment, stamp) in enumerate([(1, 1_000), (2, 5_000)]):
        trace = f"tr-{n:032x}"
        row = {"request_id": trace, "experiment_id": experiment, "timestamp_ms": stamp}
        insert_rows(store, TRACE_INFO, [row])
        span = {
            "trace_id": trace,
            "experiment_id": experiment,
            "span_id": f"s{n}",
            "type": "TOOL",
            "name": f"tool-{n}",
            "status": "ERROR",
            "start_time_unix_nano": 0,
            TRACE_TIMESTAMP_COPY: stamp,
            TRACE_EXPERIMENT_COPY: experiment,
        }
        insert_rows(store, SPANS, [span])
    store.refresh_span_sets(None)
    store.db.execute("CHECKPOINT")
    store.db.close()

    out = tmp_path / "grown.duckdb"
    grow(source, out, 3, memory_limit="256MB", threads=1)

    db = duckdb.connect(str(out), read_only=True)
    rows = db.execute(
        f"SELECT s.trace_id, s.{TRACE_TIMESTAMP_COPY}, t.timestamp_ms, "
        f"s.{TRACE_EXPERIMENT_COPY}, t.experiment_id "
        "FROM spans s LEFT JOIN trace_info t ON t.request_id = s.trace_id"
    ).fetchall()
    assert len(rows) == 6
    assert {r[2] for r in rows} == {1_000, 1_001, 1_002, 5_000, 5_001, 5_002}
    for _, copied_stamp, stamp, copied_experiment, experiment in rows:
        assert (copied_stamp, copied_experiment) == (stamp, experiment)

    # Each grown trace has a number of its own, which its spans, its span sets and the store's
    # table of numbers agree on.
    numbered = db.execute(
        f"SELECT t.request_id, t.{TRACE_NUMBER_COPY}, s.{TRACE_NUMBER_COPY}, "
        f"n.{TRACE_NUMBER_COPY}, k.{TRACE_NUMBER_COPY} FROM trace_info t "
        "JOIN spans s ON s.trace_id = t.request_id "
        f"JOIN {TRACE_NUMBERS.name} n ON n.trace_id = t.request_id "
        f"JOIN {TRACE_SPAN_SETS} k ON k.trace_id = t.request_id"
    ).fetchall()
    assert len(numbered) == 6
    assert len({r[1] for r in numbered}) == 6
    assert all(r[1] == r[2] == r[3] == r[4] for r in numbered), numbered

    # The grown span sets are the ones the sync would compute from the grown spans.
    sets = f"SELECT * FROM {TRACE_SPAN_SETS} ORDER BY trace_id"
    grown = db.execute(sets).fetchall()
    # And the tool rollup: each copy's calls in its hour, under its tool.
    rollup = db.execute(
        f"SELECT tool, sum(invocation_count), sum(error_count), sum(trace_count) FROM {TOOL_HOURS} "
        "GROUP BY tool ORDER BY tool"
    ).fetchall()
    # And all tools together (no tool).
    assert rollup == [("tool-0", 3, 3, 3), ("tool-1", 3, 3, 3), (None, 6, 6, 6)]
    db.close()
    store = StoreFile.open(out)
    store.refresh_span_sets(None)
    assert store.db.execute(sets).fetchall() == grown
    assert len(grown) == 6
