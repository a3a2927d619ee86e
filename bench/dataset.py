"""The benchmark dataset: one GenAI experiment, rows shaped exactly as MLflow 3.17 writes them.

A dataset of ``n`` traces is cut into chunks of consecutive traces. Everything in a chunk is
drawn from generators seeded with ``(seed, chunk index)``, so a chunk's rows depend only on the
arguments, never on how many processes build the dataset or in which order. Trace timestamps
grow with the trace index (rows are written in time order, as a live deployment writes them).

What MLflow writes for a trace (checked against traces logged through MLflow's tracing API):
``trace_info`` with the denormalised trace name, session, token and cost columns; two system tags
plus the user's tags; the trace metadata (``mlflow.trace.session`` and token usage are promoted
to columns, not kept as metadata); one ``spans`` row per span with the OTel-style JSON in
``content`` and the model/cost columns of LLM spans; feedback and expectations in
``assessments`` with their analytics helper columns.
"""

from __future__ import annotations

import base64
import bisect
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

import numpy as np
from mlflow.store.tracking.utils.trace_analytics import assessment_aggregate

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
NS_PER_MS = 1_000_000

#: Fixed end of the generated window (exclusive), so the same flags give the same database.
DEFAULT_END_MS = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
EXPERIMENT_NAME = "bench-support-agent"

# Column order of the rows each table gets (``spans.duration_ns`` is a generated column).
COLUMNS: dict[str, tuple[str, ...]] = {
    "trace_info": (
        "request_id", "experiment_id", "timestamp_ms", "execution_time_ms", "status",
        "client_request_id", "request_preview", "response_preview", "db_payload_generation",
        "trace_name", "session_id", "input_tokens", "output_tokens", "total_tokens",
        "cache_read_input_tokens", "cache_creation_input_tokens",
        "cache_creation_input_tokens_above_1hr", "input_cost", "output_cost", "total_cost",
    ),
    "trace_tags": ("key", "value", "request_id"),
    "trace_request_metadata": ("key", "value", "request_id"),
    "spans": (
        "trace_id", "experiment_id", "span_id", "parent_span_id", "name", "type", "status",
        "start_time_unix_nano", "end_time_unix_nano", "content", "input_cost", "output_cost",
        "total_cost", "model_name", "model_provider",
    ),
    "assessments": (
        "assessment_id", "trace_id", "name", "assessment_type", "value", "error",
        "created_timestamp", "last_updated_timestamp", "experiment_id", "trace_timestamp_ms",
        "aggregate_value", "is_numeric_value", "source_type", "source_id", "run_id", "span_id",
        "rationale", "overrides", "valid", "assessment_metadata",
    ),
}  # fmt: skip
TABLES = tuple(COLUMNS)

Row = tuple[Any, ...]


class Weighted:
    """Draw one of ``values`` with the given weights from a uniform number in [0, 1)."""

    def __init__(self, pairs: Sequence[tuple[Any, float]]) -> None:
        self.values = [v for v, _ in pairs]
        total = sum(w for _, w in pairs)
        self.cumulative = [c / total for c in accumulate(w for _, w in pairs)]

    def pick(self, rng: random.Random) -> Any:
        i = bisect.bisect_right(self.cumulative, rng.random())
        return self.values[min(i, len(self.values) - 1)]


# --------------------------------------------------------------------------- the application

SHARE_ERROR = 0.08  # traces that end in ERROR
SHARE_IN_PROGRESS = 0.003  # traces whose root span never ended (no spans, no latency)


@dataclass(frozen=True)
class Model:
    name: str
    provider: str
    input_usd_per_mtok: float | None  # None: not priced (no cost columns)
    output_usd_per_mtok: float | None


MODELS = Weighted([
    (Model("gpt-4o-mini", "openai", 0.15, 0.6), 40),
    (Model("gpt-4o", "openai", 2.5, 10.0), 25),
    (Model("claude-3-7-sonnet-20250219", "anthropic", 3.0, 15.0), 20),
    (Model("claude-3-5-haiku-20241022", "anthropic", 0.8, 4.0), 10),
    (Model("llama-3.1-70b-instruct", "together_ai", None, None), 5),
])  # fmt: skip
LLM_SPAN_NAME = {
    "openai": "chat.completions.create",
    "anthropic": "messages.create",
    "together_ai": "completion",
}


