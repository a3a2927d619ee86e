"""``service.filters``: a filter selects exactly the traces MLflow's own ``search_traces`` returns.

Each database (SQLite; PostgreSQL and MariaDB as in ``tests/conftest.py``, restricted by
``INSIGHTS_TEST_BACKENDS``; the server databases are ``<INSIGHTS_TEST_DB_NAME>_filters``)
gets a tracking DB built once per session through MLflow's tracing API: the demo dataset plus a
few traces for edge cases (session-level assessments, tag keys and values differing only in case
or a trailing space, a trace linked to a run). For every filter of ``tests/filter_cases.py`` the
trace ids from ``MlflowClient.search_traces`` must equal those selected by our predicates, run
through a sync and an async engine, and through HTTP the volume endpoint must count as many.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, chdir, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.store.tracking.dbmodels.models import SqlTraceInfo
from mlflow.tracing.constant import TraceMetadataKey, TraceTagKey
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from service.app import create_app
from service.demo.generate import SUPPORT_AGENT, build_tracking_db, mlflow_tracking
from service.errors import ErrorCode, InsightsError
from service.filters import MAX_FILTER_LENGTH, parse_filter_string
from service.settings import Settings
from tests.conftest import API, empty_tracking_uri, enabled_backends, serve
from tests.filter_cases import COMPOSED, EQUIVALENT, ERRORS, Case, ComposedCase
from tests.oracle.database import mlflow_style_url

N_TRACES = 150
EDGE_EXPERIMENT = "filters-edge"
EDGE_SESSION = "edge-session"
ASYNC_DRIVERS = {
    "sqlite": ("sqlite://", "sqlite+aiosqlite://"),
    "postgresql": ("postgresql+psycopg2://", "postgresql+asyncpg://"),
    "mysql": ("mysql+pymysql://", "mysql+aiomysql://"),
}


# --------------------------------------------------------------------------------------------
# The test databases
# --------------------------------------------------------------------------------------------


@dataclass
class FilterDB:
    backend: str
    uri: str
    experiment_ids: list[str]
    placeholders: dict[str, str]
    engine: sa.Engine

    def mlflow_ids(self, filter_string: str) -> set[str]:
        client = MlflowClient(self.uri)
        found: set[str] = set()
        token: str | None = None
        while True:
            page = client.search_traces(
                experiment_ids=self.experiment_ids,
                filter_string=filter_string,
                max_results=1000,
                page_token=token,
                include_spans=False,
            )
            found.update(trace.info.trace_id for trace in page)
            token = page.token
            if not token:
                return found

    def our_query(self, filter_string: str) -> sa.Select[Any]:
        ids = [int(e) for e in self.experiment_ids]
        predicates = parse_filter_string(filter_string, experiment_ids=self.experiment_ids)
        return sa.select(SqlTraceInfo.request_id).where(
            SqlTraceInfo.experiment_id.in_(ids), *predicates
        )

    def our_ids(self, filter_string: str) -> set[str]:
        with self.engine.connect() as conn:
            rows: list[str] = list(conn.execute(self.our_query(filter_string)).scalars())
        assert len(rows) == len(set(rows)), "a predicate repeated trace rows"
        return set(rows)

    def our_ids_async(self, filter_string: str) -> set[str]:
        sync_prefix, async_prefix = ASYNC_DRIVERS[self.backend]
        url = self.uri.replace(sync_prefix, async_prefix, 1)
        query = self.our_query(filter_string)

        async def run() -> set[str]:
            engine = create_async_engine(url, poolclass=NullPool)
            try:
                async with engine.connect() as conn:
                    rows: list[str] = list((await conn.execute(query)).scalars())
                    return set(rows)
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def all_ids(self) -> set[str]:
        return self.our_ids(" ")


_filter_dbs: dict[str, FilterDB] = {}


def filter_db(backend: str, tmp_path_factory: pytest.TempPathFactory) -> FilterDB:
    """One tracking DB per backend, built once per session (logging through MLflow is slow)."""
    if backend not in _filter_dbs:
        data_dir = tmp_path_factory.mktemp(f"filters-{backend}")
        uri = empty_tracking_uri(backend, data_dir, "_filters")
        dataset = build_tracking_db(uri, n_traces=N_TRACES, seed=11)
        with logging_to(uri, data_dir):
            edge = add_edge_traces(
                uri, dataset.experiment_ids[SUPPORT_AGENT], dataset.start_time_ms
            )
        ids = [*dataset.experiment_ids.values(), edge.experiment_id]
        engine = sa.create_engine(uri, poolclass=NullPool)
        built = FilterDB(backend, uri, ids, {}, engine)
        built.placeholders = placeholders(built, dataset.start_time_ms, edge.run_id)
        _filter_dbs[backend] = built
    return _filter_dbs[backend]


@pytest.fixture(scope="session", params=enabled_backends())
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FilterDB:
    return filter_db(request.param, tmp_path_factory)


@pytest.fixture(scope="session")
async def filter_clients(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, tuple[FilterDB, httpx.AsyncClient]]]:
    """Every enabled backend's filter DB with the service over it, for the HTTP check."""
    async with AsyncExitStack() as stack:
        result: dict[str, tuple[FilterDB, httpx.AsyncClient]] = {}
        for backend in enabled_backends():
            built = filter_db(backend, tmp_path_factory)
            app = create_app(Settings(database_url=mlflow_style_url(built.uri)))
            http = await stack.enter_async_context(serve(app))
            result[backend] = (built, http)
            # Without a filter every trace counts: a case that selects nothing is then a check.
            everything = len(built.mlflow_ids(""))
            assert await volume_count(http, built, None) == everything > 0
        yield result


