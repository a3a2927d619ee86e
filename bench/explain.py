"""Where does an endpoint's time go? Its SQL statements, their time, and their plans.

    python -m bench.explain --db-url postgresql://postgres@127.0.0.1:5432/insights_bench \\
        --case traffic-cost/volume --window 30d [--analyze] [--profile] [--store FILE]

Runs the service in-process (``httpx.ASGITransport``), records every SQL statement one request
of the case executes with its duration, and the time spent outside SQL (validation, Python
post-processing, JSON). With ``--analyze`` each statement is then run again under
``EXPLAIN (ANALYZE, BUFFERS)`` (PostgreSQL), ``ANALYZE FORMAT=JSON`` (MariaDB),
``EXPLAIN QUERY PLAN`` (SQLite) or ``EXPLAIN ANALYZE`` (DuckDB); ``--profile`` adds a cProfile of
the request's Python side. ``--store FILE`` answers from the analytics store in FILE (synced
first if it lags; no other process may hold it open) instead of live.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import pstats
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event

from bench.baseline import Window
from bench.cases import Case, build_cases, discover_endpoints
from bench.machine import database
from bench.run import make_windows


@dataclass
class Statement:
    sql: str
    parameters: Any
    seconds: float = 0.0
    plan: str = ""


@dataclass
class Recorder:
    statements: list[Statement] = field(default_factory=list)
    _started: float = 0.0

    def install(self, sync_engine: Any) -> None:
        @event.listens_for(sync_engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, sql: str, params: Any, *_: Any) -> None:
            self._started = time.perf_counter()
            self.statements.append(Statement(sql, params))

        @event.listens_for(sync_engine, "after_cursor_execute")
        def _after(*_: Any) -> None:
            self.statements[-1].seconds = time.perf_counter() - self._started


_EXPLAIN = {
    "postgresql": "EXPLAIN (ANALYZE, BUFFERS) ",
    "mysql": "ANALYZE FORMAT=JSON ",
    "sqlite": "EXPLAIN QUERY PLAN ",
    "duckdb": "EXPLAIN ANALYZE ",
}


async def _store_engine(app: Any) -> Any:
    """The analytics store's engine, once the store answers (its first cycle done)."""
    runner = app.state.store_runner
    for _ in range(36_000):
        if runner.store is not None and runner.store.ready:
            return runner.store.engine()
        await asyncio.sleep(0.1)
    raise TimeoutError("the analytics store did not become ready within an hour")


async def find_case(
    c: httpx.AsyncClient, experiment: str, window: Window, label: str
) -> tuple[Case, dict[str, Any]]:
    """The first case whose label contains ``label``, and its request body for ``window``, with
    the bodies filled from the discovery endpoints answered through ``c``."""
    endpoints = discover_endpoints((await c.get("/openapi.json")).json())
    loop = asyncio.get_running_loop()

    def post(path: str, body: dict[str, Any]) -> httpx.Response:
        # build_cases is synchronous: run it in a thread, its requests on this loop.
        return asyncio.run_coroutine_threadsafe(c.post(path, json=body), loop).result()

    cases = await asyncio.to_thread(
        build_cases, post, endpoints, [experiment], window.start_ms, window.end_ms
    )
    case = next(x for x in cases if label in x.label)
    return case, case.body([experiment], window.start_ms, window.end_ms, window.bucket)