@dataclass(frozen=True)
class Tool:
    name: str
    weight: float
    median_ms: float
    error_rate: float  # share of calls that fail (retried once in an OK trace)
    error: str


TOOLS = (
    Tool("search_orders", 22, 80, 0.03, "TimeoutError: order service did not answer in 5 s"),
    Tool("lookup_customer", 18, 35, 0.01, "KeyError: customer not found"),
    Tool("fetch_docs", 14, 150, 0.02, "TimeoutError: docs index did not answer in 2 s"),
    Tool("get_weather", 9, 220, 0.06, "HTTPError: 503 Service Unavailable"),
    Tool("send_email", 8, 450, 0.08, "SMTPServerDisconnected: connection closed"),
    Tool("run_sql", 8, 300, 0.12, 'ProgrammingError: syntax error at "FROM"'),
    Tool("create_ticket", 7, 260, 0.04, "HTTPError: 409 Conflict"),
    Tool("refund_payment", 5, 900, 0.05, "PaymentError: card issuer declined"),
    Tool("translate_text", 5, 400, 0.02, "RateLimitError: 429 Too Many Requests"),
    Tool("calculator", 4, 3, 0.01, "ZeroDivisionError: division by zero"),
)
TOOL_PICK = Weighted([(t, t.weight) for t in TOOLS])


@dataclass(frozen=True)
class TraceKind:
    name: str
    root_type: str
    retriever_share: float
    has_session: bool
    question: str
    answer: str


TRACE_KINDS = Weighted([
    (TraceKind("chat_agent", "AGENT", 0.5, True,
               "Where is my order #{n}?", "Order #{n} ships tomorrow."), 45),
    (TraceKind("support_ticket", "AGENT", 0.4, True,
               "I was charged twice for order #{n}", "A refund for order #{n} is on its way."), 20),
    (TraceKind("rag_answer", "CHAIN", 1.0, False,
               "How do I reset my password? (ref {n})", "Use the 'Forgot password' link."), 15),
    (TraceKind("sql_copilot", "AGENT", 0.2, False,
               "Top customers by revenue in week {n}", "SELECT customer_id, SUM(total) ..."), 10),
    (TraceKind("summarize", "CHAIN", 0.3, False,
               "Summarize ticket #{n}", "Customer reports a late delivery (#{n})."), 10),
])  # fmt: skip

LLM_CALLS = Weighted([(1, 35), (2, 40), (3, 25)])
TOOL_CALLS = Weighted([(0, 15), (1, 35), (2, 32), (3, 18)])

# Tags: three per trace, cardinalities 3, 4 and thousands.
ENVS = Weighted([("prod", 85), ("staging", 12), ("dev", 3)])
TIERS = Weighted([("free", 55), ("pro", 30), ("enterprise", 12), ("internal", 3)])
N_CUSTOMERS = 5000
N_USERS = 3000
APP_VERSIONS = ("2.3.0", "2.4.0", "2.4.1")

# Feedback: about one per finished trace, of each value kind.
CORRECTNESS_JUDGE, RELEVANCE_JUDGE = "gpt-4o-judge", "gpt-4o-mini-judge"
REVIEWERS = ("reviewer-ana", "reviewer-bo", "reviewer-chen")
TONE_CLASSIFIER = "tone-classifier-v2"
TONES = Weighted([
    ("friendly", 30), ("neutral", 25), ("formal", 12), ("curt", 10), ("apologetic", 8),
    ("enthusiastic", 6), ("confused", 4), ("sarcastic", 3), ("robotic", 2),
])  # fmt: skip
QUALITY_SCORES = (1, 2, 2.5, 3, 3, 3.5, 4, 4, 4, 4.5, 5, 5)
JUDGE_FAILURE_SHARE = 0.03
OVERRIDE_SHARE = 0.02
EXPECTATION_SHARE = 0.05


