"""MLflow's own trace-metrics contract (``QueryTraceMetrics``, ``CalculateTraceFilterCorrelation``
of MLflow 3.17.2), served by this service for MLflow's UI (API.md §8).

The request fields, their JSON types and the response shape are MLflow's: the bodies its UI sends
parse here unchanged, and the answers serialise as MLflow's protobuf JSON does (empty maps and
lists left out, so no data is ``{}``). Unknown fields are ignored, as MLflow ignores them. Where
MLflow answers a malformed request with a 500 or silently reads it as something else (a
percentile without a value, an unknown enum name), this service says 400 (docs/decisions).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Self

from mlflow.entities.trace_metrics import AggregationType, MetricViewType
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from service.filters.parser import MAX_FILTER_SUBQUERIES
from service.models.common import StorableTextModel

# MLflow's default and only page size (mlflow.store.tracking.MAX_RESULTS_QUERY_TRACE_METRICS).
DEFAULT_MAX_RESULTS: Final = 1000
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
# A bucket's width in ms must be a BIGINT: about 292 million years.
MAX_INTERVAL_SECONDS: Final = INT64_MAX // 1000


def _int_like(value: Any) -> Any:
    """MLflow's ``_assert_intlike``: an int64 given as a JSON integer or a string of one."""
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
    if not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("out of the int64 range")
    return value


IntLike = Annotated[
    int,
    BeforeValidator(_int_like),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
                {"type": "string", "pattern": r"^\s*[+-]?[0-9]+\s*$"},
            ]
        }
    ),
]


def _enum_name(enum: type[MetricViewType] | type[AggregationType]) -> Any:
    """Proto JSON enums: the name, or its number (MLflow's proto numbers start at 1)."""
    members = list(enum)
    schema = WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": [str(m) for m in members]},
                {"type": "integer", "enum": list(range(1, len(members) + 1))},
            ]
        }
    )

    def parse(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= len(members):
            return members[value - 1]
        if isinstance(value, str) and value in enum.__members__:
            return enum[value]
        names = ", ".join(str(m) for m in members)
        raise ValueError(f"must be one of {names}, got {value!r}")

    return (BeforeValidator(parse), schema)


ViewType = Annotated[MetricViewType, *_enum_name(MetricViewType)]
Aggregation = Annotated[AggregationType, *_enum_name(AggregationType)]


class _MlflowMessage(StorableTextModel):
    """Lenient like MLflow's JSON parsing (unknown fields ignored), but never text a database
    cannot compare."""

    model_config = ConfigDict(extra="ignore")


class MetricAggregation(_MlflowMessage):
    aggregation_type: Aggregation = Field(examples=["PERCENTILE"])
    # A JSON number (MLflow also takes a numeric string; its UI sends numbers).
    percentile_value: StrictFloat | StrictInt | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Required for PERCENTILE (0-100), not allowed otherwise.",
        examples=[50],
    )

    @model_validator(mode="after")
    def _percentile_value_iff_percentile(self) -> Self:
        is_percentile = self.aggregation_type == AggregationType.PERCENTILE
        if is_percentile and self.percentile_value is None:
            raise ValueError("percentile_value is required for PERCENTILE aggregation")
        if not is_percentile and self.percentile_value is not None:
            raise ValueError(
                "percentile_value is only allowed for PERCENTILE aggregation, got "
                f"{self.aggregation_type.value}"
            )
        return self

    @property
    def key(self) -> str:
        """The key of this aggregation in a data point's ``values``: MLflow's ``str()`` of it,
        e.g. ``AVG`` or ``P50.0``."""
        if self.aggregation_type == AggregationType.PERCENTILE:
            return f"P{float(self.percentile_value or 0.0)}"
        return self.aggregation_type.value


