"""What MLflow itself takes to compute an endpoint's numbers on the same database.

Each endpoint maps to the ``SqlAlchemyStore.query_trace_metrics`` calls that return the same
statistics (or as many of them as MLflow can compute), or to one
``calculate_trace_filter_correlation`` call per candidate value (NPMI, correlations). Sums that
a caller can add up from the buckets of a series are not asked again for the summary;
percentiles over the whole window are (they cannot be derived from the buckets). Endpoints
without an MLflow equivalent (tags, dimension discovery) have no baseline.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

Call = Callable[[], Any]


@dataclass
class Window:
    label: str
    start_ms: int
    end_ms: int  # exclusive
    bucket: str  # the service's time_bucket
    bucket_seconds: int


@dataclass
class BaselinePlan:
    """The MLflow calls for one endpoint case and window."""

    calls: list[tuple[str, Call]]
    note: str = ""
    # Correlations: calls measured on a sample, total extrapolated to every candidate.
    extrapolate_to: dict[str, int] = field(default_factory=dict)


class MlflowBaseline:
    def __init__(self, sync_uri: str, experiment_id: str) -> None:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        self.store = SqlAlchemyStore(sync_uri, "file:///tmp/insights-bench-unused")
        self.experiment_id = experiment_id

    def close(self) -> None:
        self.store.engine.dispose()

    # ---------------------------------------------------------------- query_trace_metrics

    def _metrics(
        self,
        window: Window,
        view: str,
        metric: str,
        aggs: Sequence[str],
        *,
        dims: list[str] | None = None,
        filters: list[str] | None = None,
        bucketed: bool = True,
    ) -> tuple[str, Call]:
        from mlflow.entities.trace_metrics import AggregationType, MetricAggregation, MetricViewType

        aggregations = [
            MetricAggregation(AggregationType.PERCENTILE, float(a[1:]))
            if a.startswith("P")
            else MetricAggregation(AggregationType(a))
            for a in aggs
        ]

        def call() -> Any:
            return self.store.query_trace_metrics(
                [self.experiment_id],
                MetricViewType(view),
                metric,
                aggregations,
                dimensions=dims,
                filters=filters,
                time_interval_seconds=window.bucket_seconds if bucketed else None,
                start_time_ms=window.start_ms,
                end_time_ms=window.end_ms - 1,  # MLflow's end is inclusive
                max_results=100_000,
            )

        label = f"{view}.{metric}[{','.join(aggs)}]" + (f" by {','.join(dims)}" if dims else "")
        return (label + (" bucketed" if bucketed else ""), call)

    def plan(self, case: str, window: Window, params: dict[str, Any]) -> BaselinePlan | None:
        m = self._metrics
        pct = ["AVG", "P50", "P90", "P99"]
        latency = ["AVG", "MIN", "MAX", "P50", "P90", "P95", "P99"]
        match case:
            case "traffic-cost/volume" | "traffic-cost/errors":
                return BaselinePlan(
                    [m(window, "TRACES", "trace_count", ["COUNT"], dims=["trace_status"])]
                )
            case "traffic-cost/latency":
                return BaselinePlan([
                    m(window, "TRACES", "trace_count", ["COUNT"], dims=["trace_status"]),
                    m(window, "TRACES", "latency", ["AVG", "P50", "P90", "P95", "P99"]),
                    m(window, "TRACES", "latency", latency, bucketed=False),
                ])  # fmt: skip
            case "traffic-cost/tokens":
                return BaselinePlan([
                    m(window, "TRACES", "input_tokens", ["SUM"]),
                    m(window, "TRACES", "output_tokens", ["SUM"]),
                    m(window, "TRACES", "total_tokens", ["SUM"]),
                    m(window, "TRACES", "total_tokens", ["SUM", *pct], bucketed=False),
                    m(window, "TRACES", "cache_read_input_tokens", ["SUM"], bucketed=False),
                    m(window, "TRACES", "cache_creation_input_tokens", ["SUM"], bucketed=False),
                ])  # fmt: skip
            case "traffic-cost/cost":
                by_model = ["span_model_name", "span_model_provider"]
                return BaselinePlan([
                    m(window, "SPANS", "total_cost", ["SUM"]),
                    m(window, "SPANS", "input_cost", ["SUM"]),
                    m(window, "SPANS", "output_cost", ["SUM"]),
                    m(window, "SPANS", "total_cost", ["SUM"], dims=by_model, bucketed=False),
                    m(window, "SPANS", "input_cost", ["SUM"], dims=by_model, bucketed=False),
                    m(window, "SPANS", "output_cost", ["SUM"], dims=by_model, bucketed=False),
                    m(window, "SPANS", "span_count", ["COUNT"], dims=by_model, bucketed=False),
                ])  # fmt: skip
            case "assessments/discovery":
                return BaselinePlan(
                    [m(window, "ASSESSMENTS", "assessment_count", ["COUNT"],
                       dims=["assessment_name"], bucketed=False)],
                    note="counts per name only",
                )  # fmt: skip
            case "assessments/metrics":
                name_filter = [f"assessment.name = '{params['assessment_name']}'"]
                by_value = ["assessment_name", "assessment_value"]
                if params.get("assessment_type") == "numeric":
                    return BaselinePlan([
                        m(window, "ASSESSMENTS", "assessment_count", ["COUNT"],
                          dims=["assessment_name"], filters=name_filter),
                        m(window, "ASSESSMENTS", "assessment_value", pct,
                          dims=["assessment_name"], filters=name_filter),
                        m(window, "ASSESSMENTS", "assessment_value", [*pct, "MIN", "MAX"],
                          dims=["assessment_name"], filters=name_filter, bucketed=False),
                    ])  # fmt: skip
                return BaselinePlan([
                    m(window, "ASSESSMENTS", "assessment_count", ["COUNT"], dims=by_value,
                      filters=name_filter),
                ])  # fmt: skip
            case "tools/discovery" | "tools/metrics":
                filters = ["span.type = 'TOOL'"]
                if params.get("tool_name"):
                    filters.append(f"span.name = '{params['tool_name']}'")
                return BaselinePlan([
                    m(window, "SPANS", "span_count", ["COUNT"], dims=["span_name", "span_status"],
                      filters=filters),
                    m(window, "SPANS", "latency", pct, dims=["span_name"], filters=filters),
                    m(window, "SPANS", "latency", pct, dims=["span_name"], filters=filters,
                      bucketed=False),
                ], note="no distinct trace counts")  # fmt: skip
            case "dimensions/calculate-npmi":
                return BaselinePlan(
                    [self._npmi(window, params["mlflow_filter1"], params["mlflow_filter2"])]
                )
            case "correlations":
                return self._correlations(window, params)
        return None

    # ---------------------------------------------------------------- NPMI

    def _npmi(self, window: Window, filter1: str, filter2: str) -> tuple[str, Call]:
        base = f"timestamp_ms >= {window.start_ms} AND timestamp_ms < {window.end_ms}"

        def call() -> Any:
            return self.store.calculate_trace_filter_correlation(
                [self.experiment_id], filter1, filter2, base_filter=base
            )

        return (f"calculate_trace_filter_correlation({filter2})", call)

    def candidates(self, window: Window) -> dict[str, list[str]]:
        """Every value correlations scores, as an MLflow filter, per kind (read from the DB)."""
        w = {"exp": int(self.experiment_id), "start": window.start_ms, "end": window.end_ms}
        scope = "t.experiment_id = :exp AND t.timestamp_ms >= :start AND t.timestamp_ms < :end"
        queries = {
            "status": f"SELECT DISTINCT t.status FROM trace_info t WHERE {scope}",
            "span_type": "SELECT DISTINCT s.type FROM spans s JOIN trace_info t "
            f"ON t.request_id = s.trace_id WHERE {scope} AND s.type IS NOT NULL",
            "tool": "SELECT DISTINCT s.name FROM spans s JOIN trace_info t "
            f"ON t.request_id = s.trace_id WHERE {scope} AND s.type = 'TOOL'",
            "tag": "SELECT DISTINCT g.key, g.value FROM trace_tags g JOIN trace_info t "
            f"ON t.request_id = g.request_id WHERE {scope} AND g.key NOT LIKE 'mlflow.%%'",
            "assessment": "SELECT DISTINCT a.name, a.value FROM assessments a JOIN trace_info t "
            f"ON t.request_id = a.trace_id WHERE {scope} AND a.assessment_type = 'feedback' "
            "AND a.valid AND a.error IS NULL AND a.is_numeric_value = false",
        }
        out: dict[str, list[str]] = {}
        with self.store.engine.connect() as conn:
            for kind, sql in queries.items():
                rows = conn.execute(sa.text(sql.replace("%%", "%")), w).all()
                if kind == "status":
                    out[kind] = [f"status = '{r[0]}'" for r in rows]
                elif kind == "span_type":
                    out[kind] = [f"span.type = '{r[0]}'" for r in rows]
                elif kind == "tool":
                    out["tool"] = [f"span.type = 'TOOL' AND span.name = '{r[0]}'" for r in rows]
                    out["tool_error"] = [
                        f"span.type = 'TOOL' AND span.name = '{r[0]}' AND span.status = 'ERROR'"
                        for r in rows
                    ]
                elif kind == "tag":
                    out[kind] = [f"tags.`{r[0]}` = '{r[1]}'" for r in rows]
                else:
                    out[kind] = [f"feedback.`{r[0]}` = '{str(r[1]).strip(chr(34))}'" for r in rows]
        return out

    def _correlations(self, window: Window, params: dict[str, Any]) -> BaselinePlan:
        sample = int(params.get("sample_per_kind", 3))
        candidates = self.candidates(window)
        calls = []
        counts: dict[str, int] = {}
        for kind, filters in candidates.items():
            if not filters:
                continue
            counts[kind] = len(filters)
            step = max(1, len(filters) // sample)
            for f in filters[::step][:sample]:
                label, call = self._npmi(window, params["filter_string"], f)
                calls.append((f"{kind}: {label}", call))
        total = sum(counts.values())
        return BaselinePlan(
            calls,
            note=f"{total} candidates; per-kind mean of up to {sample} measured calls x count",
            extrapolate_to=counts,
        )


@dataclass
class BaselineResult:
    samples_s: list[float]  # one total per repetition (extrapolated for correlations)
    calls: int
    note: str

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_s)


def run_plan(plan: BaselinePlan, repeat: int) -> BaselineResult:
    """Time the plan's calls ``repeat`` times; correlations extrapolate per kind."""
    totals: list[float] = []
    for _ in range(repeat):
        per_call: list[tuple[str, float]] = []
        for label, call in plan.calls:
            started = time.perf_counter()
            call()
            per_call.append((label, time.perf_counter() - started))
        if plan.extrapolate_to:
            total = 0.0
            for kind, count in plan.extrapolate_to.items():
                times = [t for label, t in per_call if label.startswith(f"{kind}: ")]
                total += statistics.mean(times) * count
            totals.append(total)
        else:
            totals.append(sum(t for _, t in per_call))
    calls = sum(plan.extrapolate_to.values()) if plan.extrapolate_to else len(plan.calls)
    return BaselineResult(totals, calls, plan.note)
