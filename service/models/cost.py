"""Token usage and cost (API.md §4.1): ``traffic-cost/tokens`` and ``traffic-cost/cost``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.models.common import TimePoint, WithPreviousSummary


class TokenSums(BaseModel):
    trace_count: int = Field(
        description="Traces in scope that report token usage (any token column set)."
    )
    input_tokens: int = Field(description="Sum of the traces' input tokens.")
    output_tokens: int = Field(description="Sum of the traces' output tokens.")
    total_tokens: int = Field(description="Sum of the traces' total tokens.")


class TokensSummary(TokenSums):
    cache_read_input_tokens: int = Field(description="Sum of input tokens read from a cache.")
    cache_creation_input_tokens: int = Field(description="Sum of input tokens written to a cache.")
    avg_total_tokens: float | None = Field(
        description="Mean total tokens of the traces that report total tokens."
    )
    p50_total_tokens: float | None = Field(description="Median total tokens per trace.")
    p90_total_tokens: float | None = Field(description="90th percentile of total tokens per trace.")
    p99_total_tokens: float | None = Field(description="99th percentile of total tokens per trace.")


class TokensPoint(TokenSums, TimePoint):
    pass


class TokensResponse(WithPreviousSummary):
    summary: TokensSummary
    previous_summary: TokensSummary | None = Field(
        default=None, description="The previous window's summary; only with compare_previous."
    )
    time_series: list[TokensPoint]


class CostSums(BaseModel):
    total_cost: float = Field(description="Total cost in USD (0 when nothing reports cost).")
    input_cost: float = Field(description="Cost of input tokens in USD.")
    output_cost: float = Field(description="Cost of output tokens in USD.")


class CostSummary(CostSums):
    trace_count: int = Field(
        description="Traces in scope that report a cost (any cost column set)."
    )


class CostPoint(CostSums, TimePoint):
    pass


class ModelCost(BaseModel):
    model_name: str | None = Field(description="Model of the spans, as MLflow recorded it.")
    model_provider: str | None = Field(description="Provider of the model, e.g. 'openai'.")
    span_count: int = Field(description="Spans in scope with this model that carry a cost.")
    total_cost: float = Field(description="Total cost of these spans in USD.")
    input_cost: float = Field(description="Cost of their input tokens in USD.")
    output_cost: float = Field(description="Cost of their output tokens in USD.")


class CostResponse(WithPreviousSummary):
    summary: CostSummary
    previous_summary: CostSummary | None = Field(
        default=None, description="The previous window's summary; only with compare_previous."
    )
    time_series: list[CostPoint]
    by_model: list[ModelCost] = Field(
        description="Cost per model from the spans that carry cost, most expensive first."
    )
