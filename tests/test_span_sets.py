"""Each trace's span sets, kept by the analytics store's sync (``insights_trace_span_sets``).

Correlations fold a trace's spans into masks of its span types, tools and failing tools
(``span_masks_per_trace``). The tracking databases group the spans by trace; the store reads the
span sets the sync keeps (``StoreFile.refresh_span_sets``). Both forms run here on one DuckDB
file laid out as the store, against the masks computed in Python from the rows written, with the
spans that test the definitions: a NULL type, a ``tool`` type in lower case, a TOOL span without
a name, statuses ``ERROR`` and ``error``, repeated values, and a trace outside the scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow.store.tracking.dbmodels.models import SqlSpan
from sqlalchemy.orm import aliased

from service.dialects.expressions import TRACE_EXPERIMENT_COPY, TRACE_TIMESTAMP_COPY
from service.queries.correlations import MASK_BITS, span_masks_per_trace
from service.scope import TraceScope
from service.store.store_file import StoreFile

# (trace_id, experiment_id, timestamp_ms) -> its spans as (type, name, status).
Spans = dict[tuple[str, int, int], list[tuple[str | None, str | None, str]]]
SPANS: Spans = {
    ("tr-a", 1, 1_000): [
        ("AGENT", "root", "OK"),
        ("TOOL", "search", "OK"),
        ("TOOL", "search", "ERROR"),
    ],
    ("tr-b", 1, 2_000): [("CHAIN", "root", "OK"), ("tool", "search", "ERROR"), (None, "x", "OK")],
    ("tr-c", 1, 3_000): [
        ("TOOL", None, "ERROR"),
        ("TOOL", "fetch ü", "error"),
        ("LLM", "gpt", "OK"),
    ],
    ("tr-d", 1, 4_000): [(None, "only", "OK")],
    ("tr-e", 2, 2_000): [("TOOL", "other", "ERROR")],
}


def _write(store: StoreFile, spans: Spans) -> None:
    for (trace_id, experiment, stamp), rows in spans.items():
        for n, (span_type, name, status) in enumerate(rows):
            store.db.execute(
                f"INSERT INTO spans (trace_id, experiment_id, span_id, type, name, status, "
                f"{TRACE_TIMESTAMP_COPY}, {TRACE_EXPERIMENT_COPY}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    trace_id,
                    experiment,
                    f"{trace_id}/{n}",
                    span_type,
                    name,
                    status,
                    stamp,
                    experiment,
                ],
            )


@pytest.fixture
def store(tmp_path: Path) -> StoreFile:
    store = StoreFile.open(tmp_path / "store.duckdb")
    _write(store, SPANS)
    store.refresh_span_sets(None)
    return store


def _expected(
    spans: Spans,
    scope: TraceScope,
    types: list[str],
    tools: list[str],
) -> dict[str, tuple[int, int, int]]:
    """(types, tools, failed tools) masks per trace in scope, by the definitions, in Python."""
    masks = {}
    for (trace_id, experiment, stamp), rows in spans.items():
        start, end = scope.start_time or 0, scope.end_time or 2**62
        if experiment not in scope.experiment_ids or not start <= stamp < end:
            continue
        used = {t for t, _, _ in rows if t is not None}
        called = {n for t, n, _ in rows if t == "TOOL" and n is not None}
        failed = {n for t, n, s in rows if t == "TOOL" and n is not None and s == "ERROR"}

        def bits(values: Iterable[str], vocabulary: list[str]) -> int:
            return sum(1 << vocabulary.index(v) for v in set(values) if v in vocabulary)

        mask = (bits(used, types), bits(called, tools), bits(failed, tools))
        if any(mask):
            masks[trace_id] = mask
    return masks


def _masks(
    store: StoreFile, statement: sa.Select[tuple[object, ...]]
) -> dict[str, tuple[int, int, int]]:
    sql = str(statement.compile(store.engine, compile_kwargs={"literal_binds": True}))
    rows = store.db.execute(sql).fetchall()
    # Rows whose masks are all 0 (traces with none of the values) count for nothing.
    return {row[0]: (row[1], row[2], row[3]) for row in rows if any(row[1:])}


def _both_forms(
    store: StoreFile, scope: TraceScope, types: list[str], tools: list[str]
) -> tuple[dict[str, tuple[int, int, int]], dict[str, tuple[int, int, int]]]:
    span = aliased(SqlSpan)
    in_scope = [scope.owns(span.trace_id), span.type.is_not(None)]
    per_trace = span_masks_per_trace(scope, span, in_scope, types, tools)
    columns = [per_trace.c.trace_id, per_trace.c.type_0, per_trace.c.tool_0, per_trace.c.failed_0]
    # The store's form (the construct on DuckDB), and the tracking databases' grouping, run alone.
    kept = _masks(store, sa.select(*columns))
    grouped_sub = per_trace.element.subquery("grouped")
    grouped = _masks(store, sa.select(*(grouped_sub.c[c.name] for c in columns)))
    return kept, grouped


TYPES = ["AGENT", "CHAIN", "LLM", "TOOL", "tool"]
TOOLS = ["fetch ü", "other", "search"]


@pytest.mark.parametrize(
    ("experiments", "start", "end"), [((1,), 0, 10_000), ((1,), 1_500, 3_500), ((1, 2), 0, 2_500)]
)
def test_the_span_sets_give_the_grouping_s_masks(
    store: StoreFile, experiments: tuple[int, ...], start: int, end: int
) -> None:
    scope = TraceScope(experiments, start, end)
    kept, grouped = _both_forms(store, scope, TYPES, TOOLS)
    expected = _expected(SPANS, scope, TYPES, TOOLS)
    assert kept == expected
    assert grouped == expected
    if "tr-b" in expected:  # CHAIN and 'tool', which is no tool call: no tool bits
        assert kept["tr-b"] == (2 | 16, 0, 0)


def test_values_outside_the_vocabulary_set_no_bit(store: StoreFile) -> None:
    scope = TraceScope((1,), 0, 10_000)
    kept, grouped = _both_forms(store, scope, ["LLM"], ["search"])
    assert kept == grouped == _expected(SPANS, scope, ["LLM"], ["search"])
    assert kept == {"tr-a": (0, 1, 1), "tr-c": (1, 0, 0)}


def test_a_refresh_recomputes_only_the_traces_named_and_drops_those_without_spans(
    store: StoreFile,
) -> None:
    changed: Spans = {
        ("tr-a", 1, 1_000): [("LLM", "gpt", "OK")],  # its spans replaced
        ("tr-f", 1, 5_000): [("TOOL", "search", "ERROR")],  # a new trace
    }
    store.db.execute("DELETE FROM spans WHERE trace_id IN ('tr-a', 'tr-c')")  # tr-c deleted
    _write(store, changed)
    store.refresh_span_sets({"tr-a", "tr-c", "tr-f"})
    now = {k: v for k, v in SPANS.items() if k[0] not in ("tr-a", "tr-c")} | changed
    scope = TraceScope((1, 2), 0, 10_000)
    kept, grouped = _both_forms(store, scope, TYPES, TOOLS)
    assert kept == grouped == _expected(now, scope, TYPES, TOOLS)
    rows = store.db.execute("SELECT trace_id FROM insights_trace_span_sets ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == ["tr-a", "tr-b", "tr-d", "tr-e", "tr-f"]


def test_more_values_than_one_mask_holds_spill_into_the_next(tmp_path: Path) -> None:
    store = StoreFile.open(tmp_path / "store.duckdb")
    names = [f"tool-{i:03d}" for i in range(MASK_BITS + 3)]
    _write(store, {("tr-x", 1, 1_000): [("TOOL", n, "OK") for n in names[MASK_BITS - 1 :]]})
    store.refresh_span_sets(None)
    span = aliased(SqlSpan)
    scope = TraceScope((1,), 0, 10_000)
    per_trace = span_masks_per_trace(scope, span, [scope.owns(span.trace_id)], [], names)
    statement = sa.select(per_trace.c.tool_0, per_trace.c.tool_1)
    sql = str(statement.compile(store.engine, compile_kwargs={"literal_binds": True}))
    assert store.db.execute(sql).fetchall() == [(1 << (MASK_BITS - 1), 0b111)]
