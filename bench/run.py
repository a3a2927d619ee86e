"""Benchmark every endpoint of the running service: its analytics store, its live path and
MLflow's own calls, side by side in one run.

    python -m bench.run --db-url postgresql://postgres@127.0.0.1:5432/insights_bench

Starts ``insights-server`` (one uvicorn worker, loopback) with its analytics store on (a file in
``bench/data/``, kept between runs) and waits until the store answers. Lists the endpoints from
``/openapi.json``, and for a 24-hour, a 7-day and a 30-day window ending at the newest trace,
each with hour and day buckets, times each endpoint case (``bench.cases``) after one warm-up
request, from a client on loopback, one request at a time: ``--repeat`` times answered by the
store, ``--live-repeat`` times answered live (``Cache-Control: no-cache``), and beside them the
MLflow calls that compute the same numbers on the same database (``bench.baseline``). Every
response's ``X-Insights-Answered-By`` header is checked. Writes
``bench/results/<backend>-<traces>.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Callable
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
from bench.server import ServiceProcess, start_service, wait_for_store
from bench.writers import backend_of, sync_url

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DATA_DIR = BENCH_DIR / "data"
HOUR_MS, DAY_MS = 3_600_000, 86_400_000

WINDOW_MS = {"24h": DAY_MS, "7d": 7 * DAY_MS, "30d": 30 * DAY_MS}
BUCKET_SECONDS = {"hour": 3600, "day": 86400}  # the service's time bucket, in seconds for MLflow
LIVE = {"Cache-Control": "no-cache"}


@dataclass
class Measurement:
    window: str
    case: str
    endpoint: str
    status: int
    samples_ms: list[float] = field(default_factory=list)  # answered by the store
    error: str | None = None
    live_samples_ms: list[float] = field(default_factory=list)
    live_status: int | None = None
    live_error: str | None = None
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
    def live_p50(self) -> float | None:
        return self._pct(self.live_samples_ms, 50)

    @property
    def live_p95(self) -> float | None:
        return self._pct(self.live_samples_ms, 95)

    @property
    def mlflow_p50(self) -> float | None:
        return self._pct(self.mlflow_samples_ms, 50)

    @property
    def speedup(self) -> float | None:
        """MLflow's median over the service's (the store's when it answered, else live)."""
        mine = self.p50 if self.p50 is not None else self.live_p50
        if mine is None or self.mlflow_p50 is None:
            return None
        return self.mlflow_p50 / mine


def make_windows(last_ms: int, wanted: list[str], buckets: list[str] | None = None) -> list[Window]:
    """Windows ending at the hour after the newest trace; labels like ``30d/hour``. Without
    ``buckets``: hour buckets up to 7 days, day buckets for 30 days (labels ``24h``, ...)."""
    end = math.ceil((last_ms + 1) / HOUR_MS) * HOUR_MS
    windows = []
    for label in wanted:
        if buckets is None:
            bucket = "day" if label == "30d" else "hour"
            windows.append(
                Window(label, end - WINDOW_MS[label], end, bucket, BUCKET_SECONDS[bucket])
            )
            continue
        for bucket in buckets:
            windows.append(
                Window(
                    f"{label}/{bucket}",
                    end - WINDOW_MS[label],
                    end,
                    bucket,
                    BUCKET_SECONDS[bucket],
                )
            )
    return windows


def time_requests(
    client: httpx.Client,
    path: str,
    body: dict[str, Any],
    repeat: int,
    *,
    answered_by: str | None,
    headers: dict[str, str] | None = None,
    warmup: int = 1,
) -> tuple[int, list[float], str | None]:
    """One warm-up, then ``repeat`` timed requests (ms). Stops at the first non-200, or at the
    first answer from another path than ``answered_by``."""
    samples: list[float] = []
    for attempt in range(repeat + warmup):
        started = time.perf_counter()
        response = client.post(path, json=body, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            return response.status_code, samples, response.text[:300]
        path_taken = response.headers.get("x-insights-answered-by")
        if answered_by is not None and path_taken != answered_by:
            return 200, samples, f"answered by {path_taken!r}, not {answered_by!r}"
        if attempt >= warmup:
            samples.append(elapsed)
    return 200, samples, None


def store_path_for(url: str) -> Path:
    """The bench's store file for this tracking DB (kept between runs: the first sync is long)."""
    name = Path(sa.make_url(sync_url(url)).database or "db").stem
    return DATA_DIR / f"store-{backend_of(url)}-{name}.duckdb"


def service_env(args: argparse.Namespace) -> dict[str, str]:
    # Measure slow cases rather than cut them off at the service's 30 s default.
    env = {"INSIGHTS_STATEMENT_TIMEOUT_SECONDS": str(args.timeout)}
    if args.store == "on":
        env |= {"INSIGHTS_STORE": "on", "INSIGHTS_STORE_PATH": str(args.store_path)}
        if args.store_max_lag is not None:
            env["INSIGHTS_STORE_MAX_LAG_SECONDS"] = str(args.store_max_lag)
    return env


def run(
    args: argparse.Namespace, on_progress: Callable[[dict[str, Any]], object] | None = None
) -> dict[str, Any]:
    started_at = datetime.now(UTC)
    db = database(args.db_url)
    experiment_id = db["experiment_id"]
    windows = make_windows(db["last_ms"], args.windows, args.buckets)
    log_path = DATA_DIR / f"server-{backend_of(args.db_url)}.log"
    DATA_DIR.mkdir(exist_ok=True)
    service: ServiceProcess | None = None
    base_url = args.service_url
    store_wait_s = None
    if base_url is None:
        service = start_service(args.db_url, log_path=log_path, env=service_env(args))
        base_url = service.url
    baseline = None
    measurements: list[Measurement] = []
    ready_rss: float | None = None
    load_before = load_average()

    def snapshot(peak_rss: float | None, end_rss: float | None) -> dict[str, Any]:
        store_file = args.store_path if args.store == "on" else None
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
            "server_rss_mb": {"store_ready": ready_rss, "end": end_rss},
            "store": None
            if store_file is None
            else {
                "path": str(store_file),
                "size_mb": store_file.stat().st_size / 1e6 if store_file.exists() else None,
                "wait_until_ready_s": store_wait_s,
                "grown": _grow_manifest(store_file),
            },
            "repeat": args.repeat,
            "live_repeat": args.live_repeat,
            "mlflow_repeat": args.mlflow_repeat,
            "windows": [asdict(w) for w in windows],
            "measurements": [
                {
                    **asdict(m),
                    "p50": m.p50,
                    "p95": m.p95,
                    "live_p50": m.live_p50,
                    "live_p95": m.live_p95,
                    "mlflow_p50": m.mlflow_p50,
                    "speedup": m.speedup,
                }
                for m in measurements
            ],
        }

    try:
        if args.store == "on":
            store_wait_s = wait_for_store(base_url, timeout_s=args.store_timeout)
            print(f"analytics store answers (waited {store_wait_s:.0f} s)", flush=True)
        ready_rss = service.rss_mb() if service else None
        load_before = load_average()
        with_live = args.live_repeat > 0
        if not args.skip_mlflow:
            baseline = MlflowBaseline(sync_url(args.db_url), experiment_id)
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
                    m = Measurement(window.label, case.label, case.endpoint.name, 200)
                    if args.store == "on":
                        m.status, m.samples_ms, m.error = time_requests(
                            client, case.endpoint.path, body, args.repeat, answered_by="store",
                            warmup=args.warmup,
                        )  # fmt: skip
                    if with_live:
                        m.live_status, m.live_samples_ms, m.live_error = time_requests(
                            client, case.endpoint.path, body, args.live_repeat,
                            answered_by="live", headers=LIVE,
                        )  # fmt: skip
                        if args.store != "on":
                            m.status, m.error = m.live_status, m.live_error
                    if baseline is not None and m.status == 200:
                        plan = baseline.plan(case.endpoint.name, window, case.baseline_params)
                        if plan is not None:
                            repeat = 1 if plan.extrapolate_to else args.mlflow_repeat
                            result = run_plan(plan, repeat)
                            m.mlflow_samples_ms = [s * 1000 for s in result.samples_s]
                            m.mlflow_calls, m.mlflow_note = result.calls, result.note
                    measurements.append(m)
                    print(report.progress_line(m), flush=True)
                    if on_progress is not None:  # a run cut short still leaves its results
                        on_progress(snapshot(service.peak_rss_mb() if service else None, None))
                if not args.only or any(o in ui_requests.LABEL for o in args.only):
                    measurements.append(
                        _ui_measurement(client, baseline, experiment_id, window, args)
                    )
                    print(report.progress_line(measurements[-1]), flush=True)
    finally:
        peak_rss = service.peak_rss_mb() if service else None
        end_rss = service.rss_mb() if service else None
        if service is not None:
            service.stop()
        if baseline is not None:
            baseline.close()
    return snapshot(peak_rss, end_rss)


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


def _grow_manifest(store_file: Path) -> dict[str, Any] | None:
    """``bench.grow``'s manifest when the store file was grown, not synced."""
    path = store_file.with_name(store_file.name + ".json")
    return json.loads(path.read_text()) if path.exists() else None


def _manifest(url: str, db: dict[str, Any]) -> dict[str, Any] | None:
    """The generator's manifest for this database, if it is on this machine."""
    name = Path(sa.make_url(sync_url(url)).database or "").stem
    path = DATA_DIR / f"{backend_of(url)}-{name}-{db['rows']['trace_info']}.json"
    return json.loads(path.read_text()) if path.exists() else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--db-url", required=True, help="MLflow-style tracking DB URL")
    parser.add_argument("--repeat", type=int, default=10, help="timed requests per case (store)")
    parser.add_argument("--live-repeat", type=int, default=3, help="timed live requests; 0: none")
    parser.add_argument("--mlflow-repeat", type=int, default=1, help="timed MLflow runs")
    parser.add_argument("--windows", type=lambda s: s.split(","), default=list(WINDOW_MS))
    parser.add_argument("--buckets", type=lambda s: s.split(","), default=list(BUCKET_SECONDS))
    parser.add_argument("--only", action="append", help="only cases whose label contains this")
    parser.add_argument("--skip-mlflow", action="store_true", help="no MLflow baseline")
    parser.add_argument("--store", choices=("on", "off"), default="on")
    parser.add_argument("--store-path", type=Path, help="default: bench/data/store-<db>.duckdb")
    parser.add_argument("--store-timeout", type=float, default=1800.0, help="first sync, s")
    parser.add_argument("--store-max-lag", type=float, help="INSIGHTS_STORE_MAX_LAG_SECONDS")
    parser.add_argument("--service-url", help="benchmark a service already running here")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--warmup", type=int, default=1, help="untimed requests per case")
    parser.add_argument("--out", type=Path, help="Markdown report (default bench/results/...)")
    args = parser.parse_args(argv)
    unknown = set(args.windows) - set(WINDOW_MS)
    if unknown:
        parser.error(f"unknown windows {sorted(unknown)}; use {', '.join(WINDOW_MS)}")
    if set(args.buckets) - set(BUCKET_SECONDS):
        parser.error(f"buckets are {', '.join(BUCKET_SECONDS)}")
    if args.out is not None and args.out.suffix != ".md":
        # The JSON goes beside the report (the same name, .json): a .json --out was overwritten.
        parser.error(
            "--out is the Markdown report (e.g. bench/results/x.md); its .json goes beside it"
        )
    args.store_path = args.store_path or store_path_for(args.db_url)
    return args


def main(argv: list[str] | None = None) -> None:
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # A terminated run stops its service too (the finally blocks run on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args(argv)
    suffix = "" if args.store == "on" else "-live"
    DATA_DIR.mkdir(exist_ok=True)

    def write(results: dict[str, Any]) -> Path:
        traces = results["database"]["rows"]["trace_info"]
        out = args.out or RESULTS_DIR / f"{results['backend']}-{traces}{suffix}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.render(results))
        out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
        return out

    out = write(run(args, on_progress=write))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
