"""Tags (API.md §4.4): ``tags/discovery`` and ``tags/metrics``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.models.common import InsightsRequest

MAX_TOP_VALUES = 1000

TopLimit = Field(
    default=10,
    ge=1,
    le=MAX_TOP_VALUES,
    description="How many of the most frequent values to return (1-1000).",
)


class ValueCount(BaseModel):
    """One of the most frequent values; ties are broken by value, ascending (code points)."""

    value: str
    count: int
    percentage: float = Field(description="count / total in percent (0-100).")


class TagsDiscoveryRequest(InsightsRequest):
    include_system_tags: bool = Field(
        default=False,
        description="Also list system tags, whose keys start with 'mlflow.'.",
    )


class TagMetricsRequest(TagsDiscoveryRequest):
    tag_key: str = Field(min_length=1, description="The tag key to analyse.", examples=["persona"])
    limit: int = TopLimit


class TagInfo(BaseModel):
    tag_key: str
    trace_count: int = Field(description="Traces in scope that carry the key.")
    unique_values: int = Field(description="Distinct values of the key in those traces.")


class TagsDiscoveryResponse(BaseModel):
    data: list[TagInfo] = Field(description="Every tag key in scope, most traces first.")


class TagMetrics(TagInfo):
    top_values: list[ValueCount] = Field(
        description="The most frequent values; percentage is of the traces that carry the key."
    )
    other_count: int = Field(description="Traces whose value is not among top_values.")


class TagMetricsResponse(BaseModel):
    data: TagMetrics
