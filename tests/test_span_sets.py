"""Each trace's span sets, kept by the analytics store's sync (``insights_trace_span_sets``).

Correlations list the span types and tools in scope (``span_vocabulary``), then count the traces
per combination of the masks of their span types, tools and failing tools and of membership in
a slice (``span_mask_counts``). The tracking databases group the spans; the store reads the span
sets the sync keeps (``StoreFile.refresh_span_sets``) and their numbered combinations. Both forms
run here on one DuckDB file laid out as the store, against counts computed in Python from the
rows written, with the spans that test the definitions: a NULL type, a ``tool`` type in lower
case, a TOOL span without a name, statuses ``ERROR`` and ``error``, repeated values, and a trace
outside the scope.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow.store.tracking.dbmodels.models import SqlSpan
from sqlalchemy.engine.default import CACHE_HIT
from sqlalchemy.orm import aliased

from service.dialects.expressions import TRACE_EXPERIMENT_COPY, TRACE_TIMESTAMP_COPY, trace_number
from service.queries.correlations import MASK_BITS, span_mask_counts, span_vocabulary
from service.scope import TraceScope
from service.store.layout import SPANS as SPANS_TABLE
from service.store.store_file import StoreFile
from tests.store_rows import insert_rows

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
    """The spans inserted as the sync inserts them (``StoreFile.insert`` numbers their traces)."""
    rows: list[dict[str, Any]] = []
    for (trace_id, experiment, stamp), given in spans.items():
        for n, (span_type, name, status) in enumerate(given):
            values = {
                "trace_id": trace_id,
                "experiment_id": experiment,
                "span_id": f"{trace_id}/{n}",
                "type": span_type,
                "name": name,
                "status": status,
                TRACE_TIMESTAMP_COPY: stamp,
                TRACE_EXPERIMENT_COPY: experiment,
            }
            rows.append(values)
    insert_rows(store, SPANS_TABLE, rows)


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


# The slice the counts split the traces by.
SLICE = ("tr-a", "tr-c", "tr-f")
Counts = Counter[tuple[tuple[int, ...], int]]


def _counted(masks: dict[str, tuple[int, int, int]]) -> Counts:
    """Per-trace masks (``_expected``) as traces per (masks, in slice)."""
    return Counter((mask, int(trace in SLICE)) for trace, mask in masks.items())


def _run(store: StoreFile, statement: sa.Select[Any]) -> list[tuple[Any, ...]]:
    sql = str(statement.compile(store.engine, compile_kwargs={"literal_binds": True}))
    return [tuple(row) for row in store.db.execute(sql).fetchall()]


def _counts(rows: list[tuple[Any, ...]]) -> Counts:
    counts: Counts = Counter()
    for *masks, in_slice, traces in rows:
        if any(masks):  # rows whose masks are all 0 (none of the values) count for nothing
            counts[tuple(int(m) for m in masks), int(in_slice)] += int(traces)
    return counts


def _slice_traces() -> sa.Subquery:
    sliced: sa.Select[Any] = sa.select(SqlSpan.trace_id.label("request_id")).where(
        SqlSpan.trace_id.in_(SLICE)
    )
    return sliced.distinct().subquery("in_slice")


def _slice_numbers() -> sa.Select[Any]:
    """The store's numbers of the same traces (the store's form matches by them)."""
    return sa.select(trace_number(SqlSpan.trace_id)).where(SqlSpan.trace_id.in_(SLICE))


def _both_forms(
    store: StoreFile, scope: TraceScope, types: list[str], tools: list[str]
) -> tuple[Counts, Counts]:
    span = aliased(SqlSpan)
    in_scope = [scope.owns(span.trace_id), span.type.is_not(None)]
    counted = span_mask_counts(
        scope, span, in_scope, types, tools, _slice_traces(), _slice_numbers()
    )
    # The store's form (the construct on DuckDB), and the tracking databases' grouping, run alone.
    kept = _counts(_run(store, sa.select(counted)))
    grouped_sub = counted.element.subquery("grouped")
    grouped = _counts(_run(store, sa.select(grouped_sub)))
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
    masks = _expected(SPANS, scope, TYPES, TOOLS)
    assert kept == _counted(masks)
    assert grouped == _counted(masks)
    if "tr-b" in masks:  # CHAIN and 'tool', which is no tool call: no tool bits
        assert masks["tr-b"] == (2 | 16, 0, 0)
        assert kept[(2 | 16, 0, 0), 0] == 1


def test_values_outside_the_vocabulary_set_no_bit(store: StoreFile) -> None:
    scope = TraceScope((1,), 0, 10_000)
    kept, grouped = _both_forms(store, scope, ["LLM"], ["search"])
    assert kept == grouped == _counted(_expected(SPANS, scope, ["LLM"], ["search"]))
    assert kept == {((0, 1, 1), 1): 1, ((1, 0, 0), 1): 1}


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
    assert kept == grouped == _counted(_expected(now, scope, TYPES, TOOLS))
    rows = store.db.execute("SELECT trace_id FROM insights_trace_span_sets ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == ["tr-a", "tr-b", "tr-d", "tr-e", "tr-f"]
    # Each trace's combination holds its own lists, and each combination is numbered once.
    mismatched = store.db.execute(
        "SELECT count(*) FROM insights_trace_span_sets s JOIN insights_span_combinations c "
        "USING (combination_id) WHERE s.span_types <> c.span_types "
        "OR s.tool_names <> c.tool_names OR s.failed_tool_names <> c.failed_tool_names"
    ).fetchone()
    assert mismatched == (0,)
    numbered = store.db.execute(
        "SELECT count(*), count(DISTINCT combination_id), "
        "count(DISTINCT (span_types, tool_names, failed_tool_names)) "
        "FROM insights_span_combinations"
    ).fetchone()
    assert numbered is not None and numbered[0] == numbered[1] == numbered[2]


def test_more_values_than_one_mask_holds_spill_into_the_next(tmp_path: Path) -> None:
    store = StoreFile.open(tmp_path / "store.duckdb")
    names = [f"tool-{i:03d}" for i in range(MASK_BITS + 3)]
    _write(store, {("tr-x", 1, 1_000): [("TOOL", n, "OK") for n in names[MASK_BITS - 1 :]]})
    store.refresh_span_sets(None)
    span = aliased(SqlSpan)
    scope = TraceScope((1,), 0, 10_000)
    nothing: sa.Select[Any] = sa.select(SqlSpan.trace_id.label("request_id")).where(sa.false())
    counted = span_mask_counts(
        scope,
        span,
        [scope.owns(span.trace_id)],
        [],
        names,
        nothing.subquery("none"),
        sa.select(trace_number(SqlSpan.trace_id)).where(sa.false()),
    )
    statement = sa.select(counted.c.tool_0, counted.c.tool_1, counted.c.traces)
    assert _run(store, statement) == [(1 << (MASK_BITS - 1), 0b111, 1)]


@pytest.mark.parametrize("types", [True, False])
def test_both_vocabularies_list_the_types_and_tools_in_scope(store: StoreFile, types: bool) -> None:
    span = aliased(SqlSpan)
    scope = TraceScope((1,), 1_500, 10_000)
    is_tool: sa.ColumnElement[bool] = span.type == "TOOL"
    in_scope = [scope.owns(span.trace_id), span.type.is_not(None) if types else is_tool]
    vocabulary = span_vocabulary(scope, span, in_scope)

    def names(rows: list[tuple[Any, ...]]) -> tuple[set[Any], set[Any]]:
        return {v for v, _ in rows}, {t for _, t in rows if t is not None}

    kept = names(_run(store, sa.select(vocabulary.c.v, vocabulary.c.tool)))
    grouped_sub = vocabulary.element.subquery("grouped")
    grouped = names(_run(store, sa.select(grouped_sub.c.v, grouped_sub.c.tool)))
    # tr-b, tr-c and tr-d: 'tool' is no tool call, a TOOL span without a name names no tool.
    assert kept[1] == grouped[1] == {"fetch ü"}
    if types:
        assert kept[0] == grouped[0] == {"CHAIN", "tool", "TOOL", "LLM"}
    else:  # the store's form may list more types: the caller then asks for none
        assert grouped[0] == {"TOOL"} <= kept[0]


def test_a_cached_statement_runs_with_its_own_window(store: StoreFile) -> None:
    """The store caches compiled statements (SQLAlchemy's cache). A statement of the same shape
    as one compiled before reuses its SQL and must run with its own parameters, those only the
    store's form holds (inside ``kept``) included."""
    span = aliased(SqlSpan)
    seen: dict[int, set[tuple[Any, ...]]] = {}
    hits: list[bool] = []
    with store.engine.connect() as conn:
        for start in (0, 1_500, 2_500, 0):
            scope = TraceScope((1,), start, 10_000)
            in_scope = [scope.owns(span.trace_id), span.type.is_not(None)]
            vocabulary = span_vocabulary(scope, span, in_scope)
            statement = sa.select(vocabulary.c.v, vocabulary.c.tool)
            result = conn.execute(statement)
            hits.append(result.context.cache_hit is CACHE_HIT)
            seen[start] = {tuple(row) for row in result}
            assert seen[start] == set(_run(store, statement))  # compiled alone, values inlined
    assert hits == [False, True, True, True]
    assert seen[0] != seen[1_500] != seen[2_500]  # the windows select different traces


@pytest.mark.parametrize("tools", [TOOLS[::-1], ["search", "other"]])
def test_cached_mask_counts_spell_their_own_vocabulary(store: StoreFile, tools: list[str]) -> None:
    """The masks' bits are spelled out in the SQL: a cached statement is reused only for the same
    vocabulary, with its own window. A vocabulary of the same length in another order gives a
    statement of the same shape with other bits."""
    span = aliased(SqlSpan)
    with store.engine.connect() as conn:
        for vocabulary in (tools, TOOLS, tools):
            for start in (0, 1_500):
                scope = TraceScope((1,), start, 10_000)
                counted = span_mask_counts(
                    scope,
                    span,
                    [scope.owns(span.trace_id), span.type.is_not(None)],
                    TYPES,
                    vocabulary,
                    _slice_traces(),
                    _slice_numbers(),
                )
                rows = [tuple(row) for row in conn.execute(sa.select(counted))]
                assert _counts(rows) == _counted(_expected(SPANS, scope, TYPES, vocabulary))
