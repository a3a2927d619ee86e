"""Load run: many concurrent clients against the service on loopback, for a bounded time.

    python -m bench.load --db-url postgresql://postgres@127.0.0.1:5432/insights_bench

Starts ``insights-server`` (or uses ``--service-url``) with its analytics store on (``--store
off``: everything live), waits until the store answers, builds the same cases as ``bench.run``
and lets ``--clients`` asyncio clients post them back to back, each picking a case and a window
(24 h or 7 days by default, what dashboards ask for) at random (seeded) for ``--duration``
seconds. Reports throughput, latency percentiles, every non-200 answer (there must be none)
and the server process's peak RSS (``VmHWM`` of /proc/<pid>/status), sampled RSS too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa

from bench.cases import Case, build_cases, discover_endpoints
from bench.machine import database, load_average, machine
from bench.run import DATA_DIR, RESULTS_DIR, make_windows, store_path_for
from bench.server import read_status_kb, start_service, wait_for_store
from bench.writers import backend_of, sync_url


async def _client(
    http: httpx.AsyncClient,
    jobs: list[tuple[str, str, dict[str, Any]]],
    rng: random.Random,
    deadline: float,
    latencies: list[float],
    outcomes: Counter[str],
) -> None:
    while time.monotonic() < deadline:
        _label, path, body = rng.choice(jobs)
        started = time.perf_counter()
        try:
            response = await http.post(path, json=body)
            outcome = str(response.status_code)
            if response.status_code != 200:
                outcome += f" {response.json().get('error_code', '')}"
            else:  # which path answered
                outcome += f" {response.headers.get('x-insights-answered-by', '')}"
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        latencies.append((time.perf_counter() - started) * 1000)
        outcomes[outcome] += 1


async def _sample_rss(pid: int | None, stop: asyncio.Event, samples: list[float]) -> None:
    while pid is not None and not stop.is_set():
        kb = read_status_kb(pid, "VmRSS")
        if kb is not None:
            samples.append(kb / 1024)
        await asyncio.sleep(0.5)


async def drive(
    base_url: str,
    jobs: list[tuple[str, str, dict[str, Any]]],
    *,
    clients: int,
    duration: float,
    seed: int,
    pid: int | None,
) -> dict[str, Any]:
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    rss: list[float] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as http:
        sampler = asyncio.create_task(_sample_rss(pid, stop, rss))
        started = time.monotonic()
        deadline = started + duration
        await asyncio.gather(*[
            _client(http, jobs, random.Random(seed * 1000 + i), deadline, latencies, outcomes)
            for i in range(clients)
        ])  # fmt: skip
        elapsed = time.monotonic() - started
        stop.set()
        await sampler
    arr = np.array(latencies) if latencies else np.array([0.0])
    return {
        "requests": len(latencies),
        "elapsed_s": elapsed,
        "throughput_rps": len(latencies) / elapsed,
        "latency_ms": {f"p{q}": float(np.percentile(arr, q)) for q in (50, 90, 95, 99)}
        | {"max": float(arr.max()), "mean": float(arr.mean())},
        "outcomes": dict(outcomes),
        "errors": sum(n for o, n in outcomes.items() if not o.startswith("200")),
        "rss_max_sampled_mb": max(rss) if rss else None,
    }


def render(results: dict[str, Any]) -> str:
    lat, db = results["latency_ms"], results["database"]
    lines = [
        f"# Load run: {results['backend']}, {db['rows']['trace_info']:,} traces",
        "",
        f"Run {results['started_at']}: {results['clients']} concurrent clients for "
        f"{results['duration_s']:.0f} s against one uvicorn process on loopback (`python -m "
        f"bench.load`), each posting a random case of `bench.run` ({results['cases']} cases) "
        f"over a random window of {', '.join(results['windows'])}, back to back.",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in results["machine"].items()],
        f"| database | {db['server']} ({db['size']}) |",
        f"| load average (1/5/15 min) | before {results['load_average_before']}, after "
        f"{results['load_average_after']} |",
        f"| service settings | {results['service_env']} |",
        "",
        "| requests | throughput | p50 | p90 | p95 | p99 | max | errors | server peak RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {results['requests']:,} | {results['throughput_rps']:.1f} req/s | {lat['p50']:.0f} ms "
        f"| {lat['p90']:.0f} ms | {lat['p95']:.0f} ms | {lat['p99']:.0f} ms | {lat['max']:.0f} ms "
        f"| {results['errors']} | {results['server_peak_rss_mb']:.0f} MB (VmHWM) |",
        "",
        f"Cases: {', '.join(results['case_labels'])}.",
        "",
        f"Outcomes: {results['outcomes']}. Largest sampled RSS: "
        f"{results['rss_max_sampled_mb']:.0f} MB. Target: 0 errors, peak RSS ≤ 600 MB with the "
        "analytics store on.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--windows", type=lambda s: s.split(","), default=["24h", "7d"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", action="append", help="only cases whose label contains this")
    parser.add_argument("--service-url", help="drive a service already running here")
    parser.add_argument("--pool-size", type=int, help="INSIGHTS_POOL_SIZE for the server")
    parser.add_argument("--store", choices=("on", "off"), default="on")
    parser.add_argument("--store-path", type=Path, help="default: bench/data/store-<db>.duckdb")
    parser.add_argument("--store-timeout", type=float, default=1800.0, help="first sync, s")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stops the service too
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    db = database(args.db_url)
    experiment = db["experiment_id"]
    windows = make_windows(db["last_ms"], args.windows)
    env = {"INSIGHTS_POOL_SIZE": str(args.pool_size)} if args.pool_size else {}
    if args.store == "on":
        store_path = args.store_path or store_path_for(args.db_url)
        env |= {"INSIGHTS_STORE": "on", "INSIGHTS_STORE_PATH": str(store_path)}
    service = None
    base_url = args.service_url
    if base_url is None:
        log_path = DATA_DIR / f"server-load-{backend_of(args.db_url)}.log"
        service = start_service(args.db_url, log_path=log_path, env=env)
        base_url = service.url
    try:
        if args.store == "on":
            wait_for_store(base_url, timeout_s=args.store_timeout)
        load_before = load_average()
        with httpx.Client(base_url=base_url, timeout=600) as client:
            endpoints = discover_endpoints(client.get("/openapi.json").json())
            longest = max(windows, key=lambda w: w.end_ms - w.start_ms)
            cases: list[Case] = build_cases(
                lambda path, body: client.post(path, json=body),
                endpoints,
                [experiment],
                longest.start_ms,
                longest.end_ms,
            )
        if args.only:
            cases = [c for c in cases if any(o in c.label for o in args.only)]
        jobs = [
            (c.label, c.endpoint.path, c.body([experiment], w.start_ms, w.end_ms, w.bucket))
            for c in cases
            for w in windows
        ]
        outcome = asyncio.run(
            drive(
                base_url,
                jobs,
                clients=args.clients,
                duration=args.duration,
                seed=args.seed,
                pid=service.pid if service else None,
            )
        )
        peak = service.peak_rss_mb() if service else None
    finally:
        if service is not None:
            service.stop()
    results = {
        "started_at": started_at,
        "backend": backend_of(args.db_url),
        "db_url": sa.make_url(sync_url(args.db_url)).render_as_string(hide_password=True),
        "machine": machine(),
        "database": db,
        "clients": args.clients,
        "duration_s": args.duration,
        "windows": args.windows,
        "cases": len(cases),
        "case_labels": [c.label for c in cases],
        "store": args.store,
        "service_env": env or "defaults (pool_size 5, max_overflow 5)",
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "server_peak_rss_mb": peak,
        **outcome,
    }
    name = f"load-{results['backend']}-{db['rows']['trace_info']}-store-{args.store}"
    out = args.out or RESULTS_DIR / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(render(results))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