async def volume_count(http: httpx.AsyncClient, fdb: FilterDB, filter_string: str | None) -> int:
    body = {"experiment_ids": fdb.experiment_ids, "filter_string": filter_string}
    response = await http.post(f"{API}/traffic-cost/volume", json=body)
    assert response.status_code == 200, response.text
    count: int = response.json()["summary"]["count"]
    return count


@contextmanager
def logging_to(uri: str, data_dir: Path) -> Iterator[None]:
    """Log traces synchronously to ``uri`` (artifacts under ``data_dir``), then restore."""
    # Runs and experiments put their artifacts under ./mlruns.
    with mlflow_tracking(uri), chdir(data_dir):
        yield


@dataclass(frozen=True)
class EdgeData:
    experiment_id: str
    run_id: str


def log_trace(
    experiment_id: str,
    name: str,
    timestamp_ms: int,
    *,
    tags: dict[str, str] | None = None,
    metadata: dict[str, str] | None = None,
    spans: tuple[tuple[str, str, str], ...] = (),
) -> str:
    """A finished trace with (name, type, status) child spans, 10 ms each."""
    start_ns = timestamp_ms * 1_000_000
    root = mlflow.start_span_no_context(
        name,
        span_type="AGENT",
        inputs={"question": name},
        tags=tags,
        metadata=metadata,
        experiment_id=experiment_id,
        start_time_ns=start_ns,
    )
    for i, (span_name, span_type, status) in enumerate(spans):
        child_start = start_ns + (i * 10 + 1) * 1_000_000
        child = mlflow.start_span_no_context(
            span_name, span_type=span_type, parent_span=root, start_time_ns=child_start
        )
        child.end(status=status, end_time_ns=child_start + 10_000_000)
    root.end(outputs={"answer": "ok"}, end_time_ns=start_ns + (len(spans) * 10 + 5) * 1_000_000)
    return root.trace_id


