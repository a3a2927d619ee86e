"""A small edge-case tracking DB, written through MLflow's own tracing API: values that differ
only in case or trailing spaces, non-ASCII and escaped strings, mixed-type feedback, judge
failures only, values whose float sum depends on the order of addition. The fixtures that build
it per backend (``edge_dbs``, ``edge_clients``, ``edge_raw``) are in ``tests/conftest.py``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import AssessmentError, AssessmentSource, SpanStatus, SpanStatusCode

from service.demo.generate import mlflow_tracking
from tests.oracle.database import mlflow_style_url

EDGE_START_MS = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1000)  # a Monday
EDGE_STEP_MS = 3 * 3_600_000
EDGE_TRACES = 10
EDGE_END_MS = EDGE_START_MS + EDGE_TRACES * EDGE_STEP_MS
NS = 1_000_000

# Tags per trace index. Keys and values that only differ in case or trailing spaces, and
# characters whose code-point order differs from most collations.
EDGE_TAGS: dict[int, dict[str, str]] = {
    0: {"env": "prod", "letter": "b"},
    1: {"env": "prod", "letter": "B"},
    2: {"env": "Prod", "letter": "a"},
    3: {"env": "Prod", "letter": "\u00e4"},
    4: {"env": "staging", "letter": "a "},
    5: {"Env": "prod", "letter": "\U0001f600"},
    6: {"env": "prod "},
}
# TOOL spans per trace index: (name, status, duration in ns).
EDGE_TOOLS: dict[int, list[tuple[str, str, int]]] = {
    0: [("search", "OK", 10 * NS), ("Search", "OK", 20 * NS)],
    1: [("search", "ERROR", 30 * NS), ("search ", "OK", 1_500_000)],
    2: [("lookup", "OK", 2_250_001), ("search", "OK", 12 * NS)],
    3: [("Search", "ERROR", 5 * NS)],
}
# Feedback per name: (trace index, value, judge error?).
_FAILED = object()
EDGE_FEEDBACK: dict[str, list[tuple[int, Any]]] = {
    "mixed": [(0, 1), (1, "two"), (2, 3.5), (3, "two")],
    "yesno": [(0, "Yes"), (1, "no"), (2, True), (3, False), (4, "NO")],
    "padded": [(0, " yes"), (1, "no")],
    "escaped": [(0, 'q"uote'), (1, "\u00e9"), (2, "\U0001f600"), (3, "line\nbreak"), (4, "\u00e9")],
    "all_failed": [(0, _FAILED), (1, _FAILED)],
    "numbers": [(0, 0.1), (1, 0.2), (2, 0.3), (3, 7), (4, -2.5), (5, 1e-3), (6, 0.7)],
    "late": [(9, 0.5)],
}
EDGE_EXPECTATION = "expected"


@dataclass(frozen=True)
class EdgeDB:
    name: str
    sync_uri: str
    experiment_id: str

    @property
    def service_url(self) -> str:
        return mlflow_style_url(self.sync_uri)


def build_edge_db(uri: str) -> str:
    """Write the edge-case traces through MLflow's tracing API; return the experiment id."""
    with mlflow_tracking(uri):
        experiment_id = MlflowClient(uri).create_experiment("edge-cases")
        source = AssessmentSource(source_type="CODE", source_id="edge-checker")
        trace_ids: list[str] = []
        for i in range(EDGE_TRACES):
            start_ns = (EDGE_START_MS + i * EDGE_STEP_MS) * NS
            root = mlflow.start_span_no_context(
                f"edge-{i}",
                span_type="AGENT",
                inputs={"i": i},
                tags=EDGE_TAGS.get(i, {}),
                experiment_id=experiment_id,
                start_time_ns=start_ns,
            )
            at = start_ns + NS
            for name, status, duration in EDGE_TOOLS.get(i, []):
                span = mlflow.start_span_no_context(
                    name, span_type="TOOL", parent_span=root, inputs={}, start_time_ns=at
                )
                span.end(
                    outputs={},
                    status=SpanStatus(SpanStatusCode(status)),
                    end_time_ns=at + duration,
                )
                at += duration + NS
            root.end(outputs={"ok": True}, end_time_ns=at + NS)
            trace_ids.append(root.trace_id)
        for name, rows in EDGE_FEEDBACK.items():
            for i, value in rows:
                if value is _FAILED:
                    error = AssessmentError(error_code="TIMEOUT", error_message="judge timed out")
                    mlflow.log_feedback(
                        trace_id=trace_ids[i], name=name, source=source, error=error
                    )
                else:
                    mlflow.log_feedback(
                        trace_id=trace_ids[i], name=name, value=value, source=source
                    )
        mlflow.log_expectation(trace_id=trace_ids[0], name=EDGE_EXPECTATION, value="x")
        return str(experiment_id)


def edge_body(db: EdgeDB, **extra: Any) -> dict[str, Any]:
    return {"experiment_ids": [db.experiment_id], **extra}
