"""The experiment listing (``experiments``): what the Insights page's experiment picker shows,
standalone or behind nginx, without needing MLflow's own API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.models.common import StrictModel

MAX_EXPERIMENTS = 10_000


class ExperimentsRequest(StrictModel):
    max_results: int = Field(
        default=1000, ge=1, le=MAX_EXPERIMENTS, description="How many experiments to list."
    )


class ExperimentInfo(BaseModel):
    experiment_id: str = Field(description="The experiment's id, as MLflow writes it.")
    name: str = Field(description="The experiment's name.")
    trace_count: int = Field(description="Traces the experiment holds, at any time.")
    last_trace_ms: int | None = Field(
        description="timestamp_ms of its latest trace (epoch ms); null when it has none."
    )


class ExperimentsResponse(BaseModel):
    data: list[ExperimentInfo] = Field(
        description=(
            "Active (not deleted) experiments, most traces first, then by id. With access "
            "control on, only those the caller may read."
        )
    )
