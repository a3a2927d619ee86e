"""Independent expectations for tokens, cost, assessments, tools and tags (issue 3).

Nothing here imports the service: rows are read with plain SQLAlchemy Core from MLflow's tables,
types are decided from the stored JSON with ``json.loads``, buckets come from ``tests.oracle``
(calendar arithmetic), percentiles from numpy, exact sums from ``math.fsum`` and ``fractions``.

It also builds a small *edge-case* tracking DB per backend through MLflow's own tracing API:
values that differ only in case or trailing spaces, non-ASCII and escaped strings, mixed-type
feedback, judge failures only, values whose float sum depends on the order of addition.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import AssessmentError, AssessmentSource, SpanStatus, SpanStatusCode
from mlflow.store.tracking.dbmodels.models import (
    SqlAssessments,
    SqlSpan,
    SqlTraceInfo,
    SqlTraceTag,
)
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from service.app import create_app
from service.demo.generate import mlflow_tracking
from service.settings import Settings
from tests import oracle
from tests.conftest import (
    TEST_DB_NAME,
    InsightsClient,
    enabled_backends,
    recreate_server_database,
)

# --------------------------------------------------------------------------- raw rows

TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation_input_tokens_above_1hr",
)
COST_KEYS = ("total_cost", "input_cost", "output_cost")


@dataclass(frozen=True)
class Trace:
    request_id: str
    experiment_id: int
    timestamp_ms: int
    status: str
    trace_name: str | None
    tokens: dict[str, int | None]
    costs: dict[str, float | None]


@dataclass(frozen=True)
class Span:
    trace_id: str
    experiment_id: int
    name: str | None
    type: str | None
    status: str
    start_ns: int
    end_ns: int | None
    model_name: str | None
    model_provider: str | None
    costs: dict[str, float | None]


@dataclass(frozen=True)
class Assessment:
    trace_id: str
    name: str
    assessment_type: str
    value: str  # the stored JSON text
    error: str | None
    valid: bool
    source_type: str


@dataclass(frozen=True)
class Tag:
    request_id: str
    key: str
    value: str | None


@dataclass
class Raw:
    """Every relevant row of one tracking DB, read once."""

    traces: list[Trace]
    spans: list[Span]
    assessments: list[Assessment]
    tags: list[Tag]
    by_id: dict[str, Trace] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {t.request_id: t for t in self.traces}

    def in_scope(
        self,
        experiment_ids: Sequence[str],
        start_time: int | None = None,
        end_time: int | None = None,
        keep: Callable[[Trace], bool] | None = None,
    ) -> dict[str, Trace]:
        ids = {int(i) for i in experiment_ids}
        return {
            t.request_id: t
            for t in self.traces
            if t.experiment_id in ids
            and (start_time is None or t.timestamp_ms >= start_time)
            and (end_time is None or t.timestamp_ms < end_time)
            and (keep is None or keep(t))
        }

    def tags_of(self, request_id: str) -> dict[str, str | None]:
        return {t.key: t.value for t in self.tags if t.request_id == request_id}


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def load_raw(conn: sa.Connection) -> Raw:
    ti, sp, a, tt = (
        SqlTraceInfo.__table__,
        SqlSpan.__table__,
        SqlAssessments.__table__,
        SqlTraceTag.__table__,
    )
    traces = [
        Trace(
            r.request_id,
            int(r.experiment_id),
            int(r.timestamp_ms),
            r.status,
            r.trace_name,
            {k: _int(getattr(r, k)) for k in TOKEN_KEYS},
            {k: _float(getattr(r, k)) for k in COST_KEYS},
        )
        for r in conn.execute(sa.select(ti))
    ]
    spans = [
        Span(
            r.trace_id,
            int(r.experiment_id),
            r.name,
            r.type,
            r.status,
            int(r.start_time_unix_nano),
            _int(r.end_time_unix_nano),
            r.model_name,
            r.model_provider,
            {k: _float(getattr(r, k)) for k in COST_KEYS},
        )
        for r in conn.execute(
            sa.select(
                sp.c.trace_id,
                sp.c.experiment_id,
                sp.c.name,
                sp.c.type,
                sp.c.status,
                sp.c.start_time_unix_nano,
                sp.c.end_time_unix_nano,
                sp.c.model_name,
                sp.c.model_provider,
                *[sp.c[k] for k in COST_KEYS],
            )
        )
    ]
    assessments = [
        Assessment(
            r.trace_id, r.name, r.assessment_type, r.value, r.error, bool(r.valid), r.source_type
        )
        for r in conn.execute(sa.select(a))
    ]
    tags = [Tag(r.request_id, r.key, r.value) for r in conn.execute(sa.select(tt))]
    return Raw(traces, spans, assessments, tags)


# --------------------------------------------------------------------------- comparisons


def assert_close_json(actual: Any, expected: Any, path: str = "$") -> None:
    """Equal JSON, floats to 1e-9 relative (``oracle.close``), key sets and order of lists."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), (path, actual)
        assert set(actual) == set(expected), (path, sorted(actual), sorted(expected))
        for key, value in expected.items():
            assert_close_json(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (path, actual, expected)
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close_json(a, e, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert isinstance(actual, int | float), (path, actual)
        assert oracle.close(float(actual), expected), (path, actual, expected)
    else:
        assert actual == expected and type(actual) is type(expected), (path, actual, expected)


def expected_starts(traces: Iterable[Trace], body: dict[str, Any], size: str, tz: str) -> list[int]:
    stamps = [t.timestamp_ms for t in traces]
    first = body.get("start_time", min(stamps, default=None))
    last = body["end_time"] - 1 if "end_time" in body else max(stamps, default=None)
    if first is None or last is None:
        return []
    return oracle.bucket_starts(first, last, size, tz)


def series(
    starts: list[int],
    items: Iterable[tuple[int, Any]],
    size: str,
    tz: str,
    make: Callable[[list[Any]], dict[str, Any]],
) -> list[dict[str, Any]]:
    """One point per bucket start: ``make(items of the bucket)`` plus ``time_bucket``."""
    groups: dict[int, list[Any]] = {}
    for ts, item in items:
        groups.setdefault(oracle.bucket_start(ts, size, tz), []).append(item)
    assert set(groups) <= set(starts), "every item must fall in a bucket of the series"
    return [{"time_bucket": s, **make(groups.get(s, []))} for s in starts]


def rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


def exact_mean(values: Sequence[float]) -> float | None:
    """The correctly rounded mean of doubles (what an exact sum / count gives)."""
    if not values:
        return None
    return float(sum((Fraction(v) for v in values), Fraction(0)) / len(values))


def pct(values: Sequence[float], q: float) -> float | None:
    return oracle.percentile(values, q)


# --------------------------------------------------------------------------- assessments


def value_type(value_text: str) -> str | None:
    """The contract's type of one stored JSON value; None for JSON null."""
    value = json.loads(value_text)
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "boolean" if value.lower() in ("yes", "no") else "string"
    if isinstance(value, int | float):
        try:
            return "numeric" if math.isfinite(float(value)) else "string"
        except OverflowError:
            return "string"
    return "string"


def is_failure(value_text: str) -> bool:
    value = json.loads(value_text)
    return value is False or (isinstance(value, str) and value.lower() == "no")


def display(value_text: str) -> str:
    value = json.loads(value_text)
    return value if isinstance(value, str) else value_text


def name_type(values: Iterable[str]) -> str:
    kinds = {kind for v in values if (kind := value_type(v)) is not None}
    return kinds.pop() if len(kinds) == 1 else "string"


def top_values(counter: Counter[str], total: int, limit: int) -> list[dict[str, Any]]:
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{"value": v, "count": n, "percentage": rate(n, total) or 0.0} for v, n in ranked]


# --------------------------------------------------------------------------- MLflow's numbers


def mlflow_points(store: SqlAlchemyStore, *args: Any, **kwargs: Any) -> list[Any]:
    """``store.query_trace_metrics(...)`` as a list of MetricDataPoint (one page is enough)."""
    return list(store.query_trace_metrics(*args, **kwargs))


@contextmanager
def mlflow_store(uri: str, tmp: Path) -> Iterator[SqlAlchemyStore]:
    store = SqlAlchemyStore(uri, str(tmp / "artifacts"))
    try:
        yield store
    finally:
        store.engine.dispose()


# --------------------------------------------------------------------------- edge-case DB

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
        return self.sync_uri.replace("+psycopg2", "").replace("+pymysql", "")


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


_edge_built: dict[str, EdgeDB] = {}


def edge_db(name: str, data_dir: Path) -> EdgeDB:
    if name not in _edge_built:
        if name == "sqlite":
            uri = f"sqlite:///{data_dir / 'edge.db'}"
        else:
            uri = recreate_server_database(name, f"{TEST_DB_NAME}_edge")
        _edge_built[name] = EdgeDB(name, uri, build_edge_db(uri))
    return _edge_built[name]


@pytest.fixture(scope="session")
def edge_dbs(data_dir: Path) -> list[EdgeDB]:
    return [edge_db(name, data_dir) for name in enabled_backends()]


async def _open_edge_client(db: EdgeDB) -> AsyncGenerator[InsightsClient, None]:
    app = create_app(Settings(database_url=db.service_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://insights") as http:
            yield InsightsClient(http, db)  # type: ignore[arg-type]  # only kept, never read


@pytest.fixture(scope="session")
async def edge_clients(edge_dbs: list[EdgeDB]) -> AsyncIterator[dict[str, InsightsClient]]:
    """A client per backend over its edge-case DB."""
    async with AsyncExitStack() as stack:
        result: dict[str, InsightsClient] = {}
        for db in edge_dbs:
            gen = _open_edge_client(db)
            result[db.name] = await gen.__anext__()
            stack.push_async_callback(gen.aclose)
        yield result


@pytest.fixture(scope="session")
def edge_raw(edge_dbs: list[EdgeDB]) -> dict[str, Raw]:
    result = {}
    for db in edge_dbs:
        engine = sa.create_engine(db.sync_uri)
        with engine.connect() as conn:
            result[db.name] = load_raw(conn)
        engine.dispose()
    return result


def edge_body(db: EdgeDB, **extra: Any) -> dict[str, Any]:
    return {"experiment_ids": [db.experiment_id], **extra}


async def same_json_everywhere(
    clients: dict[str, InsightsClient], endpoint: str, body_for: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """Call every backend; assert the JSON is identical to the last digit; return it."""
    answers = {name: await c.ok(endpoint, body_for(name)) for name, c in clients.items()}
    first_name, first = next(iter(answers.items()))
    for name, answer in answers.items():
        assert answer == first, f"{endpoint}: {name} differs from {first_name}"
    return first


# --------------------------------------------------------------------------- round trips


@asynccontextmanager
async def counting_client(service_url: str) -> AsyncIterator[tuple[InsightsClient, list[str]]]:
    """A client whose SQL statements are recorded, to check each endpoint's round trips."""
    app = create_app(Settings(database_url=service_url))
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    async with app.router.lifespan_context(app):
        sa.event.listen(app.state.database.engine.sync_engine, "before_cursor_execute", record)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://insights") as http:
            yield InsightsClient(http, None), statements  # type: ignore[arg-type]


async def round_trips(
    client: InsightsClient, statements: list[str], endpoint: str, body: dict[str, Any]
) -> int:
    statements.clear()
    await client.ok(endpoint, body)
    return len(statements)
