"""Grow an analytics store file to N times its traces, straight in DuckDB (no tracking DB).

    python -m bench.grow --from-store bench/data/store-postgresql-insights_bench.duckdb \
        --factor 10 --out bench/data/store-postgresql-insights_bench-x10.duckdb

Copies a synced store file (``service/store/layout.py``) and adds ``factor - 1`` copies of every
trace with its spans, tags, metadata, feedback and run links: copy ``k`` gets new ids (``k`` is
written into each id) and its timestamps moved ``k`` milliseconds later. The copy keeps the
dataset's shape (daily and weekly rhythm, trace names, tools, models, tag values, feedback) at
``factor`` times the density: 10M traces over the same 30 days from the 1M bench dataset.

The file keeps the store's meta and fingerprints of the source it was synced from, so a service
pointed at that tracking DB with ``INSIGHTS_STORE_PATH`` set to it answers from the grown copy
(the sync copies a partition again only when the tracking DB's side of it changes). This
measures the store's queries at a size the bench cannot write to a tracking DB in its time
budget; it is not a copy of any tracking DB. A manifest (``<out>.json``) records the counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import duckdb

from service.dialects.expressions import (
    REPEATED_FEEDBACK,
    TRACE_NUMBER_COPY,
    TRACE_SPAN_SETS,
    TRACE_TIMESTAMP_COPY,
)
from service.store import hourly
from service.store.layout import (
    ASSESSMENTS,
    ENTITY_ASSOCIATIONS,
    SPANS,
    TRACE_INFO,
    TRACE_METADATA,
    TRACE_NUMBERS,
    TRACE_TAGS,
    CopiedTable,
)
from service.store.rollups import ROLLUPS

# For each table: the columns rewritten in copy ``k`` (SQL over the original row, ``{k}`` the
# copy's number); every other column is copied as is. Ids keep MLflow's prefix and length; the
# 'x' (not a hex digit) keeps them apart from every original id.
_NEW_TRACE_ID = "'tr-x' || lpad('{k}', 2, '0') || substr({col}, 7)"
_NEW_TRACE_NUMBER = f"{TRACE_NUMBER_COPY} + {{k}} * {{n}}"
_REWRITES: dict[str, dict[str, str]] = {
    TRACE_INFO.name: {
        "request_id": _NEW_TRACE_ID.replace("{col}", "request_id"),
        "timestamp_ms": "timestamp_ms + {k}",
    },
    TRACE_TAGS.name: {"request_id": _NEW_TRACE_ID.replace("{col}", "request_id")},
    TRACE_METADATA.name: {"request_id": _NEW_TRACE_ID.replace("{col}", "request_id")},
    SPANS.name: {
        "trace_id": _NEW_TRACE_ID.replace("{col}", "trace_id"),
        "start_time_unix_nano": "start_time_unix_nano + {k} * 1000000",
    },
    ASSESSMENTS.name: {
        "assessment_id": "assessment_id || '-{k}'",
        "trace_id": _NEW_TRACE_ID.replace("{col}", "trace_id"),
        "trace_timestamp_ms": "trace_timestamp_ms + {k}",
    },
    ENTITY_ASSOCIATIONS.name: {"source_id": _NEW_TRACE_ID.replace("{col}", "source_id")},
}
_TABLES: tuple[CopiedTable, ...] = (
    TRACE_INFO,
    TRACE_TAGS,
    TRACE_METADATA,
    SPANS,
    ASSESSMENTS,
    ENTITY_ASSOCIATIONS,
)


def _grown_columns(table: CopiedTable) -> list[str]:
    # The store's own numbers too: the trace's is rewritten, a tag's pair kept (same pairs).
    return [*table.store_columns, *table.numbers]


def _copy_select(table: CopiedTable, k: int, numbers: int) -> str:
    """Copy ``k`` of the original rows; ``numbers``: the originals' largest trace number, so
    copy ``k``'s traces are numbered ``k * numbers`` above their originals."""
    # The child tables' copy of their trace's timestamp moves with the trace's.
    rewrites = {
        **_REWRITES[table.name],
        TRACE_TIMESTAMP_COPY: f"{TRACE_TIMESTAMP_COPY} + {{k}}",
        TRACE_NUMBER_COPY: _NEW_TRACE_NUMBER.replace("{n}", str(numbers)),
    }
    columns = [
        rewrites[c].replace("{k}", str(k)) if c in rewrites else f'"{c}"'
        for c in _grown_columns(table)
    ]
    # The originals only: copies already inserted carry the 'tr-x' prefix.
    key = table.trace_key
    return f"SELECT {', '.join(columns)} FROM {table.name} WHERE \"{key}\" NOT LIKE 'tr-x%'"


