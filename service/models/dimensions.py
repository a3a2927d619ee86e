"""Request and response models of the dimensions endpoints (API.md §4.5).

``dimensions/discovery`` and ``dimensions/calculate-npmi``; the dimension kinds themselves are
in ``service.dimension_catalog``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.models.common import InsightsRequest, StrictModel

ParameterType = Literal["enum", "string", "number"]
Strength = Literal["Strong", "Moderate", "Weak"]


class DimensionsDiscoveryRequest(InsightsRequest):
    include_system_tags: bool = Field(
        default=False,
        description="Also list tags.<key> dimensions for system tags, whose keys start with "
        "'mlflow.' (as tags/discovery does).",
    )


class DimensionParameter(BaseModel):
    name: str = Field(examples=["value"])
    type: ParameterType = Field(
        description="enum: one of enum_values; string: any text (enum_values, when present, "
        "lists the values in scope); number: a JSON number."
    )
    required: bool
    description: str
    enum_values: list[str] | None = Field(
        description="The allowed values (enum), or the values present in scope (string, when "
        "there are at most 50); null otherwise.",
        examples=[["ERROR", "IN_PROGRESS", "OK"]],
    )


class DimensionInfo(BaseModel):
    name: str = Field(
        description="What to send as dimension1/dimension2.name to dimensions/calculate-npmi.",
        examples=["tags.persona"],
    )
    display_name: str = Field(examples=["Tag persona"])
    description: str
    parameters: list[DimensionParameter]


class DimensionsDiscoveryResponse(BaseModel):
    data: list[DimensionInfo] = Field(
        description="The built-in dimensions (status, span.type, span.name, latency), then one "
        "per tool, tag key and feedback name in scope, each group by name (code points)."
    )


class DimensionRequest(StrictModel):
    name: str = Field(
        description="A dimension name from dimensions/discovery: status, span.type, span.name, "
        "latency, tools.<name>, tags.<key> or assessment.<name>.",
        examples=["status"],
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description='The dimension\'s parameters, e.g. {"value": "ERROR"} or '
        '{"threshold": 2000, "operator": ">"}.',
        examples=[{"value": "ERROR"}],
    )


class CalculateNpmiRequest(InsightsRequest):
    dimension1: DimensionRequest = Field(
        examples=[{"name": "status", "parameters": {"value": "ERROR"}}]
    )
    dimension2: DimensionRequest = Field(
        examples=[{"name": "tools.send_email", "parameters": {"value": "used"}}]
    )


class DimensionCount(BaseModel):
    name: str
    value: str = Field(
        description="The parameters as text: the value, or the operator and threshold "
        "(e.g. '> 2000').",
        examples=["ERROR"],
    )
    count: int = Field(description="Traces in scope that have the dimension.")
    filter_string: str | None = Field(
        description="The same traces in MLflow search_traces syntax, to open them in MLflow; "
        "null where that syntax cannot say it (e.g. tools.<name> = success).",
        examples=["status = 'ERROR'"],
    )


class IntersectionCount(BaseModel):
    count: int = Field(description="Traces in scope that have both dimensions.")


class Correlation(BaseModel):
    npmi_score: float | None = Field(
        description="Normalised PMI in [-1, 1]: -1 never together, 0 independent, 1 always "
        "together; null when a dimension matches no trace."
    )
    npmi_smoothed: float | None = Field(
        description="The same with 0.5 added to each cell of the 2x2 table (Jeffreys prior), "
        "more robust on few traces; null when a dimension matches no trace."
    )
    strength: Strength | None = Field(
        description="From |npmi_score|: Strong above 0.7, Moderate from 0.4 to 0.7, Weak below."
    )


class CalculateNpmiResponse(BaseModel):
    dimension1: DimensionCount
    dimension2: DimensionCount
    intersection: IntersectionCount
    total_count: int = Field(description="Traces in scope.")
    correlation: Correlation
