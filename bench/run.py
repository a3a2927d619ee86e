"""Benchmark every endpoint of the running service against MLflow's own calls.

    python -m bench.run --db-url postgresql://postgres@127.0.0.1:5432/insights_bench

Starts ``insights-server`` (one uvicorn worker, loopback), lists its endpoints from
``/openapi.json``, and for a 24-hour, a 7-day and a 30-day window ending at the newest trace
times each endpoint case (``bench.cases``) ``--repeat`` times after one warm-up request, from a
client on loopback, one request at a time. Beside each it times the MLflow calls that compute
the same numbers on the same database (``bench.baseline``). Writes
``bench/results/<backend>-<traces>.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

from bench import report, ui_requests
from bench.baseline import MlflowBaseline, Window, run_plan
from bench.cases import build_cases, discover_endpoints
from bench.machine import database, load_average, machine
from bench.server import ServiceProcess, start_service
from bench.writers import backend_of, sync_url

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DATA_DIR = BENCH_DIR / "data"
HOUR_MS, DAY_MS = 3_600_000, 86_400_000

# (label, length, the service's time bucket, its length in seconds for MLflow)
WINDOWS = {
    "24h": (DAY_MS, "hour", 3600),
    "7d": (7 * DAY_MS, "hour", 3600),
    "30d": (30 * DAY_MS, "day", 86400),
}


@dataclass
class Measurement:
    window: str
    case: str
    endpoint: str
    status: int
    samples_ms: list[float] = field(default_factory=list)
    error: str | None = None
    mlflow_samples_ms: list[float] = field(default_factory=list)
    mlflow_calls: int = 0
    mlflow_note: str = ""

    @staticmethod
    def _pct(samples: list[float], q: float) -> float | None:
        return float(np.percentile(samples, q)) if samples else None

    @property
    def p50(self) -> float | None:
        return self._pct(self.samples_ms, 50)

    @property
    def p95(self) -> float | None:
        return self._pct(self.samples_ms, 95)

    @property
    def mlflow_p50(self) -> float | None:
        return self._pct(self.mlflow_samples_ms, 50)

    @property
    def speedup(self) -> float | None:
        if self.p50 is None or self.mlflow_p50 is None:
            return None
        return self.mlflow_p50 / self.p50


def make_windows(last_ms: int, wanted: list[str]) -> list[Window]:
    end = math.ceil((last_ms + 1) / HOUR_MS) * HOUR_MS  # the hour after the newest trace
    return [
        Window(label, end - WINDOWS[label][0], end, WINDOWS[label][1], WINDOWS[label][2])
        for label in wanted
    ]


def time_requests(
    client: httpx.Client, path: str, body: dict[str, Any], repeat: int
) -> tuple[int, list[float], str | None]:
    """One warm-up, then ``repeat`` timed requests (ms). Stops at the first non-200."""
    warm = client.post(path, json=body)
    if warm.status_code != 200:
        return warm.status_code, [], warm.text[:300]
    samples: list[float] = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.post(path, json=body)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            return response.status_code, samples, response.text[:300]
        samples.append(elapsed)
    return 200, samples, None


def run(args: argparse.Namespace) -> dict[str, Any]:
    started_at = datetime.now(UTC)
    db = database(args.db_url)
    experiment_id = db["experiment_id"]
    windows = make_windows(db["last_ms"], args.windows)
    load_before = load_average()
    log_path = DATA_DIR / f"server-{backend_of(args.db_url)}.log"
    DATA_DIR.mkdir(exist_ok=True)
    service: ServiceProcess | None = None
    base_url = args.service_url
    if base_url is None:
        # Measure slow cases rather than cut them off at the service's 30 s default.
        timeout_env = {"INSIGHTS_STATEMENT_TIMEOUT_SECONDS": str(args.timeout)}
        service = start_service(args.db_url, log_path=log_path, env=timeout_env)
        base_url = service.url
    baseline = None if args.skip_mlflow else MlflowBaseline(sync_url(args.db_url), experiment_id)
    measurements: list[Measurement] = []
    try:
        with httpx.Client(base_url=base_url, timeout=args.timeout) as client:
            endpoints = discover_endpoints(client.get("/openapi.json").json())
            longest = max(windows, key=lambda w: w.end_ms - w.start_ms)
            cases = build_cases(
                lambda path, body: client.post(path, json=body),
                endpoints,
                [experiment_id],
                longest.start_ms,
                longest.end_ms,
            )
            if args.only:
                cases = [c for c in cases if any(o in c.label for o in args.only)]
            for window in windows:
                for case in cases:
                    body = case.body([experiment_id], window.start_ms, window.end_ms, window.bucket)
                    status, samples, error = time_requests(
                        client, case.endpoint.path, body, args.repeat
                    )
                    m = Measurement(window.label, case.label, case.endpoint.name, status,
                                    samples, error)  # fmt: skip
                    if baseline is not None and status == 200:
                        plan = baseline.plan(case.endpoint.name, window, case.baseline_params)
                        if plan is not None:
                            repeat = 1 if plan.extrapolate_to else args.mlflow_repeat
                            result = run_plan(plan, repeat)
                            m.mlflow_samples_ms = [s * 1000 for s in result.samples_s]
                            m.mlflow_calls, m.mlflow_note = result.calls, result.note
                    measurements.append(m)
                    print(report.progress_line(m), flush=True)
                if not args.only or any(o in ui_requests.LABEL for o in args.only):
                    measurements.append(
                        _ui_measurement(client, baseline, experiment_id, window, args)
                    )
                    print(report.progress_line(measurements[-1]), flush=True)
    finally:
        peak_rss = service.peak_rss_mb() if service else None
        if service is not None:
            service.stop()
        if baseline is not None:
            baseline.close()
    return {
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "db_url": sa.make_url(sync_url(args.db_url)).render_as_string(hide_password=True),
        "backend": backend_of(args.db_url),
        "machine": machine(),
        "database": db,
        "manifest": _manifest(args.db_url, db),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "server_peak_rss_mb": peak_rss,
        "repeat": args.repeat,
        "mlflow_repeat": args.mlflow_repeat,
        "windows": [asdict(w) for w in windows],
        "measurements": [
            {
                **asdict(m),
                "p50": m.p50,
                "p95": m.p95,
                "mlflow_p50": m.mlflow_p50,
                "speedup": m.speedup,
            }
            for m in measurements
        ],
    }


def _ui_measurement(
    client: httpx.Client,
    baseline: MlflowBaseline | None,
    experiment_id: str,
    window: Window,
    args: argparse.Namespace,
) -> Measurement:
    """Case group "ui" (bench/ui_requests.py): the Overview page's whole request set."""
    bodies = ui_requests.overview_bodies(experiment_id, window)
    status, samples, error = ui_requests.time_service(client, bodies, args.repeat)
    label = f"{ui_requests.LABEL} ({len(bodies)} requests)"
    m = Measurement(window.label, label, "mlflow/traces/metrics", status, samples, error)
    if baseline is not None and status == 200:
        result = run_plan(ui_requests.mlflow_plan(baseline, bodies), args.mlflow_repeat)
        m.mlflow_samples_ms = [s * 1000 for s in result.samples_s]
        m.mlflow_calls, m.mlflow_note = result.calls, result.note
    return m


