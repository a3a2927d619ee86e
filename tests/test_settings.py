"""MLflow-style database URLs map to the service's async drivers; bad ones are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.dialects import to_async_url
from service.settings import Settings


@pytest.mark.parametrize(
    ("mlflow_url", "driver", "database"),
    [
        ("sqlite:///mlflow.db", "sqlite+aiosqlite", "file:mlflow.db"),
        ("sqlite:////data/mlflow.db", "sqlite+aiosqlite", "file:/data/mlflow.db"),
        ("postgresql://u:p@db:5432/mlflow", "postgresql+asyncpg", "mlflow"),
        ("postgresql+psycopg2://u@db/mlflow", "postgresql+asyncpg", "mlflow"),
        ("mysql://root@db:3306/mlflow", "mysql+aiomysql", "mlflow"),
        ("mysql+pymysql://root@db/mlflow", "mysql+aiomysql", "mlflow"),
    ],
)
def test_mlflow_urls_map_to_async_drivers(mlflow_url: str, driver: str, database: str) -> None:
    url = to_async_url(mlflow_url)
    assert url.drivername == driver
    assert url.database == database


def test_sqlite_is_opened_read_only() -> None:
    url = to_async_url("sqlite:///mlflow.db")
    assert dict(url.query) == {"mode": "ro", "uri": "true"}


@pytest.mark.parametrize("bad", ["mssql://x/y", "nonsense", "sqlite://", "sqlite:///:memory:"])
def test_unsupported_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        to_async_url(bad)


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSIGHTS_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("INSIGHTS_STATEMENT_TIMEOUT_SECONDS", "2.5")
    settings = Settings()
    assert settings.async_database_url.drivername == "postgresql+asyncpg"
    assert settings.statement_timeout_seconds == 2.5


def test_settings_refuse_an_unsupported_url_with_the_supported_forms() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(database_url="mssql://u@h/db")
    message = str(refused.value)
    assert "Unsupported database URL scheme 'mssql'" in message
    assert "sqlite:///path, postgresql://..., mysql://..., mysql+pymysql://..." in message
