"""The experiment listing (``experiments``) against MLflow's experiment and trace rows."""

from __future__ import annotations

import sqlalchemy as sa
from mlflow.store.tracking.dbmodels.models import SqlExperiment

from tests.conftest import Backend, InsightsClient
from tests.oracle import load_raw


async def test_experiments_list_active_ones_with_trace_counts(
    client: InsightsClient, backend: Backend, raw: sa.Connection
) -> None:
    table = SqlExperiment.__table__
    active = raw.execute(
        sa.select(table.c.experiment_id, table.c.name).where(table.c.lifecycle_stage == "active")
    ).all()
    traces = load_raw(raw).traces
    expected = []
    for experiment_id, name in active:
        mine = [t.timestamp_ms for t in traces if t.experiment_id == int(experiment_id)]
        expected.append(
            {
                "experiment_id": str(experiment_id),
                "name": name,
                "trace_count": len(mine),
                "last_trace_ms": max(mine, default=None),
            }
        )
    expected.sort(key=lambda e: (-e["trace_count"], int(e["experiment_id"])))
    result = await client.ok("experiments", {})
    assert result == {"data": expected}
    names = {e["name"] for e in result["data"]}
    assert {"support-agent", "sql-copilot", "empty-experiment"} <= names
    assert (await client.ok("experiments", {"max_results": 2}))["data"] == expected[:2]


async def test_experiments_request_errors(client: InsightsClient) -> None:
    for body, word in [
        ({"max_results": 0}, "max_results"),
        ({"max_results": "5"}, "max_results"),
        ({"experiment_ids": ["1"]}, "experiment_ids"),
    ]:
        message = await client.error("experiments", body, 400, "INVALID_PARAMETER_VALUE")
        assert word in message, (body, message)
