"""Case-sensitive string comparison as MLflow's filter strings mean it: =, !=, IN, NOT IN, LIKE.

Each comparison is one predicate with a spelling per database (``_PerDatabase``), chosen when the
statement is compiled, so the filter package builds them without knowing which database runs them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, LargeBinary, String, and_, cast, literal, or_, type_coerce
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

__all__ = ["text_eq", "text_in", "text_like", "text_ne", "text_not_in"]


def _bytes(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """MySQL: CAST(x AS BINARY), compared byte by byte; typed as a string for the operators."""
    return type_coerce(cast(column, LargeBinary), String())


def text_eq(column: ColumnElement[Any], value: str) -> ColumnElement[bool]:
    return _PerDatabase(column == value, mysql=and_(column == value, _bytes(column) == value))


def text_ne(column: ColumnElement[Any], value: str) -> ColumnElement[bool]:
    return _PerDatabase(column != value, mysql=or_(column != value, _bytes(column) != value))


def text_in(column: ColumnElement[Any], values: tuple[str, ...]) -> ColumnElement[bool]:
    return _PerDatabase(column.in_(values), mysql=_bytes(column).in_(values))


def text_not_in(column: ColumnElement[Any], values: tuple[str, ...]) -> ColumnElement[bool]:
    return _PerDatabase(column.not_in(values), mysql=_bytes(column).not_in(values))


def text_like(column: ColumnElement[Any], pattern: str) -> ColumnElement[bool]:
    glob = column.op("GLOB", is_comparison=True)(literal(like_to_glob(pattern), String()))
    return _PerDatabase(
        column.like(pattern),
        mysql=and_(column.like(pattern), _bytes(column).like(pattern)),
        sqlite=glob,
    )


def like_to_glob(pattern: str) -> str:
    """The GLOB pattern matching what ``LIKE pattern`` (no ESCAPE) matches, case-sensitively."""
    special = {"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}
    return "".join(special.get(char, char) for char in pattern)


class _PerDatabase(ColumnElement[bool]):
    """One predicate, spelled differently where a database's plain SQL would mean something else.

    MLflow compares strings case-sensitively, which PostgreSQL does natively. MySQL/MariaDB's
    default collations ignore case (and trailing spaces), so MLflow adds a byte-wise comparison
    there. SQLite's LIKE ignores ASCII case unless a connection PRAGMA (which MLflow sets) says
    otherwise; its GLOB never does.
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


@compiles(_PerDatabase)
def _compile_portable(element: _PerDatabase, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.portable, **kw)})"


@compiles(_PerDatabase, "mysql")
@compiles(_PerDatabase, "mariadb")
def _compile_mysql(element: _PerDatabase, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.mysql, **kw)})"


@compiles(_PerDatabase, "sqlite")
def _compile_sqlite(element: _PerDatabase, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.sqlite, **kw)})"
