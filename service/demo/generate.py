"""Build an MLflow tracking DB filled with synthetic GenAI traces, deterministic for a seed.

The schema is created by MLflow's own alembic migrations and every row is written through
MLflow's tracing API, so the data looks exactly like what a real MLflow 3.17 deployment stores
(denormalised token and cost columns, system tags, assessment validity, ...).

Generation has two steps: ``plan_traces`` draws everything from ``random.Random(seed)`` into
plain dataclasses (no MLflow involved, so the random stream never depends on MLflow), and
``build_tracking_db`` writes the plans through MLflow.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import mlflow
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities import (
    AssessmentError,
    AssessmentSource,
    LiveSpan,
    SpanEvent,
    SpanStatus,
    SpanStatusCode,
    SpanType,
    TraceInfo,
    TraceLocation,
    TraceState,
)
from mlflow.tracing.client import TracingClient
from mlflow.tracing.constant import (
    TRACE_SCHEMA_VERSION,
    TRACE_SCHEMA_VERSION_KEY,
    SpanAttributeKey,
    SpansLocation,
    TraceMetadataKey,
    TraceTagKey,
)
from tqdm import tqdm

# --------------------------------------------------------------------------- constants

#: Default end of the generated window: fixed so tests are deterministic. With ``days=14`` the
#: window covers the EU DST change (2026-10-25) and the US one (2026-11-01).
DEFAULT_END_TIME_MS = int(datetime(2026, 11, 5, tzinfo=UTC).timestamp() * 1000)

SUPPORT_AGENT = "support-agent"
SQL_COPILOT = "sql-copilot"
EMPTY_EXPERIMENT = "empty-experiment"
EXPERIMENTS = (SUPPORT_AGENT, SQL_COPILOT, EMPTY_EXPERIMENT)

OK, ERROR, IN_PROGRESS = (TraceState.OK.value, TraceState.ERROR.value, TraceState.IN_PROGRESS.value)

DAY_MS = 86_400_000
NS_PER_MS = 1_000_000
GAP_MS = 5  # idle time between consecutive child spans
ROOT_ROUNDING_MS = 50  # root latencies are multiples of this, so percentiles meet ties

# Sync export: a trace is stored before its root span's end() returns.
SYNC_TRACE_LOGGING = {"MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"}
# Env for the build. Sync export writes each trace before the call returns; an empty model
# catalog URI makes MLflow price LLM calls from its bundled catalog (no network, fixed prices).
_BUILD_ENV = {
    **SYNC_TRACE_LOGGING,
    "MLFLOW_MODEL_CATALOG_URI": "",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # synthetic data is no usage worth reporting
}

# MLflow records who/where a trace came from (user, script path, git commit of the cwd) as trace
# metadata. Pinning the values keeps the DB identical whoever builds it, wherever.
_SOURCE_METADATA = {
    "mlflow.user": "trace-insights-demo",
    "mlflow.source.name": "service.demo",
    "mlflow.source.type": "LOCAL",
    "mlflow.source.git.commit": "",
    "mlflow.source.git.branch": "",
    "mlflow.source.git.repoURL": "",
}

T = TypeVar("T")
Weighted = Sequence[tuple[T, float]]

# Trace shape per experiment: share of traces, names, root span types, models, tools.
_SQL_SHARE = 0.2
_IN_PROGRESS_SHARE = 0.03
_ERROR_SHARE = 0.10

_TRACE_NAMES: dict[str, Weighted[str]] = {
    SUPPORT_AGENT: [("chat", 60), ("summarize", 25), ("triage", 15)],
    SQL_COPILOT: [("sql_query", 85), ("chat", 15)],
}
_ROOT_TYPES: dict[str, Weighted[str]] = {
    SUPPORT_AGENT: [(SpanType.AGENT, 80), (SpanType.CHAIN, 20)],
    SQL_COPILOT: [(SpanType.CHAIN, 70), (SpanType.AGENT, 30)],
}


@dataclass(frozen=True)
class _Model:
    name: str
    provider: str


GPT_4O = _Model("gpt-4o", "openai")
GPT_4O_MINI = _Model("gpt-4o-mini", "openai")
CLAUDE_37_SONNET = _Model("claude-3-7-sonnet-20250219", "anthropic")
# Not in MLflow 3.17's bundled price catalog: its spans carry tokens and a model, but no cost.
CLAUDE_35_SONNET = _Model("claude-3-5-sonnet-20241022", "anthropic")

_MODELS: dict[str, Weighted[_Model]] = {
    SUPPORT_AGENT: [
        (GPT_4O_MINI, 45),
        (GPT_4O, 30),
        (CLAUDE_37_SONNET, 15),
        (CLAUDE_35_SONNET, 10),
    ],
    SQL_COPILOT: [(GPT_4O, 60), (CLAUDE_37_SONNET, 40)],
}
_LLM_SPAN_NAMES = {"openai": "chat.completions.create", "anthropic": "messages.create"}


@dataclass(frozen=True)
class _Tool:
    error_rate: float
    latencies_ms: tuple[int, ...]
    error: str
    error_latency_ms: int


_TOOLS = {
    "search_orders": _Tool(
        0.05, (40, 60, 60, 90, 150), "TimeoutError: order service did not answer in 5 s", 5000
    ),
    "get_weather": _Tool(
        0.10, (100, 150, 150, 250, 600), "HTTPError: 503 Service Unavailable", 150
    ),
    "lookup_customer": _Tool(0.03, (20, 30, 30, 50), "KeyError: customer not found", 20),
    "send_email": _Tool(
        0.15, (200, 300, 300, 500, 1200), "SMTPServerDisconnected: connection closed", 1000
    ),
    "run_sql": _Tool(
        0.20, (50, 100, 100, 250, 800, 2500), 'ProgrammingError: syntax error at "FROM"', 50
    ),
    "fetch_docs": _Tool(
        0.05, (80, 120, 120, 200, 400), "TimeoutError: docs index did not answer in 2 s", 2000
    ),
}
_EXPERIMENT_TOOLS: dict[str, Weighted[str]] = {
    SUPPORT_AGENT: [
        ("search_orders", 30),
        ("lookup_customer", 25),
        ("send_email", 15),
        ("get_weather", 15),
        ("fetch_docs", 15),
    ],
    SQL_COPILOT: [("run_sql", 70), ("fetch_docs", 20), ("lookup_customer", 10)],
}
_RETRIEVERS = {SUPPORT_AGENT: ("retrieve_docs", 0.3), SQL_COPILOT: ("fetch_schema", 0.5)}

_LLM_COUNTS: Weighted[int] = [(0, 10), (1, 45), (2, 30), (3, 15)]
_TOOL_COUNTS: Weighted[int] = [(0, 30), (1, 35), (2, 25), (3, 10)]
_LLM_LATENCIES_MS = (300, 450, 600, 600, 800, 1000, 1200, 1500, 2000, 3000)
_RETRIEVER_LATENCIES_MS = (30, 45, 45, 60, 120)
_INPUT_TOKENS = (250, 500, 500, 750, 1000, 1500, 2000)
_OUTPUT_TOKENS = (50, 100, 100, 150, 200, 400)
_CACHE_READ_SHARE = 0.35
_CACHE_CREATION_SHARE = 0.2  # of Anthropic calls
_LLM_FAILURE = ("RateLimitError: 429 Too Many Requests", 200)
_TOOL_FAILURE_SHARE_OF_ERRORS = 0.8  # the rest of the ERROR traces fail in an LLM call

# Tags. ``None`` means the trace does not carry the tag.
_PERSONAS: Weighted[str | None] = [("customer", 65), ("guest", 20), ("admin", 10), (None, 5)]
_ENVS: Weighted[str | None] = [("prod", 75), ("staging", 20), (None, 5)]
_CUSTOMER_IDS: Weighted[str] = [(f"cust-{k:03d}", 1 / k**0.5) for k in range(1, 41)]
TEAM_TAG = "team%_name"  # a LIKE wildcard in the key itself
_TEAMS: Weighted[str | None] = [
    ("o'brien", 20),
    ("platform_ops", 15),
    ("100%_club", 12),
    ('the "A" team', 8),
    ("zürich", 5),
    (None, 40),
]

# Feedback and expectations.
_CORRECTNESS_SHARE, _RELEVANCE_SHARE, _QUALITY_SHARE, _TONE_SHARE = 0.7, 0.5, 0.35, 0.4
_SECOND_QUALITY_SHARE = 0.2
_EXPECTATION_SHARE = 0.2
_JUDGE_FAILURE_EVERY = 10  # every 10th correctness judgement fails with RATE_LIMIT ...
_OVERRIDE_EVERY = 8  # ... and every 8th is overridden by a human (old row becomes invalid)
_QUALITY_SCORES: tuple[int | float, ...] = (1, 2, 3, 3, 3.5, 4, 4, 4, 4.5, 5, 5)
_RELEVANCE: Weighted[str] = [("yes", 52), ("Yes", 23), ("no", 15), ("NO", 10)]
_TONES: Weighted[str] = [
    ("friendly", 30),
    ("neutral", 25),
    ("formal", 12),
    ("curt", 10),
    ("Friendly", 5),
    ("apologetic", 4),
    ("enthusiastic", 4),
    ("sarcastic", 3),
    ("confused", 2),
    ("empathetic", 2),
    ("robotic", 2),
    ("passive-aggressive", 1),
]
CORRECTNESS_JUDGE = "gpt-4o-mini-judge"
RELEVANCE_JUDGE = "gpt-4o-judge"
REVIEWERS = ("reviewer-ana", "reviewer-bo")
TONE_CLASSIFIER = "tone-classifier-v2"

_QUESTIONS = {
    "chat": (
        ("Where is my order #{n}?", "Order #{n} ships tomorrow."),
        ("Can I change the delivery address of order #{n}?", "Yes, the address is updated."),
        ("I was charged twice for order #{n}", "A refund for the duplicate charge is on its way."),
        ("Will it rain in Zürich tomorrow?", "Light rain is expected in Zürich."),
        ("How do I reset my password?", "Use the 'Forgot password' link on the sign-in page."),
    ),
    "summarize": (
        ("Summarize ticket #{n}", "Customer reports a late delivery; courier notified."),
        ("Summarize the thread about invoice #{n}", "The invoice total was wrong and is fixed."),
    ),
    "triage": (
        ("Classify ticket #{n}", "billing"),
        ("Route ticket #{n} to a team", "logistics"),
    ),
    "sql_query": (
        ("Top 10 customers by revenue in {month}", "SELECT customer_id, SUM(total) ..."),
        ("How many orders were refunded last week?", "SELECT COUNT(*) FROM refunds ..."),
        ("Average basket size per country", "SELECT country, AVG(total) ..."),
    ),
}
_MONTHS = ("January", "March", "June", "September", "October")


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class SpanPlan:
    """A child span of a trace; times are offsets from the trace start."""

    name: str
    span_type: str
    start_offset_ms: int
    duration_ms: int
    error: str | None  # status message of an ERROR span, None for OK
    inputs: dict[str, Any]
    outputs: Any
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedbackPlan:
    name: str
    value: bool | int | float | str | None  # None when the judge failed
    source_type: str
    source_id: str
    rationale: str | None = None
    error_code: str | None = None
    override_value: bool | None = None  # a human corrected the judge: old row becomes invalid


@dataclass(frozen=True)
class TracePlan:
    """Everything about one trace, drawn before anything is written."""

    experiment: str
    name: str
    root_type: str
    timestamp_ms: int
    duration_ms: int | None  # None while IN_PROGRESS
    status: str
    error: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    tags: dict[str, str]
    metadata: dict[str, str]
    spans: tuple[SpanPlan, ...]
    feedback: tuple[FeedbackPlan, ...]
    expectations: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class GeneratedDataset:
    tracking_uri: str
    experiment_ids: dict[str, str]  # experiment name -> id
    start_time_ms: int  # earliest possible trace timestamp (the first trace starts exactly here)
    end_time_ms: int  # exclusive upper bound of trace timestamps (the last one is end - 1)
    trace_count: int
    # What was written, in timestamp order; trace_ids[i] is the MLflow id of traces[i].
    traces: tuple[TracePlan, ...] = field(default=(), repr=False)
    trace_ids: tuple[str, ...] = field(default=(), repr=False)


def _pick(rng: random.Random, options: Weighted[T]) -> T:
    values, weights = zip(*options, strict=True)
    return rng.choices(values, weights=weights)[0]


def _hour_weight(ts_ms: int) -> float:
    """Diurnal traffic: busier during (UTC) office hours, quiet at night."""
    hour = ts_ms // 3_600_000 % 24
    return 1.0 if 7 <= hour < 19 else 0.3


def _plan_timestamps(rng: random.Random, n: int, start_ms: int, end_ms: int) -> list[int]:
    stamps: list[int] = []
    while len(stamps) < n:
        ts = rng.randrange(start_ms, end_ms)
        if rng.random() < _hour_weight(ts):
            stamps.append(ts)
    stamps.sort()
    # Pin both edges of the window so inclusive/exclusive bounds are exercised.
    if stamps:
        stamps[0] = start_ms
    if len(stamps) > 1:
        stamps[-1] = end_ms - 1
    return stamps


def _exact_mix(rng: random.Random, n: int, shares: dict[str, float], rest: str) -> list[str]:
    """Exactly round(share * n) of each label (at least one when n >= 3), shuffled."""
    labels: list[str] = []
    for label, share in shares.items():
        count = round(share * n)
        labels += [label] * (max(count, 1) if n >= 3 else count)
    labels += [rest] * (n - len(labels))
    rng.shuffle(labels)
    return labels


def plan_traces(
    *, n_traces: int, days: int, seed: int, end_time_ms: int = DEFAULT_END_TIME_MS
) -> tuple[TracePlan, ...]:
    """Draw every trace of the dataset from ``random.Random(seed)``, in timestamp order."""
    rng = random.Random(seed)
    start_ms = end_time_ms - days * DAY_MS
    stamps = _plan_timestamps(rng, n_traces, start_ms, end_time_ms)
    experiments = _exact_mix(rng, n_traces, {SQL_COPILOT: _SQL_SHARE}, SUPPORT_AGENT)
    statuses = _exact_mix(rng, n_traces, {IN_PROGRESS: _IN_PROGRESS_SHARE, ERROR: _ERROR_SHARE}, OK)
    judged = itertools.count()
    midpoint_ms = start_ms + days * DAY_MS // 2
    return tuple(
        _plan_trace(rng, ts, experiment, status, judged, midpoint_ms, n_traces)
        for ts, experiment, status in zip(stamps, experiments, statuses, strict=True)
    )


def _plan_trace(
    rng: random.Random,
    ts: int,
    experiment: str,
    status: str,
    judged: Iterator[int],
    midpoint_ms: int,
    n_traces: int,
) -> TracePlan:
    finished = status != IN_PROGRESS
    name = _pick(rng, _TRACE_NAMES[experiment])
    question, answer = _question(rng, name)
    spans, error = _plan_spans(rng, experiment, status) if finished else ((), None)
    return TracePlan(
        experiment=experiment,
        name=name,
        root_type=_pick(rng, _ROOT_TYPES[experiment]),
        timestamp_ms=ts,
        duration_ms=_root_duration(spans) if finished else None,
        status=status,
        error=error,
        inputs={"question": question},
        outputs={"answer": answer} if status == OK else None,
        tags=_plan_tags(rng),
        metadata=_plan_metadata(rng, name, ts >= midpoint_ms, n_traces),
        spans=spans,
        feedback=_plan_feedback(rng, status, judged) if finished else (),
        expectations=_plan_expectations(rng, answer) if finished else (),
    )


def _question(rng: random.Random, name: str) -> tuple[str, str]:
    question, answer = rng.choice(_QUESTIONS[name])
    values = {"n": rng.randrange(1000, 10000), "month": rng.choice(_MONTHS)}
    return question.format(**values), answer.format(**values)


def _plan_tags(rng: random.Random) -> dict[str, str]:
    persona = _pick(rng, _PERSONAS)
    tags = {"persona": persona, "env": _pick(rng, _ENVS), TEAM_TAG: _pick(rng, _TEAMS)}
    if persona in ("customer", "admin") and rng.random() < 0.9:
        tags["customer_id"] = _pick(rng, _CUSTOMER_IDS)
    return {key: value for key, value in tags.items() if value is not None}


def _plan_metadata(
    rng: random.Random, name: str, after_release: bool, n_traces: int
) -> dict[str, str]:
    metadata = {"app_version": "1.5.0" if after_release else "1.4.0"}
    if name == "chat":  # chats belong to conversations; MLflow promotes this to session_id
        session = rng.randrange(max(n_traces // 4, 1))
        metadata[TraceMetadataKey.TRACE_SESSION] = f"sess-{session:04d}"
    return metadata


# --------------------------------------------------------------------------- span plans


def _plan_steps(
    rng: random.Random, experiment: str, status: str
) -> tuple[list[tuple[str, str]], int | None]:
    """The child spans as (span_type, tool name or ""), in execution order, and for an ERROR
    trace the index of the step it fails in (its last tool call, sometimes its last LLM call)."""
    n_llm = _pick(rng, _LLM_COUNTS)
    n_tools = _pick(rng, _TOOL_COUNTS)
    fails_in_llm = status == ERROR and n_llm > 0 and rng.random() > _TOOL_FAILURE_SHARE_OF_ERRORS
    if status == ERROR and not fails_in_llm:
        n_tools = max(n_tools, 1)
    steps: list[tuple[str, str]] = []
    retriever, share = _RETRIEVERS[experiment]
    if rng.random() < share:
        steps.append((SpanType.RETRIEVER, retriever))
    for k in range(max(n_llm, n_tools)):
        if k < n_llm:
            steps.append((SpanType.LLM, ""))
        if k < n_tools:
            steps.append((SpanType.TOOL, _pick(rng, _EXPERIMENT_TOOLS[experiment])))
    if status != ERROR:
        return steps, None
    fail_type = SpanType.LLM if fails_in_llm else SpanType.TOOL
    return steps, max(i for i, (span_type, _) in enumerate(steps) if span_type == fail_type)


def _plan_spans(
    rng: random.Random, experiment: str, status: str
) -> tuple[tuple[SpanPlan, ...], str | None]:
    """Child spans and, for an ERROR trace, the root's error message."""
    steps, fail_at = _plan_steps(rng, experiment, status)
    model = _pick(rng, _MODELS[experiment])
    if fail_at is not None:
        steps = steps[: fail_at + 1]  # the agent aborts at the failing call
    spans: list[SpanPlan] = []
    cursor = GAP_MS
    for i, (span_type, name) in enumerate(steps):
        for span in _plan_step(rng, span_type, name, model, cursor, must_fail=i == fail_at):
            spans.append(span)
            cursor = span.start_offset_ms + span.duration_ms + GAP_MS
    root_error = None if fail_at is None else f"{spans[-1].name} failed: {spans[-1].error}"
    return tuple(spans), root_error


