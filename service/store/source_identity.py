"""Which tracking database a store was copied from.

A store is used only for the database it was built from: the identity hashes the URL without
its password (host, port, database, user), the alembic revision (an MLflow upgrade may change
what the columns mean) and the oldest experiment's id and creation time (a database dropped and
re-created under the same URL gets a new one: MLflow creates its Default experiment with the
schema). Nothing users change is hashed: creating or renaming an experiment must not make a
store of a million traces start over.
"""

from __future__ import annotations

import hashlib
import json

from mlflow.store.tracking.dbmodels.models import SqlExperiment
from sqlalchemy import select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession


async def source_identity(session: AsyncSession, url: URL) -> str:
    revision = (await session.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    e = SqlExperiment.__table__.c
    first = (
        await session.execute(
            select(e.experiment_id, e.creation_time).order_by(e.experiment_id).limit(1)
        )
    ).all()
    described = {
        "url": url.set(password=None).render_as_string(hide_password=False),
        "alembic": revision,
        "experiments": [list(row) for row in first],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
