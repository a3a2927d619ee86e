"""The active experiments with their trace counts (the page's experiment picker)."""

from __future__ import annotations

from mlflow.entities import LifecycleStage
from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlTraceInfo
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.models.experiments import ExperimentInfo, ExperimentsResponse


async def experiments(session: AsyncSession, *, max_results: int) -> ExperimentsResponse:
    traces = (
        select(
            SqlTraceInfo.experiment_id.label("experiment_id"),
            func.count().label("trace_count"),
            func.max(SqlTraceInfo.timestamp_ms).label("last_trace_ms"),
        )
        .group_by(SqlTraceInfo.experiment_id)
        .subquery("traces")
    )
    trace_count = func.coalesce(traces.c.trace_count, 0)
    query = (
        select(
            SqlExperiment.experiment_id,
            SqlExperiment.name,
            trace_count,
            traces.c.last_trace_ms,
        )
        .outerjoin(traces, traces.c.experiment_id == SqlExperiment.experiment_id)
        .where(SqlExperiment.lifecycle_stage == LifecycleStage.ACTIVE)
        # Ids, not names, break ties: names would sort by each database's collation.
        .order_by(trace_count.desc(), SqlExperiment.experiment_id)
        .limit(max_results)
    )
    rows = (await session.execute(query)).all()
    return ExperimentsResponse(
        data=[
            ExperimentInfo(
                experiment_id=str(r[0]),
                name=r[1],
                trace_count=int(r[2]),
                last_trace_ms=None if r[3] is None else int(r[3]),
            )
            for r in rows
        ]
    )
