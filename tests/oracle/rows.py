"""The tracking DB's rows, read with plain SQLAlchemy Core from MLflow's tables (never through
the service)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from mlflow.store.tracking.dbmodels.models import (
    SqlAssessments,
    SqlSpan,
    SqlTraceInfo,
    SqlTraceTag,
)

TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation_input_tokens_above_1hr",
)
COST_KEYS = ("total_cost", "input_cost", "output_cost")


@dataclass(frozen=True)
class Trace:
    request_id: str
    experiment_id: int
    timestamp_ms: int
    execution_time_ms: int | None
    status: str
    trace_name: str | None
    tokens: dict[str, int | None]
    costs: dict[str, float | None]


@dataclass(frozen=True)
class Span:
    trace_id: str
    experiment_id: int
    name: str | None
    type: str | None
    status: str
    start_ns: int
    end_ns: int | None
    model_name: str | None
    model_provider: str | None
    costs: dict[str, float | None]


@dataclass(frozen=True)
class Assessment:
    trace_id: str
    name: str
    assessment_type: str
    value: str  # the stored JSON text
    error: str | None
    valid: bool
    source_type: str


@dataclass(frozen=True)
class Tag:
    request_id: str
    key: str
    value: str | None


@dataclass
class Raw:
    """Every relevant row of one tracking DB, read once."""

    traces: list[Trace]
    spans: list[Span]
    assessments: list[Assessment]
    tags: list[Tag]
    by_id: dict[str, Trace] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {t.request_id: t for t in self.traces}

    def in_scope(
        self,
        experiment_ids: Sequence[str],
        start_time: int | None = None,
        end_time: int | None = None,
        keep: Callable[[Trace], bool] | None = None,
    ) -> dict[str, Trace]:
        ids = {int(i) for i in experiment_ids}
        return {
            t.request_id: t
            for t in self.traces
            if t.experiment_id in ids
            and (start_time is None or t.timestamp_ms >= start_time)
            and (end_time is None or t.timestamp_ms < end_time)
            and (keep is None or keep(t))
        }

    def tags_of(self, request_id: str) -> dict[str, str | None]:
        return {t.key: t.value for t in self.tags if t.request_id == request_id}


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _trace(r: sa.Row[Any]) -> Trace:
    return Trace(
        r.request_id,
        int(r.experiment_id),
        int(r.timestamp_ms),
        _int(r.execution_time_ms),
        r.status,
        r.trace_name,
        {k: _int(getattr(r, k)) for k in TOKEN_KEYS},
        {k: _float(getattr(r, k)) for k in COST_KEYS},
    )


def load_traces(
    conn: sa.Connection,
    experiment_ids: Sequence[str],
    start_time: int | None = None,
    end_time: int | None = None,
) -> list[Trace]:
    """The traces of the experiments in the window (trace_info only; ``load_raw`` reads all)."""
    ids = [int(i) for i in experiment_ids]
    query = sa.select(SqlTraceInfo.__table__).where(SqlTraceInfo.experiment_id.in_(ids))
    traces = [_trace(r) for r in conn.execute(query)]
    return [
        t
        for t in traces
        if (start_time is None or t.timestamp_ms >= start_time)
        and (end_time is None or t.timestamp_ms < end_time)
    ]


def load_raw(conn: sa.Connection) -> Raw:
    ti, sp, a, tt = (
        SqlTraceInfo.__table__,
        SqlSpan.__table__,
        SqlAssessments.__table__,
        SqlTraceTag.__table__,
    )
    traces = [_trace(r) for r in conn.execute(sa.select(ti))]
    spans = [
        Span(
            r.trace_id,
            int(r.experiment_id),
            r.name,
            r.type,
            r.status,
            int(r.start_time_unix_nano),
            _int(r.end_time_unix_nano),
            r.model_name,
            r.model_provider,
            {k: _float(getattr(r, k)) for k in COST_KEYS},
        )
        for r in conn.execute(
            sa.select(
                sp.c.trace_id,
                sp.c.experiment_id,
                sp.c.name,
                sp.c.type,
                sp.c.status,
                sp.c.start_time_unix_nano,
                sp.c.end_time_unix_nano,
                sp.c.model_name,
                sp.c.model_provider,
                *[sp.c[k] for k in COST_KEYS],
            )
        )
    ]
    assessments = [
        Assessment(
            r.trace_id, r.name, r.assessment_type, r.value, r.error, bool(r.valid), r.source_type
        )
        for r in conn.execute(sa.select(a))
    ]
    tags = [Tag(r.request_id, r.key, r.value) for r in conn.execute(sa.select(tt))]
    return Raw(traces, spans, assessments, tags)
