"""Tools (API.md §4.3): a tool call is a span with ``type = 'TOOL'``, the tool is its name."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.models.common import SeriesRequest, TimePoint


class ToolMetricsRequest(SeriesRequest):
    tool_name: str | None = Field(
        default=None,
        description='The tool to analyse; absent, null or "" means all tools together.',
        examples=["search_orders"],
    )


class ToolVolumePoint(TimePoint):
    trace_count: int = Field(description="Traces in the bucket that called the tool.")
    invocation_count: int = Field(description="Calls of the tool in the bucket.")


class ToolLatencyPoint(TimePoint):
    avg_latency: float | None
    p50_latency: float | None
    p90_latency: float | None
    p99_latency: float | None


class ToolErrorsPoint(TimePoint):
    error_count: int = Field(description="Calls whose span status is ERROR.")
    error_rate: float | None = Field(description="error_count / calls in percent (0-100).")


class ToolSeries(BaseModel):
    volume: list[ToolVolumePoint]
    latency: list[ToolLatencyPoint]
    errors: list[ToolErrorsPoint]


class ToolInfo(BaseModel):
    tool_name: str | None = Field(description="The tool (span name); null for all tools together.")
    trace_count: int = Field(description="Distinct traces in scope that called the tool.")
    invocation_count: int = Field(description="Calls of the tool (TOOL spans).")
    error_count: int = Field(description="Calls whose span status is ERROR.")
    error_rate: float | None = Field(description="error_count / invocation_count in percent.")
    avg_latency: float | None = Field(description="Mean call duration in ms (finished calls).")
    p50_latency: float | None
    p90_latency: float | None
    p99_latency: float | None
    time_series: ToolSeries


class ToolsDiscoveryResponse(BaseModel):
    data: list[ToolInfo] = Field(description="Every tool in scope, most invocations first.")


class ToolMetricsResponse(BaseModel):
    data: ToolInfo
