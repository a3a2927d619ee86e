"""Independent computations of what the service should answer, for the tests.

Nothing here imports the service's bucketing, statistics or query code: rows are read with plain
SQLAlchemy Core from MLflow's tables (``rows``), buckets come from calendar arithmetic
(``buckets``), statistics from numpy and ``fractions`` (``stats``), feedback types from the stored
JSON (``assessments``), MLflow's own numbers from its store (``mlflow_store``). ``edge_data``
writes a small edge-case DB through MLflow's tracing API; its fixtures are in
``tests/conftest.py``. ``from tests import oracle; oracle.X`` reaches every name below.
"""

from tests.oracle.assessments import display, is_failure, name_type, top_values, value_type
from tests.oracle.buckets import (
    bucket_start,
    bucket_starts,
    expected_starts,
    group_by_bucket,
    group_stamped,
    series,
)
from tests.oracle.compare import assert_close_json, same_json_everywhere
from tests.oracle.database import mlflow_style_url, table_checksums
from tests.oracle.edge_data import (
    EDGE_END_MS,
    EDGE_START_MS,
    EDGE_STEP_MS,
    EDGE_TRACES,
    EdgeDB,
    build_edge_db,
    edge_body,
)
from tests.oracle.mlflow_store import mlflow_points, mlflow_store
from tests.oracle.rows import (
    COST_KEYS,
    TOKEN_KEYS,
    Assessment,
    Raw,
    Span,
    Tag,
    Trace,
    load_raw,
    load_traces,
)
from tests.oracle.stats import close, exact_mean, mean, percentile, rate

__all__ = [
    "COST_KEYS",
    "EDGE_END_MS",
    "EDGE_START_MS",
    "EDGE_STEP_MS",
    "EDGE_TRACES",
    "TOKEN_KEYS",
    "Assessment",
    "EdgeDB",
    "Raw",
    "Span",
    "Tag",
    "Trace",
    "assert_close_json",
    "bucket_start",
    "bucket_starts",
    "build_edge_db",
    "close",
    "display",
    "edge_body",
    "exact_mean",
    "expected_starts",
    "group_by_bucket",
    "group_stamped",
    "is_failure",
    "load_raw",
    "load_traces",
    "mean",
    "mlflow_points",
    "mlflow_store",
    "mlflow_style_url",
    "name_type",
    "percentile",
    "rate",
    "same_json_everywhere",
    "series",
    "table_checksums",
    "top_values",
    "value_type",
]
