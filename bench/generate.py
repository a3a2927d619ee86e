"""Deterministic bulk generator: a large MLflow 3.17 trace dataset, written straight into the DB.

    python -m bench.generate --db-url postgresql://postgres@127.0.0.1:5432/insights_bench \\
        --recreate --traces 1000000 --days 30

MLflow's own migrations create the schema and MLflow creates the experiment; then chunks of
traces are drawn in worker processes (``bench.dataset``) and bulk-loaded in time order (COPY on
PostgreSQL, executemany on SQLite/MariaDB). Memory stays bounded: at most ``2 x workers``
chunks are in flight. At the end the data is read back through MLflow (``bench.verify``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from tqdm import tqdm

from bench.dataset import DEFAULT_END_MS, EXPERIMENT_NAME, DatasetSpec, Timeline, build_chunk
from bench.writers import backend_of, encode_chunk, open_writer, sync_url
from service.demo.generate import recreate_server_database

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"

logger = logging.getLogger("bench.generate")


# ---------------------------------------------------------------- database and schema


def recreate_database(url: str) -> None:
    """Drop and create the (empty) database; only databases whose name says 'bench'."""
    parsed = sa.make_url(sync_url(url))
    name = parsed.database or ""
    if "bench" not in name:
        raise SystemExit(f"--recreate refuses to drop {name!r}: its name must contain 'bench'")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(name + suffix).unlink(missing_ok=True)
        return
    admin = parsed._replace(database="postgres" if backend == "postgresql" else None)
    recreate_server_database(admin, name)


def existing_traces(url: str) -> int | None:
    """How many traces the database holds; None if it or its schema does not exist."""
    engine = sa.create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT COUNT(*) FROM trace_info")).scalar_one())
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def create_schema_and_experiment(url: str, artifact_root: Path) -> tuple[int, str]:
    """Run MLflow's migrations and create the experiment; return its id and artifact location."""
    from mlflow.entities import ExperimentTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    artifact_root.mkdir(parents=True, exist_ok=True)
    store = SqlAlchemyStore(sync_url(url), artifact_root.as_uri())
    try:
        with store.engine.connect() as conn:
            traces = conn.execute(sa.text("SELECT COUNT(*) FROM trace_info")).scalar_one()
        if traces:
            raise SystemExit(f"{url} already holds {traces} traces: pass --recreate")
        existing = store.get_experiment_by_name(EXPERIMENT_NAME)
        if existing is not None:
            return int(existing.experiment_id), existing.artifact_location
        experiment_id = store.create_experiment(
            EXPERIMENT_NAME, tags=[ExperimentTag("mlflow.experimentKind", "genai_development")]
        )
        return int(experiment_id), store.get_experiment(experiment_id).artifact_location
    finally:
        store.engine.dispose()


# ---------------------------------------------------------------- workers

_TIMELINE: Timeline | None = None


def _chunk_job(spec: DatasetSpec, index: int, payload_kind: str) -> tuple[dict[str, Any], dict]:
    """Runs in a worker: build chunk ``index`` and encode it for the writer."""
    global _TIMELINE
    if _TIMELINE is None or _TIMELINE.n != spec.n_traces:
        _TIMELINE = Timeline.build(spec.start_ms, spec.end_ms, spec.n_traces)
    chunk = build_chunk(spec, index, _TIMELINE)
    return encode_chunk(chunk.rows, payload_kind), chunk_totals(chunk.rows)


def chunk_totals(rows: dict[str, list[tuple[Any, ...]]]) -> dict[str, float]:
    """Aggregates of what was written, to compare with MLflow's numbers afterwards."""
    totals: dict[str, float] = defaultdict(float)
    for table, table_rows in rows.items():
        totals[f"rows.{table}"] += len(table_rows)
    for row in rows["trace_info"]:
        totals[f"status.{row[4]}"] += 1
        if row[3] is not None:
            totals["latency.count"] += 1
            totals["latency.sum"] += row[3]
        totals["total_tokens"] += row[13] or 0
    for row in rows["spans"]:
        totals["span_total_cost"] += row[12] or 0.0
    for row in rows["assessments"]:
        if row[18]:  # valid
            totals[f"assessments.{row[2]}"] += 1
    return dict(totals)


def _in_order(
    pool: ProcessPoolExecutor, spec: DatasetSpec, payload_kind: str, ahead: int
) -> Iterator[tuple[dict[str, Any], dict]]:
    """Chunk results in index order with at most ``ahead`` chunks in flight (bounded memory)."""
    pending: dict[int, Future[tuple[dict[str, Any], dict]]] = {}
    submitted = 0
    for index in range(spec.n_chunks):
        while submitted < spec.n_chunks and submitted < index + ahead:
            pending[submitted] = pool.submit(_chunk_job, spec, submitted, payload_kind)
            submitted += 1
        yield pending.pop(index).result()


