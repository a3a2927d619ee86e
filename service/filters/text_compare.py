"""Case-sensitive string comparison, as MLflow does it on each database.

``PerDatabase`` is one predicate with a spelling per database, chosen when the statement is
compiled. Moved unchanged out of the filter module; it belongs with the dialect expressions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

__all__ = ["PerDatabase"]


class PerDatabase(ColumnElement[bool]):
    """One predicate, spelled differently where a database's plain SQL would mean something else.

    MLflow compares strings case-sensitively, which PostgreSQL does natively. MySQL/MariaDB's
    default collations ignore case (and trailing spaces), so MLflow adds a byte-wise comparison
    there. SQLite's LIKE ignores ASCII case unless a connection PRAGMA (which MLflow sets) says
    otherwise; its GLOB never does. This is the only dialect knowledge of the filters.
    """

    inherit_cache = True
    _is_implicitly_boolean = True  # a comparison already; never render it as `x = 1`
    _traverse_internals = [
        ("portable", InternalTraversal.dp_clauseelement),
        ("mysql", InternalTraversal.dp_clauseelement),
        ("sqlite", InternalTraversal.dp_clauseelement),
    ]

    def __init__(
        self,
        portable: ColumnElement[bool],
        *,
        mysql: ColumnElement[bool] | None = None,
        sqlite: ColumnElement[bool] | None = None,
    ) -> None:
        self.portable = portable
        self.mysql = portable if mysql is None else mysql
        self.sqlite = portable if sqlite is None else sqlite
        self.type = Boolean()

    @property
    def _from_objects(self) -> list[Any]:
        return list(self.portable._from_objects)


@compiles(PerDatabase)
def _compile_portable(element: PerDatabase, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.portable, **kw)})"


@compiles(PerDatabase, "mysql")
@compiles(PerDatabase, "mariadb")
def _compile_mysql(element: PerDatabase, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.mysql, **kw)})"


@compiles(PerDatabase, "sqlite")
def _compile_sqlite(element: PerDatabase, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.sqlite, **kw)})"
