"""MLflow's trace-metrics filters (``QueryTraceMetrics.filters``) -> SQLAlchemy predicates.

A different, smaller language than ``search_traces``: one clause per string, ``=`` only, a quoted
value, on ``trace.status``, ``trace.tag.<key>``, ``trace.metadata.<key>``, ``span.name``,
``span.type``, ``span.status``, ``assessment.name`` and ``assessment.type``; the strings are ANDed.
Parsing is MLflow's own (``SearchTraceMetricsUtils``), so what is accepted and the error
messages are MLflow's. The predicates select what MLflow's ``query_trace_metrics`` selects:

* trace clauses apply to a span's or an assessment's trace; span clauses only in the SPANS view,
  assessment clauses only in the ASSESSMENTS view;
* metadata MLflow 3.17 promotes to ``trace_info`` columns (session id, token usage, cost) is
  compared on those columns; ``mlflow.sourceRun`` also matches traces linked to the run later;
  the tag ``mlflow.traceName`` is the trace name.

Values are compared exactly (code point for code point) on every database, as this service's
other filters are; MLflow's plain ``=`` follows MySQL's case-insensitive collation there
(docs/decisions/trace-metrics.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlflow.entities.entity_type import EntityAssociationType
from mlflow.entities.trace_metrics import MetricViewType
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.dbmodels.models import (
    SqlAssessments,
    SqlEntityAssociation,
    SqlSpan,
    SqlTraceInfo,
    SqlTraceMetadata,
    SqlTraceTag,
)
from mlflow.store.tracking.utils.trace_analytics import (
    TRACE_ANALYTICS_COLUMNS_BY_METADATA_KEY,
    get_trace_analytics_metadata_filter,
)
from mlflow.tracing.constant import (
    AssessmentMetricSearchKey,
    SpanMetricSearchKey,
    TraceMetadataKey,
    TraceMetricSearchKey,
    TraceTagKey,
)
from mlflow.utils.search_utils import SearchTraceMetricsUtils, TraceMetricsFilter
from sqlalchemy import and_, exists, or_
from sqlalchemy.sql import ColumnElement

from service.dialects import text_equals
from service.errors import invalid_parameter
from service.filters.lexer import MAX_FILTER_LENGTH

__all__ = ["TraceMetricsFilter", "metric_filter_predicates", "parse_metric_filters"]


def parse_metric_filters(filters: Sequence[str]) -> list[TraceMetricsFilter]:
    """Each string parsed as MLflow parses it; a bad one is INVALID_PARAMETER_VALUE."""
    parsed = []
    for text in filters:
        if len(text) > MAX_FILTER_LENGTH:
            raise invalid_parameter(
                f"A filter is longer than {MAX_FILTER_LENGTH} characters; shorten it"
            )
        try:
            parsed.append(SearchTraceMetricsUtils.parse_search_filter(text))
        except MlflowException as exc:
            raise invalid_parameter(exc.message) from None
    return parsed


def _trace_id_of(view_type: MetricViewType) -> Any:
    return (
        SqlAssessments.trace_id
        if view_type == MetricViewType.ASSESSMENTS
        else SqlTraceInfo.request_id
    )


def _on_trace(view_type: MetricViewType, predicate: ColumnElement[bool]) -> ColumnElement[bool]:
    """A predicate on the row's trace: direct where trace_info is in the FROM, else EXISTS."""
    if view_type != MetricViewType.ASSESSMENTS:
        return predicate
    return exists().where(SqlTraceInfo.request_id == SqlAssessments.trace_id, predicate)


def _metadata(view_type: MetricViewType, key: str, value: str) -> ColumnElement[bool]:
    if key == TraceMetadataKey.TRACE_SESSION:
        return _on_trace(view_type, text_equals(SqlTraceInfo.session_id, value))
    if key in TRACE_ANALYTICS_COLUMNS_BY_METADATA_KEY:
        return _on_trace(
            view_type, get_trace_analytics_metadata_filter(key, "=", value, SqlTraceInfo)
        )
    trace_id = _trace_id_of(view_type)
    entry = exists().where(
        SqlTraceMetadata.request_id == trace_id,
        SqlTraceMetadata.key == key,
        text_equals(SqlTraceMetadata.value, value),
    )
    if key != TraceMetadataKey.SOURCE_RUN:
        return entry
    # Traces linked to a run after the fact carry the link as an entity association.
    linked = exists().where(
        SqlEntityAssociation.source_id == trace_id,
        SqlEntityAssociation.source_type == EntityAssociationType.TRACE,
        SqlEntityAssociation.destination_type == EntityAssociationType.RUN,
        text_equals(SqlEntityAssociation.destination_id, value),
    )
    return or_(entry, linked)


def _tag(view_type: MetricViewType, key: str, value: str) -> ColumnElement[bool]:
    if key == TraceTagKey.TRACE_NAME:
        return _on_trace(view_type, text_equals(SqlTraceInfo.trace_name, value))
    return exists().where(
        and_(
            SqlTraceTag.request_id == _trace_id_of(view_type),
            SqlTraceTag.key == key,
            text_equals(SqlTraceTag.value, value),
        )
    )


def _trace_clause(view_type: MetricViewType, clause: TraceMetricsFilter) -> ColumnElement[bool]:
    value = str(clause.value)
    if clause.entity == TraceMetricSearchKey.STATUS:
        return _on_trace(view_type, text_equals(SqlTraceInfo.status, value))
    if clause.entity == TraceMetricSearchKey.METADATA:
        return _metadata(view_type, str(clause.key), value)
    return _tag(view_type, str(clause.key), value)


_SPAN_COLUMNS = {
    SpanMetricSearchKey.NAME: SqlSpan.name,
    SpanMetricSearchKey.STATUS: SqlSpan.status,
    SpanMetricSearchKey.TYPE: SqlSpan.type,
}
_ASSESSMENT_COLUMNS = {
    AssessmentMetricSearchKey.NAME: SqlAssessments.name,
    AssessmentMetricSearchKey.TYPE: SqlAssessments.assessment_type,
}


def metric_filter_predicates(
    clauses: Sequence[TraceMetricsFilter], view_type: MetricViewType
) -> list[ColumnElement[bool]]:
    """Predicates on the view's rows (trace_info, trace_info joined with spans, or
    assessments), one per clause."""
    result: list[ColumnElement[bool]] = []
    for clause in clauses:
        if clause.view_type == TraceMetricSearchKey.VIEW_TYPE:
            result.append(_trace_clause(view_type, clause))
        elif clause.view_type == SpanMetricSearchKey.VIEW_TYPE:
            if view_type != MetricViewType.SPANS:
                raise invalid_parameter(
                    f"Filtering by span is only supported for {MetricViewType.SPANS} view "
                    f"type, got {view_type}"
                )
            result.append(text_equals(_SPAN_COLUMNS[clause.entity], str(clause.value)))
        else:
            if view_type != MetricViewType.ASSESSMENTS:
                raise invalid_parameter(
                    "Filtering by assessment is only supported for "
                    f"{MetricViewType.ASSESSMENTS} view type, got {view_type}"
                )
            result.append(text_equals(_ASSESSMENT_COLUMNS[clause.entity], str(clause.value)))
    return result
