"""The vocabulary of a trace: the tag keys, statuses, span types and markers MLflow writes.

Every module that names one of them imports it from here, spelled with MLflow's own constants
where MLflow has one, so no literal copy can drift. Also the one predicate for an assessment
logged for a whole session, which counts for every trace of that session (as in MLflow).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from mlflow.entities import SpanStatusCode, SpanType, TraceState
from mlflow.store.tracking.dbmodels.models import SqlAssessments, SqlTraceInfo
from mlflow.tracing.constant import TraceMetadataKey, TraceTagKey
from sqlalchemy import and_, exists, not_
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement

from service.dialects import starts_with

# Every tag MLflow sets itself starts so; MLflow has no constant for the prefix alone.
SYSTEM_TAG_PREFIX: Final = "mlflow."
# MLflow 3.17 keeps the trace name in trace_info.trace_name, but shows and filters it as this tag.
TRACE_NAME_TAG: Final = str(TraceTagKey.TRACE_NAME)

TRACE_OK: Final = TraceState.OK.value
TRACE_ERROR: Final = TraceState.ERROR.value
TRACE_STATES: Final = tuple(state.value for state in TraceState)
SPAN_ERROR: Final = SpanStatusCode.ERROR.value
TOOL_SPAN_TYPE: Final = str(SpanType.TOOL)

# An assessment logged for a whole session carries the session id in its metadata JSON.
SESSION_MARKER: Final = f'"{TraceMetadataKey.TRACE_SESSION}":'


def is_system_tag(key: str) -> bool:
    return key.startswith(SYSTEM_TAG_PREFIX)


def not_system_tag(tag: Any) -> ColumnElement[bool]:
    """The tag row (``SqlTraceTag`` or an alias) is not a system tag."""
    return not_(starts_with(tag.key, SYSTEM_TAG_PREFIX))


def is_session_assessment(assessment: Any) -> list[ColumnElement[bool]]:
    """The assessment row (``SqlAssessments`` or an alias) was logged for a whole session."""
    return [
        assessment.assessment_metadata.is_not(None),
        assessment.assessment_metadata.contains(SESSION_MARKER),
    ]


def same_session(
    sibling: Any,
    session_id: ColumnElement[Any],
    experiment_id: ColumnElement[Any],
    *,
    experiment_ids: Sequence[int] | None = None,
) -> ColumnElement[bool]:
    """``sibling`` (an alias of ``SqlTraceInfo``) is a trace of the session ``session_id``:
    in the same experiment, or in any of ``experiment_ids`` when they are given."""
    in_scope: ColumnElement[bool] = (
        sibling.experiment_id == experiment_id
        if experiment_ids is None
        else sibling.experiment_id.in_(experiment_ids)
    )
    return and_(sibling.session_id == session_id, in_scope)


def session_assessment(
    conditions: Sequence[ColumnElement[bool]], *, experiment_ids: Sequence[int] | None = None
) -> ColumnElement[bool]:
    """An assessment meeting ``conditions``, logged for the trace's whole session on any trace
    of that session (see ``same_session`` for which traces those are)."""
    sibling = aliased(SqlTraceInfo)
    return and_(
        SqlTraceInfo.session_id.is_not(None),
        exists().where(
            same_session(
                sibling,
                SqlTraceInfo.session_id,
                SqlTraceInfo.experiment_id,
                experiment_ids=experiment_ids,
            ),
            SqlAssessments.trace_id == sibling.request_id,
            *conditions,
            *is_session_assessment(SqlAssessments),
        ),
    )
