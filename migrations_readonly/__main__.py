"""Print the read-only role SQL for a database: ``python -m migrations_readonly postgres|mysql``."""

from __future__ import annotations

import argparse

from migrations_readonly import render_readonly_role_sql

parser = argparse.ArgumentParser(prog="python -m migrations_readonly", description=__doc__)
parser.add_argument("dialect", choices=["postgres", "mysql"])
parser.add_argument("--role", default="insights_reader")
parser.add_argument("--password", required=True)
parser.add_argument("--database", default="mlflow")
args = parser.parse_args()
print(
    render_readonly_role_sql(
        args.dialect, role=args.role, password=args.password, database=args.database
    )
)
