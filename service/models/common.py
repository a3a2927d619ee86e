"""Request fields shared by every endpoint (API.md §1) and shared response pieces."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.timebuckets import load_timezone

# Largest epoch-ms value accepted: the end of year 9999, as datetime can represent it.
MAX_EPOCH_MS = 253_402_300_799_999
MAX_EXPERIMENT_IDS = 1000

EpochMs = Annotated[int, Field(ge=0, le=MAX_EPOCH_MS, description="Epoch milliseconds (UTC).")]


class StrictModel(BaseModel):
    """Rejects unknown fields and values of the wrong JSON type instead of coercing them."""

    model_config = ConfigDict(extra="forbid", strict=True)


class InsightsRequest(StrictModel):
    experiment_ids: list[str] = Field(
        min_length=1,
        max_length=MAX_EXPERIMENT_IDS,
        description="Experiments to analyse; each must exist in the tracking DB.",
        examples=[["1"]],
    )
    start_time: EpochMs | None = Field(
        default=None, description="Window start, epoch ms, inclusive."
    )
    end_time: EpochMs | None = Field(default=None, description="Window end, epoch ms, exclusive.")
    filter_string: str | None = Field(
        default=None,
        description=(
            "Optional slice in MLflow search_traces syntax, e.g. \"tags.persona = 'admin'\"."
        ),
        examples=[None],
    )

    @field_validator("experiment_ids")
    @classmethod
    def _ids_are_numbers(cls, ids: list[str]) -> list[str]:
        bad = [i for i in ids if not i.isascii() or not i.isdigit() or len(i) > 18]
        if bad:
            raise ValueError(
                "experiment ids are strings of digits, as MLflow's SQL store makes them; "
                f"got {bad[:5]}"
            )
        return list(dict.fromkeys(ids))  # de-duplicate, keep order

    @model_validator(mode="after")
    def _window_is_ordered(self) -> Self:
        if (
            self.start_time is not None
            and self.end_time is not None
            and self.start_time >= self.end_time
        ):
            raise ValueError(
                f"start_time ({self.start_time}) must be before end_time ({self.end_time}); "
                "end_time is exclusive"
            )
        return self


class SeriesRequest(InsightsRequest):
    """A request for an endpoint that returns time series."""

    time_bucket: Literal["hour", "day", "week"] = Field(
        default="hour", description="Bucket size of the time series."
    )
    timezone: str = Field(
        default="UTC",
        description=(
            "IANA timezone; day and week buckets start at local midnight (weeks on Monday)."
        ),
        examples=["UTC"],
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        load_timezone(name)
        return name


class TimePoint(BaseModel):
    """Base of every time-series point; ``time_bucket`` comes first in the JSON."""

    time_bucket: int = Field(description="Bucket start, UTC epoch ms.")
