"""``insights-server``: run the service. Flags mirror ``mlflow server`` where they overlap."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn
from pydantic import ValidationError

from service.db import UnsupportedSchemaError
from service.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="insights-server",
        description="Serve MLflow Trace Insights over an MLflow tracking database (read-only).",
    )
    parser.add_argument(
        "--backend-store-uri",
        help="Tracking DB URL, as for `mlflow server` (sqlite:///mlflow.db, postgresql://..., "
        "mysql+pymysql://...). Default: $INSIGHTS_DATABASE_URL or sqlite:///mlflow.db",
    )
    parser.add_argument("--host", help="Bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="Port (default 5001)")
    parser.add_argument(
        "--statement-timeout", type=float, help="Seconds before a query is cancelled"
    )
    parser.add_argument("--pool-size", type=int, help="Database connection pool size")
    parser.add_argument(
        "--store",
        choices=("on", "off"),
        help="Answer from the analytics store when it is fresh enough (default on); "
        "off: every request is answered live",
    )
    parser.add_argument(
        "--store-path",
        help="The analytics store's DuckDB file (default .insights/store.duckdb in the "
        "working directory)",
    )
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags override the environment; unset flags leave it alone."""
    overrides = {
        "database_url": args.backend_store_uri,
        "host": args.host,
        "port": args.port,
        "statement_timeout_seconds": args.statement_timeout,
        "pool_size": args.pool_size,
        "store": args.store,
        "store_path": args.store_path,
    }
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> None:
    try:
        settings = settings_from_args(parse_args(argv))
    except ValidationError as exc:
        sys.exit(f"insights-server: invalid configuration:\n{exc}")
    from service.app import create_app  # imported late so --help stays fast
    from service.http.request_log import configure_logging
    from service.malloc_arenas import limit_malloc_arenas

    limit_malloc_arenas()  # before the store's and the server's threads start

    configure_logging(settings.log_level)

    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,  # service.access writes one structured line per request instead
            proxy_headers=True,
            forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        )
    except UnsupportedSchemaError as exc:
        sys.exit(f"insights-server: {exc}")


if __name__ == "__main__":
    main()