async def explain(args: argparse.Namespace) -> None:
    from service.app import create_app
    from service.settings import Settings

    db = database(args.db_url)
    experiment = db["experiment_id"]
    [window] = make_windows(db["last_ms"], [args.window], [args.bucket] if args.bucket else None)
    store: dict[str, Any] = (
        {"store": "on", "store_path": str(args.store)} if args.store else {"store": "off"}
    )
    settings = Settings(database_url=args.db_url, statement_timeout_seconds=600, **store)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        engine = app.state.database.engine
        await engine.dispose()  # new connections get the --set settings
        if args.set:
            _apply_settings(engine.sync_engine, args.set)
        recorder = Recorder()
        if args.store:
            engine = await _store_engine(app)
            recorder.install(engine)
        else:
            recorder.install(engine.sync_engine)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=600
        ) as c:
            case, body = await find_case(c, experiment, window, args.case)
            await c.post(case.endpoint.path, json=body)  # warm-up
            recorder.statements.clear()
            profiler = cProfile.Profile() if args.profile else None
            started = time.perf_counter()
            with profiler or contextlib.nullcontext():
                response = await c.post(case.endpoint.path, json=body)
            total = time.perf_counter() - started
        print(
            f"{case.label} over {window.label}: HTTP {response.status_code}, {total * 1000:.0f} ms"
        )
        sql_total = sum(s.seconds for s in recorder.statements)
        print(f"  {len(recorder.statements)} statements, {sql_total * 1000:.0f} ms in SQL, "
              f"{(total - sql_total) * 1000:.0f} ms outside")  # fmt: skip
        statements = list(recorder.statements)
        if args.analyze:
            prefix = _EXPLAIN[engine.dialect.name]
            for s in statements:
                if s.sql.lstrip().upper().startswith(("SELECT", "WITH")):
                    s.plan = await _plan(engine, prefix + s.sql, s.parameters)
        for i, s in enumerate(statements, 1):
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                (args.dump / f"statement-{i}.sql").write_text(_inline(s.sql, s.parameters) + ";\n")
            print(f"\n--- statement {i}: {s.seconds * 1000:.1f} ms")
            print(s.sql if args.sql else s.sql[:300].replace("\n", " "))
            if args.sql:
                print("params:", json.dumps(s.parameters, default=str)[:500])
            if s.plan:
                print(s.plan)
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
            print(out.getvalue())


async def _plan(engine: Any, sql: str, parameters: Any) -> str:
    if not hasattr(engine, "sync_engine"):  # the store's (synchronous) DuckDB engine
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(sql, parameters).all()
        return "\n".join(str(r[-1]) for r in rows)
    async with engine.connect() as conn:
        raw = await conn.exec_driver_sql(sql, parameters)
        return "\n".join(str(r[0]) for r in raw.all())


def _apply_settings(sync_engine: Any, settings: list[str]) -> None:
    """``SET name = value`` on every new connection (to try settings through the service)."""

    @event.listens_for(sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for item in settings:
            name, _, value = item.partition("=")
            cursor.execute(f"SET {name} = '{value}'")
        cursor.close()
        dbapi_connection.commit()  # SET is transactional: a later ROLLBACK would undo it


def _inline(sql: str, parameters: Any) -> str:
    """The statement with its parameters written in, to paste into psql/mysql/sqlite3."""

    def literal(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, str):
            return "'" + value.replace("'", "''") + "'"
        return str(value)

    if isinstance(parameters, (list, tuple)) and "$1" in sql:  # asyncpg: $n placeholders
        return re.sub(r"\$(\d+)(::\w+)?", lambda m: literal(parameters[int(m.group(1)) - 1]), sql)
    values = iter(parameters or ())
    return re.sub(r"%s|\?", lambda _m: literal(next(values)), sql)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--case", required=True, help="a case label, or part of it")
    parser.add_argument("--window", default="30d", choices=["24h", "7d", "30d"])
    parser.add_argument(
        "--bucket",
        choices=["hour", "day", "week"],
        help="time bucket (default: hour up to 7 days, day for 30 days)",
    )
    parser.add_argument("--analyze", action="store_true", help="EXPLAIN ANALYZE each statement")
    parser.add_argument("--profile", action="store_true", help="cProfile the request")
    parser.add_argument("--sql", action="store_true", help="print full SQL and parameters")
    parser.add_argument(
        "--set", action="append", help="a session setting for the service, e.g. jit=off"
    )
    parser.add_argument("--dump", type=Path, help="write each statement, inlined, to this dir")
    parser.add_argument("--store", type=Path, help="answer from this analytics store file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(explain(parse_args(argv)))


if __name__ == "__main__":
    main()
