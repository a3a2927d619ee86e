"""The test databases themselves: the URL the service takes for one, and a fingerprint of
everything stored (to show that nothing was written, not just that no row was added or
removed)."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa


def mlflow_style_url(sync_uri: str) -> str:
    """The URL the service is started with for a test's sync SQLAlchemy URI (it picks the
    async driver itself)."""
    return sync_uri.replace("+psycopg2", "").replace("+pymysql", "")


def table_checksums(conn: sa.Connection) -> dict[str, str]:
    """SHA-256 of every table's rows (every column), per table, in a database-independent
    order: rows are compared as text, so an UPDATE that keeps the row count shows too."""
    conn.rollback()  # a fresh snapshot: end whatever transaction the connection is in
    checksums = {}
    for table in sorted(sa.inspect(conn).get_table_names()):
        rows = conn.execute(
            sa.text(f"SELECT * FROM {conn.dialect.identifier_preparer.quote(table)}")
        )
        digest = hashlib.sha256()
        for line in sorted(repr(tuple(row)) for row in rows):
            digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
        checksums[table] = digest.hexdigest()
    conn.rollback()
    return checksums