def _plan_step(
    rng: random.Random, span_type: str, name: str, model: _Model, at_ms: int, must_fail: bool
) -> list[SpanPlan]:
    if span_type == SpanType.LLM:
        return [_llm_span(rng, model, at_ms, must_fail)]
    if span_type == SpanType.RETRIEVER:
        return [_retriever_span(rng, name, at_ms)]
    tool = _TOOLS[name]
    if must_fail:
        return [_tool_span(rng, name, at_ms, failed=True)]
    if rng.random() >= tool.error_rate:
        return [_tool_span(rng, name, at_ms, failed=False)]
    # The agent recovers from a failed tool call by retrying it once.
    failed = _tool_span(rng, name, at_ms, failed=True)
    retry_at = at_ms + failed.duration_ms + GAP_MS
    return [failed, _tool_span(rng, name, retry_at, failed=False)]


def _tool_span(rng: random.Random, name: str, at_ms: int, failed: bool) -> SpanPlan:
    tool = _TOOLS[name]
    return SpanPlan(
        name=name,
        span_type=SpanType.TOOL,
        start_offset_ms=at_ms,
        duration_ms=tool.error_latency_ms if failed else rng.choice(tool.latencies_ms),
        error=tool.error if failed else None,
        inputs={"query": f"{name} request"},
        outputs=None if failed else {"result": f"{name} ok"},
    )


