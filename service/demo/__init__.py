"""Synthetic MLflow tracking databases: for the test suite and for ``make demo``."""

from service.demo.generate import (
    DEFAULT_END_TIME_MS,
    EXPERIMENTS,
    GeneratedDataset,
    TracePlan,
    build_tracking_db,
    plan_traces,
)

__all__ = [
    "DEFAULT_END_TIME_MS",
    "EXPERIMENTS",
    "GeneratedDataset",
    "TracePlan",
    "build_tracking_db",
    "plan_traces",
]
