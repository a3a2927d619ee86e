"""The analytics store's own figures: first sync, lag under writes, size, memory.

    python -m bench.sync_figures --db-url postgresql://postgres@127.0.0.1:5432/insights_bench

1. Starts ``insights-server`` with its store on and a new, empty store file, and times it until
   ``/ready`` says the store answers: the first sync, as a deployment sees it. The server's log
   (``bench/data/server-sync-<backend>.log``) has the per-table progress lines.
2. While that service keeps syncing, a writer logs ``--rate`` traces per second through MLflow's
   own tracing API (``mlflow.start_span``, the tracking DB as MLflow's store) into MLflow's Default
   experiment (the bench dataset is in another), for ``--lag-seconds``; ``/ready``'s lag is
   sampled twice a second. The writer's traces are deleted through MLflow afterwards.
3. The store file's size against the tracking DB's trace tables (PostgreSQL: their total
   relation sizes, indexes included), and the service's RSS (peak and at the end).

Writes ``bench/results/sync-<backend>-<traces>.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

from bench.machine import database, load_average, machine
from bench.run import DATA_DIR, RESULTS_DIR
from bench.server import start_service, wait_for_store
from bench.writers import backend_of, sync_url

TRACE_TABLES = (
    "trace_info",
    "spans",
    "trace_tags",
    "trace_request_metadata",
    "assessments",
    "entity_associations",
)
WRITER_EXPERIMENT = "0"  # MLflow's Default experiment; the bench's traces are in another
_PROGRESS = re.compile(r"analytics store sync: (\w+): (\d+) (?:of \d+ )?rows")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def tracking_table_sizes(url: str) -> dict[str, int] | None:
    """Bytes of each trace table with its indexes and TOAST (PostgreSQL only)."""
    engine = sa.create_engine(sync_url(url))
    try:
        if engine.dialect.name != "postgresql":
            return None
        with engine.connect() as conn:
            return {
                t: int(conn.execute(sa.text(f"SELECT pg_total_relation_size('{t}')")).scalar_one())
                for t in TRACE_TABLES
            }
    finally:
        engine.dispose()


def _rows_per_table(log_path: Path) -> dict[str, int]:
    rows: dict[str, int] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        match = _PROGRESS.search(line)
        if match:
            rows[match.group(1)] = int(match.group(2))
    return rows


def _full_sync_line(log_path: Path) -> str | None:
    lines = [
        line for line in log_path.read_text(errors="replace").splitlines() if "full sync" in line
    ]
    return lines[-1] if lines else None


class TraceWriter(threading.Thread):
    """Logs traces through MLflow's tracing API at a steady rate, until stopped."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rate = url, rate
        self.written = 0
        self.failed = 0
        self.stop_event = threading.Event()
        self.experiment_id: str | None = None

    def prepare(self) -> None:
        import mlflow

        mlflow.set_tracking_uri(sync_url(self.url))
        # MLflow's Default experiment: creating one would change the tracking DB's identity
        # (service/store/source_identity.py) and make every store built from it start over.
        self.experiment_id = mlflow.set_experiment(experiment_id=WRITER_EXPERIMENT).experiment_id

    def run(self) -> None:
        import mlflow

        started = time.monotonic()
        while not self.stop_event.is_set():
            due = started + self.written / self.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            try:
                with mlflow.start_span("writer-agent", span_type="AGENT") as root:
                    root.set_inputs({"q": f"question {self.written}"})
                    with mlflow.start_span("lookup", span_type="TOOL") as tool:
                        tool.set_outputs({"ok": True})
                    root.set_outputs({"a": "answer"})
                self.written += 1
            except Exception:  # a failed write is counted, the rate goes on
                self.failed += 1
                self.written += 1

    def clean_up(self) -> int:
        import mlflow
        from mlflow import MlflowClient

        if self.experiment_id is None:
            return 0
        mlflow.flush_trace_async_logging()  # MLflow exports traces in the background
        client = MlflowClient(sync_url(self.url))
        return int(
            client.delete_traces(self.experiment_id, max_timestamp_millis=_now_ms() + 60_000)
        )


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    arr = np.array(values)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