def _retriever_span(rng: random.Random, name: str, at_ms: int) -> SpanPlan:
    docs = [
        {"page_content": f"Article {k}", "metadata": {"doc_uri": f"kb/article-{k}"}}
        for k in rng.sample(range(1, 50), 2)
    ]
    return SpanPlan(
        name=name,
        span_type=SpanType.RETRIEVER,
        start_offset_ms=at_ms,
        duration_ms=rng.choice(_RETRIEVER_LATENCIES_MS),
        error=None,
        inputs={"query": "search"},
        outputs=docs,
    )


def _llm_span(rng: random.Random, model: _Model, at_ms: int, failed: bool) -> SpanPlan:
    attributes: dict[str, Any] = {
        SpanAttributeKey.MODEL: model.name,
        SpanAttributeKey.MODEL_PROVIDER: model.provider,
    }
    if not failed:  # a rejected call reports no usage
        attributes[SpanAttributeKey.CHAT_USAGE] = _token_usage(rng, model)
    return SpanPlan(
        name=_LLM_SPAN_NAMES[model.provider],
        span_type=SpanType.LLM,
        start_offset_ms=at_ms,
        duration_ms=_LLM_FAILURE[1] if failed else rng.choice(_LLM_LATENCIES_MS),
        error=_LLM_FAILURE[0] if failed else None,
        inputs={"model": model.name, "messages": [{"role": "user", "content": "..."}]},
        outputs=None if failed else {"choices": [{"message": {"content": "..."}}]},
        attributes=attributes,
    )


