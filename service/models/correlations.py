"""Correlations (API.md §4.6): which values go with a slice of the traces."""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, Field, field_validator

from service.models.common import InsightsRequest
from service.models.dimensions import Strength

CORRELATION_KINDS: Final = ("status", "span_types", "tools", "tags", "assessments")
MAX_LIMIT: Final = 1000

RowDimension = Literal["status", "span_type", "tool", "tool_error", "tag", "assessment"]


class CorrelationsRequest(InsightsRequest):
    filter_string: str = Field(  # required here: the slice
        min_length=1,
        description="Required: the slice to explain, in MLflow search_traces syntax. The "
        "window and experiments set the traces it is compared with.",
        examples=["status = 'ERROR'"],
    )
    correlation_dimensions: list[str] = Field(
        default_factory=lambda: list(CORRELATION_KINDS),
        min_length=1,
        description="Which kinds of values to score: status, span_types, tools (each tool "
        "used, and each tool with a failing call), tags (each tag value) and assessments (each "
        "value of a boolean or string feedback name).",
        examples=[list(CORRELATION_KINDS)],
    )
    include_system_tags: bool = Field(
        default=False, description="Also score the values of tags whose keys start with 'mlflow.'."
    )
    limit: int = Field(default=5, ge=1, le=MAX_LIMIT, description="How many rows to return.")
    min_count: int = Field(
        default=1,
        ge=0,
        description="Leave out values seen in fewer slice traces than this. NPMI of a value "
        "seen in one or two traces is mostly noise: on real data set it to about 1% of the "
        "slice, and at least 5 (npmi_smoothed also shrinks such scores towards 0).",
        examples=[5],
    )

    @field_validator("filter_string")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the slice filter must not be blank, e.g. \"status = 'ERROR'\"")
        return value

    @field_validator("correlation_dimensions")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = [k for k in kinds if k not in CORRELATION_KINDS]
        if unknown:
            raise ValueError(
                f"unknown correlation dimension {', '.join(repr(k) for k in unknown)}; use "
                f"any of {', '.join(CORRELATION_KINDS)}"
            )
        return list(dict.fromkeys(kinds))


class CorrelationRow(BaseModel):
    dimension: RowDimension
    value: str = Field(
        description="ERROR, LLM, search_orders, persona=admin (tag key=value), "
        "correctness=false (feedback name=value).",
        examples=["send_email"],
    )
    npmi_score: float | None = Field(description="NPMI of 'in the slice' and 'has the value'.")
    npmi_smoothed: float | None = Field(description="The same with a Jeffreys prior (0.5).")
    trace_count: int = Field(description="Traces in the slice that have the value.")
    percentage_of_slice: float | None = Field(
        description="trace_count / slice_count in percent (0-100)."
    )
    percentage_of_total: float | None = Field(
        description="Traces in scope with the value / total_count in percent (0-100)."
    )
    strength: Strength | None
    filter_string: str | None = Field(
        default=None,
        description="MLflow search_traces filter for the traces that have the value (the "
        "same string dimensions/calculate-npmi gives for this dimension); AND it with the "
        "window and the slice to list the slice traces counted in trace_count. null where "
        "MLflow's syntax cannot express the value.",
        examples=["span.type = 'TOOL' AND span.name = 'send_email'"],
    )


class CorrelationsResponse(BaseModel):
    slice_count: int = Field(description="Traces in scope that match filter_string.")
    total_count: int = Field(description="Traces in scope (experiments and window).")
    data: list[CorrelationRow] = Field(
        description="Most positively correlated first (npmi_score, then trace_count, then "
        "dimension and value), the first `limit`."
    )
