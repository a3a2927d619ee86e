"""Correlations fold each trace's span types and tools into bits (``_masks``, ``bit_or_agg``)
and read them back (``_set_bits``). With more values than one BIGINT holds, the bits spread over
several mask columns: run here with 150 values on SQLite (where ``bit_or_agg`` is a sum of
distinct bits) and on DuckDB (the analytics store's ``bit_or``), against the sets of values
computed in Python from the rows written.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import service.dialects.duckdb_expressions  # noqa: F401  (DuckDB's spellings)
from service.dialects import bit_or_agg
from service.queries.correlations import MASK_BITS, _masks, _set_bits

VALUES = [f"tool_{i:03d}" for i in range(150)]  # three mask columns
ROWS = sa.table("rows", sa.column("trace_id", sa.String), sa.column("v", sa.String))


def _rows() -> list[tuple[str, str | None]]:
    rng = random.Random(7)
    rows: list[tuple[str, str | None]] = []
    for t in range(40):
        # Each trace calls a few values, some twice; some rows have no value (no bit).
        for v in rng.sample(VALUES, rng.randint(1, 12)):
            rows += [(f"tr-{t}", v)] * rng.randint(1, 2)
        rows.append((f"tr-{t}", None))
    rows += [("tr-first-last", VALUES[0]), ("tr-first-last", VALUES[-1])]
    rows += [(f"tr-edge-{b}", VALUES[b]) for b in (MASK_BITS - 1, MASK_BITS, 2 * MASK_BITS)]
    return rows


@pytest.fixture(params=["sqlite", "duckdb"])
def engine(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    url = "sqlite://" if request.param == "sqlite" else "duckdb:///:memory:"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE rows (trace_id VARCHAR, v VARCHAR)"))
        conn.execute(
            sa.text("INSERT INTO rows VALUES (:t, :v)"),
            [{"t": t, "v": v} for t, v in _rows()],
        )
    yield engine
    engine.dispose()


def test_values_spread_over_several_mask_columns_come_back_per_trace(engine: sa.Engine) -> None:
    masks = _masks(ROWS.c.v, VALUES)
    assert len(masks) == 3
    stmt = sa.select(
        ROWS.c.trace_id, *(bit_or_agg(m).label(f"m{i}") for i, m in enumerate(masks))
    ).group_by(ROWS.c.trace_id)
    with engine.connect() as conn:
        found = {row[0]: set(_set_bits(row[1:], VALUES)) for row in conn.execute(stmt)}
    expected: dict[str, set[str]] = {}
    for trace, value in _rows():
        values = expected.setdefault(trace, set())
        if value is not None:
            values.add(value)
    assert found == expected
    assert found["tr-first-last"] == {VALUES[0], VALUES[-1]}