def _token_usage(rng: random.Random, model: _Model) -> dict[str, int]:
    # Cache tokens are the part of the input served from / written to the prompt cache.
    input_tokens = rng.choice(_INPUT_TOKENS)
    output_tokens = rng.choice(_OUTPUT_TOKENS)
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    if rng.random() < _CACHE_READ_SHARE:
        usage["cache_read_input_tokens"] = input_tokens // 2
    if model.provider == "anthropic" and rng.random() < _CACHE_CREATION_SHARE:
        usage["cache_creation_input_tokens"] = input_tokens // 5
    return usage


def _root_duration(spans: Sequence[SpanPlan]) -> int:
    busy_until = max((s.start_offset_ms + s.duration_ms for s in spans), default=0)
    return -(-(busy_until + 2 * GAP_MS) // ROOT_ROUNDING_MS) * ROOT_ROUNDING_MS


# --------------------------------------------------------------------------- assessment plans


def _plan_feedback(
    rng: random.Random, status: str, judged: Iterator[int]
) -> tuple[FeedbackPlan, ...]:
    feedback: list[FeedbackPlan] = []
    if rng.random() < _CORRECTNESS_SHARE:
        feedback.append(_correctness(rng, status, next(judged)))
    if rng.random() < _RELEVANCE_SHARE:
        feedback.append(
            FeedbackPlan("relevance", _pick(rng, _RELEVANCE), "LLM_JUDGE", RELEVANCE_JUDGE)
        )
    if rng.random() < _QUALITY_SHARE:
        reviewers = REVIEWERS if rng.random() < _SECOND_QUALITY_SHARE else REVIEWERS[:1]
        feedback += [
            FeedbackPlan("quality_score", rng.choice(_QUALITY_SCORES), "HUMAN", reviewer)
            for reviewer in reviewers
        ]
    if rng.random() < _TONE_SHARE:
        human = rng.random() < 0.3
        source = ("HUMAN", REVIEWERS[0]) if human else ("CODE", TONE_CLASSIFIER)
        feedback.append(FeedbackPlan("tone", _pick(rng, _TONES), *source))
    return tuple(feedback)


def _correctness(rng: random.Random, status: str, index: int) -> FeedbackPlan:
    correct = rng.random() < (0.8 if status == OK else 0.2)
    if index % _JUDGE_FAILURE_EVERY == _JUDGE_FAILURE_EVERY // 2:
        return FeedbackPlan(
            "correctness", None, "LLM_JUDGE", CORRECTNESS_JUDGE, error_code="RATE_LIMIT"
        )
    rationale = "The answer matches the request." if correct else "The answer is wrong."
    override = not correct if index % _OVERRIDE_EVERY == 2 else None
    return FeedbackPlan(
        "correctness", correct, "LLM_JUDGE", CORRECTNESS_JUDGE, rationale, None, override
    )


def _plan_expectations(rng: random.Random, answer: str) -> tuple[tuple[str, str], ...]:
    return (("expected_answer", answer),) if rng.random() < _EXPECTATION_SHARE else ()


# --------------------------------------------------------------------------- writing


def recreate_server_database(admin_url: str | sa.URL, name: str) -> None:
    """Drop and create the empty database ``name`` on a PostgreSQL or MySQL/MariaDB server,
    through ``admin_url`` (a sync URL of a database that stays: ``postgres`` on PostgreSQL)."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        else:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    engine.dispose()


def refresh_planner_statistics(tracking_uri: str) -> None:
    """Gather the planner's statistics of a database just filled, as autovacuum (PostgreSQL)
    and InnoDB's automatic statistics (MariaDB) soon do on a live one. Without them PostgreSQL
    takes each table for a row or so and nests loops over every trace: one feedback-typing
    query over 240 traces took 1.4 s, 10 ms after. SQLite gathers none unless asked, and
    MLflow's own SQLite databases have none: left as they are."""
    engine = sa.create_engine(tracking_uri, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("ANALYZE"))
        elif engine.dialect.name in ("mysql", "mariadb"):
            for table in sa.inspect(conn).get_table_names():
                conn.execute(sa.text(f"ANALYZE TABLE `{table}`")).fetchall()
    engine.dispose()


def build_tracking_db(
    tracking_uri: str,
    *,
    n_traces: int = 300,
    days: int = 14,
    seed: int = 0,
    end_time_ms: int | None = None,
    progress: bool = False,
) -> GeneratedDataset:
    """Create MLflow's schema in ``tracking_uri`` (an empty DB) and fill it with traces.

    ``tracking_uri`` is an MLflow URI with a sync driver (``sqlite:////abs/path.db``,
    ``postgresql://...``, ``mysql+pymysql://...``); the database itself must exist or, for
    SQLite, be creatable. Same arguments, same content (ids and assessment times aside).
    A bare ``postgresql://``/``mysql://`` gets an installed driver named in it (see
    ``GeneratedDataset.tracking_uri`` for the URI actually used).
    """
    if n_traces < 0 or days < 1:
        raise ValueError("n_traces must be >= 0 and days >= 1")
    tracking_uri = _with_installed_driver(tracking_uri)
    end_ms = DEFAULT_END_TIME_MS if end_time_ms is None else end_time_ms
    plans = plan_traces(n_traces=n_traces, days=days, seed=seed, end_time_ms=end_ms)
    with _mlflow_build_session(tracking_uri) as client:
        experiment_ids = _create_experiments(client)
        trace_ids = _write_traces(tracking_uri, plans, experiment_ids, progress)
    refresh_planner_statistics(tracking_uri)
    return GeneratedDataset(
        tracking_uri=tracking_uri,
        experiment_ids=experiment_ids,
        start_time_ms=end_ms - days * DAY_MS,
        end_time_ms=end_ms,
        trace_count=len(plans),
        traces=plans,
        trace_ids=tuple(trace_ids),
    )


# SQLAlchemy's default driver per scheme, and the one to use instead when it is not installed.
_DRIVER_FALLBACKS = {"postgresql": ("psycopg", "psycopg2"), "mysql": ("MySQLdb", "pymysql")}


def _with_installed_driver(uri: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; name psycopg2 if only it is there."""
    scheme, sep, rest = uri.partition("://")
    if scheme not in _DRIVER_FALLBACKS:
        return uri
    default, fallback = _DRIVER_FALLBACKS[scheme]
    if importlib.util.find_spec(default) is None and importlib.util.find_spec(fallback):
        return f"{scheme}+{fallback.lower()}{sep}{rest}"
    return uri


@contextmanager
def mlflow_tracking(
    tracking_uri: str, env: Mapping[str, str] = SYNC_TRACE_LOGGING
) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.start_span``, ``mlflow.log_feedback``, ...) at
    ``tracking_uri`` with the variables ``env`` set; restore the caller's variables, tracking
    URI and tracer afterwards (tests build several databases with MLflow in one process)."""
    saved_env = {key: os.environ.get(key) for key in (*env, "MLFLOW_TRACKING_URI")}
    saved_uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    os.environ.update(env)
    try:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.tracing.reset()  # the next span builds a tracer provider with the env above
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)  # type: ignore[arg-type]  # None = "not set"
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        mlflow.tracing.reset()


@contextmanager
def _mlflow_build_session(tracking_uri: str) -> Iterator[MlflowClient]:
    """Point MLflow at ``tracking_uri`` for one build; restore the caller's MLflow state after."""
    with _quiet_mlflow(), mlflow_tracking(tracking_uri, _BUILD_ENV):
        _forget_cached_store(tracking_uri)  # a DB dropped and re-created must be migrated again
        try:
            yield MlflowClient(tracking_uri)
        finally:
            # Close MLflow's pooled connections so the caller can drop the database.
            _forget_cached_store(tracking_uri)


def _forget_cached_store(tracking_uri: str) -> None:
    # MLflow caches one store per URI (which skips migrations on reuse) and one engine per URI
    # (which keeps connections open). Neither has a public reset, hence the private names.
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    engine = SqlAlchemyStore._engine_map.pop(tracking_uri, None)
    if engine is not None:
        engine.dispose()
    _tracking_store_registry._get_store_with_resolved_uri.cache_clear()


@contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Keep MLflow's and alembic's INFO chatter (migrations, ...) out of the build output."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _create_experiments(client: MlflowClient) -> dict[str, str]:
    ids: dict[str, str] = {}
    for name in EXPERIMENTS:
        if client.get_experiment_by_name(name) is not None:
            raise ValueError(f"experiment {name!r} already exists: build into an empty database")
        # The kind tag makes MLflow's UI open the experiment in its GenAI (traces) view.
        ids[name] = client.create_experiment(
            name, tags={"mlflow.experimentKind": "genai_development"}
        )
    return ids


def _write_traces(
    tracking_uri: str,
    plans: Sequence[TracePlan],
    experiment_ids: dict[str, str],
    progress: bool,
) -> list[str]:
    tracing_client = TracingClient(tracking_uri)
    trace_ids: list[str] = []
    for plan in tqdm(plans, desc="traces", unit="trace", disable=not progress):
        experiment_id = experiment_ids[plan.experiment]
        if plan.status == IN_PROGRESS:
            trace_id = _write_in_progress(tracing_client, plan, experiment_id)
        else:
            trace_id = _write_finished(plan, experiment_id)
        _write_assessments(trace_id, plan)
        trace_ids.append(trace_id)
    return trace_ids


def _status(error: str | None) -> SpanStatus:
    if error is None:
        return SpanStatus(SpanStatusCode.OK)
    return SpanStatus(SpanStatusCode.ERROR, description=error)


def _write_finished(plan: TracePlan, experiment_id: str) -> str:
    assert plan.duration_ms is not None
    start_ns = plan.timestamp_ms * NS_PER_MS
    root = mlflow.start_span_no_context(
        plan.name,
        span_type=plan.root_type,
        inputs=plan.inputs,
        tags=plan.tags,
        metadata={**_SOURCE_METADATA, **plan.metadata},
        experiment_id=experiment_id,
        start_time_ns=start_ns,
    )
    for span in plan.spans:
        _write_child(root, span, start_ns)
    # Ending the root exports the trace: trace_info gets timestamp = root start and
    # execution time = root duration, both whole milliseconds here.
    root.end(
        outputs=plan.outputs,
        status=_status(plan.error),
        end_time_ns=start_ns + plan.duration_ms * NS_PER_MS,
    )
    return root.trace_id


def _write_child(root: LiveSpan, plan: SpanPlan, trace_start_ns: int) -> None:
    start_ns = trace_start_ns + plan.start_offset_ms * NS_PER_MS
    end_ns = start_ns + plan.duration_ms * NS_PER_MS
    span = mlflow.start_span_no_context(
        plan.name,
        span_type=plan.span_type,
        parent_span=root,
        inputs=plan.inputs,
        attributes=plan.attributes,
        start_time_ns=start_ns,
    )
    if plan.error is not None:
        kind, _, message = plan.error.partition(": ")
        attributes: dict[str, Any] = {"exception.type": kind, "exception.message": message}
        # An explicit timestamp keeps the event deterministic (record_exception uses "now").
        event = SpanEvent(  # type: ignore[abstract]  # MLflow's stubs mark from_proto abstract
            name="exception", timestamp=end_ns, attributes=attributes
        )
        span.add_event(event)
    span.end(outputs=plan.outputs, status=_status(plan.error), end_time_ns=end_ns)


def _write_in_progress(client: TracingClient, plan: TracePlan, experiment_id: str) -> str:
    """Record a trace whose root span has not ended: state IN_PROGRESS, no execution time.

    Spans only reach the DB when they end, so an open root span never shows up. Instead this
    writes the TraceInfo with ``TracingClient.start_trace``, the call MLflow's own exporter makes
    to create a trace row (the V3 StartTrace API). The trace has no spans yet; like every trace
    here its spans location is the tracking store, so ``get_trace`` answers "not fully exported
    yet" and ``search_traces`` returns it only with ``include_spans=False``.
    """
    preview = json.dumps(plan.inputs)
    info = TraceInfo(
        trace_id=f"tr-{uuid.uuid4().hex}",
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=plan.timestamp_ms,
        execution_duration=None,
        state=TraceState.IN_PROGRESS,
        request_preview=preview,
        tags={
            **plan.tags,
            TraceTagKey.TRACE_NAME: plan.name,
            TraceTagKey.SPANS_LOCATION: SpansLocation.TRACKING_STORE.value,
        },
        trace_metadata={
            **_SOURCE_METADATA,
            **plan.metadata,
            TRACE_SCHEMA_VERSION_KEY: str(TRACE_SCHEMA_VERSION),
            TraceMetadataKey.INPUTS: preview,
        },
    )
    return client.start_trace(info).trace_id


def _write_assessments(trace_id: str, plan: TracePlan) -> None:
    for feedback in plan.feedback:
        _write_feedback(trace_id, feedback)
    for name, value in plan.expectations:
        mlflow.log_expectation(trace_id=trace_id, name=name, value=value)


def _write_feedback(trace_id: str, plan: FeedbackPlan) -> None:
    source = AssessmentSource(source_type=plan.source_type, source_id=plan.source_id)
    if plan.error_code is not None:
        error = AssessmentError(error_code=plan.error_code, error_message="429 Too Many Requests")
        mlflow.log_feedback(trace_id=trace_id, name=plan.name, source=source, error=error)
        return
    logged = mlflow.log_feedback(
        trace_id=trace_id, name=plan.name, value=plan.value, source=source, rationale=plan.rationale
    )
    if plan.override_value is not None and logged.assessment_id is not None:
        # Logs a new row that points at the old one; MLflow marks the old row valid = false.
        mlflow.override_feedback(
            trace_id=trace_id,
            assessment_id=logged.assessment_id,
            value=plan.override_value,
            rationale="Corrected by a human reviewer.",
            source=AssessmentSource(source_type="HUMAN", source_id=REVIEWERS[0]),
        )
