"""One-shot job: create the read-only PostgreSQL role that Trace Insights logs in with.

It waits until MLflow has created its schema (``mlflow server`` migrates the tracking DB before it
listens; ``alembic_version`` then holds a revision), renders the role script of
``migrations_readonly`` (the SQL that ``python -m migrations_readonly postgres`` prints) and runs it
as the owner of MLflow's tables, so tables added by later MLflow migrations are readable too.
Running it again is harmless: the role is created once, the grants are re-applied.

docker-compose.yml runs it in the MLflow image (Python, SQLAlchemy and psycopg2 are there) with
``migrations_readonly/`` mounted beside it; tests/test_e2e_deploy.py runs the same file.

Environment:
  MLFLOW_DATABASE_URL       the URL ``mlflow server --backend-store-uri`` uses (the tables' owner)
  INSIGHTS_READER_ROLE      the role to create (default ``insights_reader``)
  INSIGHTS_READER_PASSWORD  its password (required)
  WAIT_SECONDS              how long to wait for MLflow's schema (default 300)
"""

from __future__ import annotations

import os
import sys
import time

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from migrations_readonly import render_readonly_role_sql


def schema_revision(engine: sa.Engine) -> str | None:
    """MLflow's schema revision, or None while the database or the schema is not there yet."""
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def main() -> int:
    url = sa.make_url(os.environ["MLFLOW_DATABASE_URL"])
    if url.get_backend_name() != "postgresql":
        print(f"create_readonly_role: PostgreSQL only, got {url.drivername!r}", file=sys.stderr)
        return 2
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg2")  # SQLAlchemy 2.1 would pick psycopg 3
    role = os.environ.get("INSIGHTS_READER_ROLE", "insights_reader")
    password = os.environ.get("INSIGHTS_READER_PASSWORD", "")
    if not password:
        print("create_readonly_role: set INSIGHTS_READER_PASSWORD", file=sys.stderr)
        return 2
    deadline = time.monotonic() + float(os.environ.get("WAIT_SECONDS", "300"))

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        while (revision := schema_revision(engine)) is None:
            if time.monotonic() > deadline:
                print(
                    f"create_readonly_role: no MLflow schema in {url.database!r} yet; "
                    "is `mlflow server` running against it?",
                    file=sys.stderr,
                )
                return 1
            time.sleep(2)
        script = render_readonly_role_sql(
            "postgres", role=role, password=password, database=str(url.database)
        )
        with engine.connect() as conn:
            # no_parameters: the driver must not read a '%' in the password as a placeholder.
            conn.execution_options(no_parameters=True).exec_driver_sql(script)
    finally:
        engine.dispose()
    print(
        f"create_readonly_role: role {role!r} reads database {url.database!r} "
        f"(MLflow schema revision {revision})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
