"""Read a generated dataset back through MLflow: the rows must be what MLflow itself reads.

``search_traces``/``get_trace`` parse trace info, tags, metadata, span content and assessments;
``query_trace_metrics`` must give the same counts and sums the generator wrote.
"""

from __future__ import annotations

import math
from typing import Any

from bench.writers import sync_url


def _close(a: float, b: float, rel: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def verify(url: str, manifest: dict[str, Any]) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.entities.trace_metrics import AggregationType, MetricAggregation, MetricViewType
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = sync_url(url)
    spec, totals = manifest["spec"], manifest["totals"]
    experiment_id = str(spec["experiment_id"])
    checks: list[dict[str, Any]] = []

    def check(name: str, ok: bool, detail: Any) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": repr(detail)})
        print(f"  {'ok ' if ok else 'FAIL'} {name}: {detail}")

    client = MlflowClient(uri)
    traces = client.search_traces(
        locations=[experiment_id], max_results=20, order_by=["timestamp_ms DESC"]
    )
    check("search_traces returns traces", len(traces) == 20, len(traces))
    for trace in traces[:5]:
        full = client.get_trace(trace.info.trace_id)
        spans = full.data.spans
        roots = [s for s in spans if s.parent_id is None]
        check(
            f"get_trace {trace.info.trace_id[:12]}…",
            len(roots) == 1 and all(s.start_time_ns for s in spans),
            f"{len(spans)} spans, state {full.info.state}, "
            f"tokens {full.info.token_usage}, {len(full.info.assessments)} assessments",
        )
    errors = client.search_traces(
        locations=[experiment_id], filter_string="status = 'ERROR'", max_results=5
    )
    failed = [s for t in errors for s in t.data.spans if s.status.status_code == "ERROR"]
    check("ERROR traces have failed spans", len(errors) == 5 and bool(failed), len(failed))
    tagged = client.search_traces(
        locations=[experiment_id], filter_string="tags.env = 'staging'", max_results=5
    )
    check("tag filter", all(t.info.tags.get("env") == "staging" for t in tagged), len(tagged))

    store = SqlAlchemyStore(uri, "file:///tmp/unused-artifacts")
    try:

        def metric(view: MetricViewType, name: str, agg: AggregationType, dims=None) -> list:
            return store.query_trace_metrics(
                [experiment_id], view, name, [MetricAggregation(agg)], dimensions=dims
            )

        by_status = {
            p.dimensions["trace_status"]: p.values["COUNT"]
            for p in metric(MetricViewType.TRACES, "trace_count", AggregationType.COUNT,
                            ["trace_status"])
        }  # fmt: skip
        expected = {k.split(".", 1)[1]: v for k, v in totals.items() if k.startswith("status.")}
        check("trace_count by status", by_status == expected, by_status)
        [avg] = metric(MetricViewType.TRACES, "latency", AggregationType.AVG)
        want = totals["latency.sum"] / totals["latency.count"]
        # MySQL's AVG of a BIGINT is a DECIMAL with 4 decimals: compare to 1e-6, not exactly.
        check(
            "average latency",
            _close(float(avg.values["AVG"]), want, 1e-6),
            (float(avg.values["AVG"]), want),
        )
        [tokens] = metric(MetricViewType.TRACES, "total_tokens", AggregationType.SUM)
        check(
            "total tokens",
            int(tokens.values["SUM"]) == totals["total_tokens"],
            (int(tokens.values["SUM"]), totals["total_tokens"]),
        )
        [cost] = metric(MetricViewType.SPANS, "total_cost", AggregationType.SUM)
        check(
            "span total cost",
            _close(cost.values["SUM"], totals["span_total_cost"], 1e-9),
            (cost.values["SUM"], totals["span_total_cost"]),
        )
        counts = {
            p.dimensions["assessment_name"]: p.values["COUNT"]
            for p in metric(MetricViewType.ASSESSMENTS, "assessment_count",
                            AggregationType.COUNT, ["assessment_name"])
        }  # fmt: skip
        want_counts = {
            k.split(".", 1)[1]: v for k, v in totals.items() if k.startswith("assessments.")
        }
        check("valid assessments by name", counts == want_counts, counts)
    finally:
        store.engine.dispose()
    return {"ok": all(c["ok"] for c in checks), "checks": checks}