def add_edge_traces(uri: str, support_agent_id: str, start_ms: int) -> EdgeData:
    """Traces for what the demo data lacks; see the module docstring."""
    client = MlflowClient(uri)
    edge_id = client.create_experiment(EDGE_EXPERIMENT)
    at = iter(range(start_ms + 3_600_123, start_ms + 10**9, 7_200_000))
    session = {TraceMetadataKey.TRACE_SESSION: EDGE_SESSION}
    tool = ("Search_Orders", "TOOL", "OK")
    judged = log_trace(
        edge_id, "Chat", next(at), tags={"persona": "admin "}, metadata=session, spans=(tool,)
    )
    log_trace(edge_id, "chat", next(at), tags={"persona": "ADMIN"}, metadata=session)
    log_trace(support_agent_id, "chat", next(at), tags={"PERSONA": "admin"}, metadata=session)
    for name, value in (("session_quality", "good"), ("session_score", 0.8)):
        mlflow.log_feedback(trace_id=judged, name=name, value=value, metadata=session)
    plain = log_trace(edge_id, "triage", next(at), spans=(("lookup_customer", "TOOL", "ERROR"),))
    mlflow.log_feedback(trace_id=plain, name="quality_score", value="5")
    mlflow.log_feedback(trace_id=plain, name="correctness", value="true")
    with mlflow.start_run(experiment_id=edge_id) as run:
        client.link_traces_to_run([log_trace(edge_id, "summarize", next(at))], run.info.run_id)
        log_trace(
            edge_id,
            "summarize",
            next(at),
            metadata={TraceMetadataKey.SOURCE_RUN: run.info.run_id},
        )
    # A trace without a name, so that the trace-name tag's IS NULL / IS NOT NULL select some.
    client.delete_trace_tag(log_trace(edge_id, "nameless", next(at)), TraceTagKey.TRACE_NAME)
    return EdgeData(edge_id, run.info.run_id)


