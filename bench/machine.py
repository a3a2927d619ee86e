"""Describe the machine and the database a benchmark ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.writers import sync_url


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine() -> dict[str, str]:
    import mlflow

    return {
        "CPU": f"{_cpu_model()}, {os.cpu_count()} cores",
        "RAM": f"{_mem_total_gb():.1f} GB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "MLflow": mlflow.__version__,
    }


_SETTINGS = {
    "postgresql": "SELECT name || '=' || setting || COALESCE(unit, '') FROM pg_settings WHERE "
    "name IN ('shared_buffers', 'work_mem', 'effective_cache_size', 'jit', "
    "'max_parallel_workers_per_gather', 'random_page_cost') ORDER BY name",
    "mysql": "SELECT CONCAT(variable_name, '=', variable_value) FROM information_schema."
    "global_variables WHERE variable_name IN ('innodb_buffer_pool_size', 'sort_buffer_size', "
    "'tmp_table_size', 'max_heap_table_size') ORDER BY variable_name",
}


def database(url: str) -> dict[str, Any]:
    """Server version and relevant settings, and what the tracking DB holds."""
    engine = sa.create_engine(sync_url(url))
    backend = engine.dialect.name
    info: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            if backend == "sqlite":
                version = conn.execute(sa.text("SELECT sqlite_version()")).scalar_one()
                info["server"] = f"SQLite {version}"
                path = Path(sa.make_url(sync_url(url)).database or "")
                info["size"] = f"{path.stat().st_size / 2**30:.2f} GB file"
            else:
                version = conn.execute(sa.text("SELECT version()")).scalar_one()
                name = "" if backend == "postgresql" else "MySQL/MariaDB "
                info["server"] = name + str(version).split(" on ")[0]
                settings = conn.execute(sa.text(_SETTINGS[backend])).scalars().all()
                info["settings"] = ", ".join(settings)
                size_sql = (
                    "SELECT pg_database_size(current_database())"
                    if backend == "postgresql"
                    else "SELECT SUM(data_length + index_length) FROM information_schema.tables "
                    "WHERE table_schema = DATABASE()"
                )
                info["size"] = f"{int(conn.execute(sa.text(size_sql)).scalar_one()) / 2**30:.2f} GB"
            counts = {}
            for table in ("trace_info", "spans", "trace_tags", "trace_request_metadata"):
                counts[table] = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
            counts["assessments"] = conn.execute(
                sa.text("SELECT COUNT(*) FROM assessments")
            ).scalar_one()
            info["rows"] = counts
            row = conn.execute(
                sa.text(
                    "SELECT experiment_id, MIN(timestamp_ms), MAX(timestamp_ms), COUNT(*) "
                    "FROM trace_info GROUP BY experiment_id ORDER BY COUNT(*) DESC"
                )
            ).first()
            if row is not None:
                info["experiment_id"] = str(row[0])
                info["first_ms"], info["last_ms"] = int(row[1]), int(row[2])
    finally:
        engine.dispose()
    return info