def _manifest(url: str, db: dict[str, Any]) -> dict[str, Any] | None:
    """The generator's manifest for this database, if it is on this machine."""
    name = Path(sa.make_url(sync_url(url)).database or "").stem
    path = DATA_DIR / f"{backend_of(url)}-{name}-{db['rows']['trace_info']}.json"
    return json.loads(path.read_text()) if path.exists() else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--db-url", required=True, help="MLflow-style tracking DB URL")
    parser.add_argument("--repeat", type=int, default=10, help="timed requests per case")
    parser.add_argument("--mlflow-repeat", type=int, default=3, help="timed MLflow runs")
    parser.add_argument("--windows", type=lambda s: s.split(","), default=list(WINDOWS))
    parser.add_argument("--only", action="append", help="only cases whose label contains this")
    parser.add_argument("--skip-mlflow", action="store_true", help="no MLflow baseline")
    parser.add_argument("--service-url", help="benchmark a service already running here")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, help="Markdown report (default bench/results/...)")
    args = parser.parse_args(argv)
    unknown = set(args.windows) - set(WINDOWS)
    if unknown:
        parser.error(f"unknown windows {sorted(unknown)}; use {', '.join(WINDOWS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = parse_args(argv)
    results = run(args)
    traces = results["database"]["rows"]["trace_info"]
    out = args.out or RESULTS_DIR / f"{results['backend']}-{traces}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.render(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
