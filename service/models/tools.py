"""Tools (API.md §4.3): a tool call is a span with ``type = 'TOOL'``, the tool is its name."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from service.models.common import SeriesRequest

# The series points are TypedDicts, not models: pydantic validates them in Rust without making
# an object per point. tools/discovery over 30 days in hour buckets has 21,600 points per series
# kind: 79 ms as models, 15 ms as TypedDicts, the same JSON and the same schema.
_TimeBucket = Annotated[int, Field(description="Bucket start, UTC epoch ms.")]


class ToolsRequest(SeriesRequest):
    include_latency_series: bool = Field(
        default=True,
        description="false: `time_series.latency` is `[]`. The per-bucket latency percentiles "
        "are the costliest part over long windows; a client that shows only the overall "
        "latencies need not wait for them.",
    )


class ToolMetricsRequest(ToolsRequest):
    tool_name: str | None = Field(
        default=None,
        description='The tool to analyse; absent, null or "" means all tools together.',
        examples=["search_orders"],
    )


class ToolVolumePoint(TypedDict):
    time_bucket: _TimeBucket
    trace_count: Annotated[int, Field(description="Traces in the bucket that called the tool.")]
    invocation_count: Annotated[int, Field(description="Calls of the tool in the bucket.")]


class ToolLatencyPoint(TypedDict):
    time_bucket: _TimeBucket
    avg_latency: float | None
    p50_latency: float | None
    p90_latency: float | None
    p99_latency: float | None


class ToolErrorsPoint(TypedDict):
    time_bucket: _TimeBucket
    error_count: Annotated[int, Field(description="Calls whose span status is ERROR.")]
    error_rate: Annotated[
        float | None, Field(description="error_count / calls in percent (0-100).")
    ]


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
