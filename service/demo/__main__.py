"""``python -m service.demo --db PATH``: build (or reuse) a demo SQLite tracking DB.

The DB is built into a temporary file next to PATH and renamed when complete, so an
interrupted build never leaves a half-filled DB behind. Its traces end at the current time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from service.demo.generate import EXPERIMENTS, SUPPORT_AGENT, build_tracking_db


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service.demo",
        description="Build a demo MLflow tracking DB (SQLite) with synthetic GenAI traces.",
    )
    parser.add_argument("--db", required=True, type=Path, help="SQLite file; reused if it exists")
    parser.add_argument("--traces", type=int, default=1000, help="number of traces (1000)")
    parser.add_argument("--days", type=int, default=14, help="days of history up to now (14)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--print-experiment-id",
        nargs="?",
        const=SUPPORT_AGENT,
        choices=EXPERIMENTS,
        metavar="NAME",
        help=f"print only this experiment's id (default {SUPPORT_AGENT}), e.g. for scripts",
    )
    return parser.parse_args(argv)


def _sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def _experiment_ids(path: Path) -> dict[str, str]:
    """Read the ids from an existing DB without MLflow (and without writing to it)."""
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT name, experiment_id FROM experiments").fetchall()
    found = {name: str(experiment_id) for name, experiment_id in rows}
    missing = [name for name in EXPERIMENTS if name not in found]
    if missing:
        raise SystemExit(f"{path} is not a demo DB: experiments {missing} are missing")
    return {name: found[name] for name in EXPERIMENTS}


def _build(path: Path, args: argparse.Namespace, out: TextIO) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the final rename is atomic; SQLite creates the file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        started = time.monotonic()
        dataset = build_tracking_db(
            _sqlite_uri(tmp),
            n_traces=args.traces,
            days=args.days,
            seed=args.seed,
            end_time_ms=int(time.time() * 1000),
            progress=True,
        )
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(f"{tmp.name}-journal")):
            leftover.unlink(missing_ok=True)
    elapsed = time.monotonic() - started
    print(f"Built {path} with {dataset.trace_count} traces in {elapsed:.0f} s", file=out)
    return dataset.experiment_ids


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.traces < 0 or args.days < 1:
        raise SystemExit("--traces must be >= 0 and --days >= 1")
    path: Path = args.db
    # With --print-experiment-id stdout carries the id alone; the rest goes to stderr.
    out = sys.stderr if args.print_experiment_id else sys.stdout
    if path.exists():
        print(f"Reusing {path} (delete it to build a fresh one)", file=out)
        experiment_ids = _experiment_ids(path)
    else:
        try:
            experiment_ids = _build(path, args, out)
        except KeyboardInterrupt:
            print(f"\nInterrupted: {path} was not written", file=sys.stderr)
            return 130
    if args.print_experiment_id:
        print(experiment_ids[args.print_experiment_id])
        return 0
    print(f"Tracking URI: {_sqlite_uri(path)}")
    for name, experiment_id in experiment_ids.items():
        print(f"  experiment {name}: {experiment_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