class QueryTraceMetricsRequest(_MlflowMessage):
    experiment_ids: list[StrictStr] = Field(
        description="Experiments to read (ids as strings); unknown ones simply hold no data.",
        examples=[["1"]],
    )
    view_type: ViewType = Field(
        description="TRACES, SPANS or ASSESSMENTS: what a row is.", examples=["TRACES"]
    )
    metric_name: StrictStr = Field(
        description="A metric of the view, e.g. trace_count, latency, total_tokens (TRACES), "
        "span_count, latency, total_cost (SPANS), assessment_count, assessment_value "
        "(ASSESSMENTS).",
        examples=["latency"],
    )
    aggregations: list[MetricAggregation] = Field(
        min_length=1,
        description="What to compute: COUNT, SUM, AVG, MIN, MAX, PERCENTILE (with "
        "percentile_value), as the metric allows.",
        examples=[[{"aggregation_type": "PERCENTILE", "percentile_value": 50}]],
    )
    dimensions: list[StrictStr] | None = Field(
        default=None,
        description="Group by these, e.g. trace_status, span_name, assessment_name.",
        examples=[["trace_status"]],
    )
    filters: list[StrictStr] | None = Field(
        default=None,
        description="ANDed filters, one clause each: trace.status, trace.tag.<key>, "
        "trace.metadata.<key>, span.name/type/status, assessment.name/type, with = and a "
        'quoted value, e.g. `span.type = "TOOL"`.',
        examples=[['trace.status = "OK"']],
    )
    time_interval_seconds: IntLike | None = Field(
        default=None,
        description="Also group by UTC time buckets of this many seconds, aligned to the "
        "epoch; needs start_time_ms and end_time_ms.",
        examples=[3600],
    )
    start_time_ms: IntLike | None = Field(
        default=None, description="Window start, epoch ms, inclusive.", examples=[None]
    )
    end_time_ms: IntLike | None = Field(
        default=None, description="Window end, epoch ms, inclusive.", examples=[None]
    )
    max_results: IntLike | None = Field(
        default=None,
        description=f"At most this many data points (default {DEFAULT_MAX_RESULTS}).",
        examples=[None],
    )
    page_token: StrictStr | None = Field(
        default=None, description="Accepted and ignored: MLflow returns one page.", examples=[None]
    )

    @field_validator("dimensions")
    @classmethod
    def _distinct_dimensions(cls, dimensions: list[str] | None) -> list[str] | None:
        return None if dimensions is None else list(dict.fromkeys(dimensions))

    @field_validator("filters")
    @classmethod
    def _few_filters(cls, filters: list[str] | None) -> list[str] | None:
        # Each filter may be a subquery: as many as a search_traces filter may hold (API.md §6).
        if filters is not None and len(filters) > MAX_FILTER_SUBQUERIES:
            raise ValueError(f"at most {MAX_FILTER_SUBQUERIES} filters, got {len(filters)}")
        return filters

    @model_validator(mode="after")
    def _sizes(self) -> Self:
        if self.max_results is not None and self.max_results < 0:
            raise ValueError(f"max_results must not be negative, got {self.max_results}")
        interval = self.time_interval_seconds
        if interval is not None and not 0 <= interval <= MAX_INTERVAL_SECONDS:
            raise ValueError(
                f"time_interval_seconds must be from 0 to {MAX_INTERVAL_SECONDS}, got {interval}"
            )
        return self

    @property
    def limit(self) -> int:
        return DEFAULT_MAX_RESULTS if self.max_results is None else self.max_results


class MetricDataPoint(BaseModel):
    metric_name: str
    dimensions: dict[str, str] | None = Field(
        default=None,
        description="The group: time_bucket (ISO 8601, UTC) and the requested dimensions; "
        "left out when there are none.",
    )
    values: dict[str, float] = Field(
        description="One value per aggregation, keyed as MLflow keys them: COUNT, SUM, AVG, "
        "MIN, MAX, P<percentile>.<fraction> (e.g. P50.0)."
    )


class QueryTraceMetricsResponse(BaseModel):
    data_points: list[MetricDataPoint] | None = Field(
        default=None, description="Ordered by time bucket, then the dimensions; left out if none."
    )
    next_page_token: str | None = Field(default=None, description="Never set: one page.")


class CalculateTraceFilterCorrelationRequest(_MlflowMessage):
    experiment_ids: list[StrictStr] = Field(examples=[["1"]])
    filter_string1: StrictStr = Field(
        min_length=1,
        description="First trace condition, in MLflow search_traces syntax.",
        examples=["status = 'ERROR'"],
    )
    filter_string2: StrictStr = Field(
        min_length=1,
        description="Second trace condition, in MLflow search_traces syntax.",
        examples=["span.type = 'TOOL'"],
    )
    base_filter: StrictStr | None = Field(
        default=None,
        description="Optional: the traces both are tested within (e.g. a time window).",
        examples=[None],
    )


class CalculateTraceFilterCorrelationResponse(BaseModel):
    npmi: float | None = Field(
        description="NPMI of the two conditions; MLflow's NaN (undefined) is left out."
    )
    npmi_smoothed: float | None = Field(description="NPMI with a Jeffreys prior (0.5).")
    filter1_count: int
    filter2_count: int
    joint_count: int
    total_count: int
