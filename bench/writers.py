"""Bulk writers: COPY on PostgreSQL, multi-row INSERTs (executemany) on SQLite and MariaDB.

The schema always comes from MLflow's own migrations (``SqlAlchemyStore``); writers only add
rows. The PostgreSQL writer drops the loaded tables' indexes and constraints before the load and
re-creates them afterwards from the DDL PostgreSQL itself printed for them (``pg_get_indexdef``,
``pg_get_constraintdef``), so the schema ends up exactly as MLflow made it: building a B-tree
once over sorted keys is far faster than inserting millions of random trace ids one by one.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from bench.dataset import COLUMNS, TABLES, Row

# ---------------------------------------------------------------- URLs


def sync_url(url: str) -> str:
    """An MLflow-style URL with an explicit sync driver (SQLAlchemy 2.1 reads a bare
    ``postgresql://`` as psycopg 3, which is not installed here)."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg2{sep}{rest}"
    if scheme in ("mysql", "mariadb"):
        return f"mysql+pymysql{sep}{rest}"
    return url


def backend_of(url: str) -> str:
    return sa.make_url(sync_url(url)).get_backend_name()


# ---------------------------------------------------------------- serialisation


def _pg_text(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


_PG_CONVERT: dict[type, Callable[[Any], str]] = {
    str: _pg_text,
    int: str,
    float: repr,  # shortest repr that round-trips; PostgreSQL's float8 reads it exactly
    bool: lambda v: "t" if v else "f",
    type(None): lambda _: "\\N",
}


def copy_payload(rows: Sequence[Row]) -> bytes:
    """Rows in COPY text format."""
    convert = _PG_CONVERT
    lines = ["\t".join([convert[type(v)](v) for v in row]) for row in rows]
    lines.append("")
    return "\n".join(lines).encode("utf-8")


# ---------------------------------------------------------------- writers


class Writer(Protocol):
    #: "copy": ``write`` takes COPY text (bytes); "rows": lists of tuples.
    payload_kind: str

    def prepare(self) -> None: ...

    def write(self, table: str, payload: Any) -> None: ...

    def commit(self) -> None: ...

    def finish(self, progress: Callable[[str], None]) -> None: ...

    def close(self) -> None: ...


class PostgresCopyWriter:
    payload_kind = "copy"

    def __init__(self, url: str) -> None:
        import psycopg2

        parsed = sa.make_url(sync_url(url))
        self.conn = psycopg2.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.database,
        )
        self.saved: list[tuple[str, str]] = []  # (kind, DDL) to re-create, in order
        self.before: set[tuple[Any, ...]] = set()

    def _all(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def _run(self, *statements: str) -> None:
        with self.conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def _schema_snapshot(self) -> set[tuple[Any, ...]]:
        """Every index and constraint definition on the loaded tables."""
        tables = list(TABLES)
        indexes = self._all(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = ANY(%s)",
            (tables,),
        )
        constraints = self._all(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE conrelid::regclass::text = ANY(%s) "
            "OR confrelid::regclass::text = ANY(%s)",
            (tables, tables),
        )
        return set(indexes) | set(constraints)

    def prepare(self) -> None:
        self.before = self._schema_snapshot()
        tables = list(TABLES)
        # Constraints on the loaded tables, and foreign keys elsewhere that point at them.
        constraints = self._all(
            """
            SELECT c.conrelid::regclass::text, c.conname, c.contype,
                   pg_get_constraintdef(c.oid)
            FROM pg_constraint c
            WHERE c.contype IN ('p', 'u', 'f')
              AND (c.conrelid::regclass::text = ANY(%s) OR c.confrelid::regclass::text = ANY(%s))
            """,
            (tables, tables),
        )
        indexes = self._all(
            """
            SELECT i.tablename, i.indexname, i.indexdef
            FROM pg_indexes i
            WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s)
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname
                              AND c.conrelid::regclass::text = i.tablename)
            """,
            (tables,),
        )
        fks = [c for c in constraints if c[2] == "f"]
        keys = [c for c in constraints if c[2] != "f"]
        for table, name, _, _ in fks + keys:
            self._run(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
        for _, name, _ in indexes:
            self._run(f'DROP INDEX "{name}"')
        self.conn.commit()
        self.saved = (
            [("key", f'ALTER TABLE "{t}" ADD CONSTRAINT "{n}" {d}') for t, n, _, d in keys]
            + [("index", d) for _, _, d in indexes]
            + [("foreign key", f'ALTER TABLE "{t}" ADD CONSTRAINT "{n}" {d}') for t, n, _, d in fks]
        )

    def write(self, table: str, payload: bytes) -> None:
        columns = ", ".join(COLUMNS[table])
        with self.conn.cursor() as cur:
            cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", io.BytesIO(payload))

    def commit(self) -> None:
        self.conn.commit()

    def finish(self, progress: Callable[[str], None]) -> None:
        # Session settings only: a big sort memory for the index builds.
        self._run("SET maintenance_work_mem = '1GB'")
        for kind, ddl in self.saved:
            progress(f"re-creating {kind}: {ddl[:90]}")
            self._run(ddl)
            self.conn.commit()
        if self._schema_snapshot() != self.before:
            raise RuntimeError("re-created indexes/constraints differ from MLflow's schema")
        self.conn.commit()
        self.conn.autocommit = True
        for table in TABLES:
            progress(f"VACUUM ANALYZE {table}")
            self._run(f"VACUUM (ANALYZE) {table}")
        self.conn.autocommit = False

    def close(self) -> None:
        self.conn.close()


class InsertWriter:
    """SQLite and MariaDB: ``executemany`` of multi-row INSERTs, one transaction per chunk."""

    payload_kind = "rows"

    def __init__(self, url: str) -> None:
        parsed = sa.make_url(sync_url(url))
        self.backend = parsed.get_backend_name()
        self.conn: Any
        if self.backend == "sqlite":
            self.conn = sqlite3.connect(parsed.database or "")
            self.placeholder = "?"
        else:
            import pymysql

            self.conn = pymysql.connect(
                host=parsed.host or "127.0.0.1",
                port=parsed.port or 3306,
                user=parsed.username,
                password=parsed.password or "",
                database=parsed.database,
                charset="utf8mb4",
                autocommit=False,
            )
            self.placeholder = "%s"

    def prepare(self) -> None:
        cur = self.conn.cursor()
        if self.backend == "sqlite":
            # Durability is not needed while loading a benchmark database.
            for pragma in ("synchronous = OFF", "cache_size = -1000000", "temp_store = MEMORY"):
                cur.execute(f"PRAGMA {pragma}")
        else:
            cur.execute("SET SESSION foreign_key_checks = 0, unique_checks = 0")
        cur.close()

    def write(self, table: str, payload: Sequence[Row]) -> None:
        columns = COLUMNS[table]
        quote = '"' if self.backend == "sqlite" else "`"  # `key` is a reserved word in MySQL
        names = ", ".join(f"{quote}{c}{quote}" for c in columns)
        marks = ", ".join([self.placeholder] * len(columns))
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks})"
        cur = self.conn.cursor()
        cur.executemany(sql, payload)
        cur.close()

    def commit(self) -> None:
        self.conn.commit()

    def finish(self, progress: Callable[[str], None]) -> None:
        cur = self.conn.cursor()
        if self.backend == "sqlite":
            progress("ANALYZE")
            cur.execute("ANALYZE")
        else:
            for table in TABLES:
                progress(f"ANALYZE TABLE {table}")
                cur.execute(f"ANALYZE TABLE {table}")
                cur.fetchall()
        cur.close()
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


def open_writer(url: str) -> Writer:
    return PostgresCopyWriter(url) if backend_of(url) == "postgresql" else InsertWriter(url)


def encode_chunk(rows: Mapping[str, Sequence[Row]], payload_kind: str) -> dict[str, Any]:
    """What a worker sends back for one chunk: COPY text, or the rows themselves."""
    if payload_kind == "copy":
        return {table: copy_payload(rows[table]) for table in TABLES}
    return {table: list(rows[table]) for table in TABLES}
