"""One case's request replayed in-process: the median of N answers, and a hash of the body.

    python -m bench.replay --db-url postgresql://postgres@127.0.0.1:5432/insights_bench \\
        --case "tools/discovery" --window 30d --bucket hour --repeat 10 [--store FILE]

Runs the service in-process (``httpx.ASGITransport``, no server, no network), answers the case
once untimed, then ``--repeat`` times timed, and prints the median, the minimum, the median CPU
time of the event loop's thread (the request's Python side: SQL runs in worker threads; far
steadier than wall time for a change to Python code), the body's size and the first characters
of its SHA-256. For an A/B of a change: run it on each revision in
turn, twice each, on one copy of the store (``--store``; no other process may hold it open),
and compare medians; equal hashes say both revisions answer the same bytes. On a noisy machine
this was the only comparison that held (bench/FINDINGS.md §18-19).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import pstats
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.explain import _store_engine, find_case
from bench.machine import database
from bench.run import make_windows


async def replay(args: argparse.Namespace) -> None:
    from service.app import create_app
    from service.settings import Settings

    db = database(args.db_url)
    experiment = db["experiment_id"]
    [window] = make_windows(db["last_ms"], [args.window], [args.bucket])
    store: dict[str, Any] = (
        {"store": "on", "store_path": str(args.store)} if args.store else {"store": "off"}
    )
    app = create_app(Settings(database_url=args.db_url, statement_timeout_seconds=600, **store))
    async with app.router.lifespan_context(app):
        if args.store:
            await _store_engine(app)  # the store answers once its first cycle is done
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=600
        ) as c:
            case, body = await find_case(c, experiment, window, args.case)
            await c.post(case.endpoint.path, json=body)  # warm-up
            times = []
            profiler = cProfile.Profile() if args.profile else None
            loop_cpu = []
            for _ in range(args.repeat):
                cpu = time.thread_time()
                started = time.perf_counter()
                with profiler or contextlib.nullcontext():
                    response = await c.post(case.endpoint.path, json=body)
                times.append((time.perf_counter() - started) * 1000)
                loop_cpu.append((time.thread_time() - cpu) * 1000)
    digest = hashlib.sha256(response.content).hexdigest()[:12]
    print(
        f"{case.label} over {window.label}: median {statistics.median(times):.1f} ms, "
        f"min {min(times):.1f} ms, event loop CPU {statistics.median(loop_cpu):.1f} ms, "
        f"HTTP {response.status_code}, {len(response.content)} bytes, sha256 {digest}"
    )
    if profiler:
        # The event loop's thread only: SQL runs in worker threads (waiting shows as poll).
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--case", required=True, help="a case label, or part of it")
    parser.add_argument("--window", default="30d", choices=["24h", "7d", "30d"])
    parser.add_argument("--bucket", default="hour", choices=["hour", "day", "week"])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--store", type=Path, help="answer from the analytics store in this file")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="cProfile the timed requests' Python side; print the N costliest functions",
    )
    asyncio.run(replay(parser.parse_args()))


if __name__ == "__main__":
    main()
