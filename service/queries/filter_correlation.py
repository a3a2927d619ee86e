"""MLflow's ``CalculateTraceFilterCorrelation`` (API.md §8): NPMI of two trace filters.

Counts the traces of the experiments (those matching ``base_filter`` when given: the universe),
those matching each filter within it, and those matching both, in one statement; NPMI is
``service.npmi``, which equals MLflow's. Filters are MLflow ``search_traces`` strings, parsed and
applied exactly as the insights endpoints do (``service.filters``).

Round trips: 1.
"""

from __future__ import annotations

from typing import Any

from mlflow.store.tracking.dbmodels.models import SqlTraceInfo
from sqlalchemy import and_, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import ColumnElement

from service.filters import parse, predicates
from service.models.trace_metrics import (
    CalculateTraceFilterCorrelationRequest,
    CalculateTraceFilterCorrelationResponse,
)
from service.npmi import npmi
from service.queries.trace_metrics import experiment_ids_of


def _matches(conditions: list[ColumnElement[bool]]) -> Any:
    return func.coalesce(func.sum(case((and_(true(), *conditions), 1), else_=0)), 0)


async def filter_correlation(
    session: AsyncSession, request: CalculateTraceFilterCorrelationRequest
) -> CalculateTraceFilterCorrelationResponse:
    ids = experiment_ids_of(request.experiment_ids)

    def conditions(filter_string: str | None) -> list[ColumnElement[bool]]:
        return predicates(parse(filter_string), experiment_ids=ids)

    base = conditions(request.base_filter)
    first, second = conditions(request.filter_string1), conditions(request.filter_string2)
    stmt = (
        select(
            func.count().label("total"),
            _matches(first).label("first"),
            _matches(second).label("second"),
            _matches(first + second).label("joint"),
        )
        .select_from(SqlTraceInfo)
        .where(SqlTraceInfo.experiment_id.in_(ids), *base)
    )
    row = (await session.execute(stmt)).one()
    total, count1, count2, joint = (int(x) for x in row)
    scores = npmi(joint, count1, count2, total)
    return CalculateTraceFilterCorrelationResponse(
        npmi=scores.npmi_score,
        npmi_smoothed=scores.npmi_smoothed,
        filter1_count=count1,
        filter2_count=count2,
        joint_count=joint,
        total_count=total,
    )
