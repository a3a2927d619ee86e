"""The analytics store's tables: MLflow's narrow columns under MLflow's names, plus its own meta.

The data tables repeat the table names, column names and column types of MLflow's ORM
(``mlflow.store.tracking.dbmodels.models``), so a ``Select`` built on ``SqlTraceInfo`` & co. runs
on the store unchanged. They keep only the columns the service's queries read (service/queries,
filters, scope, dimensions); the wide ones (previews, span ``content``) stay behind. They carry no
keys or indexes: the sync keeps rows unique, and DuckDB scans columns instead of using indexes.

The child tables (tags, metadata, spans, assessments, entity associations) add two columns of
their own, their trace's ``timestamp_ms`` and ``experiment_id`` (``TRACE_TIMESTAMP_COPY``,
``TRACE_EXPERIMENT_COPY``), written by the sync from the same join that finds a row's partition.
Rows arrive in time order, so DuckDB's per-row-group min/max of the timestamp lets a window skip
most of a child table (``trace_time_within``), and together they tell whether a row's trace is
in scope without reading ``trace_info`` (``child_of_traces``).

``trace_info`` and the child tables also carry the trace's number (``TRACE_NUMBER_COPY``): the
store gives each trace id a number when it first inserts a row of it (``TRACE_NUMBERS``) and
keeps it, so rows are matched to their traces by an integer (``trace_number``).

Bump ``LAYOUT_VERSION`` whenever a column or table changes: a store of another layout is rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from duckdb_engine.datatypes import HugeInteger
from mlflow.store.tracking.dbmodels.models import (
    SqlAssessments,
    SqlEntityAssociation,
    SqlExperiment,
    SqlSpan,
    SqlTraceInfo,
    SqlTraceMetadata,
    SqlTraceTag,
)
from sqlalchemy import ARRAY, BigInteger, Column, Integer, MetaData, String, Table

from service.dialects.expressions import (
    FEEDBACK_KINDS_SUMMARY,
    MODEL_COST_HOURS,
    REPEATED_FEEDBACK,
    SPAN_COMBINATIONS,
    SPAN_SET_LISTS,
    TAG_PAIR_COPY,
    TAG_PAIRS,
    TOOL_HOURS,
    TRACE_COST_HOURS,
    TRACE_EXPERIMENT_COPY,
    TRACE_NUMBER_COPY,
    TRACE_SPAN_SETS,
    TRACE_TIMESTAMP_COPY,
)
from service.queries.cost import COST_KINDS
from service.queries.exact_sums import sum_column_names

LAYOUT_VERSION = 10

STORE_METADATA = MetaData()


# The store's copies of a child row's trace columns: store column -> trace_info column.
TRACE_COPIES = {TRACE_TIMESTAMP_COPY: "timestamp_ms", TRACE_EXPERIMENT_COPY: "experiment_id"}


@dataclass(frozen=True)
class CopiedTable:
    """One MLflow table as the store holds it.

    ``trace_key`` names the column that ties a row to its trace (``None`` for experiments, which
    are copied whole every cycle); rows are copied per
    (experiment, 15-minute slot of their trace's timestamp). ``columns`` are MLflow's, copied
    as they are; ``store_columns`` add what the sync derives from the row's trace; the store
    itself adds the trace's number (``numbered``) as it inserts the rows.
    """

    source: Table
    store: Table
    trace_key: str | None
    columns: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def store_columns(self) -> list[str]:
        """The columns the sync copies: MLflow's, and the copies of the trace's."""
        return [c.name for c in self.store.columns if c.name not in STORE_NUMBERED]

    @property
    def numbers(self) -> list[str]:
        """The numbers the store itself gives the rows as it inserts them (``STORE_NUMBERED``)."""
        return [c.name for c in self.store.columns if c.name in STORE_NUMBERED]

    @property
    def numbered(self) -> bool:
        """Whether the store gives the rows their trace's number (``TRACE_NUMBERS``)."""
        return TRACE_NUMBER_COPY in self.store.c

    @property
    def derived(self) -> list[str]:
        """The store's own columns (copies of the trace's), not MLflow's."""
        return [name for name in self.store_columns if name not in self.columns]


# Columns the store fills as it inserts rows, not copied: the trace's number, and on
# ``trace_tags`` the number of the row's (key, value) pair (``TAG_PAIRS_TABLE``).
STORE_NUMBERED = (TRACE_NUMBER_COPY, TAG_PAIR_COPY)


def _narrow(
    source: Table,
    columns: list[str],
    trace_key: str | None,
    *,
    child: bool = True,
    own_numbers: tuple[str, ...] = (),
) -> CopiedTable:
    derived = [Column(name, BigInteger) for name in TRACE_COPIES] if child else []
    number = [Column(TRACE_NUMBER_COPY, BigInteger)] if trace_key is not None else []
    store = Table(
        source.name,
        STORE_METADATA,
        *(Column(name, source.c[name].type) for name in columns),
        *derived,
        *number,
        *(Column(name, BigInteger) for name in own_numbers),
    )
    return CopiedTable(source, store, trace_key, tuple(columns))


# Experiments are few and small: every column (lifecycle_stage follows delete/restore).
EXPERIMENTS = _narrow(
    SqlExperiment.__table__,
    [c.name for c in SqlExperiment.__table__.columns],
    None,
    child=False,
)
TRACE_INFO = _narrow(
    SqlTraceInfo.__table__,
    [
        "request_id",
        "experiment_id",
        "timestamp_ms",
        "execution_time_ms",
        "status",
        "trace_name",
        "session_id",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation_input_tokens_above_1hr",
        "input_cost",
        "output_cost",
        "total_cost",
    ],
    "request_id",
    child=False,
)
TRACE_TAGS = _narrow(
    SqlTraceTag.__table__,
    ["request_id", "key", "value"],
    "request_id",
    own_numbers=(TAG_PAIR_COPY,),
)
TRACE_METADATA = _narrow(SqlTraceMetadata.__table__, ["request_id", "key", "value"], "request_id")
SPANS = _narrow(
    SqlSpan.__table__,
    [
        "trace_id",
        "experiment_id",
        "span_id",
        "name",
        "type",
        "status",
        "start_time_unix_nano",
        "duration_ns",
        "input_cost",
        "output_cost",
        "total_cost",
        "model_name",
        "model_provider",
    ],
    "trace_id",
)
ASSESSMENTS = _narrow(
    SqlAssessments.__table__,
    [
        "assessment_id",
        "trace_id",
        "experiment_id",
        "trace_timestamp_ms",
        "name",
        "assessment_type",
        "value",
        "error",
        "aggregate_value",
        "is_numeric_value",
        "source_type",
        "source_id",
        "rationale",
        "valid",
        "assessment_metadata",
    ],
    "trace_id",
)
# The filter ``metadata.mlflow.sourceRun`` also matches traces linked to a run afterwards.
ENTITY_ASSOCIATIONS = _narrow(
    SqlEntityAssociation.__table__,
    ["source_type", "source_id", "destination_type", "destination_id"],
    "source_id",
)

# Copied per (experiment, slot) of their trace; trace_info first.
TRACE_TABLES: tuple[CopiedTable, ...] = (
    TRACE_INFO,
    TRACE_TAGS,
    TRACE_METADATA,
    SPANS,
    ASSESSMENTS,
    ENTITY_ASSOCIATIONS,
)
ALL_TABLES: tuple[CopiedTable, ...] = (EXPERIMENTS, *TRACE_TABLES)

# --- the store's own tables -------------------------------------------------------------------

# layout_version, source_identity, as_of_ms, sync cursors: one row per key (no key constraint:
# DuckDB checks them eagerly, and a cycle deletes and re-inserts its keys in one transaction).
STORE_META = Table(
    "insights_store_meta",
    STORE_METADATA,
    Column("key", String, nullable=False),
    Column("value", String, nullable=False),
)

# Each trace id the store has inserted a row of, with its number: the largest number so far plus
# one when first seen, never changed after (rows are only added), so the copies of a trace's rows
# made in different cycles agree on it.
TRACE_NUMBERS = Table(
    "insights_trace_numbers",
    STORE_METADATA,
    Column("trace_id", String, nullable=False),
    Column(TRACE_NUMBER_COPY, BigInteger, nullable=False),
)

# Each distinct (key, value) of the user tags the store has inserted (``TAG_PAIRS``): the
# largest number so far plus one when first seen, never changed after.
TAG_PAIRS_TABLE = Table(
    TAG_PAIRS,
    STORE_METADATA,
    Column(TAG_PAIR_COPY, BigInteger, nullable=False),
    Column("key", SqlTraceTag.__table__.c.key.type, nullable=False),
    Column("value", SqlTraceTag.__table__.c.value.type, nullable=False),
)

# The source's fingerprint of each (experiment, slot, table) as of its last copy or check.
STORE_PARTITIONS = Table(
    "insights_store_partitions",
    STORE_METADATA,
    Column("experiment_id", Integer, nullable=False),
    Column("slot", BigInteger, nullable=False),
    Column("table_name", String, nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("hash_sum", BigInteger, nullable=False),
)

# The distinct (experiment, trace's experiment, name, kind) of the feedback rows: what
# ``feedback_types.feedback_kind_rows`` reads on the store. The sync recomputes an experiment's
# rows from the copied assessments whenever a partition of them changed, in the same transaction.
FEEDBACK_KINDS = Table(
    FEEDBACK_KINDS_SUMMARY,
    STORE_METADATA,
    Column("experiment_id", SqlAssessments.__table__.c.experiment_id.type),
    Column(TRACE_EXPERIMENT_COPY, BigInteger),
    Column("name", SqlAssessments.__table__.c.name.type),
    Column("kind", String),
)

# Each trace's distinct span types, names of its TOOL spans, and names of its TOOL spans with
# status ERROR, one row per trace with spans: what ``kept_span_sets`` reads where the tracking
# databases group the spans by trace. The sync recomputes a trace's row whenever it deleted or
# copied spans of it, in the same transaction (``StoreFile.refresh_span_sets``). The lists are
# sorted, and ``combination_id`` names the row of ``SPAN_COMBINATIONS_TABLE`` with the same three.
TRACE_SPAN_SETS_TABLE = Table(
    TRACE_SPAN_SETS,
    STORE_METADATA,
    Column("trace_id", SqlSpan.__table__.c.trace_id.type),
    Column(TRACE_EXPERIMENT_COPY, BigInteger),
    Column(TRACE_TIMESTAMP_COPY, BigInteger),
    Column(TRACE_NUMBER_COPY, BigInteger),
    *(Column(name, ARRAY(String)) for name in SPAN_SET_LISTS),
    Column("combination_id", Integer),
)

# Each distinct combination of the three lists any trace has had, numbered: a few thousand for
# a million traces. A question about every trace's sets counts the traces per combination (an
# integer grouping) and reads the lists of the few combinations. Rows are only added: one no
# trace has any more is never counted, since counts start from the traces.
SPAN_COMBINATIONS_TABLE = Table(
    SPAN_COMBINATIONS,
    STORE_METADATA,
    Column("combination_id", Integer),
    *(Column(name, ARRAY(String)) for name in SPAN_SET_LISTS),
)

# The (trace, name) pairs with two or more valid feedback rows, names compared exactly: what
# ``repeated_feedback`` reads (a handful where judges run once per trace and overrides leave one
# row valid). The sync recomputes a trace's pairs whenever it deleted or copied assessments of
# it, in the same transaction (``StoreFile.refresh_repeated_feedback``).
REPEATED_FEEDBACK_TABLE = Table(
    REPEATED_FEEDBACK,
    STORE_METADATA,
    Column("trace_id", SqlAssessments.__table__.c.trace_id.type),
    Column("name", SqlAssessments.__table__.c.name.type),
    Column(TRACE_NUMBER_COPY, BigInteger),
)

# TOOL spans per (trace's experiment, UTC hour of the trace's timestamp, tool name), and of all
# tools together (``tool`` NULL: a call has a name): what
# ``tool_hours`` reads where tools' requests group calls by whole UTC hours. Counts of calls, of
# calls with status exactly 'ERROR', of calling traces (each trace lies in one hour, so they add
# up over hours), of finished calls (``n``), their total, least and greatest duration, and the
# finished durations sorted: a percentile per (tool, hour) is two reads of a list instead of a
# sort per request. The sync recomputes an (experiment, hour)'s rows whenever a cycle copied or
# deleted spans of that hour's partitions, in the same transaction (``StoreFile.refresh_rollups``,
# ``service.store.rollups``).
_DURATION = SqlSpan.__table__.c.duration_ns.type
TOOL_HOURS_TABLE = Table(
    TOOL_HOURS,
    STORE_METADATA,
    Column(TRACE_EXPERIMENT_COPY, BigInteger),
    Column("hour_ms", BigInteger),
    Column("tool", SqlSpan.__table__.c.name.type),
    Column("invocation_count", BigInteger),
    Column("error_count", BigInteger),
    Column("trace_count", BigInteger),
    Column("n", BigInteger),
    Column("total", HugeInteger),
    Column("minimum", _DURATION),
    Column("maximum", _DURATION),
    Column("sorted_values", ARRAY(_DURATION)),
)

# Cost per (trace's experiment, UTC hour of the trace): traces that report cost, and the exact
# sums of their three cost columns as integer limbs (``service.queries.exact_sums``: the limbs of
# each value, summed; sums of limbs add up over hours). What ``traffic-cost/cost``'s series reads
# where its buckets are whole UTC hours. ``MODEL_COST_HOURS_TABLE``: the same per model and
# provider, of the spans that carry cost (its ``by_model``). Kept as ``TOOL_HOURS_TABLE`` is,
# following trace_info's and spans' partitions (``service.store.rollups``).
_COST_LIMBS = [name for kind in COST_KINDS for name in sum_column_names(kind)]


def _cost_hours(name: str, *keys: Column[Any]) -> Table:
    return Table(
        name,
        STORE_METADATA,
        Column(TRACE_EXPERIMENT_COPY, BigInteger),
        Column("hour_ms", BigInteger),
        *keys,
        Column("n", BigInteger),
        # HUGEINT: a sum of limbs as the queries' own sum() gives it (a limb may be up to 2^63).
        *(Column(limb, HugeInteger) for limb in _COST_LIMBS),
    )


TRACE_COST_HOURS_TABLE = _cost_hours(TRACE_COST_HOURS)
MODEL_COST_HOURS_TABLE = _cost_hours(
    MODEL_COST_HOURS,
    Column("model_name", SqlSpan.__table__.c.model_name.type),
    Column("model_provider", SqlSpan.__table__.c.model_provider.type),
)
