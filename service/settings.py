"""Service settings, read from ``INSIGHTS_*`` environment variables (or CLI flags).

The database URL takes the same forms as ``mlflow server --backend-store-uri`` and is mapped
explicitly to an async driver: we never rely on SQLAlchemy's default driver for a bare scheme
(SQLAlchemy 2.1 reads ``postgresql://`` as psycopg 3, which this service does not ship).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

# MLflow URL scheme (with or without a sync driver) -> async driver name.
_ASYNC_DRIVERS: dict[str, str] = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mysql+aiomysql",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSIGHTS_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///mlflow.db",
        description="MLflow tracking DB URL, as given to `mlflow server --backend-store-uri`.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=5001, ge=1, le=65535)
    pool_size: int = Field(default=5, ge=1, le=100)
    max_overflow: int = Field(default=5, ge=0, le=100)
    pool_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a request waits for a free database connection before a 503.",
    )
    statement_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Queries running longer are cancelled at the database."
    )
    max_buckets: int = Field(
        default=10_000, ge=10, description="Largest number of time buckets one series may hold."
    )
    log_level: str = "info"
    # Access control (docs/security-operations.md): off while no tracking server URL is set.
    auth_tracking_uri: str | None = Field(
        default=None,
        pattern=r"^(https?://\S+)?$",
        description="Base URL of the MLflow tracking server (basic-auth app) that decides who may "
        "read which experiment, e.g. http://mlflow-server:5000. Unset or empty: no checks.",
    )
    auth_cache_ttl_seconds: float = Field(
        default=30.0, ge=0, description="How long a permission answer is reused; 0: ask every time."
    )
    auth_cache_max_entries: int = Field(
        default=10_000, ge=1, description="Most (credentials, experiment) answers kept at once."
    )
    auth_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one permission check against the server."
    )
    # Rate limiting: off at 0.
    rate_limit_per_minute: int = Field(
        default=0, ge=0, description="Insights requests per minute per caller; 0: unlimited."
    )
    rate_limit_max_callers: int = Field(
        default=100_000, ge=1, description="Most callers tracked at once (idle ones are dropped)."
    )

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        to_async_url(value)  # raises ValueError with a helpful message
        return value

    @property
    def async_database_url(self) -> URL:
        return to_async_url(self.database_url)


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


@lru_cache
def get_settings() -> Settings:
    return Settings()