# ---------------------------------------------------------------- main


def generate(args: argparse.Namespace) -> dict[str, Any]:
    url = args.db_url
    backend = backend_of(url)
    started = time.perf_counter()
    if args.recreate:
        recreate_database(url)
    experiment_id, artifact_location = create_schema_and_experiment(url, args.artifact_root)
    spec = DatasetSpec(
        n_traces=args.traces,
        days=args.days,
        seed=args.seed,
        experiment_id=experiment_id,
        artifact_location=artifact_location,
        end_ms=args.end_ms,
        chunk_size=args.chunk_size,
    )
    schema_s = time.perf_counter() - started
    writer = open_writer(url)
    totals: Counter[str] = Counter()
    try:
        writer.prepare()
        load_started = time.perf_counter()
        with (
            ProcessPoolExecutor(max_workers=args.workers) as pool,
            tqdm(total=spec.n_traces, unit="trace", desc=f"{backend} load", smoothing=0.05) as bar,
        ):
            for payload, chunk_total in _in_order(
                pool, spec, writer.payload_kind, 2 * args.workers
            ):
                for table, data in payload.items():
                    writer.write(table, data)
                writer.commit()
                totals.update(chunk_total)
                bar.update(int(chunk_total.get("rows.trace_info", 0)))
                rows = sum(v for k, v in totals.items() if k.startswith("rows."))
                bar.set_postfix(rows=f"{int(rows):,}")
        load_s = time.perf_counter() - load_started
        finish_started = time.perf_counter()
        writer.finish(lambda message: tqdm.write(f"  {message}"))
        finish_s = time.perf_counter() - finish_started
    finally:
        writer.close()
    manifest = {
        "db_url": sa.make_url(sync_url(url)).render_as_string(hide_password=True),
        "backend": backend,
        "spec": asdict(spec),
        "workers": args.workers,
        "totals": dict(totals),
        "seconds": {
            "schema": round(schema_s, 1),
            "load": round(load_s, 1),
            "indexes_and_analyze": round(finish_s, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "load_average_after": os.getloadavg(),
    }
    return manifest


def manifest_path(url: str, n_traces: int) -> Path:
    parsed = sa.make_url(sync_url(url))
    name = Path(parsed.database or "db").stem
    return DATA_DIR / f"{parsed.get_backend_name()}-{name}-{n_traces}.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__)
    parser.add_argument("--traces", type=int, default=1_000_000, help="traces (default 1M)")
    parser.add_argument("--days", type=int, default=30, help="window length in days")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--db-url",
        default=None,
        help="MLflow-style URL: postgresql://..., mysql://..., sqlite:///path "
        "(default: sqlite:///bench/data/bench-<traces>.db)",
    )
    parser.add_argument("--recreate", action="store_true", help="drop and create the DB first")
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing if the DB already holds --traces traces; else as --recreate",
    )
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--chunk-size", type=int, default=5000, help="traces per chunk")
    parser.add_argument(
        "--end-ms", type=int, default=DEFAULT_END_MS, help="window end, epoch ms (exclusive)"
    )
    parser.add_argument(
        "--artifact-root", type=Path, default=DATA_DIR / "artifacts", help="experiment artifacts"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip reading back via MLflow")
    args = parser.parse_args(argv)
    if args.db_url is None:
        args.db_url = f"sqlite:///{DATA_DIR / f'bench-{args.traces}.db'}"
    if args.traces < 1 or args.days < 1 or args.chunk_size < 1 or args.workers < 1:
        parser.error("--traces, --days, --chunk-size and --workers must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = parse_args(argv)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if args.if_missing:
        if existing_traces(args.db_url) == args.traces:
            print(f"{args.db_url} already holds {args.traces:,} traces: nothing to do")
            return
        args.recreate = True
    manifest = generate(args)
    if not args.no_verify:
        from bench.verify import verify

        manifest["verification"] = verify(args.db_url, manifest)
    path = manifest_path(args.db_url, args.traces)
    path.write_text(json.dumps(manifest, indent=2, default=str))
    seconds = manifest["seconds"]
    print(
        f"{args.traces:,} traces in {seconds['total']} s "
        f"(schema {seconds['schema']} s, load {seconds['load']} s, "
        f"indexes+analyze {seconds['indexes_and_analyze']} s); manifest: {path}"
    )
    if manifest.get("verification", {}).get("ok") is False:
        sys.exit("verification against MLflow failed (see the manifest)")


if __name__ == "__main__":
    main()