def _copy_trace_rows(
    db: duckdb.DuckDBPyConnection,
    table: str,
    factor: int,
    numbers: int,
    kept: list[str],
    shifted: dict[str, str] | None = None,
) -> None:
    """Copies 1 to ``factor - 1`` of a table of the store's own keyed by ``trace_id`` and
    ``TRACE_NUMBER_COPY`` (the numbers, the span sets, the repeated feedback pairs): the ids and
    numbers of copy ``k`` as in ``_copy_select``, ``shifted`` columns rewritten (``{k}``), the
    ``kept`` columns as they are."""
    for k in range(1, factor):
        moved = {
            "trace_id": _NEW_TRACE_ID.replace("{col}", "trace_id"),
            TRACE_NUMBER_COPY: _NEW_TRACE_NUMBER.replace("{n}", str(numbers)),
            **(shifted or {}),
        }
        values = [expression.replace("{k}", str(k)) for expression in moved.values()]
        db.execute(
            f"INSERT INTO {table} ({', '.join([*moved, *kept])}) "
            f"SELECT {', '.join([*values, *kept])} FROM {table} WHERE trace_id NOT LIKE 'tr-x%'"
        )


def _columns(db: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in db.execute(f"DESCRIBE {table}").fetchall()]


def grow(
    source: Path, out: Path, factor: int, *, memory_limit: str, threads: int
) -> dict[str, object]:
    if factor < 2 or factor > 99:
        raise ValueError("--factor is 2 to 99 (1 with --rebind-db-url: only re-stamp --out)")
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (out, out.with_name(out.name + ".wal")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(source, out)
    db = duckdb.connect(str(out))
    db.execute(f"SET memory_limit = '{memory_limit}'")
    db.execute("SET preserve_insertion_order = false")
    db.execute(f"SET threads = {int(threads)}")
    seconds: dict[str, float] = {}
    try:
        originals = {
            t.name: db.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0]  # type: ignore[index]
            for t in _TABLES
        }
        numbers = db.execute(f"SELECT max({TRACE_NUMBER_COPY}) FROM {TRACE_NUMBERS.name}")
        most = int(numbers.fetchone()[0] or 0)  # type: ignore[index]
        _copy_trace_rows(db, TRACE_NUMBERS.name, factor, most, [])
        for table in _TABLES:
            clock = time.perf_counter()
            names = ", ".join(f'"{c}"' for c in _grown_columns(table))
            for k in range(1, factor):  # one copy per statement: bounded memory
                db.execute(f"INSERT INTO {table.name} ({names}) {_copy_select(table, k, most)}")
            seconds[table.name] = time.perf_counter() - clock
            print(f"{table.name}: {originals[table.name]:,} x {factor} in "
                  f"{seconds[table.name]:.0f} s", flush=True)  # fmt: skip
        # Each trace's span sets (the sync's summary of its spans) copied with the trace.
        shifted = {TRACE_TIMESTAMP_COPY: f"{TRACE_TIMESTAMP_COPY} + {{k}}"}
        moved = ("trace_id", TRACE_NUMBER_COPY, *shifted)
        kept = [c for c in _columns(db, TRACE_SPAN_SETS) if c not in moved]
        _copy_trace_rows(db, TRACE_SPAN_SETS, factor, most, kept, shifted)
        # And its repeated feedback pairs (the sync's other summary of a trace's rows).
        _copy_trace_rows(db, REPEATED_FEEDBACK, factor, most, ["name"])
        # The rollups recomputed from every row: a copy's traces are k ms later, and a few of
        # them fall in the next hour.
        clock = time.perf_counter()
        for rollup in ROLLUPS:
            hourly.refresh(db, rollup, None)
        seconds["rollups"] = time.perf_counter() - clock
        db.execute("CHECKPOINT")
        counts = {
            t.name: db.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0]  # type: ignore[index]
            for t in _TABLES
        }
    finally:
        db.close()
    manifest: dict[str, object] = {
        "from_store": str(source),
        "factor": factor,
        "rows": counts,
        "rows_before": originals,
        "seconds": {"total": time.perf_counter() - started, **seconds},
        "size_mb": out.stat().st_size / 1e6,
    }
    out.with_name(out.name + ".json").write_text(json.dumps(manifest, indent=1))
    return manifest


def rebind(out: Path, db_url: str) -> str:
    """Stamp the file with the identity this checkout computes for ``db_url`` (the file was
    synced from it, possibly by a service whose identity rules differed)."""
    import asyncio

    from service.db import Database
    from service.settings import Settings
    from service.store.source_identity import source_identity

    async def identity() -> str:
        database = Database(Settings(database_url=db_url))
        try:
            async with database.session() as session:
                return await source_identity(session, database.engine.url)
        finally:
            await database.dispose()

    value = asyncio.run(identity())
    db = duckdb.connect(str(out))
    try:
        db.execute("DELETE FROM insights_store_meta WHERE key = 'source_identity'")
        db.execute("INSERT INTO insights_store_meta VALUES ('source_identity', ?)", [value])
    finally:
        db.close()
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grow", description=__doc__)
    parser.add_argument("--from-store", type=Path, required=True, help="a synced store file")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--memory-limit", default="2GB", help="DuckDB's memory_limit")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB's threads")
    parser.add_argument("--rebind-db-url", help="stamp --out with this tracking DB's identity")
    args = parser.parse_args(argv)
    if args.rebind_db_url and args.factor == 1:  # only re-stamp an existing file
        print(rebind(args.out, args.rebind_db_url))
        return
    manifest = grow(
        args.from_store, args.out, args.factor, memory_limit=args.memory_limit, threads=args.threads
    )
    if args.rebind_db_url:
        manifest["rebound_to"] = rebind(args.out, args.rebind_db_url)
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
