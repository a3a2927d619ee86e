"""Assessments (API.md §4.2): valid feedback, summarised by its type.

Only ``assessment_type = 'feedback'`` rows with ``valid = true`` count. A row whose ``error`` is
set is a judge failure: it counts in ``error_count`` and never in value statistics.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from service.models.common import SeriesRequest, TimePoint
from service.models.tags import TopLimit, ValueCount

AssessmentType = Literal["boolean", "numeric", "string"]


class AssessmentMetricsRequest(SeriesRequest):
    assessment_name: str = Field(
        min_length=1, description="The feedback name to analyse.", examples=["correctness"]
    )
    limit: int = TopLimit


class AssessmentInfo(BaseModel):
    assessment_name: str
    assessment_type: AssessmentType = Field(
        description="Type of all the name's values in the listed experiments (see API.md §4.2)."
    )
    sources: list[str] = Field(description="Distinct source types of the rows, alphabetical.")
    trace_count: int = Field(description="Distinct traces with a valid feedback of this name.")
    assessment_count: int = Field(description="Valid feedback rows, judge failures included.")
    error_count: int = Field(description="Valid feedback rows whose judge failed (error set).")


class AssessmentsDiscoveryResponse(BaseModel):
    data: list[AssessmentInfo] = Field(
        description="Every feedback name in scope, most traces first."
    )


# -- boolean ---------------------------------------------------------------------------------


class BooleanSummary(BaseModel):
    total_count: int = Field(description="Rows with a value (judge failures excluded).")
    pass_count: int = Field(description="Values true or 'yes' (any case).")
    failure_count: int = Field(description="Values false or 'no' (any case).")
    failure_rate: float | None = Field(description="failure_count / total_count in percent.")
    error_count: int = Field(description="Rows whose judge failed (error set).")


class BooleanPoint(TimePoint):
    total_count: int
    failure_count: int
    failure_rate: float | None


class BooleanMetrics(BaseModel):
    assessment_name: str
    assessment_type: Literal["boolean"]
    sources: list[str]
    summary: BooleanSummary
    time_series: list[BooleanPoint]


# -- numeric ---------------------------------------------------------------------------------


class NumericSummary(BaseModel):
    total_count: int = Field(description="Rows with a value (judge failures excluded).")
    avg_value: float | None
    p50_value: float | None
    p90_value: float | None
    p99_value: float | None
    min_value: float | None
    max_value: float | None
    below_p50_count: int = Field(description="Values strictly below p50_value.")
    error_count: int = Field(description="Rows whose judge failed (error set).")


class NumericPoint(TimePoint):
    count: int = Field(description="Values in the bucket.")
    avg_value: float | None
    p50_value: float | None
    p90_value: float | None
    p99_value: float | None


class NumericMetrics(BaseModel):
    assessment_name: str
    assessment_type: Literal["numeric"]
    sources: list[str]
    summary: NumericSummary
    time_series: list[NumericPoint]


# -- string ----------------------------------------------------------------------------------


class StringSummary(BaseModel):
    total_count: int = Field(description="Rows with a value (judge failures excluded).")
    unique_values: int = Field(description="Distinct values.")
    top_values: list[ValueCount] = Field(
        description="The most frequent values (request field limit); percentage is of total_count."
    )
    other_count: int = Field(description="Rows whose value is not among top_values.")
    error_count: int = Field(description="Rows whose judge failed (error set).")


class StringPoint(TimePoint):
    total_count: int
    counts: dict[str, int] = Field(
        description="Count of each of the summary's top values in the bucket (0 when absent)."
    )


class StringMetrics(BaseModel):
    assessment_name: str
    assessment_type: Literal["string"]
    sources: list[str]
    summary: StringSummary
    time_series: list[StringPoint]


AssessmentMetricsResponse = Annotated[
    BooleanMetrics | NumericMetrics | StringMetrics, Field(discriminator="assessment_type")
]