def _zipf(n: int, s: float) -> list[float]:
    weights = [1 / k**s for k in range(1, n + 1)]
    total = sum(weights)
    return list(accumulate(w / total for w in weights))


_CUSTOMER_CDF = _zipf(N_CUSTOMERS, 1.05)
_USER_CDF = _zipf(N_USERS, 0.9)


def _zipf_pick(rng: random.Random, cdf: list[float]) -> int:
    return min(bisect.bisect_right(cdf, rng.random()), len(cdf) - 1) + 1


# --------------------------------------------------------------------------- time line


def hourly_weights(start_ms: int, hours: int) -> np.ndarray:
    """Traffic intensity per hour: busy (UTC) office hours, quiet nights and weekends, and
    a growth of about 30% over the window."""
    hour_starts = start_ms + np.arange(hours, dtype=np.int64) * HOUR_MS
    hour_of_day = (hour_starts // HOUR_MS) % 24
    weekday = ((hour_starts // DAY_MS) + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = weekend
    daytime = np.where((hour_of_day >= 8) & (hour_of_day < 20), 1.0, 0.35)
    weekend = np.where(weekday >= 5, 0.55, 1.0)
    trend = 0.85 + 0.3 * np.arange(hours) / max(hours - 1, 1)
    return np.asarray(daytime * weekend * trend, dtype=np.float64)


@dataclass(frozen=True)
class Timeline:
    """Maps trace index ``k`` of ``n`` to a timestamp, non-decreasing in ``k``."""

    start_ms: int
    end_ms: int
    n: int
    cumulative: np.ndarray = field(repr=False)

    @classmethod
    def build(cls, start_ms: int, end_ms: int, n: int) -> Timeline:
        hours = math.ceil((end_ms - start_ms) / HOUR_MS)
        weights = hourly_weights(start_ms, hours)
        cumulative = np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        return cls(start_ms, end_ms, n, cumulative)

    def timestamps(self, first: int, count: int, rng: np.random.Generator) -> np.ndarray:
        """Timestamps of traces ``first .. first+count-1`` (stratified: one per 1/n of mass)."""
        u = (np.arange(first, first + count) + rng.random(count)) / max(self.n, 1)
        hour = np.clip(np.searchsorted(self.cumulative, u, side="right") - 1, 0, None)
        hour = np.minimum(hour, len(self.cumulative) - 2)
        low, high = self.cumulative[hour], self.cumulative[hour + 1]
        frac = np.where(high > low, (u - low) / np.maximum(high - low, 1e-300), 0.0)
        ts = self.start_ms + ((hour + frac) * HOUR_MS).astype(np.int64)
        ts = np.minimum(ts, self.end_ms - 1)
        return np.maximum.accumulate(ts)  # guard against float rounding


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class DatasetSpec:
    n_traces: int
    days: int
    seed: int
    experiment_id: int
    artifact_location: str  # the experiment's, for the mlflow.artifactLocation tag
    end_ms: int = DEFAULT_END_MS
    chunk_size: int = 5000

    @property
    def start_ms(self) -> int:
        return self.end_ms - self.days * DAY_MS

    @property
    def n_chunks(self) -> int:
        return -(-self.n_traces // self.chunk_size)

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        first = index * self.chunk_size
        return first, min(self.n_traces, first + self.chunk_size)


@dataclass
class Chunk:
    index: int
    rows: dict[str, list[Row]] = field(default_factory=lambda: {t: [] for t in TABLES})

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows.values())


# --------------------------------------------------------------------------- JSON helpers


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode("ascii")


# MLflow stores span content and attributes with ensure_ascii=False (non-MSSQL). One encoder
# object, reused: ``json.dumps`` with options builds a new one per call.
_dumps = json.JSONEncoder(ensure_ascii=False).encode
_quote = json.encoder.encode_basestring  # a str as a JSON string, without ASCII escaping


@dataclass
class _Span:
    span_id: str
    parent_id: str | None
    name: str
    span_type: str
    start_ns: int
    end_ns: int
    error: str | None = None
    inputs_json: str = "null"  # the span's inputs and outputs, as JSON
    outputs_json: str | None = None
    model: Model | None = None
    usage: dict[str, int] | None = None
    cost: dict[str, float] | None = None


def _flat(values: dict[str, Any]) -> str:
    """JSON of a flat dict of numbers, as ``json.dumps`` writes it."""
    return "{" + ", ".join(f'"{k}": {v!r}' for k, v in values.items()) + "}"


def _content(trace_b64: str, trace_id_attr: str, experiment_id: int, span: _Span) -> str:
    """The span's ``content`` JSON, byte for byte as ``json.dumps`` would write MLflow's dict.

    Attribute values are JSON documents themselves, hence quoted twice. Built from templates:
    the generic encoder is the generator's hottest spot.
    """
    q = _quote
    attrs = [f'"mlflow.spanStartTimeNs": "{span.start_ns}"']
    if span.parent_id is None:
        attrs.append(f'"mlflow.experimentId": {q(q(str(experiment_id)))}')
    attrs.append(f'"mlflow.traceRequestId": {trace_id_attr}')
    attrs.append(f'"mlflow.spanType": {q(q(span.span_type))}')
    attrs.append(f'"mlflow.spanInputs": {q(span.inputs_json)}')
    if span.model is not None:
        attrs.append(f'"mlflow.llm.model": {q(q(span.model.name))}')
        attrs.append(f'"mlflow.llm.provider": {q(q(span.model.provider))}')
    if span.usage is not None:
        attrs.append(f'"mlflow.chat.tokenUsage": {q(_flat(span.usage))}')
    if span.outputs_json is not None:
        attrs.append(f'"mlflow.spanOutputs": {q(span.outputs_json)}')
    attrs.append(f'"mlflow.spanLogLevel": "{40 if span.error else 20}"')
    if span.cost is not None:
        attrs.append(f'"mlflow.llm.cost": {q(_flat(span.cost))}')
    events = "[]"  # a failed root span carries its status only; the failed call has the event
    if span.error is None:
        status = '{"code": "STATUS_CODE_OK", "message": ""}'
    else:
        kind, _, message = span.error.partition(": ")
        if span.parent_id is not None:
            events = (
                f'[{{"name": "exception", "time_unix_nano": {span.end_ns}, "attributes": '
                f'{{"exception.type": {q(kind)}, "exception.message": {q(message)}}}}}]'
            )
        status = f'{{"code": "STATUS_CODE_ERROR", "message": {q(span.error)}}}'
    parent = "null" if span.parent_id is None else f'"{_b64(span.parent_id)}"'
    return (
        f'{{"trace_id": "{trace_b64}", "span_id": "{_b64(span.span_id)}", '
        f'"parent_span_id": {parent}, "name": {q(span.name)}, '
        f'"start_time_unix_nano": {span.start_ns}, "end_time_unix_nano": {span.end_ns}, '
        f'"events": {events}, "status": {status}, "attributes": {{{", ".join(attrs)}}}, '
        '"links": []}'
    )


def _size_stats(sizes: list[int]) -> str:
    ordered = sorted(sizes)

    def pct(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return _dumps({
        "total_size_bytes": sum(sizes) + 200,
        "num_spans": len(sizes),
        "max": ordered[-1],
        "p25": pct(0.25),
        "p50": pct(0.5),
        "p75": pct(0.75),
    })  # fmt: skip


# --------------------------------------------------------------------------- one chunk


class _ChunkBuilder:
    def __init__(self, spec: DatasetSpec, timeline: Timeline, index: int) -> None:
        self.spec = spec
        self.timeline = timeline
        self.chunk = Chunk(index)
        self.rng = random.Random(spec.seed * 1_000_003 + index)
        self.np_rng = np.random.default_rng([spec.seed, index])
        self.exp = spec.experiment_id

    def build(self) -> Chunk:
        first, stop = self.spec.chunk_bounds(self.chunk.index)
        stamps = self.timeline.timestamps(first, stop - first, self.np_rng)
        for offset, ts in enumerate(stamps.tolist()):
            self._trace(first + offset, ts)
        return self.chunk

    # ---- helpers
    def _hex(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def _lognormal_ms(self, median: float, sigma: float) -> int:
        return max(1, round(median * math.exp(sigma * self.rng.gauss(0.0, 1.0))))

    # ---- a trace
    def _trace(self, k: int, ts: int) -> None:
        rng = self.rng
        kind: TraceKind = TRACE_KINDS.pick(rng)
        trace_hex = self._hex(128)
        trace_id = f"tr-{trace_hex}"
        draw = rng.random()
        status = (
            "IN_PROGRESS" if draw < SHARE_IN_PROGRESS
            else "ERROR" if draw < SHARE_IN_PROGRESS + SHARE_ERROR
            else "OK"
        )  # fmt: skip
        n = rng.randrange(1000, 100000)
        question = kind.question.format(n=n)
        inputs = f'{{"question": {_quote(question)}}}'
        outputs = None
        if status == "OK":
            outputs = f'{{"answer": {_quote(kind.answer.format(n=n))}}}'
        session_id = f"sess-{k // 6:07d}" if kind.has_session else None
        tier = TIERS.pick(rng)
        self._tags(trace_id, tier)

        if status == "IN_PROGRESS":
            self._metadata(trace_id, ts, inputs, None, None, finished=False)
            self.chunk.rows["trace_info"].append((
                trace_id, self.exp, ts, None, status, None, inputs[:1000], None, 0,
                kind.name, session_id, *([None] * 9),
            ))  # fmt: skip
            return

        start_ns = ts * NS_PER_MS + rng.randrange(NS_PER_MS)
        spans = self._spans(kind, status, start_ns, question, inputs, outputs)
        root = spans[0]
        execution_ms = (root.end_ns - root.start_ns) // NS_PER_MS
        sizes = []
        trace_b64, trace_id_attr = _b64(trace_hex), _quote(_quote(trace_id))
        for span in spans:
            content = _content(trace_b64, trace_id_attr, self.exp, span)
            sizes.append(len(content.encode()))
            cost = span.cost or {}
            self.chunk.rows["spans"].append((
                trace_id, self.exp, span.span_id, span.parent_id, span.name, span.span_type,
                "ERROR" if span.error else "OK", span.start_ns, span.end_ns, content,
                cost.get("input_cost"), cost.get("output_cost"), cost.get("total_cost"),
                span.model.name if span.model else None,
                span.model.provider if span.model else None,
            ))  # fmt: skip
        tokens = _sum_usage(s.usage for s in spans if s.usage)
        costs = _sum_cost(s.cost for s in spans if s.cost)
        self.chunk.rows["trace_info"].append((
            trace_id, self.exp, ts, execution_ms, status, None, inputs[:1000],
            None if outputs is None else outputs[:1000], len(spans) + 1, kind.name,
            session_id, tokens.get("input_tokens"), tokens.get("output_tokens"),
            tokens.get("total_tokens"), tokens.get("cache_read_input_tokens"),
            tokens.get("cache_creation_input_tokens"), None, costs.get("input_cost"),
            costs.get("output_cost"), costs.get("total_cost"),
        ))  # fmt: skip
        self._metadata(trace_id, ts, inputs, outputs, sizes, finished=True)
        self._assessments(trace_id, ts, root.end_ns // NS_PER_MS, status, spans, tier)

    def _tags(self, trace_id: str, tier: str) -> None:
        rows = self.chunk.rows["trace_tags"]
        customer = _zipf_pick(self.rng, _CUSTOMER_CDF)
        rows.append(("env", ENVS.pick(self.rng), trace_id))
        rows.append(("user_tier", tier, trace_id))
        rows.append(("customer_id", f"cust-{customer:05d}", trace_id))
        rows.append(("mlflow.trace.spansLocation", "TRACKING_STORE", trace_id))
        location = f"{self.spec.artifact_location}/traces/{trace_id}/artifacts"
        rows.append(("mlflow.artifactLocation", location, trace_id))

    def _metadata(
        self,
        trace_id: str,
        ts: int,
        inputs: str,
        outputs: str | None,
        sizes: list[int] | None,
        *,
        finished: bool,
    ) -> None:
        share = (ts - self.spec.start_ms) / max(self.spec.end_ms - self.spec.start_ms, 1)
        version = APP_VERSIONS[min(2, int(share * 3 + self.rng.random() * 0.3))]
        user = _zipf_pick(self.rng, _USER_CDF)
        items = [
            ("app_version", version),
            ("mlflow.source.name", "agent_service.py"),
            ("mlflow.source.type", "LOCAL"),
            ("mlflow.trace.infoFinalized", "true"),
            ("mlflow.trace.user", f"user-{user:04d}"),
            ("mlflow.traceInputs", inputs),
            ("mlflow.trace_schema.version", "3"),
            ("mlflow.user", "agent-service"),
        ]
        if finished and sizes:
            items += [
                ("mlflow.trace.sizeBytes", str(sum(sizes) + 200)),
                ("mlflow.trace.sizeStats", _size_stats(sizes)),
                ("mlflow.traceOutputs", outputs or ""),
            ]
        rows = self.chunk.rows["trace_request_metadata"]
        rows.extend((key, value, trace_id) for key, value in sorted(items))

    # ---- spans
    def _spans(
        self,
        kind: TraceKind,
        status: str,
        start_ns: int,
        question: str,
        inputs: str,
        outputs: str | None,
    ) -> list[_Span]:
        rng = self.rng
        root_id = self._hex(64)
        model: Model = MODELS.pick(rng)
        steps: list[tuple[str, Tool | None]] = []
        if rng.random() < kind.retriever_share:
            steps.append(("RETRIEVER", None))
        n_llm, n_tools = LLM_CALLS.pick(rng), TOOL_CALLS.pick(rng)
        for i in range(max(n_llm, n_tools)):
            if i < n_llm:
                steps.append(("LLM", None))
            if i < n_tools:
                steps.append(("TOOL", TOOL_PICK.pick(rng)))
        fail_at: int | None = None
        if status == "ERROR":
            tool_steps = [i for i, (t, _) in enumerate(steps) if t == "TOOL"]
            llm_steps = [i for i, (t, _) in enumerate(steps) if t == "LLM"]
            pool = tool_steps if tool_steps and rng.random() < 0.75 else llm_steps
            fail_at = rng.choice(pool)
            steps = steps[: fail_at + 1]  # the agent gives up at the failing call

        llm_inputs = (
            f'{{"model": {_quote(model.name)}, "messages": [{{"role": "user", "content": '
            f"{_quote(question)}}}]}}"
        )
        children: list[_Span] = []
        cursor = start_ns + self._lognormal_ms(4, 0.5) * NS_PER_MS
        for i, (span_type, tool) in enumerate(steps):
            must_fail = i == fail_at
            if span_type == "RETRIEVER":
                children.append(self._retriever(root_id, cursor, question))
            elif span_type == "LLM":
                children.append(self._llm(root_id, cursor, model, llm_inputs, must_fail))
            else:
                assert tool is not None
                fails = must_fail or rng.random() < tool.error_rate
                children.append(self._tool(root_id, cursor, tool, fails))
                if fails and not must_fail:  # an OK trace retries a failed call once
                    retry_at = children[-1].end_ns + 2 * NS_PER_MS
                    children.append(self._tool(root_id, retry_at, tool, False))
            cursor = children[-1].end_ns + self._lognormal_ms(3, 0.5) * NS_PER_MS
        end_ns = cursor + self._lognormal_ms(5, 0.5) * NS_PER_MS
        root_error = None
        if fail_at is not None:
            failed = children[-1]
            root_error = f"{failed.name} failed: {failed.error}"
        root = _Span(
            root_id, None, kind.name, kind.root_type, start_ns, end_ns, root_error,
            inputs, outputs,
        )  # fmt: skip
        return [root, *children]

    def _retriever(self, parent: str, at_ns: int, question: str) -> _Span:
        duration = self._lognormal_ms(60, 0.5)
        docs = ", ".join(
            f'{{"page_content": "Article {d}", "metadata": {{"doc_uri": "kb/article-{d}"}}}}'
            for d in (self.rng.randrange(1, 500), self.rng.randrange(1, 500))
        )
        return _Span(
            self._hex(64), parent, "retrieve_docs", "RETRIEVER", at_ns,
            at_ns + duration * NS_PER_MS, None, f'{{"query": {_quote(question)}}}', f"[{docs}]",
        )  # fmt: skip

    def _tool(self, parent: str, at_ns: int, tool: Tool, failed: bool) -> _Span:
        duration = self._lognormal_ms(tool.median_ms * (3 if failed else 1), 0.7)
        return _Span(
            self._hex(64), parent, tool.name, "TOOL", at_ns, at_ns + duration * NS_PER_MS,
            tool.error if failed else None, f'{{"query": "{tool.name} request"}}',
            None if failed else f'{{"result": "{tool.name} ok"}}',
        )  # fmt: skip

    def _llm(self, parent: str, at_ns: int, model: Model, span_inputs: str, failed: bool) -> _Span:
        rng = self.rng
        if failed:  # a rejected call reports no usage and costs nothing
            duration = self._lognormal_ms(150, 0.4)
            return _Span(
                self._hex(64), parent, LLM_SPAN_NAME[model.provider], "LLM", at_ns,
                at_ns + duration * NS_PER_MS, "RateLimitError: 429 Too Many Requests",
                span_inputs, None, model,
            )  # fmt: skip
        input_tokens = self._lognormal_ms(900, 0.6)
        output_tokens = self._lognormal_ms(180, 0.7)
        usage = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }
        if rng.random() < 0.3:
            usage["cache_read_input_tokens"] = input_tokens // 2
        if model.provider == "anthropic" and rng.random() < 0.15:
            usage["cache_creation_input_tokens"] = input_tokens // 5
        cost = None
        if model.input_usd_per_mtok is not None and model.output_usd_per_mtok is not None:
            input_cost = input_tokens * model.input_usd_per_mtok / 1e6
            output_cost = output_tokens * model.output_usd_per_mtok / 1e6
            cost = {
                "input_cost": input_cost,
                "output_cost": output_cost,
                "total_cost": input_cost + output_cost,
            }
        duration = round(self._lognormal_ms(350, 0.3) + output_tokens * 4.5)
        return _Span(
            self._hex(64), parent, LLM_SPAN_NAME[model.provider], "LLM", at_ns,
            at_ns + duration * NS_PER_MS, None, span_inputs,
            '{"choices": [{"message": {"role": "assistant", "content": "..."}}]}',
            model, usage, cost,
        )  # fmt: skip

    # ---- assessments
    def _assessments(
        self, trace_id: str, ts: int, end_ms: int, status: str, spans: list[_Span], tier: str
    ) -> None:
        rng = self.rng
        latency_ms = (spans[0].end_ns - spans[0].start_ns) // NS_PER_MS
        has_retriever = any(s.span_type == "RETRIEVER" for s in spans)
        if rng.random() < 0.45:
            correct = rng.random() < (0.85 if status == "OK" else 0.25)
            self._feedback(
                trace_id, ts, end_ms, "correctness", correct, "LLM_JUDGE", CORRECTNESS_JUDGE,
                "The answer matches the request." if correct else "The answer is wrong.",
                can_fail=True, can_override=True,
            )  # fmt: skip
        if rng.random() < 0.25:
            relevant = rng.random() < (0.85 if has_retriever else 0.6)
            value = (
                ("yes" if relevant else "no")
                if rng.random() < 0.8
                else ("Yes" if relevant else "No")
            )
            self._feedback(
                trace_id, ts, end_ms, "relevance", value, "LLM_JUDGE", RELEVANCE_JUDGE,
                None, can_fail=True,
            )  # fmt: skip
        if rng.random() < 0.12:
            score = rng.choice(QUALITY_SCORES)
            if latency_ms > 8000 and score > 2:
                score -= 1
            reviewer = REVIEWERS[rng.randrange(len(REVIEWERS))]
            self._feedback(trace_id, ts, end_ms, "quality_score", score, "HUMAN", reviewer, None)
        if rng.random() < 0.15:
            tone = "formal" if tier == "enterprise" and rng.random() < 0.4 else TONES.pick(rng)
            self._feedback(trace_id, ts, end_ms, "tone", tone, "CODE", TONE_CLASSIFIER, None)
        if rng.random() < EXPECTATION_SHARE:
            created = end_ms + rng.randrange(HOUR_MS, 48 * HOUR_MS)
            self.chunk.rows["assessments"].append((
                f"a-{self._hex(128)}", trace_id, "expected_response", "expectation",
                _dumps("The answer the user expected."), None, created, created, self.exp, ts,
                None, False, "HUMAN", REVIEWERS[0], None, None, None, None, True, None,
            ))  # fmt: skip

    def _feedback(
        self,
        trace_id: str,
        ts: int,
        end_ms: int,
        name: str,
        value: bool | int | float | str,
        source_type: str,
        source_id: str,
        rationale: str | None,
        *,
        can_fail: bool = False,
        can_override: bool = False,
    ) -> None:
        rng = self.rng
        rows = self.chunk.rows["assessments"]
        delay = (
            rng.randrange(2_000, 120_000)
            if source_type != "HUMAN"
            else (rng.randrange(HOUR_MS, 72 * HOUR_MS))
        )
        created = end_ms + delay
        assessment_id = f"a-{self._hex(128)}"
        if can_fail and rng.random() < JUDGE_FAILURE_SHARE:
            error = _dumps({
                "error_code": "RATE_LIMIT",
                "error_message": "429 Too Many Requests",
                "stack_trace": None,
            })  # fmt: skip
            rows.append((
                assessment_id, trace_id, name, "feedback", "null", error, created, created,
                self.exp, ts, None, False, source_type, source_id, None, None, None, None, True,
                None,
            ))  # fmt: skip
            return
        overridden = can_override and rng.random() < OVERRIDE_SHARE
        aggregate, is_numeric = _aggregate(value)
        rows.append((
            assessment_id, trace_id, name, "feedback", _dumps(value), None, created, created,
            self.exp, ts, aggregate, is_numeric, source_type, source_id, None, None, rationale,
            None, not overridden, None,
        ))  # fmt: skip
        if overridden:  # a human corrects the judge: the old row becomes invalid
            fixed = not value if isinstance(value, bool) else value
            agg, numeric = _aggregate(fixed)
            later = created + rng.randrange(HOUR_MS, 24 * HOUR_MS)
            rows.append((
                f"a-{self._hex(128)}", trace_id, name, "feedback", _dumps(fixed), None, later,
                later, self.exp, ts, agg, numeric, "HUMAN", REVIEWERS[0], None, None,
                "Corrected by a human reviewer.", assessment_id, True, None,
            ))  # fmt: skip


def _aggregate(value: Any) -> tuple[float | None, bool]:
    """``aggregate_value`` and ``is_numeric_value`` as MLflow derives them from a value."""
    return assessment_aggregate(value)


def _sum_usage(usages: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for usage in usages:
        for key, value in usage.items():
            total[key] = total.get(key, 0) + value
    return total


def _sum_cost(costs: Any) -> dict[str, float]:
    total: dict[str, float] = {}
    for cost in costs:
        for key, value in cost.items():
            total[key] = total.get(key, 0.0) + value
    return total


def build_chunk(spec: DatasetSpec, index: int, timeline: Timeline | None = None) -> Chunk:
    """All rows of chunk ``index`` (deterministic for the spec)."""
    timeline = timeline or Timeline.build(spec.start_ms, spec.end_ms, spec.n_traces)
    return _ChunkBuilder(spec, timeline, index).build()