def placeholders(db: FilterDB, start_ms: int, run_id: str) -> dict[str, str]:
    """Values for the ``<...>`` placeholders of the case table, read from this database."""
    usage = cost = ""
    for trace in MlflowClient(db.uri).search_traces(
        experiment_ids=db.experiment_ids,
        filter_string="metadata.mlflow.trace.cost IS NOT NULL",
        max_results=1,
        order_by=["timestamp_ms ASC"],
        include_spans=False,
    ):
        usage = trace.info.trace_metadata[TraceMetadataKey.TOKEN_USAGE]
        cost = trace.info.trace_metadata[TraceMetadataKey.COST]
    assert usage and cost, "the demo data has no trace with token usage and cost"
    lowest: int
    highest: int
    second: int
    duration: int
    with db.engine.connect() as conn:
        lowest, highest = conn.execute(
            sa.select(
                sa.func.min(SqlTraceInfo.timestamp_ms), sa.func.max(SqlTraceInfo.timestamp_ms)
            )
        ).one()
        second = conn.execute(
            sa.select(sa.func.min(SqlTraceInfo.timestamp_ms)).where(
                SqlTraceInfo.timestamp_ms > lowest
            )
        ).scalar_one()
        duration = conn.execute(
            sa.select(SqlTraceInfo.execution_time_ms)
            .where(SqlTraceInfo.execution_time_ms.is_not(None))
            .order_by(SqlTraceInfo.timestamp_ms)
            .limit(1)
        ).scalar_one()
    assert lowest == start_ms
    return {
        "<duration>": str(duration),
        "<first>": str(lowest),
        "<second>": str(second),
        "<mid>": str((lowest + highest) // 2),
        "<token_usage>": usage,
        "<cost>": cost,
        "<run_id>": run_id,
    }


def resolve(db: FilterDB, template: str) -> str:
    for placeholder, value in db.placeholders.items():
        template = template.replace(placeholder, value)
    return template


# --------------------------------------------------------------------------------------------
# Equivalence with MLflow
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", EQUIVALENT, ids=lambda c: c.filter)
def test_selects_what_mlflow_selects(db: FilterDB, case: Case) -> None:
    filter_string = resolve(db, case.filter)
    expected = db.mlflow_ids(filter_string)
    ours = db.our_ids(filter_string)
    assert ours == expected, (
        f"{filter_string!r} on {db.backend}: only ours {sorted(ours - expected)[:5]}, "
        f"only MLflow's {sorted(expected - ours)[:5]}"
    )
    assert db.our_ids_async(filter_string) == expected
    if not case.trivial:
        assert 0 < len(expected) < len(db.all_ids()), f"{filter_string!r} cannot fail"


@pytest.mark.parametrize("case", EQUIVALENT, ids=lambda c: c.filter)
async def test_endpoint_counts_what_mlflow_selects(
    filter_clients: dict[str, tuple[FilterDB, httpx.AsyncClient]], case: Case
) -> None:
    """Through HTTP: the volume summary's ``count`` (open window) for the filter equals the
    number of traces MLflow's ``search_traces`` returns, on every database.

    The check is vacuous on a database where MLflow selects every trace (an endpoint that
    ignored the filter would pass). Selecting nothing is a real check: ``filter_clients``
    asserts that the same request without a filter counts every trace. A non-trivial case selects
    some but not all traces on every database; a trivial one may select nothing or everything on
    some database (see ``Case``), but not everything on all of them at once.
    """
    counts: dict[str, tuple[int, int]] = {}
    for name, (fdb, http) in filter_clients.items():
        filter_string = resolve(fdb, case.filter)
        expected = len(fdb.mlflow_ids(filter_string))
        assert await volume_count(http, fdb, filter_string) == expected, (filter_string, name)
        counts[name] = (expected, len(fdb.all_ids()))
    if case.trivial:
        assert any(n < total for n, total in counts.values()), f"vacuous everywhere: {counts}"
    else:
        assert all(0 < n < total for n, total in counts.values()), counts


@pytest.mark.parametrize("case", COMPOSED, ids=lambda c: c.filter)
def test_in_lists_on_trace_name(db: FilterDB, case: ComposedCase) -> None:
    """MLflow rejects IN on the trace name; §6 allows it with the obvious meaning."""
    parts = [db.mlflow_ids(part) for part in case.parts]
    expected = set.union(*parts) if case.combine == "any" else set.intersection(*parts)
    assert db.our_ids(case.filter) == expected
    assert db.our_ids_async(case.filter) == expected
    assert 0 < len(expected) < len(db.all_ids())


def test_span_clauses_hold_on_one_span(db: FilterDB) -> None:
    one_span = db.our_ids("span.name = 'search_orders' AND span.status = 'ERROR'")
    any_spans = db.our_ids("span.name = 'search_orders'") & db.our_ids("span.status = 'ERROR'")
    assert one_span < any_spans, "some trace should have an OK search and another failed call"


def test_not_equal_needs_the_tag(db: FilterDB) -> None:
    without = db.our_ids("tags.persona IS NULL")
    assert without
    assert not without & db.our_ids("tags.persona != 'admin'")
    assert not without & db.our_ids("tags.persona LIKE '%'")


def test_session_assessments_without_experiment_scope(db: FilterDB) -> None:
    """Without ``experiment_ids`` a session-level assessment counts within its experiment."""
    filter_string = "feedback.session_quality IS NOT NULL"
    scoped = db.our_ids(filter_string)
    with db.engine.connect() as conn:
        ids = [int(e) for e in db.experiment_ids]
        query: sa.Select[Any, Any] = sa.select(
            SqlTraceInfo.request_id, SqlTraceInfo.experiment_id
        ).where(SqlTraceInfo.experiment_id.in_(ids), *parse_filter_string(filter_string))
        unscoped = dict(conn.execute(query).tuples().all())
    edge_experiment = int(db.experiment_ids[-1])
    assert len(unscoped) == 2 and set(unscoped.values()) == {edge_experiment}
    assert set(unscoped) < scoped and len(scoped) == 3


def test_blank_filters_select_everything() -> None:
    assert parse_filter_string(None) == []
    assert parse_filter_string("") == []
    assert parse_filter_string(" \n\t ") == []


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("filter_string", "words"), ERRORS, ids=lambda v: repr(v)[:60])
def test_bad_filters_are_invalid_parameter(filter_string: str, words: tuple[str, ...]) -> None:
    with pytest.raises(InsightsError) as caught:
        parse_filter_string(filter_string)
    assert caught.value.error_code is ErrorCode.INVALID_PARAMETER_VALUE
    assert caught.value.http_status == 400
    for word in words:
        assert word in caught.value.message, caught.value.message
    assert len(caught.value.message) < 600


