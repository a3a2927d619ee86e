"""Request fields shared by every endpoint (API.md §1) and shared response pieces."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from service.errors import ErrorCode
from service.timebuckets import load_timezone

# Largest epoch-ms value accepted: the end of year 9999, as datetime can represent it.
MAX_EPOCH_MS = 253_402_300_799_999
MAX_EXPERIMENT_IDS = 1000

EpochMs = Annotated[int, Field(ge=0, le=MAX_EPOCH_MS, description="Epoch milliseconds (UTC).")]


def unstorable_text(data: Any) -> str | None:
    """A message naming a string in ``data`` (a parsed JSON body) that can never match stored
    text, or None. A NUL character cannot be stored in PostgreSQL text, and a lone surrogate (JSON's
    ``"\\ud800"``) is not Unicode at all: the drivers refuse to send either to the database.
    Dictionary keys are checked too; the walk is iterative, so any nesting depth is safe."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            problem = None
            if "\x00" in value:
                problem = "contains a NUL character"
            elif not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    problem = "is not valid Unicode (it contains a lone surrogate)"
            if problem:
                # The path holds the body's own keys: make it printable and short.
                field = where.encode("utf-8", "backslashreplace").decode("utf-8") or "body"
                field = field if len(field) <= 80 else field[:80] + "..."
                return f"Invalid value for '{field}': the text {problem}; remove it"
        elif isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                stack.extend([(item, path), (key, path)])
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{index}]") for index, item in enumerate(value))
    return None


class StorableTextModel(BaseModel):
    """Refuses text no database can compare (NUL characters, lone surrogates) anywhere in the
    body, naming the field."""

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        if isinstance(data, dict):
            problem = unstorable_text(data)
            if problem:
                raise ValueError(problem)
        return data


class StrictModel(StorableTextModel):
    """Rejects unknown fields and values of the wrong JSON type instead of coercing them, and
    text no database can compare anywhere in the body."""

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


class ComparableSeriesRequest(SeriesRequest):
    """A series request on an endpoint with a summary that can be set beside the previous
    window's (API.md §9): the page's period-over-period changes."""

    compare_previous: bool = Field(
        default=False,
        description=(
            "Also return previous_summary: the summary of the window of the same length that "
            "ends where this one starts, with the same experiments, filter and time zone. "
            "Needs start_time and end_time."
        ),
    )

    @model_validator(mode="after")
    def _previous_needs_a_window(self) -> Self:
        if not self.compare_previous:
            return self
        start, end = self.start_time, self.end_time
        if start is None or end is None:
            raise ValueError(
                "compare_previous needs both start_time and end_time: the previous window is "
                "the one of the same length ending at start_time"
            )
        if 2 * start < end:
            raise ValueError(
                "compare_previous: the previous window would start before 1970-01-01 "
                f"(start_time - (end_time - start_time) = {2 * start - end}); shorten the "
                "window or move it later"
            )
        return self

    def previous(self) -> SeriesRequest:
        """The same request over ``[start - (end - start), start)``."""
        if self.start_time is None or self.end_time is None:
            raise RuntimeError("compare_previous is validated to come with a window")
        fields = self.model_dump(exclude={"compare_previous", "start_time", "end_time"})
        return SeriesRequest(
            **fields, start_time=2 * self.start_time - self.end_time, end_time=self.start_time
        )


class WithPreviousSummary(BaseModel):
    """A response whose ``previous_summary`` appears only when the request asked for it, so an
    answer without it is byte for byte what it was before the field existed."""

    @model_serializer(mode="wrap")
    def _omit_absent_previous(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("previous_summary") is None:
            data.pop("previous_summary", None)
        return data


class TimePoint(BaseModel):
    """Base of every time-series point; ``time_bucket`` comes first in the JSON."""

    time_bucket: int = Field(description="Bucket start, UTC epoch ms.")


class ErrorResponse(BaseModel):
    """MLflow's error shape, the body of every error response (API.md §3)."""

    model_config = ConfigDict(extra="forbid")

    error_code: ErrorCode = Field(examples=["INVALID_PARAMETER_VALUE"])
    message: str = Field(
        description="What was wrong and how to fix it.",
        examples=["Unknown field 'start'; see /docs for the fields this endpoint accepts"],
    )
    details: dict[str, Any] | None = Field(
        default=None, description="Optional structured details, e.g. the unknown experiment ids."
    )
