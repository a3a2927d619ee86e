"""Service settings, read from ``INSIGHTS_*`` environment variables (or CLI flags).

The database URL takes the same forms as ``mlflow server --backend-store-uri``; which async
driver it maps to is the dialects package's business (``service.dialects.urls``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL

from service.dialects.urls import to_async_url


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

    # The analytics store (docs/store.md): a DuckDB copy that answers when it is fresh enough.
    store: Literal["on", "off"] = Field(
        default="on", description="`off`: every request is answered live from the tracking DB."
    )
    store_path: str = Field(
        default=".insights/store.duckdb",
        min_length=1,
        description="The store's DuckDB file (relative: to the working directory). Disposable: "
        "deleted, it is rebuilt; one built from another tracking DB is never used.",
    )
    store_max_lag_seconds: float = Field(
        default=30.0,
        ge=0,
        description="A store lagging the tracking DB by more than this answers nothing: live.",
    )
    store_memory_limit: str = Field(
        default="512MB",
        pattern=r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$",
        description="Memory DuckDB may use for the store (its buffer pool: cached columns, "
        "sorts, a sync's uncommitted rows), e.g. `512MB` or `2GiB`; beyond it DuckDB spills to "
        "a directory beside the file.",
    )
    store_threads: int = Field(
        default=0, ge=0, description="Threads DuckDB runs a store query on; 0: one per core."
    )
    store_sync_interval_seconds: float = Field(
        default=5.0, gt=0, description="Pause between two sync cycles of the store."
    )
    store_sync_max_backoff_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Longest pause between retries while sync cycles fail (doubling from the "
        "interval).",
    )

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        to_async_url(value)  # raises ValueError with a helpful message
        return value

    @property
    def async_database_url(self) -> URL:
        return to_async_url(self.database_url)


@lru_cache
def get_settings() -> Settings:
    return Settings()
