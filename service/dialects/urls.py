"""MLflow backend-store URLs mapped to the async drivers this service ships.

The URL takes the same forms as ``mlflow server --backend-store-uri`` and is mapped explicitly:
we never rely on SQLAlchemy's default driver for a bare scheme (SQLAlchemy 2.1 reads
``postgresql://`` as psycopg 3, which this service does not ship).
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

# MLflow URL scheme (with or without a sync driver) -> async driver name.
_ASYNC_DRIVERS: dict[str, str] = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}


def to_async_url(url: str) -> URL:
    """Map an MLflow backend-store URI to the async driver this service uses."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise ValueError(f"Cannot parse database URL {url!r}: {exc}") from exc
    backend = parsed.get_backend_name()
    driver = _ASYNC_DRIVERS.get(backend)
    if driver is None:
        supported = "sqlite:///path, postgresql://..., mysql://..., mysql+pymysql://..."
        raise ValueError(f"Unsupported database URL scheme {parsed.drivername!r}; use {supported}")
    if backend == "sqlite":
        return _read_only_sqlite_url(parsed).set(drivername=driver)
    return parsed.set(drivername=driver)


def _read_only_sqlite_url(parsed: URL) -> URL:
    # SQLite has no read-only sessions: open the file itself read-only (URI mode=ro).
    path = parsed.database or ""
    if not path or path == ":memory:":
        raise ValueError("An in-memory SQLite database has no traces; point to a file")
    return parsed.set(database=f"file:{path}", query={"mode": "ro", "uri": "true"})
