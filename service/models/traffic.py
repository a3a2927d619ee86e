"""Traffic endpoints (API.md §4.1): volume, latency, errors."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.models.common import TimePoint, WithPreviousSummary


class VolumeCounts(BaseModel):
    count: int = Field(description="Traces in scope.")
    ok_count: int = Field(description="Traces with status OK.")
    error_count: int = Field(description="Traces with status ERROR.")


class VolumePoint(VolumeCounts, TimePoint):
    pass


class VolumeResponse(WithPreviousSummary):
    summary: VolumeCounts
    previous_summary: VolumeCounts | None = Field(
        default=None, description="The previous window's summary; only with compare_previous."
    )
    time_series: list[VolumePoint]


class LatencyStats(BaseModel):
    count: int = Field(description="Finished traces (those with an execution time).")
    p50_latency: float | None
    p90_latency: float | None
    p95_latency: float | None
    p99_latency: float | None
    avg_latency: float | None


class LatencySummary(LatencyStats):
    min_latency: float | None
    max_latency: float | None


class LatencyPoint(LatencyStats, TimePoint):
    pass


class LatencyResponse(WithPreviousSummary):
    summary: LatencySummary
    previous_summary: LatencySummary | None = Field(
        default=None, description="The previous window's summary; only with compare_previous."
    )
    time_series: list[LatencyPoint]


class ErrorCounts(BaseModel):
    total_count: int = Field(description="Traces in scope.")
    error_count: int = Field(description="Traces with status ERROR.")
    error_rate: float | None = Field(description="error_count / total_count in percent (0-100).")


class ErrorsPoint(ErrorCounts, TimePoint):
    pass


class ErrorsResponse(WithPreviousSummary):
    summary: ErrorCounts
    previous_summary: ErrorCounts | None = Field(
        default=None, description="The previous window's summary; only with compare_previous."
    )
    time_series: list[ErrorsPoint]