def test_non_string_filter_is_invalid_parameter() -> None:
    with pytest.raises(InsightsError, match="must be a string"):
        parse_filter_string(5)  # type: ignore[arg-type]


def test_longest_filter_is_accepted() -> None:
    clause = "status = 'OK' AND "
    text = clause * ((MAX_FILTER_LENGTH - 20) // len(clause)) + "status = 'OK'"
    assert len(text) <= MAX_FILTER_LENGTH
    assert len(parse_filter_string(text)) == text.count("status")


_FRAGMENTS = (
    "status", "name", "tags.persona", "tags.`a b`", "metadata.x", "span.name", "span.type",
    "feedback.q", "expectation.e", "timestamp_ms", "trace.", "`", "'", '"', "(", ")", ",",
    "=", "!=", "<", ">=", "IN", "NOT", "LIKE", "ILIKE", "IS", "NULL", "AND", "OR", "'v'",
    '"v"', "5", "-1.5", "1e3", "('a', 'b')", ";", "--", "é", "\\", " ", "  ",
)  # fmt: skip


_CHARACTERS = string.printable + "`'\"éü\x00\ud800"


def test_random_input_only_ever_raises_invalid_parameter() -> None:
    """Whatever the text, the parser returns predicates that compile, or a 400."""
    rng = random.Random(20261105)
    dialects = (sqlite.dialect(), postgresql.dialect(), mysql.dialect())
    parsed = 0
    for _ in range(3000):
        text = " ".join(rng.choice(_FRAGMENTS) for _ in range(rng.randrange(1, 9)))
        try:
            predicates = parse_filter_string(text, experiment_ids=["1"])
        except InsightsError as error:
            assert error.error_code is ErrorCode.INVALID_PARAMETER_VALUE
            continue
        parsed += 1
        query: sa.Select[Any] = sa.select(SqlTraceInfo.request_id).where(*predicates)
        for dialect in dialects:
            query.compile(dialect=dialect)
    assert parsed > 10
    for _ in range(2000):  # raw characters, not just grammar pieces
        text = "".join(rng.choice(_CHARACTERS) for _ in range(rng.randrange(1, 30)))
        try:
            parse_filter_string(text)
        except InsightsError as error:
            assert error.error_code is ErrorCode.INVALID_PARAMETER_VALUE


def test_values_are_bound_parameters() -> None:
    hostile = "x'; DROP TABLE trace_info; --"
    predicates = parse_filter_string(
        f'tags.`a"b` = "{hostile}" AND span.name LIKE "{hostile}" AND metadata.k != "{hostile}"'
    )
    for dialect in (sqlite.dialect(), postgresql.dialect(), mysql.dialect()):
        sql = str(sa.select(SqlTraceInfo.request_id).where(*predicates).compile(dialect=dialect))
        assert "DROP" not in sql


def test_token_usage_equality_needs_mlflows_exact_json() -> None:
    """Only the JSON MLflow writes can be equal; other spellings match nothing (as in MLflow)."""
    canonical = json.dumps({"input_tokens": 5, "output_tokens": 2})
    for text, matchable in ((canonical, True), ('{"output_tokens": 2, "input_tokens": 5}', False)):
        [predicate] = parse_filter_string(f"metadata.mlflow.trace.tokenUsage = '{text}'")
        sql = str(predicate.compile(dialect=sqlite.dialect()))
        assert ("input_tokens" in sql) is matchable, sql
    # Too deeply nested for Python's JSON decoder: still just "not MLflow's JSON".
    [predicate] = parse_filter_string("metadata.mlflow.trace.tokenUsage = '" + "[" * 4000 + "'")
    assert "input_tokens" not in str(predicate.compile(dialect=sqlite.dialect()))