def measure_lag(base_url: str, writer: TraceWriter, seconds: float) -> dict[str, Any]:
    lags: list[float] = []
    states: dict[str, int] = {}
    writer.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            store = httpx.get(f"{base_url}/ready", timeout=10).json().get("store", {})
            states[store.get("state", "?")] = states.get(store.get("state", "?"), 0) + 1
            if store.get("lag_seconds") is not None:
                lags.append(float(store["lag_seconds"]))
            time.sleep(0.5)
    finally:
        writer.stop_event.set()
        writer.join(timeout=30)
    elapsed = time.monotonic() - started
    return {
        "seconds": elapsed,
        "traces_written": writer.written - writer.failed,
        "write_failures": writer.failed,
        "write_rate": (writer.written - writer.failed) / elapsed,
        "lag_seconds": _percentiles(lags),
        "samples": len(lags),
        "states": states,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    backend = backend_of(args.db_url)
    db = database(args.db_url)
    store_path = DATA_DIR / f"store-sync-figures-{backend}.duckdb"
    if not args.reuse_store:
        for leftover in (store_path, store_path.with_name(store_path.name + ".wal")):
            leftover.unlink(missing_ok=True)
    log_path = DATA_DIR / f"server-sync-{backend}.log"
    env = {
        "INSIGHTS_STORE": "on",
        "INSIGHTS_STORE_PATH": str(store_path),
        "INSIGHTS_LOG_LEVEL": "info",  # the first sync's progress lines
        "INSIGHTS_STATEMENT_TIMEOUT_SECONDS": "600",
    }
    load_before = load_average()
    clock = time.monotonic()
    service = start_service(args.db_url, log_path=log_path, env=env)
    result: dict[str, Any] = {}
    try:
        started_s = time.monotonic() - clock
        waited = wait_for_store(service.url, timeout_s=args.store_timeout)
        result["first_sync"] = {
            "reused_store": args.reuse_store,
            "full_sync_log": _full_sync_line(log_path),
            "seconds_until_store_answers": started_s + waited,
            "service_start_s": started_s,
            "rows": _rows_per_table(log_path),
            "peak_rss_mb": service.peak_rss_mb(),
            "load_average_after": load_average(),
        }
        print(f"first sync: store answers after {started_s + waited:.0f} s", flush=True)
        if args.lag_seconds > 0:
            writer = TraceWriter(args.db_url, args.rate)
            writer.prepare()
            try:
                result["lag"] = measure_lag(service.url, writer, args.lag_seconds)
            finally:
                result["lag_cleanup_deleted_traces"] = writer.clean_up()
            print(f"lag: {result['lag']}", flush=True)
        result["rss_mb"] = {"peak": service.peak_rss_mb(), "end": service.rss_mb()}
    finally:
        service.stop()
    sizes = tracking_table_sizes(args.db_url)
    store_bytes = store_path.stat().st_size
    result |= {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": backend,
        "machine": machine(),
        "database": db,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "store_bytes": store_bytes,
        "tracking_trace_tables_bytes": sizes,
        "store_share": store_bytes / sum(sizes.values()) if sizes else None,
    }
    if not args.keep_store:
        for leftover in (store_path, store_path.with_name(store_path.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return result


def _mb(n: float | None) -> str:
    return "—" if n is None else f"{n / 1e6:,.0f} MB"


def render(r: dict[str, Any]) -> str:
    first, rss = r["first_sync"], r["rss_mb"]
    rows = ", ".join(f"{t} {n:,}" for t, n in first["rows"].items())
    traces = r["database"]["rows"]["trace_info"]
    lines = [
        f"# Analytics store figures: {r['backend']}, {traces:,} traces",
        "",
        f"Run {r['started_at']} with `python -m bench.sync_figures`. Load average before "
        f"{r['load_average_before']}, after the first sync {first['load_average_after']}, at "
        f"the end {r['load_average_after']} (2 cores shared with other sessions).",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in r["machine"].items()],
    ]
    if first.get("reused_store"):
        lines.append(
            f"| start with a kept store | store answers {first['seconds_until_store_answers']:.0f}"
            " s after the service was started |"
        )
    else:
        lines += [
            f"| first sync | store answers {first['seconds_until_store_answers']:.0f} s after the "
            f"service was started with an empty store file (service start "
            f"{first['service_start_s']:.0f} s; log: {first['full_sync_log']}); rows: {rows} |",
            f"| RSS during the first sync | {first['peak_rss_mb']:,.0f} MB (VmHWM) |",
        ]
    lag = r.get("lag")
    if lag:
        p = lag["lag_seconds"]
        lines.append(
            f"| lag while MLflow writes | {lag['traces_written']:,} traces in "
            f"{lag['seconds']:.0f} s ({lag['write_rate']:.1f}/s asked {r.get('rate', '')}, "
            f"{lag['write_failures']} failed) through `mlflow.start_span`; `/ready` lag p50 "
            f"{p['p50']:.1f} s, p95 {p['p95']:.1f} s, max {p['max']:.1f} s over "
            f"{lag['samples']} samples; states {lag['states']} |"
        )
    sizes = r["tracking_trace_tables_bytes"]
    if sizes:
        lines.append(
            f"| store file vs tracking DB | {_mb(r['store_bytes'])} vs {_mb(sum(sizes.values()))} "
            f"for the trace tables with their indexes ({r['store_share']:.1%}); "
            + ", ".join(f"{t} {_mb(b)}" for t, b in sizes.items())
            + " |"
        )
    else:
        lines.append(f"| store file | {_mb(r['store_bytes'])} |")
    lines += [
        f"| service RSS | peak {rss['peak']:,.0f} MB (VmHWM), {rss['end']:,.0f} MB at the end |",
        "",
        "Targets (issue 12): first sync ≤ 5 min at 1M traces, store ≤ 20% of the trace tables, "
        "service RSS ≤ 600 MB.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stops the service too
    parser = argparse.ArgumentParser(prog="python -m bench.sync_figures", description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--rate", type=float, default=20.0, help="traces per second")
    parser.add_argument("--lag-seconds", type=float, default=120.0, help="0: no writer")
    parser.add_argument("--store-timeout", type=float, default=1800.0)
    parser.add_argument("--keep-store", action="store_true")
    parser.add_argument(
        "--reuse-store", action="store_true", help="start from the kept file: no first sync"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run(args) | {"rate": args.rate}
    out = args.out or (
        RESULTS_DIR / f"sync-{result['backend']}-{result['database']['rows']['trace_info']}.md"
    )
    out.write_text(render(result))
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    print(render(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
